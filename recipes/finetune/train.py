#!/usr/bin/env python3
"""CTC fine-tuning of a pre-trained encoder over SentencePiece units.

The encoder comes from any latent-rq checkpoint (or a seeded random one, the
baseline) through :meth:`latent_rq_brain.sharing.pretrained.PretrainedEncoder.load`; no training
YAML is needed. A softmax-weighted sum of its hidden states feeds a BiLSTM
(or MLP) CTC head over the units of a SentencePiece tokenizer trained on the
training transcripts (SpeechBrain's wrapper). Two optimizers, as in
SpeechBrain's wav2vec 2.0 / BEST-RQ CTC recipes: the head's, and the
encoder's with its own, lower learning rate, which only steps after
``freeze_encoder_steps`` optimizer steps (before that the encoder runs
without autograd). ``finetune_layers`` picks the layers that train.
SpecAugment-style masks are applied to the log-Mel features in training.
Valid: greedy decoding; ``select_metric`` (WER, or CER for tiny corpora
where every WER is near 100 %) drives the annealing and picks the
checkpoint evaluated on test; test: greedy and
beam search (SpeechBrain's ``CTCBeamSearcher``), WER and CER.

Outputs in ``output_folder``: ``train_log.txt``, ``wer_test.txt``,
``results.json`` (``{"WER", "WER_beam", "CER", "valid_WER", "checkpoint", ...}``)
and the SpeechBrain checkpoints under ``save/``.

Usage::

    python -m recipes.finetune.train recipes/finetune/hparams/ctc_sentencepiece.yaml \\
        --checkpoint=RUN --data_folder=results/ft_data/ls100 --output_folder=results/ft/RUN

Authors
 * latent-rq developers 2026
"""

import csv
import json
import logging
import os
import sys
import time

if __name__ == "__main__":  # a usage error is reported before torch and SpeechBrain load
    from latent_rq_brain.training.arguments import check_or_exit

    check_or_exit(sys.argv[1:], "recipes.finetune.train")

import torch  # noqa: E402

import speechbrain as sb
from latent_rq_brain.training.arguments import exit_on_usage_error
from latent_rq_brain.training.data import read_audio_checked
from latent_rq_brain.training.guards import NamedOutOfMemory
from recipes.probes.manifests import check_task, exit_on_data_error
from recipes.probes.probing import stack_states
from recipes.probes.train_probe import setup_experiment
from speechbrain.utils.distributed import run_on_main
from speechbrain.utils.metric_stats import ErrorRateStats

logger = logging.getLogger(__name__)


