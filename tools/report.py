"""Summarise a run from its ``train_log.txt``: per-stage loss, accuracy, code
usage, transitions and validation, plus a loss-curve PNG.

Usage::

    python -m tools.report results/demo

Authors
 * latent-rq developers 2026
"""

import argparse
import os
import sys

from latent_rq_brain.training.train_log import parse_line, read_log  # noqa: F401 (one reader of the log)


def summarise(entries):
    """Markdown summary: one row per stage, transitions, validation."""
    steps = [e for e in entries if "train loss" in e and "step" in e and "epoch" not in e]
    lines = ["| stage | steps | first loss | last loss | last acc | codes used (mean) "
             "| perplexity (mean) | mask fraction | step time (s) | audio s/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for stage in sorted({e["stage"] for e in steps}):
        es = [e for e in steps if e["stage"] == stage]
        first, last = es[0], es[-1]
        lines.append(
            f"| {stage} | {first['step']}-{last['step']} | {first['train loss']:.3f} "
            f"| {last['train loss']:.3f} | {last['train acc']:.3f} "
            f"| {_mean(last['train codes_used']):.0f} | {_mean(last['train perplexity']):.1f} "
            f"| {last['train mask_fraction']:.3f} | {_mean_of(es, 'train step_time_s'):.3f} "
            f"| {_mean_of(es, 'train audio_s_per_s'):.1f} |"
        )
    for e in entries:
        if "transition_to_stage" in e:
            lines.append(f"\nTransition to stage {e['transition_to_stage']} at step {e['step']}: "
                         "target encoder snapshot, heads re-initialised, optimizer and LR reset.")
    valid = [e for e in entries if "valid loss" in e]
    if valid:
        lines += ["", "| epoch | step | stage | valid loss | valid acc | codes used (mean) |",
                  "|---|---|---|---|---|---|"]
        lines += [
            f"| {e['epoch']} | {e['step']} | {e['stage']} | {e['valid loss']:.3f} "
            f"| {e['valid acc']:.3f} | {_mean(e['valid codes_used']):.0f} |"
            for e in valid
        ]
    return "\n".join(lines)


def _mean(xs):
    return sum(xs) / len(xs) if isinstance(xs, list) and xs else float(xs)


def _mean_of(entries, key):
    return sum(float(e[key]) for e in entries) / len(entries)


def plot(entries, png):
    """Training loss per logged step, one colour per stage, transitions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e for e in entries if "train loss" in e and "epoch" not in e]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for stage in sorted({e["stage"] for e in steps}):
        es = [e for e in steps if e["stage"] == stage]
        ax.plot([e["step"] for e in es], [e["train loss"] for e in es], label=f"stage {stage}")
    for e in entries:
        if "transition_to_stage" in e:
            ax.axvline(e["step"], color="grey", ls="--", lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("masked-prediction loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv=None):
    """Prints the summary of an output folder and writes ``loss.png`` there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_folder")
    args = parser.parse_args(argv)
    entries = read_log(os.path.join(args.output_folder, "train_log.txt"))
    print(summarise(entries))
    png = os.path.join(args.output_folder, "loss.png")
    plot(entries, png)
    print(f"\nloss curve: {png}")


if __name__ == "__main__":
    sys.exit(main())
