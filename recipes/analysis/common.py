"""Shared plumbing of the analysis instruments: model, sources, data, labels.

Targets are made as in training, by :class:`latent_rq_brain.targets.maker.TargetMaker`,
on every valid 40 ms frame instead of the masked ones only:

* ``mel``: the 4 stacked normalised log-Mel frames (4 x 80 = 320 dims) of
  each encoder frame;
* ``layer<l>``: hidden state ``l`` (paper index, -1 = CNN output) of the
  checkpoint's encoder, normalised with the run's ``target_norm``
  (:func:`latent_rq_brain.targets.target_encoder.normalize_states`). These are the
  targets the *next* stage would train on if a transition happened at this
  checkpoint (at a ``transition_to_stage`` checkpoint, exactly the new stage's
  targets); a stage-k run trains on its older snapshot's targets.

Authors
 * latent-rq developers 2026
"""

import json
import os
import re

import numpy as np
import torch

from latent_rq_brain.model.layers import MEL_SOURCE, layer_source, source_layer
from latent_rq_brain.targets.maker import TargetMaker, quantizer_sources
from latent_rq_brain.targets.quantizer import latent_rq_quantizer
from latent_rq_brain.targets.target_encoder import TargetEncoder
from latent_rq_brain.training.data import read_audio_checked, read_manifest

#: ``checkpoint`` value that builds a random tiny encoder and quantizer (tests).
RANDOM_TINY = "random:tiny"


def load_model(checkpoint, seed=1):
    """``(encoder, quantizer)`` of a checkpoint, or random tiny ones.

    Arguments
    ---------
    checkpoint : str
        Any name :meth:`latent_rq_brain.sharing.pretrained.PretrainedEncoder.load`
        takes; ``"random:tiny"`` (a random 2-layer d=32 encoder) is treated as
        stage 1, with a 4 x 64-code quantizer on ``mel`` and ``layer0``.
    seed : int
        Seed of the random tiny model.
    """
    from latent_rq_brain.sharing.pretrained import PretrainedEncoder, load_quantizer

    if checkpoint == RANDOM_TINY:
        cfg = PretrainedEncoder.tiny_config()
        enc = PretrainedEncoder.load(RANDOM_TINY, seed=seed)
        enc.info.update(stage=1, target_layers=cfg["target_layers"],
                        target_norm=cfg["target_norm"])
        q = latent_rq_quantizer(
            4, 64, 8, enc.mel_target_dim, None, cfg["target_layers"],
            enc.encoder.num_layers, seed, layer_dims=enc.layer_dims,
        )
        return enc, q
    return PretrainedEncoder.load(checkpoint), load_quantizer(checkpoint)


def choose_sources(info, quantizer, spec="auto"):
    """Sources to analyse.

    ``auto``: ``mel`` for a stage-0 checkpoint; ``mel`` and every target layer
    for stage >= 1 (the comparison the paper makes). ``all``: every source of
    the quantizer. Otherwise a comma-separated list.

    Example
    -------
    >>> q = latent_rq_quantizer(4, 16, 4, 320, 32, [0, 1], 2, seed=1)
    >>> choose_sources({"stage": 0, "target_layers": [0, 1]}, q)
    ['mel']
    >>> choose_sources({"stage": 2, "target_layers": [0, 1]}, q)
    ['mel', 'layer0', 'layer1']
    >>> choose_sources({"stage": 0}, q, "layer1,mel")
    ['layer1', 'mel']
    >>> choose_sources({"stage": 0}, q, "layer7")
    Traceback (most recent call last):
     ...
    ValueError: source 'layer7' is not in the quantizer, whose sources are ['layer0', 'layer1', 'mel']
    """
    if spec == "auto":
        names = [MEL_SOURCE]
        if (info.get("stage") or 0) >= 1:
            layers = info.get("target_layers") or [
                source_layer(s) for s in quantizer.sources if s != MEL_SOURCE
            ]
            names += [layer_source(l) for l in layers]
    elif spec == "all":
        names = list(quantizer.sources)
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        if name not in quantizer.sources:
            raise ValueError(
                f"source {name!r} is not in the quantizer, whose sources are "
                f"{sorted(quantizer.sources)}"
            )
        source_layer(name)
    return names


LABEL_KINDS = ("phone", "speaker")


