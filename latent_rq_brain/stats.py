"""Training statistics: interval sums and cross-rank checksums.

Authors
 * latent-rq developers 2026
"""

import time
import zlib

import torch


class IntervalStats:
    """Sums over a logging interval: loss, accuracy, code usage, mask, time.

    Accumulates on the batch's device; nothing is copied to the host until
    :meth:`summary`, so logging adds no per-step synchronisation.
    """

    def __init__(self, n_codebooks, codebook_size):
        self.n, self.v = n_codebooks, codebook_size
        self.reset()

    def reset(self):
        """Starts a new interval."""
        self.sums = None  # loss, masked frames, valid frames, audio seconds
        self.correct = None
        self.counts = None
        self.batches, self.steps = 0, 0
        self.skipped_utterances = 0  # non-finite audio or features
        self.skipped_steps = 0  # non-finite gradients
        self.t0 = time.time()

    def update(self, loss, logits, targets, mask, enc_lens, audio_s):
        """Adds one batch."""
        with torch.no_grad():
            dev = targets.device
            if self.sums is None:
                self.sums = torch.zeros(4, dtype=torch.float64, device=dev)
                self.correct = torch.zeros(self.n, dtype=torch.long, device=dev)
                self.counts = torch.zeros(self.n * self.v, dtype=torch.long, device=dev)
            self.batches += 1
            self.sums += torch.stack(
                [
                    loss.detach().double(),
                    mask.sum().double(),
                    enc_lens.sum().double(),
                    torch.tensor(float(audio_s), dtype=torch.float64, device=dev),
                ]
            )
            self.correct += (logits.argmax(-1) == targets).sum(0)
            offs = torch.arange(self.n, device=dev) * self.v
            self.counts += torch.bincount(
                (targets + offs).flatten(), minlength=self.n * self.v
            )

    def summary(self):
        """Dict of the interval's statistics (per-codebook lists included)."""
        elapsed = max(time.time() - self.t0, 1e-9)
        if self.sums is None:  # no batch with a finite utterance
            skipped = {"skipped_utterances": self.skipped_utterances,
                       "skipped_steps": self.skipped_steps}
            return skipped if any(skipped.values()) else {}
        loss_sum, masked, frames, audio_s = self.sums.tolist()
        counts = self.counts.view(self.n, self.v).double().cpu()
        p = counts / counts.sum(1, keepdim=True).clamp(min=1)
        ent = -(p * p.clamp(min=1e-30).log()).sum(1)
        acc = (self.correct.double().cpu() / max(masked, 1)).tolist()
        return {
            "loss": loss_sum / max(self.batches, 1),
            "acc": sum(acc) / len(acc),
            "acc_per_codebook": [round(a, 4) for a in acc],
            "codes_used": [int(x) for x in (counts > 0).sum(1)],
            "perplexity": [round(float(x), 1) for x in ent.exp()],
            "mask_fraction": masked / max(frames, 1),
            "step_time_s": elapsed / max(self.steps, 1),
            "audio_s_per_s": audio_s / elapsed,
            "skipped_utterances": self.skipped_utterances,
            "skipped_steps": self.skipped_steps,
        }


def checksum_tensors(named):
    """Short stable checksum of named tensors (for cross-rank checks)."""
    crc = 0
    for name, t in sorted(named):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(t.detach().float().cpu().contiguous().numpy().tobytes(), crc)
    return f"{crc:08x}"
