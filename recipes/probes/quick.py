"""Quick probes: a fast, low-noise instrument for pre-training curves.

A frozen encoder gives every hidden state (CNN front-end output + each Conformer
layer) of the items of :mod:`recipes.reproduce.probe_sets`; then

* utterance tasks (keywords, digits, intents, speaker ID, language ID): mean+std
  pooling over valid frames, a standardised linear classifier (scikit-learn's
  ridge classifier, regularisation chosen on the training fold; see
  :func:`cv_accuracy` for why not logistic regression),
  k-fold cross-validation with speaker-disjoint (or prompt-disjoint) folds where
  groups are known;
* a frame-level linear phone probe (the same classifier) on PocketSphinx phones (forced-aligned where a
  transcript exists, recognised otherwise; cached), speaker-disjoint folds.

Without ``../shared`` (``--asterisk FOLDER``, what ``make demo`` runs), the tasks
come from the Asterisk prompts of :mod:`recipes.demo.prepare_asterisk` instead
(:func:`asterisk_items`): language ID over the five languages and the frame phone
probe on the English prompts, forced-aligned to their transcripts.

Each task is scored per layer and on all layers concatenated ("all"); the
report gives the best layer, the all-layer accuracy, the fold std, and ``Avg``
(mean over tasks of the all-layer accuracy; ``Avg_best`` of the best-layer
one). An autoencoder's checkpoint (:mod:`latent_rq_brain.model.autoencoder`) also has its
latent ``z`` scored as one more source (``z`` of each task, ``Avg_z``, and ``z``'s
effective dimension under ``latent``). The same CLI also measures the phone PNMI and code usage of the
checkpoint's targets (Mel and every layer), the leading indicator of
:mod:`recipes.reproduce.reproduce`.

Usage::

    python -m recipes.probes.quick results/demo/best_rq --shared ../shared/data \\
        --corpus data/pretrain --out results/quick/best_rq.json
    # no ../shared: tasks from the demo's Asterisk prompts
    python -m recipes.probes.quick results/demo/best_rq --asterisk demo_data/asterisk \\
        --cache results/demo/quick_cache --out results/demo/quick/best_rq.json

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

#: folds per task (fewer where a group count limits them)
N_FOLDS = 5
#: frames per fold used to fit the phone probe (subsampled, seeded)
MAX_PHONE_TRAIN_FRAMES = 10000
#: languages with fewer held-out prompts are left out of the language-ID task
MIN_LANGUAGE_ITEMS = 30
#: regularisation strengths the ridge probes choose from (on the training fold)
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
#: items per task (a seeded, label-stratified subset) and seconds kept of each
#: utterance, so that one checkpoint takes about 2 minutes on 2 cores
MAX_ITEMS = {"keywords": 800, "digits": 1200, "intents": 240, "speaker": 100, "language": 420}
CROP_SECONDS = {"speaker": 6.0, "intents": 6.0, "language": 3.0}


def pooled(states, enc_lens):
    """Mean and std over valid frames of every hidden state.

    Arguments
    ---------
    states : list of torch.Tensor
        (B, T, d) per layer.
    enc_lens : torch.Tensor
        (B,) valid frames.

    Returns
    -------
    numpy.ndarray
        (B, n_layers, 2 d) float32.

    Example
    -------
    >>> s = [torch.arange(6.).reshape(1, 3, 2)]
    >>> pooled(s, torch.tensor([2]))[0, 0].tolist()
    [1.0, 2.0, 1.0, 1.0]
    """
    out = []
    for h in states:
        mask = (torch.arange(h.shape[1])[None, :] < enc_lens[:, None]).float()[..., None]
        n = mask.sum(1).clamp(min=1)
        mean = (h * mask).sum(1) / n
        std = (((h - mean[:, None]) ** 2 * mask).sum(1) / n).sqrt()
        out.append(torch.cat([mean, std], -1))
    return torch.stack(out, 1).numpy().astype(np.float32)


def make_folds(labels, groups=None, n_folds=N_FOLDS, seed=0):
    """``[(train_idx, test_idx)]``: group-disjoint when ``groups`` is given.

    Example
    -------
    >>> y = np.array([0, 1] * 10); g = np.repeat(np.arange(5), 4)
    >>> folds = make_folds(y, g)
    >>> all(set(g[tr]).isdisjoint(g[te]) for tr, te in folds)
    True
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    if groups is not None:
        n = min(n_folds, len(set(groups)))
        split = StratifiedGroupKFold(n, shuffle=True, random_state=seed).split(
            labels, labels, groups)
    else:
        n = min(n_folds, int(np.bincount(np.unique(labels, return_inverse=True)[1]).min()))
        split = StratifiedKFold(max(2, n), shuffle=True, random_state=seed).split(labels, labels)
    return [(tr, te) for tr, te in split]


