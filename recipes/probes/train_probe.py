#!/usr/bin/env python3
"""Frozen-encoder probes (SUPERB style): ASR with CTC, utterance classification.

The pre-trained encoder is frozen (outside ``Brain.modules``, eval mode, no
gradient); only a learnable softmax-weighted sum of all its hidden states and
a small head are trained. The best validation checkpoint (``select_metric``)
is kept and evaluated on test. Outputs in ``output_folder``:

* ``results.json``: ``{"task", "task_type", "metric", "value", "checkpoint", ...}``
  (read by ``python -m recipes.probes.table``);
* ``layer_weights.json``: ``{"task", "checkpoint", "weights", ...}`` of the best
  checkpoint; ``layer_weights_history.json`` / ``.npy``: weights per epoch;
* ``train_log.txt``; for ASR ``wer_test.txt`` (per-utterance alignments).

Usage::

    python -m recipes.probes.train_probe recipes/probes/hparams/ctc_asr.yaml \\
        --checkpoint=results/demo --data_folder=results/probe_data/librispeech
    python -m recipes.probes.train_probe recipes/probes/hparams/classification.yaml \\
        --checkpoint=results/demo --data_folder=results/probe_data/fsc \\
        --task=IC --label_column=intent

Authors
 * latent-rq developers 2026
"""

import json
import logging
import os
import sys
import time

if __name__ == "__main__":  # a usage error is reported before torch and SpeechBrain load
    from latent_rq_brain.training.arguments import check_or_exit

    check_or_exit(sys.argv[1:], "recipes.probes.train_probe")

import numpy as np  # noqa: E402
import torch
from hyperpyyaml import load_hyperpyyaml

import speechbrain as sb
from latent_rq_brain.training.arguments import (exit_on_usage_error, no_folders_left_on_refusal,
                                       parse_arguments)
from latent_rq_brain.training.data import read_audio_checked
from latent_rq_brain.training.guards import NamedOutOfMemory
from recipes.probes.manifests import check_task, exit_on_data_error
from recipes.probes.probing import (
    HiddenStateCache,
    encoder_fingerprint,
    stack_states,
)
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.metric_stats import ErrorRateStats

logger = logging.getLogger(__name__)

BLANK = "<blank>"
TASK_TYPES = ("ctc", "classification")


