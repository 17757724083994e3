"""Probes one checkpoint on the Asterisk demo tasks: language ID and English ASR.

Prepares the probe manifests from the demo corpus (``recipes/demo/
prepare_asterisk.py``'s output, ``demo_data/asterisk`` by default), then runs
``recipes.probes.train_probe`` twice with CPU-sized settings:

* ``LID``: 5-way language ID, mean pooling + linear head, accuracy;
* ``ASR``: English character CTC, frame-wise MLP head (256), greedy decoding, WER/CER,
  best checkpoint selected on valid CER (WER stays near 100 % on this tiny task).

The hidden states of every prompt are computed once, in fp16, into
``<out_dir>/hidden_cache`` and shared by both tasks. Writes
``<out_dir>/{LID,ASR}/results.json`` and ``layer_weights.json`` and prints the
table row. Several checkpoints::

    # what make demo runs: the two runs' latest checkpoints
    python -m recipes.probes.run_demo_probes results/demo/best_rq results/probes/best_rq --label BEST-RQ
    python -m recipes.probes.run_demo_probes results/demo/latent_rq results/probes/latent_rq --label Latent-RQ
    # a single scheduled run: RUN@stage1 is its checkpoint written at the transition to
    # stage 1, i.e. the end of stage 0
    python -m recipes.probes.run_demo_probes RUN@stage1 results/probes/stage0 --label stage-0
    python -m recipes.probes.table results/probes/best_rq results/probes/latent_rq

Authors
 * latent-rq developers 2026
"""

import argparse
import logging
import os
import sys
import time

HPARAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hparams")

#: CPU-sized settings of the two demo probes (command-line overrides).
LID_OVERRIDES = {
    "number_of_epochs": 15,
    "patience": 5,
    "batch_size": 32,
    "lr": 0.02,  # 5e-3 left the linear head under-trained after 15 epochs
    "layer_weights_lr": 0.2,
}
ASR_OVERRIDES = {
    "number_of_epochs": 40,
    "patience": 10,
    "batch_size": 8,
    "lr": 0.003,
    "layer_weights_lr": 0.03,
    "rnn_layers": 0,  # frame-wise MLP: fast, and it probes the encoder's own context
    "rnn_size": 256,
    "head_dropout": 0.1,
    "select_metric": "CER",
}


def run(checkpoint, out_dir, data="demo_data/asterisk", label=None, device="cpu",
        lid_overrides=None, asr_overrides=None, tasks=("LID", "ASR")):
    """Runs the demo probes of one checkpoint; returns ``{task: results}``."""
    from recipes.probes import train_probe
    from recipes.probes.prepare_asterisk_probes import prepare_asterisk_probes

    out_dir = os.path.abspath(out_dir)
    data_dir = os.path.join(out_dir, "data")
    prepare_asterisk_probes(data, data_dir)
    common = {
        "checkpoint": checkpoint,
        "checkpoint_label": label or checkpoint,
        "hidden_state_cache": "disk",
        "cache_folder": os.path.join(out_dir, "hidden_cache"),
        "device": device,
    }
    specs = {
        "LID": (
            "classification.yaml",
            dict(common, task="LID", label_column="language",
                 data_folder=os.path.join(data_dir, "lid"),
                 output_folder=os.path.join(out_dir, "LID"),
                 **(LID_OVERRIDES | (lid_overrides or {}))),
        ),
        "ASR": (
            "ctc_asr.yaml",
            dict(common, task="ASR",
                 data_folder=os.path.join(data_dir, "asr_en"),
                 output_folder=os.path.join(out_dir, "ASR"),
                 **(ASR_OVERRIDES | (asr_overrides or {}))),
        ),
    }
    results = {}
    for task in tasks:
        yaml_file, args = specs[task]
        argv = [os.path.join(HPARAMS, yaml_file)] + [f"--{k}={v}" for k, v in args.items()]
        results[task] = train_probe.main(argv)
    return results


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run folder, save/ folder, CKPT+ folder or random:small")
    parser.add_argument("out_dir")
    parser.add_argument("--data", default="demo_data/asterisk", help="prepare_asterisk output")
    parser.add_argument("--label", default=None, help="row name in the table")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: on a busy 2-core machine 2 threads "
        "made the encoder up to 25x slower; 0 keeps torch's default)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    from latent_rq_brain.training.data import DataError

    try:
        results = run(args.checkpoint, args.out_dir, args.data, args.label, args.device)
    except (DataError, ValueError) as err:
        sys.exit(f"error: {err}")
    from recipes.probes.table import collect, make_table

    print(make_table(collect([(None, os.path.join(args.out_dir, t)) for t in results])))
    print(f"probed {args.checkpoint} on {', '.join(results)} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