def cv_accuracy(x, y, folds, max_train=None, seed=0, classifier="ridge"):
    """Mean and std over folds of a standardised linear classifier's accuracy.

    ``classifier``: ``ridge`` (scikit-learn's RidgeClassifierCV: closed form, its
    regularisation chosen by efficient leave-one-out on the training fold only)
    or ``logistic`` (LogisticRegression, lbfgs). Ridge is the default: on trained
    encoders' features lbfgs did not converge in 100 iterations and one task
    took 284 s instead of ~10 s, too slow for an instrument run at every checkpoint.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 40); x = rng.normal(size=(120, 4)) + 5 * np.eye(4)[y]
    >>> cv_accuracy(x, y, make_folds(y))[0]
    1.0
    """
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    accs = []
    for tr, te in folds:
        if max_train is not None and len(tr) > max_train:
            tr = rng.choice(tr, max_train, replace=False)
        model = (RidgeClassifierCV(alphas=RIDGE_ALPHAS) if classifier == "ridge"
                 else LogisticRegression(max_iter=100, tol=1e-3, C=1.0))
        clf = make_pipeline(StandardScaler(), model)
        clf.fit(x[tr], y[tr])
        accs.append(float((clf.predict(x[te]) == y[te]).mean()))
    return float(np.mean(accs)), float(np.std(accs))


# ------------------------------------------------------------------ data
def probe_items(shared, corpus=None):
    """``{task: [(ID, wav, label, group)]}`` of every quick-probe task.

    ``corpus``: the reproduction corpus (:mod:`recipes.reproduce.prepare_corpus`)
    whose ``lid_holdout.csv`` gives the language-ID task and the English prompts of
    the phone probe; without it both are left out (language ID is then not in Avg).
    """
    from recipes.reproduce.probe_sets import PACK_TASKS, PHONE_PACK, read_pack, task_rows

    items = {}
    for task, (pack, label, group, _) in PACK_TASKS.items():
        items[task] = [(f"{pack}/{r['ID']}", r["wav"], str(r[label]),
                        str(r[group]) if group else None) for r in task_rows(shared, task)]
    import csv

    rows = []
    holdout = os.path.join(corpus, "lid_holdout.csv") if corpus else None
    if holdout and os.path.isfile(holdout):
        with open(holdout, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        # languages with at least MIN_LANGUAGE_ITEMS held-out prompts; prompt-disjoint
        # folds: the same prompt name (any language) in one fold
        count = {}
        for r in rows:
            count[r["lang"]] = count.get(r["lang"], 0) + 1
        items["language"] = [(r["ID"], r["wav"], r["lang"], r["ID"].split("/", 2)[-1])
                             for r in rows if count[r["lang"]] >= MIN_LANGUAGE_ITEMS]
    pack, keep = PHONE_PACK
    phones = [(f"{pack}/{r['ID']}", r["wav"], None, r["speaker"])
              for r in read_pack(shared, pack) if keep(r)]
    phones += [(r["ID"], r["wav"], r["wrd"], r["spk_id"]) for r in rows
               if r["lang"] == "en" and r.get("wrd")]
    items["phones"] = phones
    return {task: subset(its, MAX_ITEMS.get(task)) for task, its in items.items()}


def asterisk_items(folder):
    """``{task: [(ID, wav, label, group)]}`` from the Asterisk demo corpus, no ``../shared``.

    ``folder``: the output of :mod:`recipes.demo.prepare_asterisk` (``train.csv``
    and ``valid.csv``, IDs ``<lang>-<prompt>``, one voice per language). Tasks:

    * ``language``: the language of a prompt (its first ``CROP_SECONDS`` s), the
      languages with at least ``MIN_LANGUAGE_ITEMS`` prompts; folds prompt-disjoint
      (the same prompt name in every language lands in one fold), so a fold is
      never scored on a sentence it was trained on in another language;
    * ``phones``: the English prompts with a transcript; PocketSphinx aligns the
      transcript (:func:`label_phone_items`), folds prompt-disjoint.

    One voice per language: language ID here is partly voice ID, which even a
    random encoder's front-end does well (the random-init row shows how well).

    Example
    -------
    >>> asterisk_items("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: /nonexistent/train.csv does not exist: build the demo corpus first (python recipes/demo/prepare_asterisk.py /nonexistent --languages en fr es it ru)
    """
    from recipes.probes.prepare_asterisk_probes import prompt_rows

    rows = []
    for name in ("train.csv", "valid.csv"):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} does not exist: build the demo corpus first (python "
                f"recipes/demo/prepare_asterisk.py {folder} --languages en fr es it ru)")
        rows += [(r["ID"], r["wav"], r["language"], r["prompt"], (r.get("wrd") or "").strip())
                 for r in prompt_rows(path)]
    rows.sort()
    count = {}
    for r in rows:
        count[r[2]] = count.get(r[2], 0) + 1
    items = {
        "language": [(uid, wav, lang, prompt) for uid, wav, lang, prompt, _ in rows
                     if count[lang] >= MIN_LANGUAGE_ITEMS],
        "phones": [(uid, wav, wrd, prompt) for uid, wav, lang, prompt, wrd in rows
                   if lang == "en" and wrd],
    }
    for task, its in items.items():
        if not its:
            raise ValueError(f"{folder}: no item for the {task} task (needs English "
                             f"prompts with a transcript and >= {MIN_LANGUAGE_ITEMS} "
                             "prompts per language)")
    return {task: subset(its, MAX_ITEMS.get(task)) for task, its in items.items()}