class ProbeBrain(NamedOutOfMemory, sb.Brain):
    """Weighted layer sum + head on a frozen encoder (``hparams.encoder``).

    ``hparams.task_type`` is ``ctc`` (character CTC, greedy decoding, WER and
    CER) or ``classification`` (mean pooling, accuracy). Batches hold either
    cached hidden states (``hidden``: (B, T, layers, D)) or waveforms (``sig``).
    """

    oom_batch_setting = "batch_size"  # out of memory: the advice names it

    def on_fit_start(self):
        """Moves the frozen encoder (not in ``modules``) to the device."""
        self.hparams.encoder.to(self.device).eval()
        super().on_fit_start()

    def init_optimizers(self):
        """One optimizer; the layer weights get their own learning rate."""
        groups = [
            {"params": list(self.modules.head.parameters())},
            {
                "params": list(self.modules.layer_sum.parameters()),
                "lr": self.hparams.layer_weights_lr,
            },
        ]
        self.optimizer = self.opt_class(groups)
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def hidden_states(self, batch):
        """(B, T, layers, D) hidden states and (B,) valid frames of a batch."""
        if getattr(batch, "hidden", None) is not None:
            states, rel = batch.hidden
            lens = torch.round(rel * states.shape[1]).long()
            return states.float(), lens
        wavs, rel = batch.sig
        encoder = self.hparams.encoder.to(self.device).eval()
        with torch.no_grad():
            states, lens = encoder(wavs, rel)
        return stack_states(states), lens.to(self.device)

    def compute_forward(self, batch, stage):
        """Frozen encoder (or cache) -> weighted sum -> head."""
        batch = batch.to(self.device)
        states, lens = self.hidden_states(batch)
        x = self.modules.layer_sum(states)
        return self.modules.head(x, lens), lens

    def compute_objectives(self, predictions, batch, stage):
        """CTC or cross-entropy loss; metrics outside training."""
        out, lens = predictions
        if self.hparams.task_type == "ctc":
            tokens, tok_rel = batch.tokens
            tok_lens = torch.round(tok_rel * tokens.shape[1]).long()
            loss = torch.nn.functional.ctc_loss(
                out.transpose(0, 1),
                tokens,
                lens,
                tok_lens,
                blank=0,
                reduction="mean",
                zero_infinity=True,
            )
            if stage != sb.Stage.TRAIN:
                hyps = greedy_ctc(out, lens, self.hparams.vocab)
                refs = [t.split() for t in batch.text]
                hyp_words = [h.split() for h in hyps]
                self.wer_metric.append(batch.id, hyp_words, refs)
                self.cer_metric.append(batch.id, hyp_words, refs)
            return loss
        labels = batch.label_id.data.squeeze(-1)
        loss = torch.nn.functional.cross_entropy(out, labels)
        if stage != sb.Stage.TRAIN:
            correct = (out.argmax(-1) == labels).sum().item()
            self.n_correct += correct
            self.n_seen += labels.numel()
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Resets the metrics."""
        if stage == sb.Stage.TRAIN:
            self.epoch_t0 = time.perf_counter()
        if stage != sb.Stage.TRAIN:
            self.wer_metric = ErrorRateStats()
            self.cer_metric = ErrorRateStats(split_tokens=True)
            self.n_correct = self.n_seen = 0

    def stage_metrics(self):
        """Metrics of a valid/test pass, accuracies and error rates in %."""
        if self.hparams.task_type == "ctc":
            return {
                "WER": self.wer_metric.summarize("error_rate"),
                "CER": self.cer_metric.summarize("error_rate"),
            }
        return {"acc": 100.0 * self.n_correct / max(1, self.n_seen)}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, layer weights per epoch, best-checkpoint keeping, results."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        stats = {"loss": round(stage_loss, 4)}
        stats.update({k: round(v, 2) for k, v in self.stage_metrics().items()})
        weights = self.modules.layer_sum.weights().tolist()
        key = self.hparams.select_metric
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "layer_weights": [round(w, 4) for w in weights],
                    "epoch_time_s": round(time.perf_counter() - self.epoch_t0, 2),
                },
                train_stats={"loss": round(self.train_loss, 4)},
                valid_stats=stats,
            )
            self.record_weights(epoch, weights, stats)
            meta = {key: stats[key], "epoch": epoch}
            keys = {"min_keys" if key in ("WER", "CER") else "max_keys": [key]}
            counter = self.hparams.epoch_counter
            if hasattr(counter, "update_metric"):  # before saving: its state is saved too
                counter.update_metric(stats[key])
            self.checkpointer.save_and_keep_only(meta=meta, num_to_keep=1, **keys)
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            if self.hparams.task_type == "ctc":
                with open(self.hparams.wer_file, "w", encoding="utf-8") as f:
                    self.wer_metric.write_stats(f)
            self.test_stats = stats
            self.test_weights = weights

    def record_weights(self, epoch, weights, stats):
        """Appends the epoch's layer weights to the JSON and ``.npy`` histories."""
        folder = self.hparams.output_folder
        path = os.path.join(folder, "layer_weights_history.json")
        history = []
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                history = [h for h in json.load(f) if h["epoch"] < epoch]
        history.append({"epoch": epoch, "weights": weights, "valid": stats})
        with open(path, "w", encoding="utf-8") as f:
            json.dump(history, f, indent=1)
        np.save(
            os.path.join(folder, "layer_weights_history.npy"),
            np.array([h["weights"] for h in history], dtype=np.float32),
        )


def greedy_ctc(log_probs, lens, vocab):
    """Greedy CTC decoding: best token per frame, merge repeats, drop blanks (id 0).

    Example
    -------
    >>> vocab = [BLANK, " ", "A", "B"]
    >>> lp = torch.log(torch.eye(4)[[2, 2, 0, 2, 1, 3, 3]]).unsqueeze(0)
    >>> greedy_ctc(lp, torch.tensor([7]), vocab), greedy_ctc(lp, torch.tensor([4]), vocab)
    (['AA B'], ['AA'])
    """
    best = log_probs.argmax(-1).cpu()
    texts = []
    for seq, n in zip(best, lens.cpu()):
        seq = torch.unique_consecutive(seq[: int(n)]).tolist()
        texts.append(" ".join("".join(vocab[t] for t in seq if t != 0).split()))
    return texts