def prepare(args):
    """What every command starts with: threads, model, sources, label kinds and
    the selected utterances (from the shared command-line options)."""
    torch.set_num_threads(max(1, args.threads))
    enc, q = load_model(args.checkpoint)
    sources = choose_sources(enc.info, q, args.sources)
    kinds = [k.strip() for k in args.labels.split(",") if k.strip()]
    for k in kinds:
        if k not in LABEL_KINDS:
            raise ValueError(f"--labels must be among {LABEL_KINDS}, got {k!r}")
    items = select_utterances(
        args.manifest, parse_filters(args.filter), args.max_utts, args.max_seconds,
        args.seed,
    )
    return enc, q, sources, kinds, items


def parse_filters(filters):
    """``["split=test-other"]`` -> ``{"split": "test-other"}``.

    Example
    -------
    >>> parse_filters(["split=test-other", "gender=F"])
    {'split': 'test-other', 'gender': 'F'}
    """
    out = {}
    for f in filters or ():
        if "=" not in f:
            raise ValueError(f"filter {f!r} must be COLUMN=VALUE")
        k, v = f.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def select_utterances(manifest, filters=None, max_utts=None, max_seconds=None, seed=0):
    """``[(ID, row)]`` of a manifest, in file order, after filters and caps.

    ``filters`` match columns case-insensitively; ``max_utts`` keeps a random
    subset (seeded with ``seed``, file order kept: manifests are often sorted
    by class or speaker); ``max_seconds`` then caps the total audio
    (utterances are taken in order until it is reached).
    """
    rows = read_manifest(manifest)
    filters = filters or {}
    items = []
    for uid, row in rows.items():
        lower = {k.lower(): v for k, v in row.items() if isinstance(k, str)}
        ok = True
        for k, v in filters.items():
            if k.lower() not in lower:
                raise ValueError(
                    f"filter column {k!r} is not in {manifest}; columns: {sorted(lower)}"
                )
            ok = ok and str(lower[k.lower()]) == v
        if ok:
            items.append((uid, row))
    if not items:
        raise ValueError(f"no utterance of {manifest} matches the filters {filters}")
    if max_utts is not None and max_utts < len(items):
        keep = np.random.default_rng(seed).choice(len(items), int(max_utts), replace=False)
        items = [items[i] for i in sorted(keep)]
    if max_seconds is not None:
        kept, total = [], 0.0
        for uid, row in items:
            if kept and total + row["duration"] > max_seconds:
                break
            kept.append((uid, row))
            total += row["duration"]
        items = kept
    return items


@torch.no_grad()
def extract(enc, quantizer, sources, wavs, batch_size=8, project=False, norm=None,
            keep_inputs=False):
    """Codes (and optionally projected inputs) of every valid frame.

    Arguments
    ---------
    enc : latent_rq_brain.sharing.pretrained.PretrainedEncoder
    quantizer : latent_rq_brain.targets.quantizer.RandomProjectionQuantizer
    sources : list of str
    wavs : list of torch.Tensor
        1-D 16 kHz waveforms.
    batch_size : int
    project : bool
        Also return ``quantizer.project`` outputs (unit vectors, the inputs of
        the argmin) per frame.
    norm : str, optional
        Target normalisation of the layer states (default: the run's
        ``target_norm``, else ``"utterance"``).
    keep_inputs : bool
        Also return what each source quantizes (stacked Mel frames,
        normalised layer states) per frame.

    Returns
    -------
    enc_lens : list of int
        Valid encoder frames of each utterance.
    out : dict
        ``{source: {"codes": [(T_i, n) int64 array], "proj": [(T_i, n, d)
        float32 array], "inputs": [(T_i, dim) float32 array]}}`` (``proj``
        only if ``project``, ``inputs`` only if ``keep_inputs``).

    Example
    -------
    >>> enc, q = load_model(RANDOM_TINY)
    >>> lens, out = extract(enc, q, ["mel", "layer0"], [torch.randn(8000), torch.randn(3000)], project=True)
    >>> lens, out["mel"]["codes"][1].shape, out["layer0"]["proj"][0].shape
    ([13, 5], (5, 4), (13, 4, 8))
    """
    layers = [source_layer(s) for s in sources if s != MEL_SOURCE]
    target_encoder = None
    if layers:  # the checkpoint's encoder as target encoder, the run's norm
        norm = norm or enc.info.get("target_norm") or "utterance"
        target_encoder = TargetEncoder(layers, norm)
        target_encoder.snapshot(enc.encoder, step=0)
    make = TargetMaker(quantizer, quantizer_sources(quantizer, target_encoder,
                                                  enc.encoder.downsampling, anchor_codebooks=0))
    out = {s: {"codes": [], "proj": [], "inputs": []} for s in sources}
    lens = []
    for i in range(0, len(wavs), batch_size):
        chunk = wavs[i : i + batch_size]
        n = torch.tensor([len(w) for w in chunk])
        batch = torch.zeros(len(chunk), int(n.max()))
        for b, w in enumerate(chunk):
            batch[b, : len(w)] = w
        feats, _, enc_lens = enc.features(batch, n)
        inputs = make.inputs(feats, enc_lens, sources)
        for name in sources:
            for b in range(len(chunk)):
                xb = inputs[name][b, : int(enc_lens[b])]
                out[name]["codes"].append(quantizer(xb, name).numpy())
                if project:
                    out[name]["proj"].append(quantizer.project(xb, name).numpy())
                if keep_inputs:
                    out[name]["inputs"].append(xb.float().numpy())
        lens += [int(t) for t in enc_lens]
    return lens, out


