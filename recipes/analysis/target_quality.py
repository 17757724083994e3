"""Target quality of a checkpoint: code usage, purity and PNMI per source.

Quantizes every valid 40 ms frame of a manifest's utterances through each
source (``mel``; for stage >= 1 also every target layer, see
:mod:`recipes.analysis.common`), then scores every codebook against frame
labels (:mod:`latent_rq_brain.targets.target_quality`). Prints a markdown table,
writes ``target_quality.json``, ``code_usage.png`` (sorted code frequencies
of every codebook, one panel per source) and the labels it made
(``labels_phone.json``, reused by later runs in the same ``--out``).

Usage::

    python -m recipes.analysis.target_quality results/demo \\
        --manifest ../shared/data/fsdd/manifest.csv --labels phone,speaker \\
        --transcript-column digit --max-utts 300 --out results/analysis/fsdd

Authors
 * latent-rq developers 2026
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from latent_rq_brain.targets.target_quality import codebook_quality
from recipes.analysis import common



def plot_usage(results, codebook_size, png):
    """One panel per source: sorted code frequency of every codebook (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False, sharey=True
    )
    for ax, name in zip(axes[0], names):
        per = results[name]["per_codebook"]
        for i, cb in enumerate(per):
            f = cb["sorted_freqs"]
            ax.plot(np.arange(1, len(f) + 1), f, lw=1, label=f"cb {i}")
        m = results[name]["mean"]
        ax.set_title(
            f"{name}: {m['distinct']:.0f}/{codebook_size} used, ppl {m['perplexity']:.0f}",
            fontsize=9,
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("code rank")
        ax.axhline(1.0 / codebook_size, color="grey", ls=":", lw=0.8)
    axes[0][0].set_ylabel("frame frequency")
    if len(per) <= 8:
        axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def markdown_table(results, kinds):
    """The per-source / per-codebook table as markdown lines."""
    head = ["source", "codebook", "distinct codes", "perplexity"]
    for k in kinds:
        head += [f"{k} cluster purity", f"{k} purity", f"{k} PNMI"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name, cb, e, bold=False):
        cells = [name, cb, f"{e['distinct']:.0f}", f"{e['perplexity']:.1f}"]
        for k in kinds:
            q = e[k]
            cells += [f"{q['cluster_purity']:.3f}", f"{q['label_purity']:.3f}", f"{q['pnmi']:.3f}"]
        if bold:
            cells = [f"**{c}**" for c in cells]
        return "| " + " | ".join(cells) + " |"

    for name, res in results.items():
        for i, e in enumerate(res["per_codebook"]):
            lines.append(row(name, str(i), e))
        lines.append(row(name, "mean", res["mean"], bold=True))
    return lines


def run(args):
    """Computes everything; returns the JSON-able report."""
    t0 = time.time()
    enc, q, sources, kinds, items = common.prepare(args)
    wavs = common.read_wavs(items)
    print(common.describe(enc, q))
    print(f"{len(items)} utterances, {sum(len(w) for w in wavs) / 16000:.1f} s of audio "
          f"from {args.manifest}; sources {sources}")
    t1 = time.time()
    lens, out = common.extract(enc, q, sources, wavs, args.batch_size)
    t_extract = time.time() - t1
    labels, label_info = {}, {}
    t2 = time.time()
    if "phone" in kinds:
        frames, counts = common.phone_frames(
            items, wavs, lens, enc.encoder.downsampling, args.transcript_column,
            cache=os.path.join(args.out, "labels_phone.json"),
        )
        labels["phone"] = common.flat(frames)
        label_info["phone"] = {"source": "pocketsphinx", "utterances_by_method": counts}
    if "speaker" in kinds:
        labels["speaker"] = common.flat(common.speaker_frames(items, lens, args.speaker_column))
        label_info["speaker"] = {"source": f"manifest column {args.speaker_column or 'auto'}"}
    t_labels = time.time() - t2
    if args.ignore_labels:
        drop = {s.strip() for s in args.ignore_labels.split(",")}
        for k in labels:
            labels[k] = np.array([None if v in drop else v for v in labels[k]], dtype=object)
    results = {}
    for name in sources:
        codes = np.concatenate(out[name]["codes"], 0)
        results[name] = codebook_quality(codes, labels, q.codebook_size)
    for k in kinds:
        lab = labels[k]
        kept = [v for v in lab if v is not None]
        label_info[k].update(
            frames=len(kept), unlabelled_frames=int(len(lab) - len(kept)),
            distinct=len(set(kept)),
        )
    report = {
        "checkpoint": enc.info.get("checkpoint"),
        "stage": enc.info.get("stage"),
        "step": enc.info.get("step"),
        "target_layers": enc.info.get("target_layers"),
        "target_norm": enc.info.get("target_norm"),
        "codebook_size": q.codebook_size,
        "manifest": os.path.abspath(args.manifest),
        "filters": common.parse_filters(args.filter),
        "utterances": len(items),
        "audio_s": sum(len(w) for w in wavs) / 16000,
        "frames": int(sum(lens)),
        "labels": label_info,
        "ignored_labels": args.ignore_labels,
        "sources": results,
        "timing_s": {
            "extract": round(t_extract, 2),
            "labels": round(t_labels, 2),
            "total": round(time.time() - t0, 2),
        },
    }
    return report


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m recipes.analysis.target_quality",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("checkpoint", help="run output folder, save/ folder, CKPT+ folder, @stage<k>, or random:<config>")
    p.add_argument("--manifest", required=True, help="CSV with ID,duration,wav (+ speaker / transcript columns)")
    p.add_argument("--labels", default="phone,speaker", help="comma list of phone, speaker")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sources", default="auto", help="auto (by stage), all, or a comma list (mel,layer5)")
    p.add_argument("--transcript-column", default=None,
                   help="manifest column with the words, for forced alignment ('auto' tries wrd, "
                   "words, transcript, text, digit); default: phone recognition")
    p.add_argument("--speaker-column", default=None, help="default: speaker, spk_id or spk")
    p.add_argument("--ignore-labels", default=None, help="labels to leave out, e.g. SIL,+NSN+")
    p.add_argument("--filter", action="append", default=[], help="COLUMN=VALUE, repeatable")
    p.add_argument("--max-utts", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-utts subset")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    report = run(args)
    kinds = list(report["labels"])
    lines = markdown_table(report["sources"], kinds)
    for k, info in report["labels"].items():
        extra = info.get("utterances_by_method", "")
        lines.append(f"\n{k} labels: {info['source']} {extra}; {info['frames']} labelled "
                     f"frames ({info['unlabelled_frames']} unlabelled), {info['distinct']} distinct")
    print("\n" + "\n".join(lines))
    path = os.path.join(args.out, "target_quality.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "target_quality.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    png = os.path.join(args.out, "code_usage.png")
    plot_usage(report["sources"], report["codebook_size"], png)
    print(f"\nwrote {path}, {png} ({report['timing_s']})")
    return report


if __name__ == "__main__":
    with torch.no_grad():
        main(sys.argv[1:])
