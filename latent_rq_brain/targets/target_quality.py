"""How good are the targets? Purity, PNMI and code usage of frame-level codes.

For frame-level codes ``z`` of one codebook and frame labels ``y`` (phones or
speakers), everything is computed from the joint count matrix
``C[z, y]`` (distinct codes x distinct labels), with ``N = C.sum()`` frames:

* **cluster purity** (HuBERT's "cluster purity"): ``E_z[max_y p(y|z)] =
  sum_z max_y C[z, y] / N``, the frame accuracy of labelling every code with its
  most frequent label. High when each code sees one label; 1 for one code per
  frame.
* **label purity** (HuBERT's "phone purity" when ``y`` are phones):
  ``E_y[max_z p(z|y)] = sum_y max_z C[z, y] / N``, the frame accuracy of
  mapping every label to its most frequent code. High when each label maps to
  one code; 1 for a single code.
* **PNMI** (phone-normalised mutual information, Hsu et al. 2021, HuBERT):
  ``I(y; z) / H(y)``, the fraction of the label's uncertainty removed by
  knowing the code: 1 when the code determines the label, 0 when they are
  independent. With speaker labels it is the speaker-normalised analogue.

Purities are two-sided on purpose: either alone is trivially maximised (one
code per frame, or one code for all). PNMI combines them. All are *biased by
the sample size*: with few frames per code, ``I`` and cluster purity are
overestimated, so compare sources on the same frames and codebook size.

Code usage: distinct codes, perplexity ``exp(H(z))`` (nats) and the sorted code
frequencies (the histogram of the paper's codebook-usage plots).

Authors
 * latent-rq developers 2026
"""

import math

import numpy as np