def subset(items, n, seed=0):
    """At most ``n`` items, the same share of each label (seeded), in input order.

    Example
    -------
    >>> its = [(f"u{i}", "w", "ab"[i % 2], None) for i in range(10)]
    >>> sorted(i[2] for i in subset(its, 4))
    ['a', 'a', 'b', 'b']
    """
    if n is None or len(items) <= n:
        return items
    rng = np.random.default_rng(seed)
    labels = sorted({i[2] for i in items})
    keep = set()
    for lab in labels:
        idx = [k for k, i in enumerate(items) if i[2] == lab]
        take = max(1, round(n * len(idx) / len(items)))
        keep.update(rng.choice(idx, min(take, len(idx)), replace=False).tolist())
    return [items[k] for k in sorted(keep)]


def load_audio(items, cache_file, crop_seconds=None):
    """Waveforms of all items (the first ``crop_seconds`` of each), decoded once and
    cached as int16 (the cache is used only when its IDs match)."""
    from latent_rq_brain.training.data import read_audio_checked

    ids = [i[0] for i in items]
    if os.path.isfile(cache_file):
        with np.load(cache_file, allow_pickle=False) as z:
            if list(z["ids"]) == ids:
                offs = z["offsets"]
                audio = z["audio"]
                return [torch.from_numpy(audio[offs[k]:offs[k + 1]].astype(np.float32) / 32768)
                        for k in range(len(ids))]
    wavs = [read_audio_checked(i[1], 16000) for i in items]
    if crop_seconds:
        wavs = [w[: int(crop_seconds * 16000)] for w in wavs]
    offs = np.cumsum([0] + [len(w) for w in wavs])
    audio = np.concatenate([np.clip(w.numpy() * 32768, -32768, 32767).astype(np.int16)
                            for w in wavs])
    os.makedirs(os.path.dirname(cache_file), exist_ok=True)
    # one temporary file per process: several evaluations may fill one cache at once
    tmp = f"{cache_file}.{os.getpid()}.tmp.npz"
    np.savez(tmp, ids=np.array(ids), offsets=offs, audio=audio)
    os.replace(tmp, cache_file)
    return wavs


