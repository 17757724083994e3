"""LatentRQBrain: masked multi-codebook prediction, BEST-RQ and Latent-RQ.

One training step (ARCHITECTURE.md has the whole picture)::

    wav -> log-Mel (normalised, zero past the end) -> feats (B, T, 80)
      targets (no grad, fp32 quantizer, masked frames only; latent_rq_brain.targets.maker):
        stage 0 : stack 4 frames -> (B, T/4, 320)            -> quantizer "mel"
        stage>=1: target encoder -> layers K -> norm_k        -> quantizer "layer<k>"
      student: mask spans -> mask embedding -> CNN -> Conformer -> h[masked]
               -> heads -> logits (M, N, V)
    loss = cross-entropy over masked frames and all N codebooks

"stage" is the Latent-RQ stage (0 = BEST-RQ); SpeechBrain's ``sb.Stage``
(TRAIN, VALID, TEST) is called the *split* here.

The Brain holds the SpeechBrain hooks and :meth:`LatentRQBrain.transition`;
the rest lives next to what it works on (stats, checkpoints, guards, targets,
target_encoder, target_cache: ARCHITECTURE.md).

Authors
 * latent-rq developers 2026
"""

import copy
import logging
import math
import zlib

import torch
import torch.nn.functional as F

import speechbrain as sb
from latent_rq_brain.model.architectures import EncoderSpec
from latent_rq_brain.model.masking import sample_span_mask
from latent_rq_brain.objectives.loss_terms import active_loss_terms
from latent_rq_brain.targets.maker import TargetMaker, fit_stage_sources
from latent_rq_brain.targets.target_cache import stage_cache
from latent_rq_brain.targets.target_encoder import unwrap
from latent_rq_brain.training.guards import NamedOutOfMemory, NonFiniteGuards
from latent_rq_brain.training.resume import resume_or_branch
from latent_rq_brain.training.stats import (
    IntervalStats,
    check_rank_consistency,
    log_train_interval,
    log_validation,
)

logger = logging.getLogger(__name__)


