"""The mini-reproduction pre-training corpus: ~8 h of real speech, one command.

Sources (all reached by a fresh Debian/Ubuntu machine without root, with
``apt-get download`` + ``dpkg-deb -x``; see :data:`SOURCES` for the licences):

* Asterisk core sounds, en/fr/es/it/ru (G.722, 16 kHz; through
  :func:`recipes.demo.prepare_asterisk.prepare_asterisk`);
* the extra Asterisk voices ``asterisk-prompt-es-co``, ``-fr-armelle`` (GSM,
  8 kHz) and ``asterisk-prompt-it-menardi-wav``;
* the spoken dialogues of the game Fish Fillets (``fillets-ng-data-cs``,
  ``-nl`` and the English ones in ``fillets-ng-data``);
* the spoken letters and syllables of KLettres (``klettres-data``);
* the audio of ``../shared/data`` packs, **minus every utterance that any probe
  evaluates on** (:func:`recipes.reproduce.probe_sets.probe_held_ids`).

``gcompris-qt-data`` was inspected and holds no voices (GCompris downloads its
voices at run time), so it is not a source.

Every source's prompts are split by a stable hash of their name: 10 % are held
out for the quick probes' language-ID task (``lid_holdout.csv``), never
pre-trained on. All audio is decoded with PyAV, resampled to 16 kHz mono 16-bit
WAV and listed in ``train.csv`` (``ID,duration,wav,spk_id,source,lang,wrd``; ``wrd`` is the
transcript where the source has one);
``sources.json`` holds the hours and utterances per source. Each source is built
once and remembered with a marker, so a killed run resumes source by source.

Usage::

    python -m recipes.reproduce.prepare_corpus data/pretrain --shared ../shared/data

Authors
 * latent-rq developers 2026
"""

import argparse
import csv
import glob
import json
import logging
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from recipes.demo.prepare_asterisk import (
    _get_deb,
    _index_deb_files,
    extract_deb,
    prepare_asterisk,
    rms_dbfs,
)
from latent_rq_brain.training.data import stable_hash

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOLDOUT_FRACTION = 0.1  # prompts held out for the LID probe (never pre-trained on)
CSV_COLUMNS = ["ID", "duration", "wav", "spk_id", "source", "lang", "wrd"]
VERSION = 2  # bump when the produced audio or manifests change

#: name -> (debian package, glob of audio files inside it, language, voice, licence)
#: A voice of ``None`` means "the file's parent folder" (several speakers).
SOURCES = {
    "asterisk-prompt-es-co": (
        "asterisk-prompt-es-co", "usr/share/asterisk/sounds/**/*.gsm", "es", "es-co", "GPL-2+"),
    "asterisk-prompt-fr-armelle": (
        "asterisk-prompt-fr-armelle", "usr/share/asterisk/sounds/**/*.gsm", "fr", "fr-armelle",
        "GPL-2+"),
    "asterisk-prompt-it-menardi": (
        "asterisk-prompt-it-menardi-wav", "usr/share/asterisk/sounds/**/*.wav", "it",
        "it-menardi", "CC-BY-SA-3.0 (Italian)"),
    "fillets-cs": (
        "fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/**/cs/*.ogg", "cs", None,
        "GPL-2+"),
    "fillets-nl": (
        "fillets-ng-data-nl", "usr/share/games/fillets-ng/sound/**/nl/*.ogg", "nl", None,
        "GPL-2+"),
    "fillets-en": (
        "fillets-ng-data", "usr/share/games/fillets-ng/sound/**/en/*.ogg", "en", None, "GPL-2+"),
    "klettres": (
        "klettres-data", "usr/share/klettres/**/*.ogg", None, None, "GPL-2+"),
}
ASTERISK_LANGUAGES = ("en", "fr", "es", "it", "ru")
ASTERISK_LICENCE = "CC-BY-SA-3.0"


def is_holdout(key, fraction=HOLDOUT_FRACTION):
    """True when the prompt ``key`` is held out for the LID probe.

    Example
    -------
    >>> is_holdout("digits/1") == is_holdout("digits/1")
    True
    >>> sum(is_holdout(f"p{i}") for i in range(2000)) / 2000  # doctest: +SKIP
    0.1...
    """
    return stable_hash("holdout|" + key) < fraction