class FinetuneBrain(NamedOutOfMemory, sb.Brain):
    """Encoder (``modules.encoder``, a :class:`~latent_rq_brain.training.finetune.TrainableEncoder`)
    -> ``modules.layer_sum`` -> ``modules.head`` -> CTC over ``hparams.tokenizer``'s units."""

    oom_batch_setting = "batch_size"  # out of memory: the advice names it

    def on_fit_start(self):
        """Starts the per-epoch valid history (``results.json``)."""
        self.valid_history = []
        super().on_fit_start()

    def encoder_frozen(self):
        """True while the encoder must not train (warm-up steps, or no trainable layer)."""
        return (
            self.optimizer_step < self.hparams.freeze_encoder_steps
            or not self.modules.encoder.trainable_layers
        )

    def init_optimizers(self):
        """The head's optimizer and, if any layer trains, the encoder's."""
        head_params = list(self.modules.head.parameters()) + list(
            self.modules.layer_sum.parameters()
        )
        self.optimizers_dict = {"model_optimizer": self.hparams.model_opt_class(head_params)}
        encoder_params = self.modules.encoder.trainable_parameters()
        if encoder_params:
            self.optimizers_dict["encoder_optimizer"] = self.hparams.encoder_opt_class(
                encoder_params
            )
        if self.checkpointer is not None:
            for name, opt in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, opt)

    def freeze_optimizers(self, optimizers):
        """The encoder's optimizer only steps once the encoder is unfrozen."""
        if self.encoder_frozen():
            return {"model_optimizer": optimizers["model_optimizer"]}
        return optimizers

    def compute_forward(self, batch, stage):
        """Waveforms -> (B, T, units) log-probabilities and (B,) relative lengths."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        train = stage == sb.Stage.TRAIN
        with torch.set_grad_enabled(train and not self.encoder_frozen()):
            states, lens = self.modules.encoder(wavs, wav_lens)
        x = self.modules.layer_sum(stack_states(states))
        log_probs = self.modules.head(x, lens)
        return log_probs, lens.to(log_probs.device).float() / log_probs.shape[1]

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; outside training, greedy (and on test beam) decoding and metrics."""
        log_probs, rel_lens = predictions
        tokens, token_lens = batch.tokens
        loss = sb.nnet.losses.ctc_loss(
            log_probs, tokens, rel_lens, token_lens, self.hparams.blank_index
        )
        if stage != sb.Stage.TRAIN:
            refs = [text.split() for text in batch.wrd]
            greedy = self.decode_greedy(log_probs, rel_lens)
            self.metrics["WER"].append(batch.id, greedy, refs)
            self.metrics["CER"].append(batch.id, greedy, refs)
            if stage == sb.Stage.TEST and self.hparams.beam_size:
                beam = self.decode_beam(log_probs, rel_lens)
                self.metrics["WER_beam"].append(batch.id, beam, refs)
        return loss

    def decode_greedy(self, log_probs, rel_lens):
        """Best unit per frame, repeats merged, blanks dropped -> words."""
        sp = self.hparams.tokenizer.sp
        seqs = sb.decoders.ctc_greedy_decode(
            log_probs, rel_lens, blank_id=self.hparams.blank_index
        )
        return [sp.decode_ids([int(t) for t in seq]).split() for seq in seqs]

    def decode_beam(self, log_probs, rel_lens):
        """SpeechBrain's CTC prefix beam search (no language model) -> words."""
        if getattr(self, "beam_searcher", None) is None:
            sp = self.hparams.tokenizer.sp
            self.beam_searcher = sb.decoders.CTCBeamSearcher(
                blank_index=self.hparams.blank_index,
                vocab_list=[sp.id_to_piece(i) for i in range(sp.get_piece_size())],
                beam_size=self.hparams.beam_size,
            )
        hyps = self.beam_searcher(log_probs.detach().cpu(), rel_lens.cpu())
        return [h[0].text.split() if h else [] for h in hyps]

    def on_stage_start(self, stage, epoch=None):
        """Resets the metrics."""
        if stage == sb.Stage.TRAIN:
            self.epoch_t0 = time.perf_counter()
        else:
            self.metrics = {
                "WER": ErrorRateStats(),
                "CER": ErrorRateStats(split_tokens=True),
                "WER_beam": ErrorRateStats(),
            }

    def stage_stats(self, stage_loss):
        """Loss and error rates (%) of a valid/test pass."""
        stats = {"loss": round(stage_loss, 4)}
        for name, metric in self.metrics.items():
            if metric.scores:
                stats[name] = round(metric.summarize("error_rate"), 2)
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs; on valid anneals the learning rates and keeps the best checkpoint."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        stats = self.stage_stats(stage_loss)
        if stage == sb.Stage.VALID:
            key = self.hparams.select_metric
            lrs = self.anneal(stats[key])
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "step": self.optimizer_step,
                    "encoder": "frozen" if self.encoder_frozen() else "training",
                    "epoch_time_s": round(time.perf_counter() - self.epoch_t0, 2),
                    **lrs,
                },
                train_stats={"loss": round(self.train_loss, 4)},
                valid_stats=stats,
            )
            self.valid_history.append(dict(stats, epoch=epoch, step=self.optimizer_step))
            self.checkpointer.save_and_keep_only(
                meta={key: stats[key], "step": self.optimizer_step}, min_keys=[key]
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            with open(self.hparams.wer_file, "w", encoding="utf-8") as f:
                self.metrics["WER"].write_stats(f)
            self.test_stats = stats

    def anneal(self, error_rate):
        """NewBob on the valid ``select_metric`` for the head and (once training) the encoder."""
        lrs = {}
        pairs = [("model_optimizer", self.hparams.lr_annealing_model, "lr")]
        if not self.encoder_frozen():
            pairs.append(("encoder_optimizer", self.hparams.lr_annealing_encoder, "lr_encoder"))
        for name, scheduler, key in pairs:
            old, new = scheduler(error_rate)
            sb.nnet.schedulers.update_learning_rate(self.optimizers_dict[name], new)
            lrs[key] = old
        return lrs


def train_tokenizer(hparams, train_rows):
    """SentencePiece on the training transcripts (column ``text_column``)."""
    folder = hparams["save_folder"]
    text_csv = os.path.join(folder, "tokenizer_train.csv")

    def write():
        os.makedirs(folder, exist_ok=True)
        with open(text_csv, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ID", "wrd"])
            for uid, row in sorted(train_rows.items()):
                writer.writerow([uid, row[hparams["text_column"]].strip()])

    run_on_main(write)
    return hparams["tokenizer"](annotation_train=text_csv)


def dataio_prepare(hparams):
    """Checked manifests -> datasets with ``sig``, ``wrd`` and ``tokens``.

    Returns
    -------
    datasets : dict
        ``{"train": DynamicItemDataset, "valid": ..., "test": ...}``.
    tokenizer : speechbrain.tokenizers.SentencePiece.SentencePiece
        Trained on the training transcripts (also ``hparams["tokenizer"]``).
    """
    column = hparams["text_column"]
    manifests = {s: hparams[f"{s}_csv"] for s in ("train", "valid", "test")}
    rows = check_task(manifests, label_column=column, closed_set=False, check_audio=True)
    tokenizer = train_tokenizer(hparams, rows["train"])
    hparams["tokenizer"] = tokenizer
    sr = hparams["pretrained"].sample_rate
    blank = hparams["blank_index"]

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_audio_checked(wav, sr)

    @sb.utils.data_pipeline.takes("text")
    @sb.utils.data_pipeline.provides("wrd", "tokens")
    def text_pipeline(text):
        words = " ".join(text.split())
        yield words
        ids = [i for i in tokenizer.sp.encode_as_ids(words) if i != blank]  # <unk>
        yield torch.LongTensor(ids)

    datasets = {}
    for split, split_rows in rows.items():
        data = {
            uid: {"wav": r["wav"], "duration": r["duration"], "text": r[column]}
            for uid, r in split_rows.items()
        }
        ds = sb.dataio.dataset.DynamicItemDataset(
            data, dynamic_items=[audio_pipeline, text_pipeline],
            output_keys=["id", "sig", "wrd", "tokens"],
        )
        if split == "train":
            sorting = hparams["sorting"]
            if sorting in ("ascending", "descending"):
                ds = ds.filtered_sorted(
                    sort_key="duration", reverse=sorting == "descending",
                    key_max_value={"duration": hparams["avoid_if_longer_than"]},
                )
                hparams["train_dataloader_opts"]["shuffle"] = False
            else:
                ds = ds.filtered_sorted(
                    key_max_value={"duration": hparams["avoid_if_longer_than"]}
                )
                hparams["train_dataloader_opts"]["shuffle"] = True
        else:
            ds = ds.filtered_sorted(sort_key="duration")
        datasets[split] = ds
    return datasets, tokenizer


def build_modules(hparams, n_units):
    """``{"encoder", "layer_sum", "head"}``; the last two added to the checkpointer."""
    encoder = hparams["encoder"]
    modules = {
        "encoder": encoder,
        "layer_sum": hparams["layer_sum"](num_layers=encoder.num_hidden_states),
        "head": hparams["head"](input_size=encoder.hidden_size, n_outputs=n_units),
    }
    for name in ("layer_sum", "head"):
        hparams["checkpointer"].add_recoverable(name, modules[name])
    return modules


def main(argv):
    """Parses arguments, prepares data and tokenizer, fine-tunes, tests the best
    checkpoint; returns the content of ``results.json``."""
    t0 = time.perf_counter()
    hparams, run_opts = setup_experiment(argv, "recipes.finetune.train")
    datasets, tokenizer = dataio_prepare(hparams)
    modules = build_modules(hparams, tokenizer.sp.get_piece_size())
    brain = FinetuneBrain(
        modules=modules,
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    loaders = {"train_loader_kwargs": hparams["train_dataloader_opts"],
               "valid_loader_kwargs": hparams["test_dataloader_opts"]}
    brain.fit(hparams["epoch_counter"], datasets["train"], datasets["valid"], **loaders)
    steps = brain.optimizer_step  # evaluate() recovers the best checkpoint's counters
    brain.evaluate(
        datasets["test"], min_key=hparams["select_metric"], test_loader_kwargs=hparams["test_dataloader_opts"]
    )
    info = hparams["pretrained"].info
    results = dict(
        brain.test_stats,
        valid=brain.valid_history,
        checkpoint=str(hparams["checkpoint"]),
        checkpoint_path=info.get("checkpoint"),
        checkpoint_stage=info.get("stage"),
        checkpoint_step=info.get("step"),
        finetune_layers=modules["encoder"].trainable_layers,
        freeze_encoder_steps=hparams["freeze_encoder_steps"],
        optimizer_steps=steps,
        best_step=brain.optimizer_step,
        units=tokenizer.sp.get_piece_size(),
        select_metric=hparams["select_metric"],
        elapsed_s=round(time.perf_counter() - t0, 1),
    )
    with open(os.path.join(hparams["output_folder"], "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    logger.info("results: %s", json.dumps(results))
    return results


if __name__ == "__main__":
    with exit_on_data_error(), exit_on_usage_error("recipes.finetune.train"):
        main(sys.argv[1:])
