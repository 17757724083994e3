"""The leading indicator of every latent-target variant, before any training.

For one checkpoint (the branch point of a Latent-RQ stage) it builds the
quantizer of each variant on the checkpoint's encoder, fits the data-fitted
ones on a seeded sample of the pre-training corpus (the frames a transition
would fit them on, never the probe frames), and reports the phone PNMI and
code perplexity of its targets on the quick-probe phone frames, beside the
stacked-Mel targets of BEST-RQ:

* ``paper``: random projection and random codebooks on the target layers;
* ``pca``: PCA-whitening projection (RWTH's refinement of BEST-RQ);
* ``kmeans``: k-means codebooks on the random projections (HuBERT-like);
* ``pca+kmeans``: both;
* each of them ``+anchor<A>``: the first A Mel codebooks kept as targets (BiRQ).

A variant whose targets carry less phone information than Mel's is not
expected to beat BEST-RQ (``results/reproduction.md``, "Why").

Usage::

    python -m recipes.reproduce.variant_targets results/reproduce/seed1/best_rq@600 \\
        --layers 2 3 --out results/reproduce/seed1/variants_step600.json

Authors
 * latent-rq developers 2026
"""

import argparse
import csv
import json
import os
import sys

import numpy as np
import torch

#: name -> (target_projection, target_codebooks)
KINDS = {
    "paper": ("random", "random"),
    "pca": ("pca", "random"),
    "kmeans": ("random", "kmeans"),
    "pca+kmeans": ("pca", "kmeans"),
}


def corpus_sample(corpus, n_utts, seed):
    """``n_utts`` seeded rows of the corpus's ``train.csv``."""
    with open(os.path.join(corpus, "train.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rows), size=min(n_utts, len(rows)), replace=False)
    return [(rows[i]["ID"], rows[i]) for i in sorted(pick)]


def quality(codes, labels, codebook_size):
    """Mean phone PNMI and perplexity over the codebooks of ``codes`` (M, n)."""
    from latent_rq_brain.targets.target_quality import codebook_quality

    m = codebook_quality(codes, {"phone": labels}, codebook_size)["mean"]
    return {"pnmi": float(m["phone"]["pnmi"]), "perplexity": float(m["perplexity"])}


def variant_quality(checkpoint, layers, shared, corpus, cache, n_codebooks=6, codebook_size=512,
                    codebook_dim=16, anchors=(0, 2), fit_frames=30000, seed=1, log=print):
    """``{variant: {"pnmi", "perplexity"}}`` of every variant's targets (see module)."""
    from latent_rq_brain.model.layers import MEL_SOURCE, layer_source
    from latent_rq_brain.sharing.pretrained import PretrainedEncoder
    from latent_rq_brain.targets.quantizer import latent_rq_quantizer
    from recipes.analysis.common import extract, read_wavs
    from recipes.probes.quick import (CROP_SECONDS, audio_file, encode, label_phone_items,
                                      load_audio, phone_targets, probe_items)

    enc = PretrainedEncoder.load(checkpoint, seed=seed)
    L = enc.encoder.num_layers
    sources = [MEL_SOURCE] + [layer_source(x) for x in layers]
    items = probe_items(shared, corpus)["phones"]
    wavs = load_audio(items, audio_file(cache, "phones"), CROP_SECONDS.get("phones"))
    states = encode(enc, wavs)
    frames = label_phone_items(items, wavs, [len(s[0]) for s in states], cache, log)
    labels, valid = phone_targets(frames)
    keep = [k for k in range(len(wavs)) if frames[k] is not None]
    base = latent_rq_quantizer(n_codebooks, codebook_size, codebook_dim,
                               enc.mel_target_dim, None, layers, L, seed,
                               layer_dims=enc.layer_dims)
    _, probe = extract(enc, base, sources, [wavs[k] for k in keep], keep_inputs=True)
    probe_x = {s: torch.from_numpy(np.concatenate(probe[s]["inputs"])[valid]) for s in sources}
    fit_rows = corpus_sample(corpus, max(50, fit_frames // 100), seed)
    _, fit = extract(enc, base, sources[1:], read_wavs(fit_rows), keep_inputs=True)
    fit_x = {s: torch.from_numpy(np.concatenate(fit[s]["inputs"])[:fit_frames]) for s in sources[1:]}
    log(f"fit sample: {len(fit_rows)} utterances, {len(fit_x[sources[1]])} frames; "
        f"probe: {len(labels)} phone frames")
    mel_codes = base(probe_x[MEL_SOURCE], MEL_SOURCE).numpy()
    out = {"mel": quality(mel_codes, labels, codebook_size)}
    for a in anchors:
        for name, (projection, books) in KINDS.items():
            q = latent_rq_quantizer(n_codebooks, codebook_size, codebook_dim,
                                    enc.mel_target_dim, None, layers, L,
                                    seed, layer_dims=enc.layer_dims, anchor_codebooks=a, target_projection=projection,
                                    target_codebooks=books)
            parts = [mel_codes[:, :a]] if a else []
            for s in sources[1:]:
                if q.needs_fit(s):
                    q.fit(s, fit_x[s], seed)
                parts.append(q(probe_x[s], s).numpy())
            key = name + (f"+anchor{a}" if a else "")
            out[key] = quality(np.concatenate(parts, 1), labels, codebook_size)
            log(f"{key}: PNMI {out[key]['pnmi']:.3f}, perplexity {out[key]['perplexity']:.0f} "
                f"(mel {out['mel']['pnmi']:.3f})")
    return out


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="run, save/ or CKPT+ folder, or run@step")
    p.add_argument("--layers", type=int, nargs="+", default=[2, 3])
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--corpus", default="data/pretrain")
    p.add_argument("--cache", default="results/reproduce/probe_cache")
    p.add_argument("--fit-frames", type=int, default=30000)
    p.add_argument("--anchors", type=int, nargs="+", default=[0, 2])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    r = variant_quality(args.checkpoint, args.layers, args.shared, args.corpus, args.cache,
                        anchors=args.anchors, fit_frames=args.fit_frames, seed=args.seed)
    print("| targets | phone PNMI | perplexity |\n|---|---:|---:|")
    for k, v in r.items():
        print(f"| {k} | {v['pnmi']:.3f} | {v['perplexity']:.0f} |")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as f:
            json.dump({"checkpoint": args.checkpoint, "layers": args.layers, "targets": r}, f,
                      indent=1)
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