def decode_file(job):
    """Decodes one audio file (any format PyAV reads) to a 16 kHz mono WAV.

    Arguments
    ---------
    job : tuple
        ``(source_path, wav_path, container_format, min_s, max_s)``.

    Returns
    -------
    tuple
        ``(status, duration_seconds)``: status is ``ok``, ``short``, ``long``,
        ``silent`` or ``error: ...``.
    """
    import av

    src, wav, fmt, min_s, max_s = job
    if os.path.isfile(wav):
        return "ok", sf.info(wav).frames / SAMPLE_RATE
    try:
        chunks = []
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        with av.open(src, format=fmt) as container:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except Exception as err:  # noqa: BLE001 (reported per file, never fatal)
        return f"error: {err}", 0.0
    samples = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
    duration = len(samples) / SAMPLE_RATE
    if duration < min_s:
        return "short", duration
    if duration > max_s:
        return "long", duration
    if rms_dbfs(samples) < -60.0:
        return "silent", duration
    os.makedirs(os.path.dirname(wav), exist_ok=True)
    tmp = wav + ".tmp.wav"
    sf.write(tmp, samples, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, wav)
    return "ok", duration


def _write_rows(rows, path):
    tmp = str(path) + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["ID"]))
    os.replace(tmp, path)


def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def build_deb_source(name, out, cache, min_s, max_s, num_workers, deb_files=None):
    """Decodes one Debian-package source; returns ``(train_rows, holdout_rows)``."""
    package, pattern, lang, voice, _ = SOURCES[name]
    deb = _get_deb(package, cache, deb_files or {}, required=True)
    root = extract_deb(deb, Path(cache) / "extracted")
    files = sorted(glob.glob(os.path.join(root, pattern), recursive=True))
    if not files:
        raise RuntimeError(f"source {name}: no file matches {pattern} in {deb}")
    jobs, meta = [], []
    for path in files:
        rel = os.path.relpath(path, root)
        stem = os.path.splitext(rel)[0]
        fmt = "gsm" if path.endswith(".gsm") else None
        wav = os.path.join(out, "wav", name, stem + ".wav")
        parts = Path(stem).parts
        the_lang = lang or parts[3]  # klettres: usr/share/klettres/<lang>/...
        spk = voice or f"{name}/{parts[-2] if lang else the_lang}"
        key = stem.split("sounds/", 1)[-1] if "asterisk" in name else stem
        jobs.append((path, wav, fmt, min_s, max_s))
        meta.append((f"{name}/{stem.split('/', 3)[-1]}", wav, spk, the_lang, key))
    if num_workers > 1:
        with multiprocessing.Pool(num_workers) as pool:
            results = pool.map(decode_file, jobs, chunksize=16)
    else:
        results = [decode_file(j) for j in jobs]
    train, hold, bad = [], [], {}
    for (uid, wav, spk, the_lang, key), (status, dur) in zip(meta, results):
        if status != "ok":
            bad[status.split(":")[0]] = bad.get(status.split(":")[0], 0) + 1
            continue
        row = dict(ID=uid, duration=f"{dur:.3f}", wav=wav, spk_id=spk, source=name, lang=the_lang)
        (hold if is_holdout(f"{name}|{key}") else train).append(row)
    if bad:
        logger.info("source %s: dropped %s", name, bad)
    return train, hold


def build_asterisk(out, cache, min_s, max_s, num_workers):
    """The Asterisk core sounds of all five languages, held out like the rest."""
    folder = os.path.join(out, "asterisk")
    prepare_asterisk(
        folder, languages=ASTERISK_LANGUAGES, cache_folder=cache, min_duration=min_s,
        max_duration=max_s, valid_fraction=0.0, num_workers=num_workers,
    )
    train, hold = [], []
    for row in _read_rows(os.path.join(folder, "train.csv")):
        lang, prompt = row["ID"].split("/", 1) if "/" in row["ID"] else (row["spk_id"], row["ID"])
        lang = row["spk_id"].replace("asterisk-", "")
        new = dict(ID=f"asterisk/{row['ID']}", duration=row["duration"], wav=row["wav"],
                   spk_id=row["spk_id"], source="asterisk-core", lang=lang, wrd=row.get("wrd", ""))
        # same prompt name -> same side in every language
        (hold if is_holdout(f"asterisk|{prompt}") else train).append(new)
    return train, hold


