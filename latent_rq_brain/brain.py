"""LatentRQBrain: masked multi-codebook prediction, BEST-RQ and Latent-RQ.

One training step (ARCHITECTURE.md has the whole picture)::

    wav -> log-Mel (normalised, zero past the end) -> feats (B, T, 80)
      targets (no grad, fp32 quantizer, masked frames only; latent_rq_brain.targets):
        stage 0 : stack 4 frames -> (B, T/4, 320)            -> quantizer "mel"
        stage>=1: target encoder -> layers K -> norm_k        -> quantizer "layer<k>"
      student: mask spans -> mask embedding -> CNN -> Conformer -> h[masked]
               -> heads -> logits (M, N, V)
    loss = cross-entropy over masked frames and all N codebooks

Statistics live in :mod:`latent_rq_brain.stats`, checkpoint finding, resume
and branching in :mod:`latent_rq_brain.checkpoints`, the offline targets in
:mod:`latent_rq_brain.target_cache`; ARCHITECTURE.md has the whole picture.

Authors
 * latent-rq developers 2026
"""

import copy
import logging
import math
import os
import zlib

import torch
import torch.nn.functional as F

import speechbrain as sb
from latent_rq_brain.checkpoints import (
    BRANCH_FILES,
    find_checkpoint,
    load_state,
    read_optimizer_step,
    recover_newest_complete,
    require_files,
)
from latent_rq_brain.data import is_out_of_memory, out_of_memory_message
from latent_rq_brain.masking import sample_span_mask
from latent_rq_brain.pretrained import EncoderSpec
from latent_rq_brain.stages import StageSchedule
from latent_rq_brain.stats import IntervalStats, checksum_tensors
from latent_rq_brain.target_cache import TargetCache, cache_batches, cache_key
from latent_rq_brain.target_encoder import ema_decay_at, unwrap
from latent_rq_brain.targets import TargetMaker
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.distributed import if_main_process, is_distributed_initialized

logger = logging.getLogger(__name__)


