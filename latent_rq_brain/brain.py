"""LatentRQBrain: masked multi-codebook prediction, BEST-RQ and Latent-RQ.

One training step (see README for the picture)::

    wav -> log-Mel (normalised, zero past the end) -> feats (B, T, 80)
      targets (no grad, fp32 quantizer, masked frames only):
        stage 0 : stack 4 frames -> (B, T/4, 320)            -> quantizer "mel"
        stage>=1: target encoder -> layers K -> norm_k        -> quantizer "layer<k>"
      student: mask spans -> mask embedding -> CNN -> Conformer -> h[masked]
               -> heads -> logits (M, N, V)
    loss = cross-entropy over masked frames and all N codebooks

Authors
 * latent-rq developers 2026
"""

import copy
import logging
import math
import os
import pickle
import time
import zlib

import torch
import torch.nn.functional as F
import yaml

import speechbrain as sb
from latent_rq_brain.masking import sample_span_mask
from latent_rq_brain.pretrained import EncoderSpec, find_checkpoint
from latent_rq_brain.quantizer import layer_source
from latent_rq_brain.target_cache import TargetCache, cache_key
from latent_rq_brain.target_encoder import unwrap
from speechbrain.utils.distributed import is_distributed_initialized

logger = logging.getLogger(__name__)


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
        if self.sums is None:
            return {}
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
        }


def checksum_tensors(named):
    """Short stable checksum of named tensors (for cross-rank checks)."""
    crc = 0
    for name, t in sorted(named):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(t.detach().float().cpu().contiguous().numpy().tobytes(), crc)
    return f"{crc:08x}"


