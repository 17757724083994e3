"""t-SNE of the quantizer inputs after random projection (paper Fig. 5, 6).

For each source (``mel``; for stage >= 1 also every target layer), the
projected, normalised inputs of the argmin (``RandomProjectionQuantizer.
project``: one unit vector of ``codebook_dim`` per codebook) of the same
random subset of frames are embedded in 2-D with scikit-learn's ``TSNE`` and
coloured by phone and by speaker (the ``--top`` most frequent labels of the
subset in colour, the others grey). Well-separated colours mean the targets of
that source carry that information.

Writes ``tsne.png`` (rows: sources, columns: label kinds),
``tsne_<source>_<kind>.png`` per panel and ``tsne.npz`` (coordinates, labels).

Usage::

    python -m recipes.analysis.tsne results/demo \\
        --manifest ../shared/data/librispeech-mini/manifest.csv \\
        --filter split=test-other --labels phone,speaker --out results/analysis/tsne

Authors
 * latent-rq developers 2026
"""

import argparse
import os
import sys
import time
from collections import Counter

import numpy as np
import torch

from recipes.analysis import common


def embed(x, perplexity=30.0, seed=0, threads=1):
    """2-D t-SNE of (M, D) points (PCA initialisation, seeded).

    ``threads`` caps scikit-learn's OpenMP threads: on a busy 2-core machine
    one thread was 5x faster than two (1500 points: 37 s against 175 s), and
    60 points took 25 s uncapped against 0.6 s with one.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(perplexity, max(2.0, (len(x) - 1) / 3.0)))
    with threadpool_limits(limits=int(threads)):
        return TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(np.asarray(x, dtype=np.float32))


def colour_panel(ax, xy, labels, top, title):
    """Scatter ``xy`` coloured by the ``top`` most frequent labels."""
    import matplotlib.pyplot as plt

    counts = Counter(labels)
    shown = [lab for lab, _ in counts.most_common(top)]
    cmap = plt.get_cmap("tab10" if len(shown) <= 10 else "tab20")
    other = np.array([lab not in shown for lab in labels])
    ax.scatter(xy[other, 0], xy[other, 1], s=2, c="lightgrey", label="other", linewidths=0)
    for i, lab in enumerate(shown):
        sel = np.array([v == lab for v in labels])
        ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=cmap(i % cmap.N), label=str(lab),
                   linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=5, markerscale=3, loc="best", ncol=2, frameon=False)


def run(args):
    """Embeds and plots; returns ``{source: (M, 2) coordinates}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = time.time()
    enc, q, sources, kinds, items = common.prepare(args)
    wavs = common.read_wavs(items)
    print(common.describe(enc, q))
    lens, out = common.extract(enc, q, sources, wavs, args.batch_size, project=True)
    labels = {}
    if "phone" in kinds:
        frames, counts = common.phone_frames(
            items, wavs, lens, enc.encoder.downsampling, args.transcript_column,
            cache=os.path.join(args.out, "labels_phone.json"),
        )
        labels["phone"] = common.flat(frames)
        print(f"phone labels: pocketsphinx, utterances by method {counts}")
    if "speaker" in kinds:
        labels["speaker"] = common.flat(common.speaker_frames(items, lens, args.speaker_column))
    drop = {s.strip() for s in (args.ignore_labels or "").split(",") if s.strip()}
    ok = np.ones(int(sum(lens)), dtype=bool)
    for lab in labels.values():
        ok &= np.array([v is not None and v not in drop for v in lab], dtype=bool)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        raise ValueError("no frame has every requested label: nothing to plot")
    rng = np.random.default_rng(args.seed)
    if idx.size > args.max_frames:
        idx = np.sort(rng.choice(idx, args.max_frames, replace=False))
    sub = {k: [str(v) for v in lab[idx]] for k, lab in labels.items()}
    print(f"{len(items)} utterances, {int(sum(lens))} frames, t-SNE of {idx.size} frames; "
          f"sources {sources}; codebook {args.codebook}")
    fig, axes = plt.subplots(
        len(sources), len(kinds), figsize=(4.2 * len(kinds), 3.8 * len(sources)),
        squeeze=False,
    )
    coords, timings = {}, {}
    for r, name in enumerate(sources):
        proj = np.concatenate(out[name]["proj"], 0)[idx]  # (M, n, d)
        if args.codebook == "all":
            x = proj.reshape(len(idx), -1)
            what = f"all {proj.shape[1]} codebooks"
        else:
            c = int(args.codebook)
            if not 0 <= c < proj.shape[1]:
                raise ValueError(
                    f"--codebook {c} is out of range: source {name!r} has "
                    f"{proj.shape[1]} codebooks (0..{proj.shape[1] - 1}, or 'all')"
                )
            x = proj[:, c]
            what = f"codebook {c}"
        t = time.time()
        xy = embed(x, args.perplexity, args.seed, args.tsne_threads)
        timings[name] = round(time.time() - t, 2)
        coords[name] = xy
        for col, kind in enumerate(kinds):
            title = f"{name} ({what}) by {kind}"
            colour_panel(axes[r][col], xy, sub[kind], args.top, title)
            f1, a1 = plt.subplots(figsize=(5, 4.6))
            colour_panel(a1, xy, sub[kind], args.top, title)
            f1.tight_layout()
            f1.savefig(os.path.join(args.out, f"tsne_{name}_{kind}.png"), dpi=120)
            plt.close(f1)
    fig.suptitle(
        f"t-SNE of projected quantizer inputs, stage {enc.info.get('stage')}, "
        f"step {enc.info.get('step')}", fontsize=10,
    )
    fig.tight_layout()
    png = os.path.join(args.out, "tsne.png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    np.savez_compressed(
        os.path.join(args.out, "tsne.npz"),
        frame_index=idx,
        **{f"xy_{k}": v for k, v in coords.items()},
        **{f"label_{k}": np.array(v) for k, v in sub.items()},
    )
    print(f"wrote {png} (t-SNE seconds per source {timings}, total "
          f"{time.time() - t0:.1f} s)")
    return coords


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m recipes.analysis.tsne", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("checkpoint", help="run output folder, save/ folder, CKPT+ folder, @stage<k>, or random:<config>")
    p.add_argument("--manifest", required=True)
    p.add_argument("--labels", default="phone,speaker", help="comma list of phone, speaker")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sources", default="auto", help="auto (by stage), all, or a comma list")
    p.add_argument("--codebook", default="0", help="codebook index of each source, or 'all' (concatenated)")
    p.add_argument("--max-frames", type=int, default=1500, help="frames embedded (random subset)")
    p.add_argument("--top", type=int, default=10, help="labels shown in colour")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--transcript-column", default=None, help="see target_quality")
    p.add_argument("--speaker-column", default=None)
    p.add_argument("--ignore-labels", default=None, help="e.g. SIL: frames with these labels are left out")
    p.add_argument("--filter", action="append", default=[], help="COLUMN=VALUE, repeatable")
    p.add_argument("--max-utts", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads (encoder)")
    p.add_argument("--tsne-threads", type=int, default=1, help="scikit-learn OpenMP threads")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    return run(args)


if __name__ == "__main__":
    with torch.no_grad():
        main(sys.argv[1:])