@torch.no_grad()
def encode(enc, wavs, batch_seconds=120, latent=False):
    """Per utterance a list of (T_i, d) arrays, one per layer; ``latent``: then
    the autoencoder's ``z`` (T_i, latent_dim) last (:meth:`PretrainedEncoder.encode_latent`)."""
    order = np.argsort([len(w) for w in wavs])
    out = [None] * len(wavs)
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and (j - i + 1) * len(wavs[order[j]]) <= batch_seconds * 16000:
            j += 1
        j = max(j, i + 1)
        chunk = [wavs[k] for k in order[i:j]]
        n = max(len(w) for w in chunk)
        batch = torch.zeros(len(chunk), n)
        for b, w in enumerate(chunk):
            batch[b, : len(w)] = w
        rel = torch.tensor([len(w) / n for w in chunk])
        if latent:
            states, z, lens = enc.encode_latent(batch, rel)
            states = list(states) + [z]
        else:
            states, lens = enc(batch, rel)
        for b, k in enumerate(order[i:j]):
            out[k] = [s[b, : int(lens[b])].float().numpy() for s in states]
        i = j
    return out


# ------------------------------------------------------------------ evaluation
def run_probes(states, items, phone_frames=None, log=print, latent=False):
    """All tasks' per-layer and all-layer accuracies (see module docstring).

    ``latent``: the last array of each utterance's states is an autoencoder's
    ``z`` (:func:`encode`): it is scored alone as ``z`` (``{"acc", "std"}``) and
    is not one of the ``layers`` nor part of ``all`` (so ``Avg`` stays comparable
    with encoders without ``z``).
    """
    results = {}
    zs = {}
    if latent:
        zs = {t: [s[-1] for s in v] for t, v in states.items()}
        states = {t: [s[:-1] for s in v] for t, v in states.items()}
    for task, its in items.items():
        if task == "phones":
            continue
        t0 = time.time()
        y = np.array([i[2] for i in its])
        groups = None if its[0][3] is None else np.array([i[3] for i in its])
        feats = np.stack([pooled([torch.from_numpy(h)[None] for h in s],
                                 torch.tensor([len(s[0])]))[0] for s in states[task]])
        folds = make_folds(y, groups)
        layers = [cv_accuracy(feats[:, l], y, folds) for l in range(feats.shape[1])]
        allm, alls = cv_accuracy(feats.reshape(len(y), -1), y, folds)
        results[task] = _summary(layers, allm, alls, len(folds), len(y))
        if latent:
            zf = np.stack([pooled([torch.from_numpy(z)[None]], torch.tensor([len(z)]))[0, 0]
                           for z in zs[task]])
            m, sd = cv_accuracy(zf, y, folds)
            results[task]["z"] = {"acc": m, "std": sd}
        log(f"quick probe {task}: all-layer {100 * allm:.1f} ({time.time() - t0:.1f} s)")
    if phone_frames is not None:
        its = items["phones"]
        keep_utts = [k for k in range(len(its)) if phone_frames[k] is not None]
        lab = np.concatenate([np.array(phone_frames[k], dtype=object) for k in keep_utts])
        grp = np.concatenate([[its[k][3]] * len(phone_frames[k]) for k in keep_utts])
        valid = np.array([l not in (None, "SIL", "+NSN+", "+SPN+") for l in lab])
        y = lab[valid].astype(str)
        folds = make_folds(y, grp[valid])
        layers = []
        n_layers = len(states["phones"][0])
        per_layer = []
        for l in range(n_layers):
            x = np.concatenate([states["phones"][k][l] for k in keep_utts])[valid]
            per_layer.append(x)
            layers.append(cv_accuracy(x, y, folds, MAX_PHONE_TRAIN_FRAMES))
        allm, alls = cv_accuracy(np.concatenate(per_layer, 1), y, folds, MAX_PHONE_TRAIN_FRAMES)
        results["phones"] = _summary(layers, allm, alls, len(folds), int(valid.sum()))
        if latent:
            x = np.concatenate([zs["phones"][k] for k in keep_utts])[valid]
            m, sd = cv_accuracy(x, y, folds, MAX_PHONE_TRAIN_FRAMES)
            results["phones"]["z"] = {"acc": m, "std": sd}
    return results


def _summary(layers, allm, alls, n_folds, n):
    best = int(np.argmax([m for m, _ in layers]))
    return {
        "layers": [{"acc": m, "std": s} for m, s in layers],
        "best_layer": best - 1,  # paper index: -1 = CNN front-end output
        "best": layers[best][0], "best_std": layers[best][1],
        "all": allm, "all_std": alls, "folds": n_folds, "n": n,
    }