def dataio_prepare(hparams, device="cpu"):
    """Checked manifests -> datasets; builds the vocabulary and the hidden-state cache.

    Returns
    -------
    dict
        ``{"train": DynamicItemDataset, "valid": ..., "test": ...}``; sets
        ``hparams["vocab"]`` (CTC) or ``hparams["labels"]`` (classification).
    """
    task_type = hparams["task_type"]
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
    column = hparams["text_column"] if task_type == "ctc" else hparams["label_column"]
    manifests = {s: hparams[f"{s}_csv"] for s in ("train", "valid", "test")}
    speaker = hparams.get("speaker_column")
    rows = check_task(
        manifests,
        label_column=column,
        speaker_column=speaker,
        disjoint=[("train", "valid"), ("train", "test"), ("valid", "test")] if speaker else (),
        closed_set=task_type == "classification",
        check_audio=True,
    )
    out = hparams["output_folder"]
    if task_type == "ctc":
        chars = sorted({c for split in rows.values() for r in split.values() for c in r[column]})
        hparams["vocab"] = [BLANK] + chars
        index = {c: i for i, c in enumerate(hparams["vocab"])}
        with open(os.path.join(out, "tokens.json"), "w", encoding="utf-8") as f:
            json.dump(hparams["vocab"], f)
    else:
        hparams["labels"] = sorted({r[column].strip() for r in rows["train"].values()})
        index = {lab: i for i, lab in enumerate(hparams["labels"])}
        with open(os.path.join(out, "labels.json"), "w", encoding="utf-8") as f:
            json.dump(hparams["labels"], f)

    encoder = hparams["encoder"]
    cache = None
    mode = hparams.get("hidden_state_cache") or "none"
    if mode not in ("memory", "disk", "none"):
        raise ValueError(f"hidden_state_cache must be memory, disk or none, got {mode!r}")
    if mode != "none":
        seconds = sum(r["duration"] for split in rows.values() for r in split.values())
        frames = seconds * encoder.sample_rate / encoder.downsample_rate
        gb = frames * encoder.num_hidden_states * encoder.hidden_size * 2 / 1e9
        if gb > hparams["cache_max_gb"]:
            logger.warning(
                "Hidden-state cache would take %.1f GB > cache_max_gb=%s: running the "
                "encoder online instead", gb, hparams["cache_max_gb"]
            )
            mode = "none"
        else:
            folder = None
            if mode == "disk":
                folder = os.path.join(hparams["cache_folder"], encoder_fingerprint(encoder))
            # under cache_max_gb: a disk cache is also held in memory once read
            cache = HiddenStateCache(encoder, folder, keep_in_memory=True)
            t0 = time.perf_counter()
            encoder.to(device)
            for split in rows.values():
                cache.build(
                    {uid: r["wav"] for uid, r in split.items()},
                    batch_seconds=hparams["cache_batch_seconds"],
                    device=device,
                )
            logger.info(
                "Hidden states of %.0f s of audio cached (%s, %.2f GB) in %.1f s",
                seconds, mode, gb, time.perf_counter() - t0,
            )

    sr = encoder.sample_rate
    datasets = {}
    for split, split_rows in rows.items():
        data = {
            uid: {"wav": r["wav"], "duration": r["duration"], "target": r[column]}
            for uid, r in split_rows.items()
        }
        ds = DynamicItemDataset(data)
        keys = ["id"]
        if cache is not None:

            @sb.utils.data_pipeline.takes("id")
            @sb.utils.data_pipeline.provides("hidden")
            def hidden_pipeline(uid):
                return cache.get(uid)

            ds.add_dynamic_item(hidden_pipeline)
            keys.append("hidden")
        else:

            @sb.utils.data_pipeline.takes("wav")
            @sb.utils.data_pipeline.provides("sig")
            def audio_pipeline(wav):
                return read_audio_checked(wav, sr)

            ds.add_dynamic_item(audio_pipeline)
            keys.append("sig")
        if task_type == "ctc":

            @sb.utils.data_pipeline.takes("target")
            @sb.utils.data_pipeline.provides("text", "tokens")
            def text_pipeline(text):
                yield text
                yield torch.LongTensor([index[c] for c in text])

            ds.add_dynamic_item(text_pipeline)
            keys += ["text", "tokens"]
        else:

            @sb.utils.data_pipeline.takes("target")
            @sb.utils.data_pipeline.provides("label_id")
            def label_pipeline(label):
                return torch.LongTensor([index[label.strip()]])

            ds.add_dynamic_item(label_pipeline)
            keys.append("label_id")
        ds.set_output_keys(keys)
        if split != "train":
            ds = ds.filtered_sorted(sort_key="duration")
        datasets[split] = ds
    return datasets