def build_shared(shared, min_s, max_s):
    """Rows of the shared packs that no probe evaluates on (pre-training only)."""
    from recipes.reproduce.probe_sets import probe_held_ids, read_pack

    held = probe_held_ids(shared)
    rows = []
    for pack in sorted(held):
        for r in read_pack(shared, pack):
            if r["ID"] in held[pack] or not (min_s <= float(r["duration"]) <= max_s):
                continue
            rows.append(dict(ID=f"{pack}/{r['ID']}", duration=r["duration"], wav=r["wav"],
                             spk_id=f"{pack}/{r.get('speaker', 'unknown')}", source=pack,
                             lang="ar" if pack == "arabic-commands" else "en"))
    return rows


def prepare_corpus(out, shared=None, min_s=0.5, max_s=20.0, num_workers=2, sources=None,
                   deb_files=None):
    """Builds (or resumes) the corpus; returns the ``sources.json`` summary.

    Arguments
    ---------
    out : str
        Output folder (audio, manifests, ``deb_cache/``).
    shared : str, optional
        The shared packs (``../shared/data``); ``None`` leaves them out.
    min_s, max_s : float
        Duration limits in seconds.
    num_workers : int
        Decoding processes.
    sources : list of str, optional
        Only these sources (``asterisk-core``, the keys of :data:`SOURCES`, ``shared``).
    deb_files : list of str, optional
        Local ``.deb`` files used instead of ``apt-get download``.
    """
    out = os.path.abspath(out)
    given = _index_deb_files(deb_files or [])
    cache = os.path.join(out, "deb_cache")
    os.makedirs(cache, exist_ok=True)
    done_dir = os.path.join(out, "done")
    os.makedirs(done_dir, exist_ok=True)
    names = ["asterisk-core"] + list(SOURCES) + (["shared"] if shared else [])
    if sources:
        names = [n for n in names if n in sources]
    options = {"version": VERSION, "min_s": min_s, "max_s": max_s}
    for name in names:
        marker = os.path.join(done_dir, name + ".json")
        if os.path.isfile(marker) and json.load(open(marker))["options"] == options:
            continue
        logger.info("building source %s", name)
        if name == "asterisk-core":
            train, hold = build_asterisk(out, cache, min_s, max_s, num_workers)
        elif name == "shared":
            train, hold = build_shared(shared, min_s, max_s), []
        else:
            train, hold = build_deb_source(name, out, cache, min_s, max_s, num_workers, given)
        _write_rows(train, os.path.join(done_dir, name + ".train.csv"))
        _write_rows(hold, os.path.join(done_dir, name + ".holdout.csv"))
        with open(marker, "w") as f:
            json.dump({"options": options}, f)
    summary, all_train, all_hold = {}, [], []
    for name in names:
        train = _read_rows(os.path.join(done_dir, name + ".train.csv"))
        hold = _read_rows(os.path.join(done_dir, name + ".holdout.csv"))
        all_train += train
        all_hold += hold
        licence = (ASTERISK_LICENCE if name == "asterisk-core" else
                   "packs' own (CC BY 4.0 / CC BY-SA 4.0 / Apache-2.0)" if name == "shared"
                   else SOURCES[name][4])
        summary[name] = {
            "utterances": len(train),
            "hours": round(sum(float(r["duration"]) for r in train) / 3600, 3),
            "holdout_utterances": len(hold),
            "holdout_hours": round(sum(float(r["duration"]) for r in hold) / 3600, 3),
            "licence": licence,
        }
    _write_rows(all_train, os.path.join(out, "train.csv"))
    _write_rows(all_hold, os.path.join(out, "lid_holdout.csv"))
    # a small validation set for the training loop: 1 % of the training rows
    valid = [r for r in all_train if stable_hash("valid|" + r["ID"]) < 0.01]
    _write_rows(valid, os.path.join(out, "valid.csv"))
    summary["total"] = {
        "utterances": len(all_train),
        "hours": round(sum(float(r["duration"]) for r in all_train) / 3600, 3),
    }
    with open(os.path.join(out, "sources.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder (e.g. data/pretrain)")
    parser.add_argument("--shared", default=None, help="the shared packs (../shared/data)")
    parser.add_argument("--min-duration", type=float, default=0.5)
    parser.add_argument("--max-duration", type=float, default=20.0)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--sources", nargs="+", default=None)
    parser.add_argument("--deb", nargs="+", default=None, help="local .deb files to use")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = prepare_corpus(args.out, args.shared, args.min_duration, args.max_duration,
                             args.num_workers, args.sources, args.deb)
    print(f"| source | utterances | hours | LID hold-out | licence |\n|---|---:|---:|---:|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['utterances']} | {s['hours']:.2f} | "
              f"{s.get('holdout_utterances', '')} | {s.get('licence', '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
