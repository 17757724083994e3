"""Profile: where a training step and the no-grad target forward spend time.

Runs ``torch.profiler`` over a few BEST-RQ training steps, Latent-RQ online
training steps and target-encoder forwards (no grad, inference mode, the
training autocast) on the benchmark's model and batch
(:func:`tools.bench._bench_brain`), and prints for each the top operators by
self time and the share of time in copies and dtype casts (``aten::copy_``,
``aten::_to_copy``, ``aten::clone``, ``aten::contiguous``, ``aten::cat``).

Usage::

    python -m tools.profile_step --device cpu --batch-seconds 20 --utt-seconds 10
    python -m tools.profile_step --config hparams/best_rq.yaml --device cuda:0 \\
        --batch-seconds 600 --utt-seconds 15 --out results/profile_gpu.md

Authors
 * latent-rq developers 2026
"""

import argparse
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import speechbrain as sb
from tools.bench import _bench_brain, _sync, model_arguments, parse_with_overrides

#: Operators counted as copies or dtype casts.
COPY_OPS = ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous", "aten::cat")


def _self_time(event, cuda):
    if cuda:
        return getattr(event, "self_device_time_total", 0.0) or getattr(
            event, "self_cuda_time_total", 0.0)
    return event.self_cpu_time_total


def summarize(prof, cuda, top=15):
    """Top operators by self time and the copy share of a profile.

    Returns
    -------
    dict
        ``{"total_ms", "copy_share", "top": [(name, ms, share, calls)]}``.
    """
    events = [e for e in prof.key_averages() if _self_time(e, cuda) > 0]
    total = sum(_self_time(e, cuda) for e in events) or 1.0
    copies = sum(_self_time(e, cuda) for e in events if e.key in COPY_OPS)
    ranked = sorted(events, key=lambda e: _self_time(e, cuda), reverse=True)[:top]
    return {
        "total_ms": total / 1000,
        "copy_share": copies / total,
        "top": [(e.key, _self_time(e, cuda) / 1000, _self_time(e, cuda) / total, e.count)
                for e in ranked],
    }


def _profiled(fn, cuda, steps):
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fn()  # warm-up
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
    return prof


def run(args):
    """Profiles the three workloads; returns (markdown, {name: summary})."""
    brain, batch, n, audio_s = _bench_brain(args)
    cuda = str(brain.device).startswith("cuda")
    brain.hparams.target_cache = False
    brain.transition(1)

    def step(stage):
        def fn():
            brain.schedule.stage = stage
            brain.step += 1
            brain.fit_batch(batch)
            _sync(brain.device)
        return fn

    feats, enc_lens, _ = brain.batch_features(batch.to(brain.device))

    def target_forward():
        with torch.no_grad(), brain.training_ctx:
            brain.target_encoder(feats, enc_lens)
        _sync(brain.device)

    work = {
        "BEST-RQ training step": step(0),
        "Latent-RQ online training step": step(1),
        "target encoder forward (no grad, inference mode, training autocast)": target_forward,
    }
    results, md = {}, [
        "## Profile (torch.profiler, self time per operator)", "",
        f"- {n} x {args.utt_seconds} s ({audio_s:.0f} s of audio), config `{args.config}` "
        f"{' '.join(args.overrides)}, precision {brain.precision}, device {brain.device}, "
        f"{args.steps} profiled calls after one warm-up",
    ]
    if args.target_only:
        work = {k: v for k, v in work.items() if k.startswith("target")}
    for name, fn in work.items():
        s = summarize(_profiled(fn, cuda, args.steps), cuda, args.top)
        results[name] = s
        md += ["", f"### {name}", "",
               f"{s['total_ms'] / args.steps:.1f} ms of {'GPU' if cuda else 'CPU'} self time "
               f"per call; copies and casts ({', '.join(COPY_OPS)}): "
               f"**{100 * s['copy_share']:.1f}%**", "",
               "| operator | ms / call | share | calls / call |", "|---|---|---|---|"]
        md += [f"| `{k}` | {ms / args.steps:.2f} | {100 * sh:.1f}% | {c // args.steps} |"
               for k, ms, sh, c in s["top"]]
    return "\n".join(md), results


def parse_args(argv):
    """Command-line options (those of :mod:`tools.bench` that apply)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(p, 20.0)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--target-only", action="store_true", help="profile the target forward only")
    p.add_argument("--out", help="also write the markdown and JSON here")
    return parse_with_overrides(p, argv)


def main(argv=None):
    """Prints the markdown profile and, last, a JSON line of copy shares."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    md, results = run(args)
    js = json.dumps({k: {"ms_per_call": round(v["total_ms"] / args.steps, 3),
                         "copy_share": round(v["copy_share"], 4)} for k, v in results.items()})
    print(md)
    print()
    print(js)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(f"{md}\n\n```json\n{js}\n```\n")
    return results


if __name__ == "__main__":
    main()
