"""Guards of a training run: non-finite data, gradients and weights; out of memory.

:class:`NonFiniteGuards` is a mixin of :class:`latent_rq_brain.training.brain.LatentRQBrain`
(before ``sb.Brain`` in its bases) that keeps NaN/Inf out of the weights and
the checkpoints:

* utterances whose audio or features are not finite are dropped, named and
  counted (:meth:`~NonFiniteGuards.finite_features`);
* an optimizer step with non-finite gradients is skipped on every rank alike
  (:meth:`~NonFiniteGuards.optimizers_step`);
* no checkpoint is written, and no run ends with exit status 0, with
  non-finite weights (:meth:`~NonFiniteGuards.check_finite_weights`); weights
  loaded non-finite from a checkpoint stop the start, naming it as damaged
  (:meth:`~NonFiniteGuards.check_loaded_weights`).

:class:`NamedOutOfMemory` names the longest utterance of a batch (training,
validation, test) that runs out of memory. docs/training.md ("What goes wrong") lists the messages.

Authors
 * latent-rq developers 2026
"""

import logging

import torch

import speechbrain as sb
from latent_rq_brain.training.data import named_out_of_memory

logger = logging.getLogger(__name__)


class NonFiniteGuards:
    """Mixin of an ``sb.Brain``: skips non-finite utterances and steps, refuses
    non-finite weights.

    Expects of the brain: ``modules.features``, ``train_stats`` and (outside
    training) ``valid_stats`` (:class:`~latent_rq_brain.training.stats.IntervalStats`),
    and optionally ``train_dataset`` (to name the files of skipped utterances).
    """

    # Overrides fit (with super()): SpeechBrain has no hook after the last epoch's checkpoint.
    def fit(self, *args, **kwargs):
        """SpeechBrain's fit, then raises if the weights are not finite, so that
        a run never ends with exit status 0 and non-finite weights."""
        result = super().fit(*args, **kwargs)
        self.check_finite_weights("the end of training")
        return result

    def finite_features(self, batch, split):
        """Features of the utterances of ``batch`` whose audio and features are
        finite: ``{"feats", "enc_lens", "n_samples", "ids"}``, or ``{"ids": []}``
        if none is left. The others are dropped with a warning naming them
        (:meth:`finite_utterances`); the audio is then cut to the longest kept.

        Arguments
        ---------
        batch : speechbrain.dataio.batch.PaddedBatch
            On the device, with ``sig`` and ``id``.
        split : sb.Stage
            SpeechBrain's TRAIN, VALID or TEST (whose statistics count the skips).
        """
        wavs, rel = batch.sig
        n_samples = torch.round(rel * wavs.shape[1]).long()
        ids = list(batch.id)
        finite = torch.isfinite(wavs).all(1)
        for check in ("audio", "features"):
            keep = self.finite_utterances(finite, ids, split, check)
            if keep is not None:
                ids = [uid for uid, k in zip(ids, keep.tolist()) if k]
                if not ids:
                    return {"ids": ids}
                n_samples = n_samples[keep]
                wavs = wavs[keep][:, : int(n_samples.max())]  # padded to the longest kept
            if check == "audio" or keep is not None:
                feats, _, enc_lens = self.modules.features(wavs, n_samples)
                finite = torch.isfinite(feats).flatten(1).all(1)
        return {"feats": feats, "enc_lens": enc_lens, "n_samples": n_samples, "ids": ids}

    def finite_utterances(self, finite, ids, split, what):
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
        stats = self.train_stats if split == sb.Stage.TRAIN else self.valid_stats
        stats.skipped_utterances += len(bad)
        return finite

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

    def non_finite_weights(self):
        """Names of the module parameters that hold NaN or Inf."""
        return [
            name
            for name, p in self.modules.named_parameters()
            if not bool(torch.isfinite(p).all())
        ]

    def check_finite_weights(self, when):
        """Raises if a trained weight is not finite (before any checkpoint
        is written, and at the end of training). The weights were checked
        finite when loaded (:meth:`check_loaded_weights`), so training made
        them so: the advice is a lower learning rate."""
        bad = self.non_finite_weights()
        if bad:
            raise RuntimeError(
                f"non-finite weights at {when} in {len(bad)} tensor(s), e.g. "
                f"{bad[:3]}: they became non-finite in training; no checkpoint is written. "
                f"Resume from the last checkpoint in "
                f"{getattr(self.checkpointer, 'checkpoints_dir', '?')} "
                "with a lower lr or a higher warmup_steps."
            )

    def check_loaded_weights(self, source):
        """Raises if weights just loaded from ``source`` (a checkpoint resumed
        or branched from) are not finite: that file is damaged, and a lower
        learning rate would not help."""
        bad = self.non_finite_weights()
        if bad:
            raise RuntimeError(
                f"the weights loaded from {source} are non-finite in {len(bad)} tensor(s), "
                f"e.g. {bad[:3]}: that checkpoint is damaged (not a training divergence). "
                "Move it aside to resume from an older checkpoint, or branch from another run."
            )

    # A private SpeechBrain method: its only hook before an intra-epoch checkpoint.
    def _save_intra_epoch_ckpt(self):
        """SpeechBrain's intra-epoch checkpoint, refused for non-finite weights."""
        self.check_finite_weights("an intra-epoch checkpoint")
        super()._save_intra_epoch_ckpt()


class NamedOutOfMemory:
    """Mixin of an ``sb.Brain``: running out of memory in a training,
    validation or test batch names the batch's longest utterance
    (:func:`latent_rq_brain.training.data.named_out_of_memory`).

    Reads ``hparams.sample_rate`` (else the encoder's) and, if there,
    ``hparams.avoid_if_longer_than``; :attr:`oom_batch_setting` is the setting
    that sizes the batches (named in the advice).
    """

    oom_batch_setting = "max_batch_len"

    # Overrides fit and evaluate (with super()): the datasets name the files.
    def fit(self, *args, **kwargs):
        """SpeechBrain's fit; keeps the validation set to name its files."""
        self.valid_dataset = args[2] if len(args) > 2 else kwargs.get("valid_set")
        return super().fit(*args, **kwargs)

    def evaluate(self, test_set, *args, **kwargs):
        """SpeechBrain's evaluate; keeps the test set to name its files."""
        self.test_dataset = test_set
        return super().evaluate(test_set, *args, **kwargs)

    def fit_batch(self, batch):
        """SpeechBrain's fit_batch; out of memory raises ``torch.OutOfMemoryError``
        naming the batch's longest utterance."""
        try:
            return super().fit_batch(batch)
        except RuntimeError as err:
            raise self.named_out_of_memory(err, batch) from err

    def evaluate_batch(self, batch, stage):
        """SpeechBrain's evaluate_batch; out of memory names the batch's longest
        utterance and the stage (valid, test)."""
        try:
            return super().evaluate_batch(batch, stage)
        except RuntimeError as err:
            where = f"in {str(stage).split('.')[-1].lower()}"
            raise self.named_out_of_memory(err, batch, where) from err

    def named_out_of_memory(self, err, batch, where="", batch_setting=None):
        """``err``, or the out-of-memory error naming ``batch``'s longest utterance."""
        h = self.hparams
        sample_rate = getattr(h, "sample_rate", None) or getattr(
            getattr(h, "encoder", None), "sample_rate", 16000)
        datasets = [getattr(self, name, None)
                    for name in ("train_dataset", "valid_dataset", "test_dataset")]
        return named_out_of_memory(
            err, batch, datasets, sample_rate, getattr(h, "avoid_if_longer_than", None),
            where, batch_setting or self.oom_batch_setting)
