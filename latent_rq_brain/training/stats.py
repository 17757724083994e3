"""Training statistics: interval sums and cross-rank checksums.

Authors
 * latent-rq developers 2026
"""

import logging
import time
import zlib

import torch

from speechbrain.utils.distributed import is_distributed_initialized

logger = logging.getLogger(__name__)


class IntervalStats:
    """Sums over a logging interval: loss, accuracy, code usage, mask, time,
    and the named loss terms.

    ``loss`` is the masked-prediction cross-entropy alone; each named loss term
    (:mod:`latent_rq_brain.objectives.loss_terms`) is logged unweighted under its name,
    with its own logs as ``<name>.<key>``.

    Accumulates on the batch's device; nothing is copied to the host until
    :meth:`summary`, so logging adds no per-step synchronisation.
    """

    #: keys of :meth:`summary` besides the named loss terms
    SUMMARY_KEYS = ("loss", "acc", "acc_per_codebook", "codes_used", "perplexity",
                    "mask_fraction", "step_time_s", "audio_s_per_s", "skipped_utterances",
                    "skipped_steps")

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
        self.terms = {}  # named loss terms and their logs: name -> [sum, count]
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

    def update_terms(self, values):
        """Adds one batch's named loss terms (and their logs): name -> scalar tensor."""
        with torch.no_grad():
            for name, value in values.items():
                total = self.terms.setdefault(name, [0.0, 0])
                total[0] = total[0] + value.detach().double()
                total[1] += 1

    def term_means(self):
        """``{name: mean over the interval}`` of the named loss terms (floats)."""
        return {k: float(s) / max(n, 1) for k, (s, n) in sorted(self.terms.items())}

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
            **self.term_means(),
        }


def checksum_tensors(named):
    """Short stable checksum of named tensors (for cross-rank checks)."""
    crc = 0
    for name, t in sorted(named):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(t.detach().float().cpu().contiguous().numpy().tobytes(), crc)
    return f"{crc:08x}"


def check_rank_consistency(when, frozen, heads, stage):
    """Fails loudly if the frozen parts (quantizer, target sources), heads or
    stage differ across ranks (one ``all_gather_object`` under DDP); logs the
    checksums.

    Arguments
    ---------
    when : str
        Named in the log and the error (``"start"``, ``"transition to stage 1"``).
    frozen : dict
        ``{name: checksum string}`` of the quantizer and of every target
        source's frozen part (``target_encoder``...).
    heads : torch.nn.Module
        The (unwrapped) heads, compared by :func:`checksum_tensors`.
    stage : int
        The Latent-RQ stage.

    Returns
    -------
    dict
        ``frozen``'s names, ``"heads"`` and ``"stage"`` -> checksum string.

    Example
    -------
    >>> frozen = {"quantizer": "0123456789abcdef", "target_encoder": "inactive"}
    >>> sums = check_rank_consistency("start", frozen, torch.nn.Linear(1, 1), 0)
    >>> sorted(sums), sums["stage"]
    (['heads', 'quantizer', 'stage', 'target_encoder'], '0')
    """
    sums = dict(frozen, heads=checksum_tensors(heads.state_dict().items()), stage=str(stage))
    if is_distributed_initialized():
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, sums)
        bad = [k for k in sums if len({g[k] for g in gathered}) > 1]
        if bad:
            detail = {k: [g[k][:12] for g in gathered] for k in bad}
            raise RuntimeError(
                f"ranks disagree at {when} on {bad}: {detail}. Every rank must "
                "use the same seed, config and checkpoint."
            )
    logger.info(f"rank checksums at {when}: " + ", ".join(f"{k}={v[:12]}" for k, v in sums.items()))
    return sums


def rounded(value):
    """``value`` for a log line: a float rounded to 4 decimals, the rest as is.

    Example
    -------
    >>> rounded(0.123456), rounded([1, 2])
    (0.1235, [1, 2])
    """
    if isinstance(value, float):
        return round(value, 4)
    return value


def log_train_interval(train_logger, tensorboard, summary, step, stage, lr):
    """Writes the interval line of :meth:`IntervalStats.summary` (and, with a
    TensorBoard logger, its scalars, codebook lists averaged).

    SpeechBrain loggers are main_process_only, which broadcasts: every rank
    must call this (never behind ``if_main_process()``).

    Arguments
    ---------
    train_logger : speechbrain.utils.train_logger.TrainLogger
        The run's log.
    tensorboard : speechbrain.utils.train_logger.TensorboardLogger or None
        Optional scalars.
    summary : dict
        The interval's statistics.
    step, stage : int
        Optimizer step and Latent-RQ stage.
    lr : float
        The current learning rate.
    """
    meta = {"step": step, "stage": stage, "lr": f"{lr:.3e}"}
    train_logger.log_stats(meta, train_stats={k: rounded(v) for k, v in summary.items()})
    if tensorboard is not None and "codes_used" in summary:
        scalars = {k: v for k, v in summary.items() if not isinstance(v, list)}
        scalars.update(
            codes_used=sum(summary["codes_used"]) / len(summary["codes_used"]),
            perplexity=sum(summary["perplexity"]) / len(summary["perplexity"]),
            stage=stage,
        )
        tensorboard.log_stats({"step": step}, train_stats=scalars)


def log_validation(train_logger, summary, epoch, step, stage, train_loss):
    """Writes the end-of-epoch line: the training loss and the validation
    statistics of :meth:`IntervalStats.summary` (on every rank, as
    :func:`log_train_interval`)."""
    train_logger.log_stats(
        {"epoch": epoch, "step": step, "stage": stage},
        train_stats={"loss": rounded(train_loss)},
        valid_stats={
            k: rounded(summary[k])
            for k in ("loss", "acc", "codes_used", "perplexity", "mask_fraction",
                      *sorted(set(summary) - set(IntervalStats.SUMMARY_KEYS)))
        },
    )