def write_results(brain, hparams, elapsed):
    """``results.json`` and ``layer_weights.json`` of the evaluated best checkpoint."""
    encoder = hparams["encoder"]
    stats = brain.test_stats
    metric = hparams["metric"]
    ckpt_label = hparams.get("checkpoint_label") or str(hparams["checkpoint"])
    results = {
        "task": hparams["task"],
        "task_type": hparams["task_type"],
        "metric": metric,
        "value": stats[metric],
        "higher_is_better": metric not in ("WER", "CER"),
        "checkpoint": ckpt_label,
        "checkpoint_path": encoder.info.get("checkpoint"),
        "checkpoint_stage": encoder.info.get("stage"),
        "checkpoint_step": encoder.info.get("step"),
        "test": stats,
        "best_epoch": brain.hparams.epoch_counter.current,
        "select_metric": hparams["select_metric"],
        "layer_weights": brain.test_weights,
        "num_classes": len(hparams["labels"]) if "labels" in hparams else None,
        "elapsed_s": round(elapsed, 1),
    }
    out = hparams["output_folder"]
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out, "layer_weights.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "task": hparams["task"],
                "checkpoint": ckpt_label,
                "weights": brain.test_weights,
                "layers": ["cnn"] + [str(i) for i in range(len(brain.test_weights) - 1)],
                "best_epoch": results["best_epoch"],
            },
            f,
            indent=2,
        )
    return results


def setup_experiment(argv, prog="recipes.probes.train_probe"):
    """SpeechBrain's recipe start: command line -> (hparams, run_opts), output
    folder created with the YAML and overrides saved (also used by
    ``recipes/finetune/train.py``). The command line goes through the
    project's front door (:func:`latent_rq_brain.training.arguments.parse_arguments`:
    typed run options, a mistyped key or a bad value named in one line)."""
    hparams_file, run_opts, overrides = parse_arguments(argv, prog)
    with no_folders_left_on_refusal(hparams_file, overrides), \
            open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    return hparams, run_opts


def main(argv):
    """Parses arguments, prepares data, trains, evaluates the best checkpoint.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    t0 = time.perf_counter()
    hparams, run_opts = setup_experiment(argv)
    device = run_opts.get("device", "cpu") if isinstance(run_opts, dict) else getattr(
        run_opts, "device", "cpu"
    )
    datasets = dataio_prepare(hparams, device)
    encoder = hparams["encoder"]
    n_out = len(hparams["vocab"]) if hparams["task_type"] == "ctc" else len(hparams["labels"])
    modules = {
        "layer_sum": hparams["layer_sum"](num_layers=encoder.num_hidden_states),
        "head": hparams["head"](input_size=encoder.hidden_size, n_outputs=n_out),
    }
    hparams["metric"] = "WER" if hparams["task_type"] == "ctc" else "acc"
    checkpointer = hparams["checkpointer"]
    for name, module in modules.items():
        checkpointer.add_recoverable(name, module)
    brain = ProbeBrain(
        modules=modules,
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=checkpointer,
    )
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["test_dataloader_opts"],
    )
    key = hparams["select_metric"]
    brain.evaluate(
        datasets["test"],
        **{"min_key" if key in ("WER", "CER") else "max_key": key},
        test_loader_kwargs=hparams["test_dataloader_opts"],
    )
    results = write_results(brain, hparams, time.perf_counter() - t0)
    logger.info("results: %s", json.dumps(results))
    return results


if __name__ == "__main__":
    with exit_on_data_error(), exit_on_usage_error("recipes.probes.train_probe"):
        main(sys.argv[1:])
