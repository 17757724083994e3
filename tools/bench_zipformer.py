"""Benchmark: the Zipformer-like encoder's options and where its time goes.

Times a training forward + backward of the encoder alone (loss: mean square
of the output) on one batch of features, round-robin (one call of every
variant per round, so that load drift hits them all alike):

* the Conformer of ``--conformer`` (the reference);
* the Zipformer-like encoder of ``--config`` with each choice of norm
  (LayerNorm, BiasNorm) and activation (Swish, SwooshR, GELU): the cost of
  Zipformer's BiasNorm and Swoosh on CPU;
* the CNN front-end and projection alone (shared by every encoder), so that
  the stacks' own share is visible;

then profiles one variant (``torch.profiler``, top operators by self time)
and prints the share of the layer FLOPs each stack's rate leaves
(:func:`latent_rq_brain.model.zipformer_encoder.encoder_flops_ratio`).

Usage::

    python -m tools.bench_zipformer                      # small configs, CPU
    python -m tools.bench_zipformer --batch-seconds 20 --rounds 5

Authors
 * latent-rq developers 2026
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from latent_rq_brain.model.zipformer_encoder import ZipformerEncoder, encoder_flops_ratio
from latent_rq_brain.sharing.pretrained import build_encoder, yaml_config
from tools.bench import paired_ratio, ratio_spread
from tools.profile_step import summarize

#: (label, norm, activation) of the timed Zipformer variants; the first is the default.
OPTIONS = [
    ("LayerNorm + Swish (default)", "layernorm", "swish"),
    ("BiasNorm + Swish", "biasnorm", "swish"),
    ("LayerNorm + SwooshR", "layernorm", "swoosh"),
    ("BiasNorm + SwooshR (Zipformer's)", "biasnorm", "swoosh"),
    ("LayerNorm + GELU", "layernorm", "gelu"),
]


def zipformer_variant(config, norm, activation, seed=0):
    """The encoder of ``config`` (a zipformer spec) with another norm and activation."""
    torch.manual_seed(seed)
    _, enc = build_encoder(config)
    torch.manual_seed(seed)
    return ZipformerEncoder(
        enc.frontend, enc.projection, enc.d_model, enc.stacks[0].layers[0].attn.nhead,
        enc.stacks[0].layers[0].ffn[0].out_features, enc.num_layers,
        num_stacks=len(enc.stacks), max_factor=max(enc.factors),
        kernel_size=enc.stacks[0].layers[0].conv.depthwise.kernel_size[0],
        norm=norm, activation=activation,
    )


class FrontEnd(torch.nn.Module):
    """The front-end and projection of an encoder, as an encoder: ``(x, [x])``."""

    def __init__(self, encoder):
        super().__init__()
        self.frontend, self.projection = encoder.frontend, encoder.projection

    def forward(self, feats, enc_lens):
        """Projected front-end output."""
        src = self.frontend(feats)
        x = self.projection(src.reshape(src.shape[0], src.shape[1], -1))
        return x, [x]


def train_call(encoder, feats, enc_lens):
    """One training forward + backward of ``encoder`` (gradients dropped)."""
    def fn():
        out, _ = encoder(feats, enc_lens)
        out.pow(2).mean().backward()
        for p in encoder.parameters():
            p.grad = None
    return fn


def run(args):
    """Times and profiles; returns (markdown, summary)."""
    torch.manual_seed(0)
    conformer = yaml_config(args.conformer)
    config = yaml_config(args.config)
    n = max(1, int(round(args.batch_seconds / args.utt_seconds)))
    frames = int(args.utt_seconds * 100) // 4 * 4
    feats = torch.randn(n, frames, int(config["n_mels"]))
    enc_lens = torch.full((n,), frames // 4)
    encoders = {"Conformer (" + os.path.basename(args.conformer) + ")": build_encoder(conformer)[1]}
    for label, norm, act in OPTIONS:
        encoders[label] = zipformer_variant(config, norm, act)
    encoders["CNN front-end + projection alone"] = FrontEnd(zipformer_variant(config, *OPTIONS[0][1:]))
    calls = {label: train_call(enc.train(), feats, enc_lens) for label, enc in encoders.items()}
    times = {label: [] for label in calls}
    for r in range(args.warmup + args.rounds):
        for label, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if r >= args.warmup:
                times[label].append(time.perf_counter() - t0)
    base = next(iter(calls))
    default = OPTIONS[0][0]
    rows = [{"variant": label,
             "params": sum(p.numel() for p in encoders[label].parameters()),
             "ms": 1000 * statistics.median(times[label]),
             "vs_conformer": paired_ratio(times, label, base),
             "vs_default": paired_ratio(times, label, default),
             "spread": ratio_spread(times, label, default)} for label in calls]
    zip_ = encoders[default]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile_calls):
            calls[default]()
    top = summarize(prof, cuda=False, top=args.top)
    dev = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
           f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end")
    md = [
        "## Zipformer-like encoder: options and profile (encoder forward + backward)", "",
        f"- machine: {dev}; torch {torch.__version__}",
        f"- batch: {n} x {frames} feature frames ({n * frames / 100:.0f} s), {frames // 4} base "
        f"frames each; median of {args.rounds} rounds after {args.warmup} warm-up rounds",
        f"- `{args.config}`: stacks at 1/{', 1/'.join(map(str, zip_.factors))} of the base rate, "
        f"{zip_.layer_counts} layers; their layer matmuls cost "
        f"{encoder_flops_ratio(zip_.factors, zip_.layer_counts):.3f} of the same layers at the "
        "base rate",
        "",
        "| variant | encoder parameters | ms / call | vs Conformer | vs default | quartiles vs default |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        spread = "-" if r["spread"] is None else f"{r['spread'][0]:.3f} - {r['spread'][1]:.3f}"
        md.append(f"| {r['variant']} | {r['params'] / 1e6:.3f}M | {r['ms']:.1f} "
                  f"| {r['vs_conformer']:.3f} | {r['vs_default']:.3f} | {spread} |")
    md += ["", f"### Where the default's time goes ({args.profile_calls} calls profiled)", "",
           f"{top['total_ms'] / args.profile_calls:.1f} ms of CPU self time per call", "",
           "| operator | ms / call | share | calls / call |", "|---|---|---|---|"]
    md += [f"| `{k}` | {ms / args.profile_calls:.2f} | {100 * sh:.1f}% | "
           f"{c // args.profile_calls} |" for k, ms, sh, c in top["top"]]
    summary = {r["variant"]: {"ms": r["ms"], "vs_conformer": r["vs_conformer"],
                              "vs_default": r["vs_default"]} for r in rows}
    return "\n".join(md), summary


def parse_args(argv):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="hparams/small/latent_rq_zipformer.yaml")
    p.add_argument("--conformer", default="hparams/small/latent_rq.yaml")
    p.add_argument("--batch-seconds", type=float, default=60.0)
    p.add_argument("--utt-seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--profile-calls", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    return p.parse_args(argv)


def main(argv=None):
    """Prints the markdown and, last, a JSON line."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    md, summary = run(args)
    print(md)
    print()
    print(json.dumps({k: {m: round(v, 4) for m, v in d.items()} for k, d in summary.items()}))
    return summary


if __name__ == "__main__":
    main()