class LatentRQBrain(sb.Brain):
    """Brain for BEST-RQ (stage 0) and Latent-RQ (stages >= 1) pre-training.

    Expects in ``modules``: ``features``, ``encoder``, ``mask_embedding``,
    ``heads``; in ``hparams``: ``quantizer``, ``target_encoder``,
    ``stage_schedule``, ``lr_annealing`` and the settings of the YAML files.
    """

    # ------------------------------------------------------------ set-up
    def fit(self, epoch_counter, train_set, valid_set=None, *args, **kwargs):
        """SpeechBrain's fit; keeps the training set for the target cache."""
        self.train_dataset = getattr(train_set, "dataset", train_set)
        return super().fit(epoch_counter, train_set, valid_set, *args, **kwargs)

    def on_fit_start(self):
        """Attaches frozen parts, resumes or branches, checks ranks agree."""
        self.quantizer = self.hparams.quantizer.to(self.device)
        self.target_encoder = self.hparams.target_encoder
        self.target_encoder.attach(self.modules.encoder)
        self.schedule = self.hparams.stage_schedule
        self.train_stats = IntervalStats(
            self.hparams.n_codebooks, self.hparams.codebook_size
        )
        self._fresh_lr_state = copy.deepcopy(self.hparams.lr_annealing.__dict__)
        if self.checkpointer is not None:
            # Lets latent_rq_brain.pretrained rebuild the encoder without the YAML.
            self.checkpointer.add_recoverable(
                "encoder_spec",
                EncoderSpec.from_hparams(vars(self.hparams)),
                optional_load=True,
            )
        self._compile()
        self._wrap_distributed()
        self.init_optimizers()
        resumed = self._resume()
        init_from = getattr(self.hparams, "init_from", None)
        if not resumed and init_from:
            self.load_pretrained(init_from)
        if (
            not resumed
            and not init_from
            and self.schedule.stage_for_step(self.optimizer_step) > 0
        ):
            raise ValueError(
                f"this config starts in stage {self.schedule.initial_stage} "
                "(initial_stage > 0) but no --init_from=<checkpoint dir> was given "
                "and there is no checkpoint to resume in "
                f"{self.checkpointer.checkpoints_dir}"
            )
        if self.schedule.stage > 0 and not self.target_encoder.active:
            raise ValueError(
                f"checkpoint says stage {self.schedule.stage} but holds no target "
                "encoder snapshot"
            )
        self.check_rank_consistency("start")
        self.target_cache = None
        self.prepare_target_cache()
        logger.info(
            f"stage {self.schedule.stage} at optimizer step {self.optimizer_step}; "
            f"transitions at {self.schedule.transitions}; quantizer "
            f"{self.quantizer.checksum()[:12]}"
        )

    def _resume(self):
        """Recovers the newest complete checkpoint of this run.

        A checkpoint folder missing some recoverable's file (a save killed
        half-way) is skipped with a warning; one that does not fit the
        configuration raises a clear error. Returns whether one was loaded.
        """
        self.resumed_from = None
        if self.checkpointer is None:
            return False
        ckpts = sorted(
            self.checkpointer.list_checkpoints(),
            key=lambda c: c.meta.get("unixtime", 0),
            reverse=True,
        )
        optional = self.checkpointer.optional_recoverables
        needed = {
            k
            for k in self.checkpointer.recoverables
            if not optional.get(k) and not k.startswith("dataloader-")
        }
        for ckpt in ckpts:
            missing = sorted(needed - set(ckpt.paramfiles))
            if missing:
                logger.warning(
                    f"skipping checkpoint {ckpt.path}: it lacks {missing} "
                    "(interrupted save, or written by another version)"
                )
                continue
            try:
                self.checkpointer.load_checkpoint(ckpt)
            except (EOFError, KeyError, RuntimeError, ValueError,
                    pickle.UnpicklingError, yaml.YAMLError) as err:
                truncated = not isinstance(err, (RuntimeError, ValueError)) or (
                    "PytorchStreamReader" in str(err) or "zip archive" in str(err)
                )
                if truncated:
                    logger.warning(
                        f"skipping checkpoint {ckpt.path}: a file of it is truncated "
                        f"or corrupt ({type(err).__name__}: {err}; a save killed half-way?)"
                    )
                    continue
                raise ValueError(
                    f"cannot resume from checkpoint {ckpt.path}: it does not fit "
                    f"the current configuration ({err}). Restore the settings it "
                    "was written with, or use a new output_folder (with "
                    "--init_from to start from its weights)."
                ) from err
            logger.info(f"resumed from {ckpt.path}")
            self.resumed_from = ckpt
            return True
        if ckpts:
            raise ValueError(
                f"no complete checkpoint in {self.checkpointer.checkpoints_dir}: "
                f"each lacks some of {sorted(needed)}"
            )
        return False

    def load_pretrained(self, ckpt_dir):
        """Branches from another run's checkpoint: encoder, mask embedding,
        quantizer (checked equal), step count and stage; not heads/optimizer."""
        try:
            found = find_checkpoint(ckpt_dir)
        except ValueError as err:
            raise ValueError(f"--init_from={ckpt_dir}: {err}") from err
        files = found.paramfiles
        for name in ("encoder", "mask_embedding", "quantizer", "brain", "stage_schedule"):
            if name not in files:
                raise ValueError(f"--init_from: checkpoint {found.path} lacks {name}.ckpt")
        for name in ("encoder", "mask_embedding"):
            state = torch.load(files[name], map_location=self.device)
            try:
                unwrap(getattr(self.modules, name)).load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise ValueError(
                    f"--init_from: {files[name]} does not fit the configured "
                    f"{name}: {err}"
                ) from err
        saved_q = torch.load(files["quantizer"], map_location="cpu")
        mine = self.quantizer.state_dict()
        for key, value in saved_q["state"].items():
            if key in mine and not torch.equal(mine[key].cpu(), value):
                raise ValueError(
                    f"--init_from: quantizer buffer {key} in {files['quantizer']} "
                    "differs from this config's (different seed or quantizer "
                    "settings): targets would not be comparable"
                )
        with open(files["brain"], encoding="utf-8") as f:
            self.optimizer_step = int(yaml.safe_load(f)["optimizer_step"])
        with open(files["stage_schedule"], encoding="utf-8") as f:
            self.schedule.stage = int(yaml.safe_load(f)["stage"])
        logger.info(
            f"initialised from {found.path}: stage {self.schedule.stage}, "
            f"optimizer step {self.optimizer_step}"
        )

    def check_rank_consistency(self, when):
        """Fails loudly if quantizer, target encoder or heads differ across ranks."""
        sums = {
            "quantizer": self.quantizer.checksum(),
            "target_encoder": self.target_encoder.checksum(),
            "heads": checksum_tensors(unwrap(self.modules.heads).state_dict().items()),
            "stage": str(self.schedule.stage),
        }
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

    # ------------------------------------------------------------ stages
    def transition(self, stage):
        """Starts ``stage``: snapshot target encoder, fresh heads, optimizer, LR."""
        self.target_encoder.snapshot(self.modules.encoder, self.optimizer_step)
        devices = [self.device] if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.hparams.seed * 7919 + stage)
            unwrap(self.modules.heads).reset_parameters()
        self.init_optimizers()
        self.hparams.lr_annealing.__dict__.update(copy.deepcopy(self._fresh_lr_state))
        self.schedule.stage = stage
        self.train_stats.reset()
        self.check_rank_consistency(f"transition to stage {stage}")
        logger.info(
            f"stage transition -> {stage} at optimizer step {self.optimizer_step}: "
            f"target encoder = snapshot (layers {self.target_encoder.target_layers}), "
            "heads re-initialised, optimizer and LR scheduler reset"
        )
        # SpeechBrain loggers are main_process_only, which broadcasts: every
        # rank must call them (never behind if_main_process()).
        self.hparams.train_logger.log_stats(
            {"transition_to_stage": stage, "step": self.optimizer_step}
        )
        if self.checkpointer is not None:
            self.checkpointer.save_checkpoint(
                meta={"transition_to_stage": stage, "optimizer_step": self.optimizer_step},
                end_of_epoch=False,
            )
        self.prepare_target_cache()

    # ------------------------------------------------------------ target cache
    def prepare_target_cache(self):
        """Builds (or reopens) the offline targets of this stage, if enabled.

        Only in stages >= 1, with ``target_cache: True``, a known training
        set and deterministic inputs (no ``augmentation`` / ``random_crop``).
        """
        self.target_cache = None
        if not getattr(self.hparams, "target_cache", False) or self.schedule.stage == 0:
            return
        for key in ("augmentation", "random_crop"):
            if getattr(self.hparams, key, None):
                raise ValueError(
                    f"target_cache: True needs deterministic inputs, but {key} is set: "
                    "cached targets would not match the augmented features. Set "
                    "target_cache: False (targets are then computed online)."
                )
        dataset = getattr(self, "train_dataset", None)
        if dataset is None:
            return  # not fitting (e.g. evaluation or a unit test): online targets
        settings = {
            k: getattr(self.hparams, k, None)
            for k in ("sample_rate", "n_fft", "n_mels", "win_length", "hop_length",
                      "downsampling", "target_layers", "target_norm")
        }
        settings["precision"] = self.precision
        key = cache_key(self.target_encoder, self.quantizer, settings, dataset)
        folder = os.path.join(self.hparams.output_folder, "target_cache")
        cache = TargetCache(folder, key, self.hparams.n_codebooks)
        world = torch.distributed.get_world_size() if is_distributed_initialized() else 1
        rank = torch.distributed.get_rank() if is_distributed_initialized() else 0
        if not cache.complete(world):
            start = time.time()
            cache.build_shard(
                self,
                dataset,
                rank,
                world,
                self.hparams.target_cache_batch_seconds,
                self.hparams.train_dataloader_opts.get("num_workers", 0),
            )
            logger.info(
                f"target cache {key} for stage {self.schedule.stage}: rank {rank} "
                f"computed its share in {time.time() - start:.1f} s"
            )
        if is_distributed_initialized():
            torch.distributed.barrier()
        cache.open(world)
        if rank == 0:
            cache.remove_others()
        self.target_cache = cache

    @torch.no_grad()
    def all_frame_targets(self, batch):
        """Targets of every valid frame of ``batch``, utterance by utterance.

        Returns
        -------
        codes : torch.Tensor
            (sum(enc_lens), N) int64.
        enc_lens : torch.Tensor
            (B,) valid encoder frames.
        """
        batch = batch.to(self.device)
        wavs, rel = batch.sig
        n_samples = torch.round(rel * wavs.shape[1]).long()
        with self.training_ctx:
            feats, _, enc_lens = self.modules.features(wavs, n_samples)
            valid = self.valid_frames(enc_lens, feats.shape[1] // self.hparams.downsampling)
            codes = self.compute_targets(feats, enc_lens, valid)
        return codes, enc_lens

    @staticmethod
    def valid_frames(enc_lens, T):
        """(B, T) bool, True on the valid encoder frames."""
        return torch.arange(T, device=enc_lens.device)[None, :] < enc_lens[:, None]

    # ------------------------------------------------------------ forward
    def compute_targets(self, feats, enc_lens, mask):
        """(M, N) int64 targets of the masked frames for the current stage."""
        with torch.no_grad():
            if self.schedule.stage == 0:
                B, T, C = feats.shape
                k = self.hparams.downsampling
                stacked = feats.view(B, T // k, k * C)[mask]
                return self.quantizer(stacked, "mel")
            states = self.target_encoder(feats, enc_lens)
            return torch.cat(
                [self.quantizer(states[l][mask], layer_source(l)) for l in states], 1
            )

    def compute_forward(self, batch, stage):
        """Features, masks, targets and the student's logits on masked frames."""
        batch = batch.to(self.device)
        wavs, rel = batch.sig
        n_samples = torch.round(rel * wavs.shape[1]).long()
        feats, _, enc_lens = self.modules.features(wavs, n_samples)
        gen = None
        if stage != sb.Stage.TRAIN:  # same masks every evaluation
            gen = torch.Generator().manual_seed(
                zlib.crc32(",".join(batch.id).encode()) + self.hparams.seed
            )
        mask = sample_span_mask(
            enc_lens, self.hparams.mask_prob, self.hparams.mask_length, gen
        )
        T = mask.shape[1]
        if stage == sb.Stage.TRAIN and getattr(self, "target_cache", None) is not None:
            targets = self.target_cache.lookup(batch.id, enc_lens, self.device)[mask]
        elif getattr(self.hparams, "masked_only", True):
            targets = self.compute_targets(feats, enc_lens, mask)
        else:  # plain path: quantize every valid frame, then keep the masked ones
            valid = self.valid_frames(enc_lens, T)
            full = torch.zeros(
                *valid.shape, self.hparams.n_codebooks, dtype=torch.long, device=self.device
            )
            full[valid] = self.compute_targets(feats, enc_lens, valid)
            targets = full[mask]
        masked_feats = self.modules.mask_embedding(feats, mask)
        out, _ = self.modules.encoder(masked_feats, enc_lens)
        if getattr(self.hparams, "masked_only", True):
            logits = self.modules.heads(out[mask])
        else:  # plain path: heads on every frame, loss on the masked ones
            logits = self.modules.heads(out.reshape(-1, out.shape[-1]))
            logits = logits.view(*out.shape[:2], *logits.shape[1:])[mask]
        return {
            "logits": logits,
            "targets": targets,
            "mask": mask,
            "enc_lens": enc_lens,
            "audio_s": float(n_samples.sum()) / self.hparams.sample_rate,
        }

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy over masked frames and all codebooks."""
        logits, targets = predictions["logits"], predictions["targets"]
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1)
        )
        stats = self.train_stats if stage == sb.Stage.TRAIN else self.valid_stats
        stats.update(
            loss.detach(),
            logits.detach(),
            targets,
            predictions["mask"],
            predictions["enc_lens"],
            predictions["audio_s"],
        )
        return loss

    # ------------------------------------------------------------ hooks
    def on_fit_batch_start(self, batch, should_step):
        """Stage transitions (at an accumulation boundary) and LR warm-up."""
        if (self.step - 1) % self.grad_accumulation_factor == 0:
            due = self.schedule.due(self.optimizer_step)
            if due is not None:
                self.transition(due)
        if should_step:
            self.hparams.lr_annealing(self.optimizer)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Logs every ``log_interval`` optimizer steps."""
        if not should_step:
            return
        self.train_stats.steps += 1
        if self.optimizer_step % self.hparams.log_interval:
            return
        s = self.train_stats.summary()
        self.train_stats.reset()
        meta = {
            "step": self.optimizer_step,
            "stage": self.schedule.stage,
            "lr": f"{self.optimizer.param_groups[0]['lr']:.3e}",
        }
        self.hparams.train_logger.log_stats(  # on every rank: see transition()
            meta, train_stats={k: _fmt(v) for k, v in s.items()}
        )
        tb = getattr(self.hparams, "tensorboard_logger", None)
        if tb is not None:
            scalars = {k: v for k, v in s.items() if not isinstance(v, list)}
            scalars.update(
                codes_used=sum(s["codes_used"]) / len(s["codes_used"]),
                perplexity=sum(s["perplexity"]) / len(s["perplexity"]),
                stage=self.schedule.stage,
            )
            tb.log_stats({"step": self.optimizer_step}, train_stats=scalars)

    def on_stage_start(self, stage, epoch=None):
        """Fresh validation statistics."""
        if stage != sb.Stage.TRAIN:
            self.valid_stats = IntervalStats(
                self.hparams.n_codebooks, self.hparams.codebook_size
            )
            if not hasattr(self, "quantizer"):  # evaluate() without fit()
                self.quantizer = self.hparams.quantizer.to(self.device)
                self.target_encoder = self.hparams.target_encoder
                self.schedule = self.hparams.stage_schedule

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs validation and saves an end-of-epoch checkpoint."""
        if stage == sb.Stage.TRAIN:
            self.last_train_loss = stage_loss
            return
        s = self.valid_stats.summary()
        meta = {"epoch": epoch, "step": self.optimizer_step, "stage": self.schedule.stage}
        self.hparams.train_logger.log_stats(  # on every rank: see transition()
            meta,
            train_stats={"loss": _fmt(getattr(self, "last_train_loss", math.nan))},
            valid_stats={
                k: _fmt(s[k])
                for k in ("loss", "acc", "codes_used", "perplexity", "mask_fraction")
            },
        )
        if stage == sb.Stage.VALID and self.checkpointer is not None:
            self.checkpointer.save_and_keep_only(
                meta={"valid_loss": s["loss"], "stage": self.schedule.stage},
                num_to_keep=self.hparams.ckpt_to_keep,
                ckpt_predicate=lambda c: "transition_to_stage" not in c.meta,
            )


def _fmt(value):
    if isinstance(value, float):
        return round(value, 4)
    return value