def read_wavs(items, sample_rate=16000):
    """1-D float tensors of ``[(ID, row)]`` (row ``wav`` absolute)."""
    return [read_audio_checked(row["wav"], sample_rate) for _, row in items]


def speaker_frames(items, enc_lens, column=None):
    """Per-frame speaker labels from a manifest column."""
    from recipes.analysis.labels import SPEAKER_COLUMNS, find_column

    out = []
    for (uid, row), t in zip(items, enc_lens):
        col = column or find_column(row, SPEAKER_COLUMNS, "speaker")
        if col not in row:
            raise ValueError(f"utterance {uid} has no column {col!r}")
        out.append([str(row[col])] * t)
    return out


def phone_frames(items, wavs, enc_lens, downsampling, transcript_column=None, cache=None,
                 log=print):
    """Per-frame phone labels from PocketSphinx (see :mod:`recipes.analysis.labels`).

    ``downsampling``: 10 ms frames per encoder frame (the encoder's, e.g.
    ``enc.encoder.downsampling``).

    ``transcript_column``: ``"auto"`` (first of ``wrd, words, transcript,
    text, digit`` present), a column name, or ``None`` (phone recognition).
    ``cache``: a JSON file of earlier labels (``{ID: {"how", "frames"}}``),
    reused where the frame count matches and updated.

    Returns ``(frames, counts)``, counts = utterances per labelling method.
    """
    from recipes.analysis.labels import (
        TRANSCRIPT_COLUMNS,
        PocketSphinxPhones,
        find_column,
        segments_to_frames,
        transcript_words,
    )

    stored = {}
    if cache and os.path.exists(cache):
        with open(cache, encoding="utf-8") as f:
            stored = json.load(f)
    labeller = None
    frames, counts = [], {}
    for (uid, row), wav, t in zip(items, wavs, enc_lens):
        words = None
        if transcript_column:
            col = (
                find_column(row, TRANSCRIPT_COLUMNS, "transcript")
                if transcript_column == "auto"
                else transcript_column
            )
            if col not in row:
                raise ValueError(f"utterance {uid} has no transcript column {col!r}")
            words = transcript_words(row[col])
        hit = stored.get(uid)
        if hit is not None and len(hit["frames"]) == t and (
            words is None or hit.get("words") == words
        ):
            how, lab = hit["how"], hit["frames"]
        else:
            if labeller is None:
                labeller = PocketSphinxPhones()
            segs, how = labeller(wav.numpy(), words)
            lab = segments_to_frames(segs, t, downsampling)
            stored[uid] = {"how": how, "words": words, "frames": lab}
        counts[how] = counts.get(how, 0) + 1
        frames.append(lab)
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        with open(cache, "w", encoding="utf-8") as f:
            json.dump(stored, f)
    return frames, counts


def flat(list_of_lists):
    """Concatenates per-utterance frame labels into one object array."""
    return np.array([v for seq in list_of_lists for v in seq], dtype=object)


def describe(enc, quantizer):
    """One line on what was loaded."""
    i = enc.info
    return (
        f"checkpoint {i.get('checkpoint')} (stage {i.get('stage')}, step "
        f"{i.get('step')}, target_layers {i.get('target_layers')}, target_norm "
        f"{i.get('target_norm')}); encoder {enc.encoder.num_layers} layers x "
        f"d={enc.hidden_size}; quantizer {quantizer.codebook_size} codes x dim "
        f"{quantizer.codebook_dim}, sources {quantizer.sources}"
    )