def target_quality(enc, spec, wavs, frames, n_codebooks=6, codebook_size=512, codebook_dim=16,
                   seed=1, norm=None):
    """Phone PNMI and code usage of Mel targets and of every layer's targets, and
    the effective dimension (participation ratio) of what each quantizer reads.

    The quantizers are the ones a Latent-RQ stage would use (seeded per source with
    ``seed``, :func:`latent_rq_brain.targets.quantizer.latent_rq_quantizer`), so a stage-0
    checkpoint shows what its layers would give as targets. ``norm``: the
    target normalisation of the layer states (default: the run's ``target_norm``).
    """
    from latent_rq_brain.targets.quantizer import latent_rq_quantizer
    from latent_rq_brain.targets.target_quality import codebook_quality
    from latent_rq_brain.model.layers import layer_source
    from latent_rq_brain.objectives.sigreg import effective_dimension
    from recipes.analysis.common import extract

    L = enc.encoder.num_layers
    layers = list(range(-1, L))
    q = latent_rq_quantizer(n_codebooks * (len(layers)), codebook_size, codebook_dim,
                            enc.mel_target_dim, None, layers, L, seed,
                            layer_dims=enc.layer_dims)
    sources = ["mel"] + [layer_source(l) for l in layers]
    lens, out = extract(enc, q, sources, wavs, norm=norm, keep_inputs=True)
    lab, valid = phone_targets(frames)
    keep = [k for k in range(len(wavs)) if frames[k] is not None]
    result = {}
    for name in sources:
        codes = np.concatenate([out[name]["codes"][k] for k in keep])[valid]
        qual = codebook_quality(codes, {"phone": lab}, codebook_size)
        m = qual["mean"]
        per = [c["phone"]["pnmi"] for c in qual["per_codebook"]]
        x = np.concatenate([out[name]["inputs"][k] for k in keep])[valid]
        result[name] = {"pnmi": float(m["phone"]["pnmi"]),
                        "effective_dimension": float(
                            effective_dimension(torch.from_numpy(x.astype(np.float64)))),
                        "pnmi_codebook_std": float(np.std(per)),
                        "codebooks": len(per),
                        "purity": float(m["phone"]["cluster_purity"]),
                        "perplexity": float(m["perplexity"]), "distinct": float(m["distinct"])}
    return result


def phone_targets(frames):
    """``(labels, valid)``: the phone label of every scored frame of the labelled
    utterances, and which of all their frames are scored (not silence/noise)."""
    lab = np.concatenate([np.array(f, dtype=object) for f in frames if f is not None])
    valid = np.array([l not in (None, "SIL", "+NSN+", "+SPN+") for l in lab])
    return lab[valid].astype(str), valid


def label_phone_items(items, wavs, enc_lens, cache, log=print, downsampling=4):
    """Per-frame PocketSphinx phones of the phone-probe items (aligned where the
    item has words, recognised otherwise), cached under ``cache``.
    ``downsampling``: 10 ms frames per encoder frame (``enc.encoder.downsampling``)."""
    from recipes.analysis.common import phone_frames as label_phones

    rows = [(i[0], {"wav": i[1], "wrd": i[2] or ""}) for i in items]
    with_words = [k for k, i in enumerate(items) if i[2]]
    without = [k for k, i in enumerate(items) if not i[2]]
    frames = [None] * len(items)
    for idx, col in ((with_words, "wrd"), (without, None)):
        f, _ = label_phones([rows[k] for k in idx], [wavs[k] for k in idx],
                            [enc_lens[k] for k in idx], downsampling, col,
                            cache=os.path.join(cache, f"phones_{'aligned' if col else 'rec'}.json"),
                            log=log)
        for k, fr in zip(idx, f):
            frames[k] = fr
    return frames


def audio_file(cache, task):
    """The int16 audio cache of one task's items."""
    return os.path.join(cache, f"audio_{task}_crop{CROP_SECONDS.get(task, 0)}.npz")