class LatentRQBrain(NonFiniteGuards, NamedOutOfMemory, sb.Brain):
    """Brain for BEST-RQ (stage 0) and Latent-RQ (stages >= 1) pre-training.

    Expects in ``modules``: ``features``, ``encoder``, ``mask_embedding``,
    ``heads``; in ``hparams``: ``quantizer``, ``target_encoder``,
    ``stage_schedule``, ``lr_annealing`` and the settings of the YAML files.
    The non-finite guards and the out-of-memory message come from
    :mod:`latent_rq_brain.training.guards`.
    """

    # ------------------------------------------------------------ set-up
    def __init__(self, *args, **kwargs):
        """SpeechBrain's Brain, with the state the hooks fill in declared here."""
        self.train_dataset = None  # fit(): for the target cache and source fitting
        self.quantizer = None  # on_fit_start(), or evaluate() without fit()
        self.target_cache = None  # prepare_target_cache(): None = targets computed
        self.step_skipped = False  # optimizers_step(): the last step's gradients not finite
        self.last_train_loss = math.nan  # on_stage_end(TRAIN)
        super().__init__(*args, **kwargs)

    # Overrides fit (with super()): no hook before on_fit_start sees the training set.
    def fit(self, epoch_counter, train_set, valid_set=None, *args, **kwargs):
        """SpeechBrain's fit (through :class:`~latent_rq_brain.training.guards.NonFiniteGuards`);
        keeps the training set for the target cache and target-source fitting."""
        self.train_dataset = getattr(train_set, "dataset", train_set)
        return super().fit(epoch_counter, train_set, valid_set, *args, **kwargs)

    # Replaces SpeechBrain's on_fit_start (no super()): ours resumes with
    # recover_newest_complete and may branch, between its own steps.
    def on_fit_start(self):
        """Attaches frozen parts, resumes or branches, checks ranks agree."""
        self._attach_frozen_parts()
        self.target_encoder.attach(self.modules.encoder)
        self.train_stats = IntervalStats(self.hparams.n_codebooks, self.hparams.codebook_size)
        self._fresh_lr_state = copy.deepcopy(self.hparams.lr_annealing.__dict__)
        if self.checkpointer is not None:  # lets pretrained.py rebuild the encoder without YAML
            spec = EncoderSpec.from_hparams(vars(self.hparams))
            self.checkpointer.add_recoverable("encoder_spec", spec, optional_load=True)
        self._compile()
        self._wrap_distributed()
        self.init_optimizers()
        self.resumed_from, branched_step = resume_or_branch(
            self.checkpointer, getattr(self.hparams, "init_from", None), self.optimizer_step,
            self.modules, self.quantizer, self.target_encoder, self.schedule, self.device,
        )
        if branched_step is not None:
            self.optimizer_step = branched_step
        if self.resumed_from is not None or branched_step is not None:
            self.check_loaded_weights(getattr(self.resumed_from, "path", None)
                                      or self.hparams.init_from)
        self.check_rank_consistency("start")
        self.prepare_target_cache()
        logger.info(f"stage {self.schedule.stage} at optimizer step {self.optimizer_step}; "
                    f"transitions at {self.schedule.transitions}; quantizer "
                    f"{self.quantizer.checksum()[:12]}")

    def _attach_frozen_parts(self):
        """Quantizer, target encoder, stage schedule and the target maker; the
        target sources' frozen parts are checkpointed (unless already)."""
        self.quantizer = self.hparams.quantizer.to(self.device)
        self.target_encoder = self.hparams.target_encoder
        self.schedule = self.hparams.stage_schedule
        self.targets = TargetMaker(self.quantizer, self.hparams.target_sources)
        if self.checkpointer is not None:
            self.hparams.target_sources.add_recoverables(self.checkpointer)
        self.loss_terms = active_loss_terms(getattr(self.hparams, "loss_terms", None),
                                            getattr(self.hparams, "loss_weights", None))

    def check_rank_consistency(self, when):
        """Fails loudly if quantizer, target encoder, heads or stage differ
        across ranks (:func:`latent_rq_brain.training.stats.check_rank_consistency`)."""
        parts = dict(quantizer=self.quantizer.checksum(), **self.targets.target_sources.checksums())
        return check_rank_consistency(when, parts, unwrap(self.modules.heads), self.schedule.stage)

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
        self.hparams.train_logger.log_stats({"transition_to_stage": stage,
                                             "step": self.optimizer_step})
        if self.checkpointer is not None:
            self.check_finite_weights(f"the transition to stage {stage}")
            self.checkpointer.save_checkpoint(
                meta={"transition_to_stage": stage, "optimizer_step": self.optimizer_step},
                end_of_epoch=False,
            )
        self.prepare_target_cache()

    def fit_target_sources(self, stage):
        """Fits the data-fitted target sources of ``stage`` on ``fit_frames``
        frames of a seeded sample of the training set
        (:func:`latent_rq_brain.targets.maker.fit_stage_sources`)."""
        h = self.hparams
        fit_stage_sources(
            self.targets, stage, self.train_dataset,
            lambda batch: self.batch_features(batch.to(self.device)),
            h.fit_frames, h.seed, h.target_cache_batch_seconds, self.training_ctx,
        )

    def prepare_target_cache(self):
        """Builds or reopens the offline targets of this stage, if enabled
        (:func:`latent_rq_brain.targets.target_cache.stage_cache`)."""
        self.target_cache = None  # a stage's cache is never read by the next stage
        parts = (unwrap(self.modules.features), self.targets.target_sources, self.quantizer,
                 self.precision)
        self.target_cache = stage_cache(
            self.hparams, self.schedule.stage, self.train_dataset,
            parts, self.all_frame_targets,
        )

    @torch.no_grad()
    def all_frame_targets(self, batch):
        """Targets of every valid frame of ``batch`` (the target cache's input):
        codes (sum(enc_lens), N) int64, utterance by utterance, and enc_lens (B,)."""
        try:
            feats, enc_lens, _ = self.batch_features(batch.to(self.device))
            with self.training_ctx:
                codes = self.targets.all_frames(feats, enc_lens, self.schedule.stage)
        except RuntimeError as err:  # out of memory: the utterance named
            raise self.named_out_of_memory(
                err, batch, f"building the target cache of stage {self.schedule.stage}",
                "target_cache_batch_seconds") from err
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

    def masked_inputs(self, batch, split):
        """Clean features and span masks of a batch (the same masks at every
        evaluation): ``{"feats", "enc_lens", "n_samples", "mask", "audio_s", "ids"}``.

        Utterances whose audio or features are not finite (NaN, Inf) are
        dropped with a warning naming them
        (:meth:`~latent_rq_brain.training.guards.NonFiniteGuards.finite_features`);
        ``ids`` is then empty if none is left.
        """
        x = self.finite_features(batch, split)
        if not x["ids"]:
            return x
        gen = None
        if split != sb.Stage.TRAIN:
            gen = torch.Generator().manual_seed(
                zlib.crc32(",".join(x["ids"]).encode()) + self.hparams.seed
            )
        mask = sample_span_mask(  # as wide as the (possibly bucket-padded) batch
            x["enc_lens"], self.hparams.mask_prob, self.hparams.mask_length, gen,
            x["feats"].shape[1] // self.hparams.downsampling,
        )
        audio_s = float(x["n_samples"].sum()) / self.hparams.sample_rate
        return dict(x, mask=mask, audio_s=audio_s)  # n_samples kept: Mel frames of each

    # SpeechBrain's evaluate_batch passes the split by keyword, as stage=.
    def compute_forward(self, batch, stage):
        """Masks, targets and the student's logits, on masked frames only;
        ``stage`` is SpeechBrain's split (TRAIN, VALID, TEST)."""
        split = stage
        batch = batch.to(self.device)
        x = self.masked_inputs(batch, split)
        if not x["ids"]:  # every utterance was skipped
            return {"skipped": True}
        feats, enc_lens, mask = x["feats"], x["enc_lens"], x["mask"]
        if split == sb.Stage.TRAIN and self.target_cache is not None:
            cached = self.target_cache.lookup(x["ids"], enc_lens, self.device)
            targets = cached[mask[:, : cached.shape[1]]]  # mask: False past max(enc_lens)
        else:
            targets = self.compute_targets(feats, enc_lens, mask)
        out, hidden = self.modules.encoder(self.modules.mask_embedding(feats, mask), enc_lens)
        # clean feats, their valid Mel frames and the final output: for loss terms
        feat_lens = unwrap(self.modules.features).frame_lengths(x["n_samples"]).to(feats.device)
        return {"logits": self.modules.heads(out[mask]), "targets": targets, "mask": mask,
                "enc_lens": enc_lens, "audio_s": x["audio_s"], "hidden_states": hidden,
                "feats": feats, "feat_lens": feat_lens, "encoder_out": out,
                "clean_hidden_states": self.clean_hidden_states}

    def clean_hidden_states(self, feats, enc_lens, feat_lens):
        """Hidden states of the live encoder on clean (unmasked) features in
        eval mode (no dropout), with gradients: what a target encoder
        snapshotted now would see, the features trimmed to the longest
        utterance (``feat_lens`` Mel frames, rounded up to the encoder's
        downsampling). For loss terms that score them (the layer regulariser's
        ``clean`` pass); DDP's wrapper is bypassed (its reducer sums this
        graph's gradients with the training pass's)."""
        encoder = unwrap(self.modules.encoder)
        ds = encoder.downsampling
        keep = min(feats.shape[1], -(-int(feat_lens.max()) // ds) * ds)
        training = encoder.training
        encoder.eval()
        try:
            return encoder(feats[:, :keep], enc_lens)[1]
        finally:
            encoder.train(training)

    # SpeechBrain's evaluate_batch passes the split by keyword, as stage=.
    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy over masked frames and all codebooks, plus each named
        loss term times its weight (:mod:`latent_rq_brain.objectives.loss_terms`); ``stage``
        is SpeechBrain's split (TRAIN, VALID, TEST)."""
        split = stage
        if predictions.get("skipped"):
            # a zero loss that still reaches every parameter (DDP needs all
            # of them in the graph); no statistics
            return sum(p.sum() for p in self.modules.parameters() if p.requires_grad) * 0.0
        logits, targets = predictions["logits"], predictions["targets"]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        stats = self.train_stats if split == sb.Stage.TRAIN else self.valid_stats
        stats.update(loss.detach(), logits.detach(), targets, predictions["mask"],
                     predictions["enc_lens"], predictions["audio_s"])
        for name, (term, weight) in self.loss_terms.items():
            value, logs = term(predictions, self.optimizer_step)
            loss = loss + weight * value
            stats.update_terms({name: value, **{f"{name}.{k}": v for k, v in logs.items()}})
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
        if not should_step or self.step_skipped:
            return
        self.targets.target_sources.after_optimizer_step(  # the EMA target encoder
            self.modules.encoder, self.optimizer_step, self.schedule.stage)
        self.train_stats.steps += 1
        if self.optimizer_step % self.hparams.log_interval:
            return
        s = self.train_stats.summary()
        self.train_stats.reset()
        log_train_interval(  # on every rank: see transition()
            self.hparams.train_logger, getattr(self.hparams, "tensorboard_logger", None), s,
            self.optimizer_step, self.schedule.stage, self.optimizer.param_groups[0]["lr"],
        )

    def on_stage_start(self, split, epoch=None):
        """Fresh validation statistics (``split``: SpeechBrain's TRAIN, VALID, TEST)."""
        if split != sb.Stage.TRAIN:
            self.valid_stats = IntervalStats(self.hparams.n_codebooks,
                                             self.hparams.codebook_size)
            if self.quantizer is None:  # evaluate() without fit()
                self._attach_frozen_parts()

    def on_stage_end(self, split, split_loss, epoch=None):
        """Logs validation and saves an end-of-epoch checkpoint (``split``:
        SpeechBrain's TRAIN, VALID, TEST)."""
        if split == sb.Stage.TRAIN:
            self.last_train_loss = split_loss
            return
        s = self.valid_stats.summary()
        log_validation(  # on every rank: see transition()
            self.hparams.train_logger, s, epoch, self.optimizer_step, self.schedule.stage,
            self.last_train_loss,
        )
        if split == sb.Stage.VALID and self.checkpointer is not None:
            self.check_finite_weights(f"the end of epoch {epoch}")
            self.checkpointer.save_and_keep_only(
                meta={"valid_loss": s["loss"], "stage": self.schedule.stage},
                num_to_keep=self.hparams.ckpt_to_keep,
                ckpt_predicate=lambda c: "transition_to_stage" not in c.meta,
            )