def _as_index(values, what):
    """Dense integer indices (M,) and the distinct values of ``values``."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{what} must be 1-D (one per frame), got shape {values.shape}")
    uniq, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(-1), uniq


def joint_counts(codes, labels):
    """Joint count matrix ``C[z, y]`` of frame codes and frame labels.

    Arguments
    ---------
    codes : array-like
        (M,) code of every frame (any hashable, usually int).
    labels : array-like
        (M,) label of every frame (int or str).

    Returns
    -------
    counts : numpy.ndarray
        (distinct codes, distinct labels) int64 counts.
    code_values, label_values : numpy.ndarray
        The code / label of each row / column.

    Example
    -------
    >>> c, zv, yv = joint_counts([0, 0, 1, 1], ["a", "a", "a", "b"])
    >>> c.tolist(), zv.tolist(), yv.tolist()
    ([[2, 0], [1, 1]], [0, 1], ['a', 'b'])
    """
    z, zv = _as_index(codes, "codes")
    y, yv = _as_index(labels, "labels")
    if z.shape != y.shape:
        raise ValueError(
            f"codes and labels must have one entry per frame: got {z.shape[0]} "
            f"codes and {y.shape[0]} labels"
        )
    if z.size == 0:
        raise ValueError("no frames: codes and labels are empty")
    counts = np.bincount(z * len(yv) + y, minlength=len(zv) * len(yv))
    return counts.reshape(len(zv), len(yv)).astype(np.int64), zv, yv


def _entropy(p):
    """Entropy in nats of a probability vector (zeros ignored)."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def purity_pnmi(counts):
    """Cluster purity, label purity and PNMI from a joint count matrix.

    Arguments
    ---------
    counts : array-like
        (codes, labels) non-negative counts ``C[z, y]``.

    Returns
    -------
    dict
        ``cluster_purity``, ``label_purity``, ``pnmi``, ``mutual_info`` (nats),
        ``label_entropy`` H(y) and ``code_entropy`` H(z) (nats), ``frames``.
        ``pnmi`` is NaN when there is a single label (H(y) = 0).

    Example
    -------
    Codes [0, 0, 1, 1] for labels [a, a, a, b]: H(y|z) = 0.5 * 0 + 0.5 * 1 bit,
    H(y) = 0.811 bit, so PNMI = (0.811 - 0.5) / 0.811 = 0.384.

    >>> r = purity_pnmi([[2, 0], [1, 1]])
    >>> round(r["pnmi"], 4), r["cluster_purity"], r["label_purity"]
    (0.3837, 0.75, 0.75)
    >>> purity_pnmi([[1, 0], [0, 3]])["pnmi"]  # codes determine labels
    1.0
    >>> purity_pnmi([[1, 2], [2, 4]])["pnmi"]  # independent
    0.0
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"counts must be a 2-D (codes, labels) matrix, got shape {c.shape}")
    if (c < 0).any():
        raise ValueError(f"counts must be >= 0, got minimum {c.min()}")
    n = c.sum()
    if n <= 0:
        raise ValueError("counts are all zero: no frames")
    p = c / n
    pz, py = p.sum(1), p.sum(0)
    h_y, h_z = _entropy(py), _entropy(pz)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pz, py)[nz])).sum())
    mi = min(max(mi, 0.0), min(h_y, h_z))  # clip float rounding
    if h_y > 0:
        pnmi = mi / h_y
        # exact ends: the code determines the label / they are independent
        if math.isclose(pnmi, 1.0, rel_tol=0, abs_tol=1e-12):
            pnmi = 1.0
        elif abs(pnmi) < 1e-12:
            pnmi = 0.0
    else:
        pnmi = float("nan")
    return {
        "cluster_purity": float(c.max(1).sum() / n),
        "label_purity": float(c.max(0).sum() / n),
        "pnmi": pnmi,
        "mutual_info": mi,
        "label_entropy": h_y,
        "code_entropy": h_z,
        "frames": int(round(n)),
    }


def code_label_quality(codes, labels):
    """:func:`purity_pnmi` of frame codes against frame labels, one codebook.

    Example
    -------
    >>> r = code_label_quality([3, 3, 7, 7, 9], ["a", "a", "b", "b", "c"])
    >>> r["pnmi"], r["cluster_purity"], r["label_purity"], r["frames"]
    (1.0, 1.0, 1.0, 5)
    """
    counts, _, _ = joint_counts(codes, labels)
    return purity_pnmi(counts)


def code_usage(codes, codebook_size=None):
    """Distinct codes, perplexity and sorted frequencies of one codebook.

    Arguments
    ---------
    codes : array-like
        (M,) int codes.
    codebook_size : int, optional
        V; codes must lie in ``0..V-1``. Adds ``usage_fraction``.

    Returns
    -------
    dict
        ``distinct``, ``perplexity`` (exp of the entropy in nats), ``frames``,
        ``sorted_freqs`` (descending relative frequencies of the used codes) and
        ``usage_fraction`` (distinct / V) when ``codebook_size`` is given.

    Example
    -------
    >>> u = code_usage([1, 1, 2, 3], codebook_size=8)
    >>> u["distinct"], round(u["perplexity"], 3), u["sorted_freqs"], u["usage_fraction"]
    (3, 2.828, [0.5, 0.25, 0.25], 0.375)
    """
    codes = np.asarray(codes).reshape(-1)
    if codes.size == 0:
        raise ValueError("no frames: codes are empty")
    if codebook_size is not None:
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= codebook_size:
            raise ValueError(
                f"codes must lie in 0..{codebook_size - 1} (codebook_size="
                f"{codebook_size}), got values from {lo} to {hi}"
            )
    _, counts = np.unique(codes, return_counts=True)
    freqs = np.sort(counts)[::-1] / codes.size
    out = {
        "distinct": int(counts.size),
        "perplexity": math.exp(_entropy(freqs)),
        "frames": int(codes.size),
        "sorted_freqs": [float(f) for f in freqs],
    }
    if codebook_size is not None:
        out["usage_fraction"] = counts.size / codebook_size
    return out


def codebook_quality(codes, labels=None, codebook_size=None):
    """Usage and (optionally) label quality of every codebook of one source.

    Arguments
    ---------
    codes : array-like
        (M, n) codes of M frames for n codebooks.
    labels : dict, optional
        ``{label_kind: (M,) labels}``, e.g. ``{"phone": ..., "speaker": ...}``.
        Frames whose label is ``None`` are ignored for that kind.
    codebook_size : int, optional
        V, for :func:`code_usage`.

    Returns
    -------
    dict
        ``{"per_codebook": [ {distinct, perplexity, <kind>: {...}}, ...],
        "mean": {distinct, perplexity, <kind>: {cluster_purity, label_purity,
        pnmi}}}``.

    Example
    -------
    >>> codes = np.array([[0, 5], [0, 5], [1, 5], [1, 6]])
    >>> q = codebook_quality(codes, {"phone": ["a", "a", "b", "b"]}, 8)
    >>> [round(c["phone"]["pnmi"], 3) for c in q["per_codebook"]]
    [1.0, 0.311]
    >>> round(q["mean"]["phone"]["pnmi"], 3)
    0.656
    >>> q["mean"]["distinct"], q["per_codebook"][1]["distinct"]
    (2.0, 2)
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (frames, codebooks), got shape {codes.shape}")
    labels = labels or {}
    masks = {}
    for kind, lab in labels.items():
        lab = np.asarray(lab, dtype=object)
        if lab.shape != (codes.shape[0],):
            raise ValueError(
                f"{kind} labels must have one entry per frame ({codes.shape[0]}), "
                f"got shape {lab.shape}"
            )
        keep = np.array([v is not None for v in lab], dtype=bool)
        if not keep.any():
            raise ValueError(f"all {kind} labels are None: nothing to score")
        masks[kind] = (keep, lab[keep].astype(str))
    per = []
    for i in range(codes.shape[1]):
        u = code_usage(codes[:, i], codebook_size)
        entry = {k: u[k] for k in ("distinct", "perplexity", "frames", "sorted_freqs")}
        for kind, (keep, lab) in masks.items():
            entry[kind] = code_label_quality(codes[keep, i], lab)
        per.append(entry)
    mean = {
        "distinct": float(np.mean([e["distinct"] for e in per])),
        "perplexity": float(np.mean([e["perplexity"] for e in per])),
    }
    for kind in masks:
        mean[kind] = {
            key: float(np.mean([e[kind][key] for e in per]))
            for key in ("cluster_purity", "label_purity", "pnmi")
        }
        mean[kind]["frames"] = per[0][kind]["frames"]
        mean[kind]["labels"] = int(len(np.unique(masks[kind][1])))
    return {"per_codebook": per, "mean": mean}