def evaluate_checkpoint(spec, shared, corpus, cache, threads=2, seed=1, log=print,
                        items=None):
    """Quick probes and target quality of one encoder; returns a JSON-able dict.

    ``items``: the tasks (``{task: items}``, e.g. :func:`asterisk_items`); default
    :func:`probe_items` of ``shared`` and ``corpus``. ``threads``: torch CPU
    threads, 0 = torch's default (``OMP_NUM_THREADS`` where it is set).
    """
    from latent_rq_brain.sharing.pretrained import PretrainedEncoder

    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    if items is None:
        items = probe_items(shared, corpus)
    enc = PretrainedEncoder.load(spec, seed=seed)
    wavs = {t: load_audio(its, audio_file(cache, t), CROP_SECONDS.get(t))
            for t, its in items.items()}
    t1 = time.time()
    latent = getattr(enc, "latent_dim", None) is not None  # an autoencoder: z too
    states = {t: encode(enc, w, latent=latent) for t, w in wavs.items()}
    t2 = time.time()
    frames = label_phone_items(items["phones"], wavs["phones"],
                               [len(s[0]) for s in states["phones"]], cache, log,
                               enc.encoder.downsampling)
    probes = run_probes(states, items, frames, latent=latent)
    t3 = time.time()
    targets = target_quality(enc, spec, wavs["phones"], frames, seed=seed)
    t4 = time.time()
    avg = float(np.mean([r["all"] for r in probes.values()]))
    avg_best = float(np.mean([r["best"] for r in probes.values()]))
    extra = {}
    if latent:  # the autoencoder's z: its probes' mean and its effective dimension
        from latent_rq_brain.objectives.sigreg import effective_dimension

        z = np.concatenate([s[-1] for s in states["phones"]]).astype(np.float64)
        extra = {"Avg_z": float(np.mean([r["z"]["acc"] for r in probes.values()])),
                 "latent": {"dim": enc.latent_dim, "effective_dimension": float(
                     effective_dimension(torch.from_numpy(z)))}}
    return {
        "encoder": enc.info, "probes": probes, "Avg": avg, "Avg_best": avg_best, **extra,
        "targets": targets, "threads": torch.get_num_threads(),
        "seconds": {"audio": t1 - t0, "encode": t2 - t1, "probes": t3 - t2,
                    "targets": t4 - t3, "total": t4 - t0},
    }


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="run, save/ or CKPT+ folder, run@stageK, or random:<YAML>")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--corpus", default="data/pretrain",
                   help="reproduction corpus (its lid_holdout.csv); missing = no language task")
    p.add_argument("--cache", default="results/quick_probe_cache")
    p.add_argument("--out", default=None, help="JSON file")
    p.add_argument("--asterisk", default=None, metavar="FOLDER",
                   help="tasks from the Asterisk demo corpus (recipes/demo/prepare_asterisk.py "
                   "output) instead of --shared/--corpus: language ID and English phones")
    p.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads; 0 = torch's default (OMP_NUM_THREADS)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--label", default=None, help="a title printed above the table")
    args = p.parse_args(argv)
    if args.corpus in ("", "none"):
        args.corpus = None
    items = asterisk_items(args.asterisk) if args.asterisk else None
    r = evaluate_checkpoint(args.checkpoint, args.shared, args.corpus, args.cache, args.threads,
                            args.seed, items=items)
    r["command"] = ["python", "-m", "recipes.probes.quick"] + list(
        sys.argv[1:] if argv is None else argv)
    if args.label:
        print(f"\n### Quick probes: {args.label} ({args.checkpoint})")
    print("| task | best layer | best acc | all-layer acc (fold std) | n |")
    print("|---|---:|---:|---:|---:|")
    for task, s in r["probes"].items():
        print(f"| {task} | {s['best_layer']} | {100 * s['best']:.1f} | "
              f"{100 * s['all']:.1f} ({100 * s['all_std']:.1f}) | {s['n']} |")
    print(f"| **Avg** | | {100 * r['Avg_best']:.1f} | {100 * r['Avg']:.1f} | |")
    if "Avg_z" in r:
        print("\n| task | z acc (fold std) |\n|---|---:|")
        for task, s in r["probes"].items():
            print(f"| {task} | {100 * s['z']['acc']:.1f} ({100 * s['z']['std']:.1f}) |")
        print(f"| **Avg_z** | {100 * r['Avg_z']:.1f} |")
        print(f"z: {r['latent']['dim']} dims, effective dimension "
              f"{r['latent']['effective_dimension']:.1f}")
    print("\n| target source | phone PNMI | code perplexity |\n|---|---:|---:|")
    for k, v in r["targets"].items():
        print(f"| {k} | {v['pnmi']:.3f} | {v['perplexity']:.0f} |")
    print(f"seconds: {r['seconds']}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
