"""Layer-weight heatmaps of downstream probes (paper Fig. 4).

Reads the ``layer_weights.json`` files the probe recipe writes, one per
(task, checkpoint)::

    {"task": "speaker_id", "checkpoint": "results/run/save/CKPT+...",
     "weights": [w_cnn, w_0, ..., w_{L-1}]}

(one weight per hidden state: CNN output, then Conformer layers 0..L-1; the
probe's softmax-normalised layer weights) and draws, for every checkpoint,
a task x layer heatmap: which layers each task reads. Weights are drawn as
stored; ``--normalize`` rescales each row to sum to 1 first (for weights that
are not already a distribution).

Usage::

    python -m recipes.analysis.layer_weights results/probes --out results/analysis/layers.png

With one checkpoint the figure is ``--out``; with several, one figure per
checkpoint, ``<out stem>_<checkpoint name>.png``. Also prints, per
checkpoint, each task's heaviest layer.

Authors
 * latent-rq developers 2026
"""

import argparse
import glob
import json
import os
import re
import sys

import numpy as np

FILENAME = "layer_weights.json"


def find_files(paths):
    """``layer_weights.json`` files under ``paths`` (files or folders, recursive).

    Example
    -------
    >>> find_files(["/nonexistent"])
    Traceback (most recent call last):
     ...
    FileNotFoundError: /nonexistent is neither a layer_weights.json file nor a folder
    """
    files = []
    for p in paths:
        if os.path.isfile(p):
            files.append(p)
        elif os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "**", FILENAME), recursive=True))
        else:
            raise FileNotFoundError(f"{p} is neither a {FILENAME} file nor a folder")
    if not files:
        raise FileNotFoundError(f"no {FILENAME} under {list(paths)}")
    return files


def read_weights(files):
    """``{checkpoint: {task: weights array}}``, checking every file's format."""
    table = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from err
        missing = [k for k in ("task", "checkpoint", "weights") if k not in d]
        if missing:
            raise ValueError(f"{path} lacks the key(s) {missing}; it has {sorted(d)}")
        w = np.asarray(d["weights"], dtype=float)
        if w.ndim != 1 or w.size < 1 or not np.isfinite(w).all():
            raise ValueError(
                f"{path}: weights must be a non-empty list of finite numbers, got {d['weights']!r}"
            )
        ckpt, task = str(d["checkpoint"]), str(d["task"])
        tasks = table.setdefault(ckpt, {})
        if task in tasks:
            raise ValueError(f"{path}: task {task!r} of checkpoint {ckpt} appears twice")
        if tasks:
            n = len(next(iter(tasks.values())))
            if w.size != n:
                raise ValueError(
                    f"{path}: {w.size} weights, but other tasks of checkpoint {ckpt} "
                    f"have {n} (one per hidden state)"
                )
        tasks[task] = w
    return table


def layer_names(n):
    """Column labels: CNN output, then Conformer layers 0..n-2 (paper indices).

    Example
    -------
    >>> layer_names(4)
    ['CNN', '0', '1', '2']
    """
    return ["CNN"] + [str(i) for i in range(n - 1)]


def slug(checkpoint):
    """File-name-safe short name of a checkpoint path.

    Example
    -------
    >>> slug("results/demo/save/CKPT+2026-11-23+00-47-19+00")
    'demo_CKPT_2026-11-23_00-47-19_00'
    """
    parts = [p for p in re.split(r"[\\/]", checkpoint) if p and p not in (".", "save")]
    name = "_".join(parts[-2:]) if parts else "checkpoint"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def plot(tasks, checkpoint, png, normalize=False):
    """Draws one task x layer heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(tasks)
    w = np.stack([tasks[t] for t in names])
    if normalize:
        w = w / w.sum(1, keepdims=True)
    fig, ax = plt.subplots(figsize=(0.55 * w.shape[1] + 2.5, 0.45 * len(names) + 1.6))
    im = ax.imshow(w, aspect="auto", cmap="viridis")
    ax.set_xticks(range(w.shape[1]), layer_names(w.shape[1]), fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("hidden state (paper layer index)")
    if w.shape[1] <= 20:
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if w[i, j] < w.max() * 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title(f"layer weights: {slug(checkpoint)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m recipes.analysis.layer_weights", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("paths", nargs="+", help="layer_weights.json files or folders holding them")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--normalize", action="store_true", help="rescale each task's weights to sum 1")
    args = p.parse_args(argv)
    table = read_weights(find_files(args.paths))
    stem, ext = os.path.splitext(args.out)
    ext = ext or ".png"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    written = []
    for ckpt, tasks in table.items():
        png = stem + ext if len(table) == 1 else f"{stem}_{slug(ckpt)}{ext}"
        plot(tasks, ckpt, png, args.normalize)
        written.append(png)
        print(f"\n{ckpt}\n\n| task | heaviest layer | weight |\n|---|---|---|")
        for task in sorted(tasks):
            w = tasks[task]
            j = int(np.argmax(w))
            print(f"| {task} | {layer_names(len(w))[j]} | {w[j]:.3f} |")
    print("\nwrote " + ", ".join(written))
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