class LatentRQBrain(sb.Brain):
    """Brain for BEST-RQ (stage 0) and Latent-RQ (stages >= 1) pre-training.

    Expects in ``modules``: ``features``, ``encoder``, ``mask_embedding``,
    ``heads``; in ``hparams``: ``quantizer``, ``target_encoder``,
    ``stage_schedule``, ``lr_annealing`` and the settings of the YAML files.
    """

    # ------------------------------------------------------------ set-up
    def fit(self, epoch_counter, train_set, valid_set=None, *args, **kwargs):
        """SpeechBrain's fit; keeps the training set for the target cache.

        Raises if the weights are not finite at the end, so that a run never
        ends with exit status 0 and non-finite weights.
        """
        self.train_dataset = getattr(train_set, "dataset", train_set)
        result = super().fit(epoch_counter, train_set, valid_set, *args, **kwargs)
        self.check_finite_weights("the end of training")
        return result

    def on_fit_start(self):
        """Attaches frozen parts, resumes or branches, checks ranks agree."""
        self._attach_frozen_parts()
        self.target_encoder.attach(self.modules.encoder)
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
            source = self.resumed_from.path if self.resumed_from else init_from
            raise ValueError(
                f"checkpoint {source} is in stage {self.schedule.stage} but its "
                "target_encoder.ckpt holds no target encoder snapshot"
            )
        self.check_rank_consistency("start")
        self.target_cache = None
        self.prepare_target_cache()
        logger.info(
            f"stage {self.schedule.stage} at optimizer step {self.optimizer_step}; "
            f"transitions at {self.schedule.transitions}; quantizer "
            f"{self.quantizer.checksum()[:12]}"
        )

    def _attach_frozen_parts(self):
        """Quantizer, target encoder, stage schedule and the target maker."""
        self.quantizer = self.hparams.quantizer.to(self.device)
        self.target_encoder = self.hparams.target_encoder
        self.schedule = self.hparams.stage_schedule
        self.targets = TargetMaker(
            self.quantizer, self.target_encoder, self.hparams.downsampling,
            getattr(self.hparams, "anchor_codebooks", 0),
        )

    def _resume(self):
        """Recovers the newest complete checkpoint of this run, if any."""
        self.resumed_from = None
        if self.checkpointer is not None:
            self.resumed_from = recover_newest_complete(self.checkpointer)
        return self.resumed_from is not None

    def load_pretrained(self, ckpt_dir):
        """Branches from another run's checkpoint: encoder, mask embedding,
        quantizer (checked equal), step count and stage; not heads/optimizer."""
        what = f"--init_from={ckpt_dir}"
        try:
            found = find_checkpoint(ckpt_dir, needed=BRANCH_FILES)  # newest complete
            files = require_files(found, BRANCH_FILES, what)
            for name in ("encoder", "mask_embedding"):
                load_state(unwrap(getattr(self.modules, name)), files[name], self.device, what)
            self.quantizer.check_same(files["quantizer"])
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from err
        self.optimizer_step = read_optimizer_step(files["brain"])
        self.schedule.stage = StageSchedule.read(files["stage_schedule"])["stage"]
        if self.schedule.stage > 0 and self.schedule.due(self.optimizer_step) is None:
            # trains on in the checkpoint's stage: its targets are needed as they were
            if "target_encoder" not in files:
                raise ValueError(
                    f"{what}: {found.path} is in stage {self.schedule.stage}, which "
                    "this config trains on, but it lacks target_encoder.ckpt; set "
                    f"initial_stage above {self.schedule.stage} to branch a new stage"
                )
            self.target_encoder._load(files["target_encoder"])
            self.quantizer._load(files["quantizer"])  # its fitted sources too
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
        """Starts ``stage``: snapshot target encoder (and fit its data-fitted
        target sources), fresh heads, optimizer, LR."""
        self.target_encoder.snapshot(self.modules.encoder, self.optimizer_step)
        self.fit_target_sources(stage)
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
            self.check_finite_weights(f"the transition to stage {stage}")
            self.checkpointer.save_checkpoint(
                meta={"transition_to_stage": stage, "optimizer_step": self.optimizer_step},
                end_of_epoch=False,
            )
        self.prepare_target_cache()

    def fit_target_sources(self, stage):
        """Fits the data-fitted target sources of ``stage`` (PCA, k-means) on
        ``fit_frames`` frames of a seeded sample of the training set; a no-op
        for the paper's random-projection quantizer. Fitted on rank 0 and
        broadcast, so every rank holds the same buffers (checksummed after)."""
        sources = self.targets.sources(stage)
        self.quantizer.unfit(sources)
        if not any(self.quantizer.needs_fit(n) for n in sources):
            return
        dataset = getattr(self, "train_dataset", None)
        if dataset is None:
            raise RuntimeError("data-fitted target sources need the training set (fit())")
        if if_main_process():
            with self.training_ctx:
                fitted = self.targets.fit(
                    self.sample_batches(dataset, stage), stage,
                    self.hparams.fit_frames, self.hparams.seed * 7919 + stage,
                )
            logger.info(f"fitted target sources {fitted} on {self.hparams.fit_frames} frames")
        if is_distributed_initialized():  # the fitted sources' buffers only
            for name in sources:
                if self.quantizer.source(name).needs_fit:
                    for buf in self.quantizer.source(name).buffers():
                        torch.distributed.broadcast(buf, src=0)

    def sample_batches(self, dataset, stage):
        """``(feats, enc_lens)`` of a seeded sample of ``dataset`` (the same
        utterances on every machine), batches of ``target_cache_batch_seconds``."""
        gen = torch.Generator().manual_seed(self.hparams.seed * 104729 + stage)
        ids = [dataset.data_ids[i] for i in torch.randperm(len(dataset.data_ids), generator=gen)]
        position = {u: i for i, u in enumerate(dataset.data_ids)}
        chunks = cache_batches(dataset, self.hparams.target_cache_batch_seconds, ids)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=[[position[u] for u in c] for c in chunks],
            collate_fn=PaddedBatch)
        for batch in loader:
            feats, enc_lens, _ = self.batch_features(batch.to(self.device))
            yield feats, enc_lens

    # ------------------------------------------------------------ target cache
    def prepare_target_cache(self):
        """Builds (or reopens) the offline targets of this stage, if enabled.

        Only in stages >= 1, with ``target_cache: True``, a known training
        set and deterministic inputs (no ``augmentation`` / ``random_crop``).
        """
        self.target_cache = None
        if not getattr(self.hparams, "target_cache", False) or self.schedule.stage == 0:
            return
        if getattr(self.hparams, "target_encoder_ema", False):
            raise ValueError(
                "target_cache: True cannot be used with target_encoder_ema: True: the "
                "EMA target encoder changes every step, so its targets cannot be "
                "computed once per stage. Set target_cache: False."
            )
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
        key = cache_key(unwrap(self.modules.features), self.target_encoder, self.quantizer,
                        self.precision, dataset)
        self.target_cache = TargetCache.prepare(
            os.path.join(self.hparams.output_folder, "target_cache"),
            key,
            self.hparams.n_codebooks,
            self.all_frame_targets,
            dataset,
            self.hparams.target_cache_batch_seconds,
            self.hparams.train_dataloader_opts.get("num_workers", 0),
            self.hparams.codebook_size,
        )

    @torch.no_grad()
    def all_frame_targets(self, batch):
        """Targets of every valid frame of ``batch`` (the target cache's input).

        Returns
        -------
        codes : torch.Tensor
            (sum(enc_lens), N) int64, utterance by utterance.
        enc_lens : torch.Tensor
            (B,) valid encoder frames.
        """
        feats, enc_lens, _ = self.batch_features(batch.to(self.device))
        with self.training_ctx:
            codes = self.targets.all_frames(feats, enc_lens, self.schedule.stage)
        return codes, enc_lens

    def batch_features(self, batch):
        """Clean features of a batch: feats (B, T, 80), enc_lens, n_samples."""
        wavs, rel = batch.sig
        n_samples = torch.round(rel * wavs.shape[1]).long()
        feats, _, enc_lens = self.modules.features(wavs, n_samples)
        return feats, enc_lens, n_samples

    # ------------------------------------------------------------ forward
    def compute_targets(self, feats, enc_lens, frames):
        """(M, N) int64 targets of ``frames`` for the current stage."""
        return self.targets(feats, enc_lens, frames, self.schedule.stage)

    def masked_inputs(self, batch, stage):
        """Clean features and span masks of a batch (the same masks at every
        evaluation): ``{"feats", "enc_lens", "mask", "audio_s", "ids"}``.

        Utterances whose audio or features are not finite (NaN, Inf) are
        dropped with a warning naming them (:meth:`finite_utterances`); ``ids``
        is then empty if none is left.
        """
        wavs, rel = batch.sig
        n_samples = torch.round(rel * wavs.shape[1]).long()
        ids = list(batch.id)
        finite = torch.isfinite(wavs).all(1)
        for check in ("audio", "features"):
            keep = self.finite_utterances(finite, ids, stage, check)
            if keep is not None:
                ids = [uid for uid, k in zip(ids, keep.tolist()) if k]
                if not ids:
                    return {"ids": ids}
                n_samples = n_samples[keep]
                wavs = wavs[keep][:, : int(n_samples.max())]  # padded to the longest kept
            if check == "audio" or keep is not None:
                feats, _, enc_lens = self.modules.features(wavs, n_samples)
                finite = torch.isfinite(feats).flatten(1).all(1)
        gen = None
        if stage != sb.Stage.TRAIN:
            gen = torch.Generator().manual_seed(
                zlib.crc32(",".join(ids).encode()) + self.hparams.seed
            )
        mask = sample_span_mask(  # as wide as the (possibly bucket-padded) batch
            enc_lens, self.hparams.mask_prob, self.hparams.mask_length, gen,
            feats.shape[1] // self.hparams.downsampling,
        )
        audio_s = float(n_samples.sum()) / self.hparams.sample_rate
        return {"feats": feats, "enc_lens": enc_lens, "mask": mask, "audio_s": audio_s,
                "ids": ids}

    def finite_utterances(self, finite, ids, stage, what):
        """None if ``finite`` (B,) is all True, else ``finite``; the other
        utterances are logged by ID and file and counted in the interval log.

        One reduction on the device and one host read per batch and check.
        """
        if bool(finite.all()):
            return None
        bad = [uid for uid, ok in zip(ids, finite.tolist()) if not ok]
        data = getattr(getattr(self, "train_dataset", None), "data", {})
        where = ", ".join(f"{uid} ({data.get(uid, {}).get('wav', '?')})" for uid in bad)
        logger.warning(
            f"skipping {len(bad)} utterance(s) with non-finite {what} (NaN/Inf): "
            f"{where}; fix or remove them in the manifest"
        )
        stats = self.train_stats if stage == sb.Stage.TRAIN else self.valid_stats
        stats.skipped_utterances += len(bad)
        return finite

    def compute_forward(self, batch, stage):
        """Masks, targets and the student's logits, on masked frames only."""
        batch = batch.to(self.device)
        x = self.masked_inputs(batch, stage)
        if not x["ids"]:  # every utterance was skipped
            return {"skipped": True}
        feats, enc_lens, mask = x["feats"], x["enc_lens"], x["mask"]
        if stage == sb.Stage.TRAIN and getattr(self, "target_cache", None) is not None:
            cached = self.target_cache.lookup(x["ids"], enc_lens, self.device)
            targets = cached[mask[:, : cached.shape[1]]]  # mask: False past max(enc_lens)
        else:
            targets = self.compute_targets(feats, enc_lens, mask)
        out, _ = self.modules.encoder(self.modules.mask_embedding(feats, mask), enc_lens)
        return {
            "logits": self.modules.heads(out[mask]),
            "targets": targets,
            "mask": mask,
            "enc_lens": enc_lens,
            "audio_s": x["audio_s"],
        }

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy over masked frames and all codebooks."""
        if predictions.get("skipped"):
            # a zero loss that still reaches every parameter (DDP needs all
            # of them in the graph); no statistics
            return sum(p.sum() for p in self.modules.parameters() if p.requires_grad) * 0.0
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

    # ------------------------------------------------------------ non-finite guards
    def optimizers_step(self):
        """SpeechBrain's step, skipped when the gradients are not finite.

        The gradient norm (computed for clipping anyway) is the test: it is
        not finite if any gradient is, and it is the same on every rank after
        the DDP all-reduce, so every rank skips the same steps. A skipped step
        leaves the weights and the optimizer state unchanged and is counted
        in the interval log (``skipped_steps``); SpeechBrain's
        ``nonfinite_patience`` stops the run after too many non-finite losses.
        """
        self.step_skipped = False
        if self.scaler.is_enabled():  # fp16: the GradScaler skips by itself
            return super().optimizers_step()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        if not bool(torch.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self.step_skipped = True
            self.train_stats.skipped_steps += 1
            logger.warning(
                f"skipped optimizer step {self.optimizer_step + 1}: non-finite "
                "gradients (the weights are unchanged)"
            )
            return
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_step += 1

    def check_finite_weights(self, when):
        """Raises if a trained weight is not finite (before any checkpoint
        is written, and at the end of training)."""
        bad = [
            name
            for name, p in self.modules.named_parameters()
            if not bool(torch.isfinite(p).all())
        ]
        if bad:
            raise RuntimeError(
                f"non-finite weights at {when} in {len(bad)} tensor(s), e.g. "
                f"{bad[:3]}: no checkpoint is written. Resume from the last "
                f"checkpoint in {getattr(self.checkpointer, 'checkpoints_dir', '?')} "
                "with a lower lr or a higher warmup_steps."
            )

    def fit_batch(self, batch):
        """SpeechBrain's fit_batch; running out of memory names the batch's
        longest utterance (:func:`latent_rq_brain.data.out_of_memory_message`)."""
        try:
            return super().fit_batch(batch)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            data = getattr(getattr(self, "train_dataset", None), "data", {})
            raise torch.OutOfMemoryError(out_of_memory_message(
                batch, data, self.hparams.sample_rate,
                getattr(self.hparams, "avoid_if_longer_than", None))) from err

    def _save_intra_epoch_ckpt(self):
        """SpeechBrain's intra-epoch checkpoint, refused for non-finite weights."""
        self.check_finite_weights("an intra-epoch checkpoint")
        super()._save_intra_epoch_ckpt()

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
        if not should_step or getattr(self, "step_skipped", False):
            return
        if self.schedule.stage > 0 and getattr(self.hparams, "target_encoder_ema", False):
            h = self.hparams
            decay = ema_decay_at(self.optimizer_step - self.target_encoder.snapshot_step,
                                 h.ema_decay, h.ema_end_decay, h.ema_anneal_steps)
            self.target_encoder.ema_update(self.modules.encoder, decay)
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
        if tb is not None and "codes_used" in s:
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
                self._attach_frozen_parts()

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
            self.check_finite_weights(f"the end of epoch {epoch}")
            self.checkpointer.save_and_keep_only(
                meta={"valid_loss": s["loss"], "stage": self.schedule.stage},
                num_to_keep=self.hparams.ckpt_to_keep,
                ckpt_predicate=lambda c: "transition_to_stage" not in c.meta,
            )


def _fmt(value):
    if isinstance(value, float):
        return round(value, 4)
    return value
