"""Why a checkpoint's layer targets beat Mel's, or do not.

For one encoder and the phone-probe items of :mod:`recipes.probes.quick` this
measures, for Mel and for every layer:

* the phone PNMI and code perplexity of the random-projection targets under each
  ``target_norm`` (``utterance``, ``layer``, ``none``): does another
  normalisation of the layer states give better targets?
* the effective dimension (participation ratio of the covariance spectrum) of
  what each source quantizes (stacked Mel frames, utterance-normalised layer
  states): a random projection of a low-rank input lands on few codewords;
* the phone PNMI of k-means (``k`` clusters, HuBERT's target) on the same
  inputs: is the phone information in the layer at all, or lost by the random
  projection?

Usage::

    python -m recipes.reproduce.target_diagnosis results/reproduce/seed1/best_rq@1800 \\
        --out results/reproduce/seed1/diagnosis

(``RUN@STEP`` names the checkpoint of a run at that optimizer step; any name
:meth:`latent_rq_brain.sharing.pretrained.PretrainedEncoder.load` takes works too.)

Authors
 * latent-rq developers 2026
"""

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import torch

#: the target normalisations compared (latent_rq_brain.targets.target_encoder.NORMS)
NORMS = ("utterance", "layer", "none")
#: k-means clusters (= codebook size of the mini configuration) and frames fitted
KMEANS_CLUSTERS = 512
KMEANS_FIT_FRAMES = 20000


def effective_dimension(x):
    """Participation ratio ``(sum l)^2 / sum l^2`` of the covariance eigenvalues of
    the rows of ``x``: ``d`` for isotropic data, 1 for data on a line.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> round(effective_dimension(rng.normal(size=(20000, 8))))
    8
    >>> line = np.outer(rng.normal(size=500), np.ones(8)) + 1e-6 * rng.normal(size=(500, 8))
    >>> round(effective_dimension(line), 3)
    1.0
    """
    from latent_rq_brain.objectives.sigreg import effective_dimension as participation_ratio

    return float(participation_ratio(torch.from_numpy(np.asarray(x, dtype=np.float64))))


def kmeans_pnmi(x, labels, k=KMEANS_CLUSTERS, fit_frames=KMEANS_FIT_FRAMES, seed=0):
    """Phone PNMI of k-means clusters of the rows of ``x`` (fitted on a seeded
    subset of ``fit_frames`` rows, assigned on all).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.array(["a", "b", "c"]), 300)
    >>> x = rng.normal(size=(900, 4)) + 10 * np.eye(4)[np.repeat([0, 1, 2], 300)]
    >>> kmeans_pnmi(x, y, k=3) > 0.95
    True
    """
    from sklearn.cluster import MiniBatchKMeans

    from latent_rq_brain.targets.target_quality import codebook_quality

    rng = np.random.default_rng(seed)
    fit = x if len(x) <= fit_frames else x[rng.choice(len(x), fit_frames, replace=False)]
    km = MiniBatchKMeans(k, random_state=seed, n_init=1, batch_size=4096).fit(fit)
    codes = km.predict(x)[:, None]
    return float(codebook_quality(codes, {"phone": labels}, k)["mean"]["phone"]["pnmi"])


def resolve(spec):
    """``RUN@STEP`` -> that run's checkpoint at optimizer step STEP; else ``spec``."""
    m = re.fullmatch(r"(.+)@(\d+)", spec)
    if not m or not os.path.isdir(m.group(1)):
        return spec
    from recipes.reproduce.plan import checkpoint_at

    ckpt = checkpoint_at(m.group(1), int(m.group(2)))
    if ckpt is None:
        raise FileNotFoundError(f"{m.group(1)} has no checkpoint at optimizer step {m.group(2)}")
    return ckpt


def diagnose(spec, shared, corpus, cache, seed=1, norms=NORMS, log=print):
    """The measurements of the module docstring for one encoder, as a dict."""
    from latent_rq_brain.model.layers import layer_source
    from latent_rq_brain.sharing.pretrained import PretrainedEncoder
    from latent_rq_brain.targets.quantizer import latent_rq_quantizer
    from recipes.analysis.common import extract
    from recipes.probes import quick

    t0 = time.time()
    items = quick.probe_items(shared, corpus)["phones"]
    enc = PretrainedEncoder.load(resolve(spec), seed=seed)
    wavs = quick.load_audio(items, quick.audio_file(cache, "phones"),
                            quick.CROP_SECONDS.get("phones"))
    L = enc.encoder.num_layers
    layers = list(range(-1, L))
    sources = ["mel"] + [layer_source(l) for l in layers]
    q = latent_rq_quantizer(len(sources) - 1, 8, 4, enc.mel_target_dim, None, layers, L,
                            seed, layer_dims=enc.layer_dims)  # only its sources matter
    lens, out = extract(enc, q, sources, wavs, norm="utterance", keep_inputs=True)
    frames = quick.label_phone_items(items, wavs, lens, cache, log)
    labels, valid = quick.phone_targets(frames)
    keep = [k for k in range(len(wavs)) if frames[k] is not None]
    result = {"encoder": enc.info, "frames": int(valid.sum()), "effective_dimension": {},
              "kmeans_pnmi": {}, "input_dim": {}}
    for name in sources:
        x = np.concatenate([out[name]["inputs"][k] for k in keep])[valid]
        result["input_dim"][name] = int(x.shape[1])
        result["effective_dimension"][name] = effective_dimension(x)
        result["kmeans_pnmi"][name] = kmeans_pnmi(x, labels, seed=seed)
    result["norms"] = {n: quick.target_quality(enc, spec, wavs, frames, seed=seed, norm=n)
                       for n in norms}
    result["seconds"] = time.time() - t0
    return result


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="RUN@STEP, or any encoder name (random:<YAML>, ...)")
    p.add_argument("--out", required=True, help="folder of one JSON per checkpoint")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--corpus", default="data/pretrain")
    p.add_argument("--cache", default="results/reproduce/probe_cache")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    for spec in args.checkpoints:
        m = re.fullmatch(r".+@(\d+)", spec)
        name = f"step{m.group(1)}" if m else re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")
        path = os.path.join(args.out, f"{name}.json")
        if os.path.isfile(path):
            print(f"{path} exists: skipped")
            continue
        r = diagnose(spec, args.shared, args.corpus, args.cache, args.seed)
        r["checkpoint"] = spec
        with open(path + ".tmp", "w") as f:
            json.dump(r, f, indent=1)
        os.replace(path + ".tmp", path)
        print(f"{spec}: {r['frames']} phone frames, {r['seconds']:.0f} s")
        print("| source | eff. dim | k-means PNMI | " + " | ".join(f"RPQ PNMI ({n})" for n in NORMS)
              + " |")
        for s in r["effective_dimension"]:
            print(f"| {s} | {r['effective_dimension'][s]:.1f} / {r['input_dim'][s]} | "
                  f"{r['kmeans_pnmi'][s]:.3f} | "
                  + " | ".join(f"{r['norms'][n][s]['pnmi']:.3f}" for n in NORMS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
