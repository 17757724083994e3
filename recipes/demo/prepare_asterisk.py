"""
Data preparation for a small REAL-speech demo corpus: the Asterisk voice prompts.

Debian ships the Asterisk PBX "core sounds" (telephony prompts read by one
professional voice actor per language, CC-BY-SA-3.0) as G.722 files, a 16 kHz
wide-band codec. This script, without root privileges:

1. downloads ``asterisk-core-sounds-<lang>-g722`` (the audio) and
   ``asterisk-core-sounds-<lang>`` (which only holds the documentation,
   including the transcript file ``core-sounds-<lang>.txt.gz``) with
   ``apt-get download`` into a cache folder (skipped when the ``.deb`` is
   already there, or when it is given explicitly with ``deb_files``/``--deb``);
2. extracts them with ``dpkg-deb -x``;
3. decodes every ``.g722`` prompt to a 16 kHz mono 16-bit PCM WAV file with
   PyAV (``pip install av``), checking the sample rate and dropping the silent
   prompts (the ``silence/N`` files) and the non-speech ones (tones, whose
   transcript is a bracketed tag such as ``[this is a simple beep tone]``);
4. writes ``train.csv`` and ``valid.csv`` in ``save_folder`` with the header
   ``ID,duration,wav,spk_id,wrd``.

The ``wrd`` column holds the transcript **as written** in the package (original
case and punctuation, surrounding whitespace stripped, inner whitespace
collapsed); it is empty for prompts with no transcript line. The split is
prompt-disjoint and deterministic: a prompt goes to ``valid`` when the SHA-1 of
its name (e.g. ``digits/1``, language-independent, so the same prompt lands in
the same split for every language) falls in the first ``valid_fraction`` of
the hash range.

Usage from the command line::

    python recipes/demo/prepare_asterisk.py SAVE_FOLDER \
        [--languages en fr] [--max-utterances N] [--deb FILE.deb ...]

Authors
 * latent-rq contributors 2026
"""

import argparse
import gzip
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if not __package__:  # run as a script: the repository root makes the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from latent_rq_brain.training.data import stable_hash, write_manifest  # noqa: E402

logger = logging.getLogger(__name__)

SAMPLERATE = 16000
OPT_FILE = "prepare_asterisk.json"
PREP_VERSION = 1  # bump when the produced CSV/WAV contents change
AUDIO_PACKAGE = "asterisk-core-sounds-{lang}-g722"
TEXT_PACKAGE = "asterisk-core-sounds-{lang}"
SOUNDS_SUBDIR = os.path.join("usr", "share", "asterisk", "sounds")
SILENCE_DBFS = -60.0  # prompts whose RMS level is below this are "silent"
_NONSPEECH_RE = re.compile(r"^\[[^\]]*\]$")


def prepare_asterisk(
    save_folder,
    languages=("en",),
    cache_folder=None,
    min_duration=1.0,
    max_duration=20.0,
    valid_fraction=0.05,
    max_utterances=None,
    deb_files=None,
    num_workers=2,
):
    """Builds the Asterisk-prompt demo corpus and its CSV manifests.

    Writes ``<save_folder>/train.csv``, ``<save_folder>/valid.csv`` (header
    ``ID,duration,wav,spk_id,wrd``, rows sorted by ID, absolute wav paths), the
    decoded WAV files under ``<save_folder>/wav/<lang>/`` and a JSON marker
    with the options used. When both CSV files exist and the marker holds the
    same options, nothing is done ("skipping").

    Arguments
    ---------
    save_folder : str or os.PathLike
        Output folder (created if needed).
    languages : sequence of str
        Debian language codes of the prompt packages, e.g. ``("en", "fr")``.
        Debian bookworm has ``en``, ``es``, ``fr``, ``it`` and ``ru``.
    cache_folder : str or os.PathLike, optional
        Where the ``.deb`` files are downloaded and extracted. Defaults to
        ``<save_folder>/deb_cache``.
    min_duration : float
        Prompts shorter than this (seconds) are dropped.
    max_duration : float
        Prompts longer than this (seconds) are dropped.
    valid_fraction : float
        Approximate fraction of the prompts put in ``valid.csv`` (0 <= f < 1).
    max_utterances : int, optional
        If given, keep at most this many prompts in total (after filtering),
        chosen deterministically by the hash of their ID, before the split.
    deb_files : sequence of str, optional
        Already-downloaded ``.deb`` files to use instead of ``apt-get
        download`` (the package name is read from each file).
    num_workers : int
        Processes used to decode the prompts. Values <= 1 decode in the
        current process.

    Returns
    -------
    dict
        ``{"train": {"utterances": int, "hours": float},
        "valid": {...}, "skipped": bool, "packages": {name: version},
        "transcript_files": [...]}``.

    Raises
    ------
    RuntimeError
        If ``apt-get``/``dpkg-deb`` is missing or a download/extraction fails.
    ValueError
        If the options are inconsistent, a prompt does not decode to 16 kHz
        mono, or no prompt survives the filtering.

    Example
    -------
    >>> stats = prepare_asterisk("results/asterisk_demo")  # doctest: +SKIP
    >>> stats["train"]["utterances"] > 0  # doctest: +SKIP
    True
    """
    languages = _as_languages(languages)
    _check_options(min_duration, max_duration, valid_fraction, max_utterances)
    save_folder = Path(save_folder).expanduser().resolve()
    cache_folder = (
        save_folder / "deb_cache"
        if cache_folder is None
        else Path(cache_folder).expanduser().resolve()
    )
    train_csv = save_folder / "train.csv"
    valid_csv = save_folder / "valid.csv"
    opt_file = save_folder / OPT_FILE
    conf = {
        "version": PREP_VERSION,
        "languages": languages,
        "min_duration": float(min_duration),
        "max_duration": float(max_duration),
        "valid_fraction": float(valid_fraction),
        "max_utterances": None if max_utterances is None else int(max_utterances),
    }

    previous = _load_marker(opt_file)
    if (
        previous is not None
        and previous.get("conf") == conf
        and train_csv.is_file()
        and valid_csv.is_file()
    ):
        logger.info(
            "Asterisk demo preparation already done in %s, skipping.", save_folder
        )
        stats = dict(previous.get("stats", {}))
        stats["skipped"] = True
        return stats

    save_folder.mkdir(parents=True, exist_ok=True)
    cache_folder.mkdir(parents=True, exist_ok=True)
    # A stale marker must never validate a partially rewritten output.
    if opt_file.exists():
        opt_file.unlink()

    given = _index_deb_files(deb_files or [])
    packages, transcript_files, jobs, meta = {}, [], [], {}
    wav_root = save_folder / "wav"
    for lang in languages:
        _collect_language(
            lang, cache_folder, given, wav_root, packages, transcript_files, jobs, meta
        )

    # Start from a clean wav folder so no stale file survives a re-run.
    if wav_root.exists():
        shutil.rmtree(wav_root)
    logger.info("Decoding %d G.722 prompts to %s", len(jobs), wav_root)
    t0 = time.perf_counter()
    results = _run_decode(
        [(g, w) for _, g, w in jobs], min_duration, max_duration, num_workers
    )
    logger.info("Decoded in %.1f s", time.perf_counter() - t0)
    rows = _kept_rows(jobs, meta, results, min_duration, max_duration, max_utterances)

    train_rows, valid_rows = [], []
    for row in sorted(rows, key=lambda r: r["ID"]):
        name = row.pop("_name")
        if is_valid(name, valid_fraction):
            valid_rows.append(row)
        else:
            train_rows.append(row)
    write_manifest(train_rows, train_csv)
    write_manifest(valid_rows, valid_csv)

    stats = {
        "train": _split_stats(train_rows),
        "valid": _split_stats(valid_rows),
        "packages": packages,
        "transcript_files": [os.path.basename(f) for f in transcript_files],
        "skipped": False,
    }
    with open(opt_file, "w", encoding="utf-8") as f:
        json.dump({"conf": conf, "stats": stats}, f, indent=2)
    logger.info(
        "Wrote %s (%d utts, %.3f h) and %s (%d utts, %.3f h)",
        train_csv,
        stats["train"]["utterances"],
        stats["train"]["hours"],
        valid_csv,
        stats["valid"]["utterances"],
        stats["valid"]["hours"],
    )
    return stats


def _check_options(min_duration, max_duration, valid_fraction, max_utterances):
    """Raises ValueError on inconsistent options of :func:`prepare_asterisk`."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if min_duration < 0 or max_duration <= min_duration:
        raise ValueError(
            f"Need 0 <= min_duration < max_duration, got {min_duration} and "
            f"{max_duration}"
        )
    if max_utterances is not None and int(max_utterances) < 1:
        raise ValueError(f"max_utterances must be >= 1, got {max_utterances}")


def _language_transcripts(lang, cache_folder, given, packages, transcript_files):
    """Transcripts of one language's prompts (empty without the text package)."""
    text_pkg = TEXT_PACKAGE.format(lang=lang)
    text_deb = _get_deb(text_pkg, cache_folder, given, required=False)
    if text_deb is None:
        return {}
    packages[text_pkg] = _deb_field(text_deb, "Version")
    text_dir = extract_deb(text_deb, cache_folder / "extracted")
    found = sorted(text_dir.rglob(f"core-sounds-{lang}.txt*"))
    if not found:
        logger.warning(
            "No core-sounds-%s.txt[.gz] in %s: empty wrd column.", lang, text_deb
        )
        return {}
    transcripts = parse_transcripts(found[0])
    transcript_files.append(str(found[0]))
    logger.info("%s: %d transcript lines in %s", lang, len(transcripts), found[0].name)
    return transcripts


def _collect_language(lang, cache_folder, given, wav_root, packages, transcript_files,
                      jobs, meta):
    """Fetches one language's packages and adds its speech prompts to ``jobs``
    (``(ID, g722 path, wav path)``) and ``meta`` (ID -> prompt name, spk_id, wrd)."""
    audio_pkg = AUDIO_PACKAGE.format(lang=lang)
    deb = _get_deb(audio_pkg, cache_folder, given, required=True)
    packages[audio_pkg] = _deb_field(deb, "Version")
    audio_dir = extract_deb(deb, cache_folder / "extracted")
    transcripts = _language_transcripts(lang, cache_folder, given, packages, transcript_files)
    prompts = find_prompts(audio_dir / SOUNDS_SUBDIR)
    if not prompts:
        raise ValueError(
            f"No .g722 prompt found under {audio_dir / SOUNDS_SUBDIR} "
            f"(extracted from {deb})"
        )
    spk_id = f"asterisk-{lang}"
    n_nonspeech = 0
    for name, g722 in prompts:
        wrd = transcripts.get(name, "")
        if _NONSPEECH_RE.match(wrd):
            n_nonspeech += 1
            continue
        utt_id = f"{lang}-{name.replace('/', '.')}"
        wav = wav_root / lang / (name + ".wav")
        jobs.append((utt_id, str(g722), str(wav)))
        meta[utt_id] = (name, spk_id, wrd)
    logger.info(
        "%s: %d prompts (%d non-speech tones dropped, %d without transcript)",
        lang,
        len(prompts),
        n_nonspeech,
        sum(1 for n, _ in prompts if n not in transcripts),
    )


def _kept_rows(jobs, meta, results, min_duration, max_duration, max_utterances):
    """Manifest rows (with their ``_name``) of the prompts that decoded and
    passed the filters, capped at ``max_utterances`` (a stable-hash subset)."""
    rows = []
    dropped = {"empty": 0, "silent": 0, "short": 0, "long": 0}
    for (utt_id, _, _), (status, n_samples, wav) in zip(jobs, results):
        if status != "ok":
            dropped[status] += 1
            continue
        name, spk_id, wrd = meta[utt_id]
        rows.append(
            {
                "ID": utt_id,
                "duration": n_samples / SAMPLERATE,
                "wav": wav,
                "spk_id": spk_id,
                "wrd": wrd,
                "_name": name,
            }
        )
    logger.info(
        "Dropped %d empty, %d silent, %d shorter than %.1f s, %d longer than "
        "%.1f s",
        dropped["empty"],
        dropped["silent"],
        dropped["short"],
        min_duration,
        dropped["long"],
        max_duration,
    )
    if max_utterances is not None and len(rows) > max_utterances:
        rows.sort(key=lambda r: (stable_hash(r["ID"]), r["ID"]))
        for row in rows[max_utterances:]:
            os.remove(row["wav"])
        rows = rows[:max_utterances]
    if not rows:
        raise ValueError(
            "No prompt left after filtering (min_duration="
            f"{min_duration}, max_duration={max_duration})."
        )
    return rows


def parse_transcripts(path):
    """Reads an Asterisk ``core-sounds-<lang>.txt`` transcript file.

    Each useful line reads ``name: transcript`` where ``name`` is the prompt
    path relative to the voice folder, without extension (``digits/1``).
    Lines starting with ``;`` are comments. A UTF-8 byte-order mark is
    ignored, the transcript is kept as written (whitespace normalised). For
    a duplicated name, the last line wins.

    Arguments
    ---------
    path : str or os.PathLike
        The transcript file, plain text or gzip-compressed (``.gz``).

    Returns
    -------
    dict
        Maps each prompt name to its transcript.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "core-sounds-en.txt"
    ...     _ = p.write_text("; comment\\n\\ndigits/1: one\\nbeep: [tone]\\n")
    ...     parse_transcripts(p)
    {'digits/1': 'one', 'beep': '[tone]'}
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        return parse_transcript_lines(f)


def parse_transcript_lines(lines):
    """Parses the lines of an Asterisk transcript file: the prompt-name ->
    transcript dict of :func:`parse_transcripts`.

    Example
    -------
    >>> parse_transcript_lines(["a-b:  Hello,   world. ", "no colon here"])
    {'a-b': 'Hello, world.'}
    """
    transcripts = {}
    for line in lines:
        line = line.strip().lstrip("\ufeff")
        if not line or line.startswith(";"):
            continue
        name, sep, text = line.partition(":")
        name = name.strip()
        if not sep or not name or " " in name:
            logger.debug("Ignoring transcript line without 'name:': %r", line)
            continue
        transcripts[name] = " ".join(text.split())
    return transcripts


def is_valid(name, valid_fraction):
    """Tells whether a prompt belongs to the validation split.

    Arguments
    ---------
    name : str
        Prompt name (language-independent, e.g. ``digits/1``).
    valid_fraction : float
        Approximate fraction of prompts assigned to validation.

    Returns
    -------
    bool
        True if ``stable_hash(name) < valid_fraction``.

    Example
    -------
    >>> is_valid("vm-deleted", 0.0)
    False
    >>> is_valid("vm-deleted", 0.999999)
    True
    """
    return stable_hash(name) < valid_fraction


def find_prompts(sounds_dir):
    """Lists the ``.g722`` prompts of an extracted sound package.

    Arguments
    ---------
    sounds_dir : pathlib.Path
        The ``usr/share/asterisk/sounds`` folder. Each sub-folder is a voice
        (e.g. ``en_US_f_Allison``); prompt names are relative to it.

    Returns
    -------
    list of tuple
        ``(name, path)`` sorted by name, e.g. ``("digits/1", Path(...))``.
        Symbolic links are ignored.

    Example
    -------
    >>> find_prompts(Path("/nonexistent"))
    []
    """
    sounds_dir = Path(sounds_dir)
    if not sounds_dir.is_dir():
        return []
    prompts = {}
    for voice_dir in sorted(p for p in sounds_dir.iterdir() if p.is_dir()):
        for g722 in sorted(voice_dir.rglob("*.g722")):
            if g722.is_symlink() or not g722.is_file():
                continue
            name = g722.relative_to(voice_dir).with_suffix("").as_posix()
            if name in prompts:
                logger.warning("Prompt %s found twice, keeping %s", name, prompts[name])
                continue
            prompts[name] = g722
    return sorted(prompts.items())


def decode_g722(path):
    """Decodes a raw (container-less) G.722 file with PyAV.

    Arguments
    ---------
    path : str or os.PathLike
        The ``.g722`` file (opened with FFmpeg's raw ``g722`` demuxer).

    Returns
    -------
    tuple
        ``(samples, sample_rate)`` with ``samples`` a 1-D int16 array.

        ``samples`` is empty when the file holds no audio (the Debian
        ``ru`` package ships a 0-byte ``is.g722``).

    Raises
    ------
    ValueError
        If the stream is not mono 16-bit.

    Example
    -------
    >>> x, sr = decode_g722("vm-deleted.g722")  # doctest: +SKIP
    >>> sr  # doctest: +SKIP
    16000
    """
    import av  # imported lazily: only needed for decoding

    chunks = []
    with av.open(str(path), format="g722") as container:
        stream = container.streams.audio[0]
        sample_rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            if frame.format.name != "s16" or len(frame.layout.channels) != 1:
                raise ValueError(
                    f"{path}: expected mono s16 frames, got "
                    f"{frame.format.name}/{frame.layout.name}"
                )
            sample_rate = frame.sample_rate
            chunks.append(frame.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.int16), sample_rate
    return np.concatenate(chunks).astype(np.int16, copy=False), sample_rate


def rms_dbfs(samples):
    """Returns the RMS level of int16 samples in dB relative to full scale.

    Arguments
    ---------
    samples : numpy.ndarray
        int16 samples.

    Returns
    -------
    float
        ``20 log10(rms / 32768)`` (-inf-safe: floored at -200 dB).

    Example
    -------
    >>> round(rms_dbfs(np.full(10, 32767, dtype=np.int16)), 3) == 0.0
    True
    >>> rms_dbfs(np.zeros(10, dtype=np.int16))
    -200.0
    """
    if samples.size == 0:
        return -200.0
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return max(20.0 * math.log10(max(rms, 1e-20) / 32768.0), -200.0)


def decode_to_wav(g722_path, wav_path, min_duration=0.0, max_duration=float("inf")):
    """Decodes one G.722 prompt and writes it as 16 kHz mono PCM_16 WAV.

    The WAV is only written if the prompt is kept: some audio decoded, sample
    rate 16 kHz (otherwise an error), RMS level above ``SILENCE_DBFS`` and
    duration in ``[min_duration, max_duration]``.

    Arguments
    ---------
    g722_path : str
        Input ``.g722`` file.
    wav_path : str
        Output ``.wav`` file (parent folders are created).
    min_duration : float
        Minimum duration in seconds.
    max_duration : float
        Maximum duration in seconds.

    Returns
    -------
    tuple
        ``(status, n_samples, wav_path)`` with status one of ``"ok"``,
        ``"empty"``, ``"silent"``, ``"short"``, ``"long"``.

    Raises
    ------
    ValueError
        If the decoded sample rate is not 16 kHz.

    Example
    -------
    >>> decode_to_wav("beep.g722", "/tmp/beep.wav")  # doctest: +SKIP
    ('short', 5760, '/tmp/beep.wav')
    """
    import soundfile

    if os.path.getsize(g722_path) == 0:
        return "empty", 0, os.path.abspath(wav_path)
    samples, sample_rate = decode_g722(g722_path)
    if samples.size == 0:
        return "empty", 0, os.path.abspath(wav_path)
    if sample_rate != SAMPLERATE:
        raise ValueError(
            f"{g722_path} decodes at {sample_rate} Hz, expected {SAMPLERATE} Hz"
        )
    n_samples = int(samples.shape[0])
    duration = n_samples / SAMPLERATE
    if rms_dbfs(samples) < SILENCE_DBFS:
        status = "silent"
    elif duration < min_duration:
        status = "short"
    elif duration > max_duration:
        status = "long"
    else:
        status = "ok"
        os.makedirs(os.path.dirname(os.path.abspath(wav_path)), exist_ok=True)
        soundfile.write(wav_path, samples, SAMPLERATE, subtype="PCM_16")
    return status, n_samples, os.path.abspath(wav_path)


def extract_deb(deb, extract_root):
    """Extracts a ``.deb`` with ``dpkg-deb -x`` (no root needed).

    The extraction is skipped when it was already completed (a ``.done``
    marker sits next to the folder).

    Arguments
    ---------
    deb : pathlib.Path
        The package file.
    extract_root : pathlib.Path
        Parent folder; the package goes to ``extract_root/<deb stem>``.

    Returns
    -------
    pathlib.Path
        The extraction folder.

    Raises
    ------
    RuntimeError
        If ``dpkg-deb`` is missing or fails.

    Example
    -------
    >>> extract_deb(Path("x_1.0_all.deb"), Path("/tmp/ex"))  # doctest: +SKIP
    PosixPath('/tmp/ex/x_1.0_all')
    """
    deb = Path(deb)
    out_dir = Path(extract_root) / deb.stem
    done = out_dir.with_name(out_dir.name + ".done")
    if done.is_file() and out_dir.is_dir():
        return out_dir
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    _run_tool(["dpkg-deb", "-x", str(deb), str(out_dir)], f"extracting {deb}")
    done.write_text(str(deb) + "\n")
    return out_dir


def _get_deb(package, cache_folder, given, required):
    """Returns the .deb of ``package``: given, cached, or downloaded."""
    if package in given:
        return given[package]
    cached = sorted(Path(cache_folder).glob(f"{package}_*.deb"))
    if cached:
        if len(cached) > 1:
            logger.warning(
                "Several cached versions of %s, using %s", package, cached[-1]
            )
        logger.info("Using cached %s", cached[-1])
        return cached[-1]
    try:
        _download_deb(package, cache_folder)
    except RuntimeError as err:
        if required:
            raise
        logger.warning("%s (continuing without it)", err)
        return None
    cached = sorted(Path(cache_folder).glob(f"{package}_*.deb"))
    if not cached:
        msg = (
            f"'apt-get download {package}' succeeded but no {package}_*.deb "
            f"appeared in {cache_folder}"
        )
        if required:
            raise RuntimeError(msg)
        logger.warning(msg)
        return None
    return cached[-1]


def _download_deb(package, cache_folder):
    """Runs ``apt-get download PACKAGE`` inside ``cache_folder``."""
    hint = (
        f"Run 'apt-get update' (as root) so that the package lists are "
        f"available, check with 'apt-cache policy {package}' that the package "
        f"exists in your distribution, or download it elsewhere and pass it "
        f"with --deb /path/to/{package}_VERSION_all.deb (deb_files=[...])."
    )
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"Cannot download {package}: apt-get not found. {hint}")
    logger.info("Downloading %s into %s", package, cache_folder)
    try:
        proc = subprocess.run(
            ["apt-get", "download", package],
            cwd=str(cache_folder),
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"'apt-get download {package}' failed: {err}. {hint}")
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-1000:]
        raise RuntimeError(
            f"'apt-get download {package}' failed (exit code "
            f"{proc.returncode}): {output}. {hint}"
        )


def _deb_field(deb, field):
    """Reads one control field (e.g. Version) of a .deb with dpkg-deb -f."""
    return _run_tool(["dpkg-deb", "-f", str(deb), field], f"reading {deb}").strip()


def _index_deb_files(deb_files):
    """Maps package name -> path for user-provided .deb files."""
    index = {}
    for deb in deb_files:
        deb = Path(deb).expanduser().resolve()
        if not deb.is_file():
            raise FileNotFoundError(f"--deb file not found: {deb}")
        index[_deb_field(deb, "Package")] = deb
    return index


def _run_tool(cmd, what):
    """Runs a command, raising RuntimeError with its output on failure."""
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(
            f"{cmd[0]} not found while {what}: install dpkg (it is present on "
            f"any Debian/Ubuntu system)."
        )
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"'{' '.join(cmd)}' failed while {what} (exit code "
            f"{proc.returncode}): {proc.stderr.strip()[-1000:]}"
        )
    return proc.stdout


def _decode_job(job):
    """Worker wrapper around decode_to_wav (picklable)."""
    g722, wav, min_duration, max_duration = job
    return decode_to_wav(g722, wav, min_duration, max_duration)


def _run_decode(jobs, min_duration, max_duration, num_workers):
    """Decodes all jobs, in order, possibly with a process pool."""
    tasks = [(g, w, min_duration, max_duration) for g, w in jobs]
    if num_workers is None or num_workers <= 1 or len(tasks) < 2:
        return [_decode_job(t) for t in tasks]
    with multiprocessing.Pool(min(num_workers, len(tasks))) as pool:
        return pool.map(_decode_job, tasks, chunksize=16)


def _split_stats(rows):
    """Counts and total hours of a list of rows."""
    return {
        "utterances": len(rows),
        "hours": sum(float(r["duration"]) for r in rows) / 3600.0,
    }


def _load_marker(opt_file):
    """Loads the JSON marker, or None if missing/corrupt."""
    try:
        with open(opt_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _as_languages(languages):
    """Normalises the languages argument into a list of codes."""
    if isinstance(languages, str):
        languages = [languages]
    languages = [str(lang).strip() for lang in languages]
    if not languages:
        raise ValueError("No language requested.")
    for lang in languages:
        if not re.fullmatch(r"[a-z]{2,3}", lang):
            raise ValueError(
                f"Invalid language code {lang!r} (expected e.g. 'en', 'fr')."
            )
    # Keep the order, drop duplicates.
    return list(dict.fromkeys(languages))


def main(argv=None):
    """Command-line entry point (see module docstring)."""
    parser = argparse.ArgumentParser(
        description="Build the Asterisk-prompt demo corpus (train/valid CSV)."
    )
    parser.add_argument("save_folder", help="output folder")
    parser.add_argument("--languages", nargs="+", default=["en"])
    parser.add_argument("--cache-folder", default=None)
    parser.add_argument("--min-duration", type=float, default=1.0)
    parser.add_argument("--max-duration", type=float, default=20.0)
    parser.add_argument("--valid-fraction", type=float, default=0.05)
    parser.add_argument("--max-utterances", type=int, default=None)
    parser.add_argument(
        "--deb",
        nargs="+",
        default=None,
        help="already-downloaded .deb file(s) to use instead of apt-get",
    )
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    t0 = time.perf_counter()
    stats = prepare_asterisk(
        args.save_folder,
        languages=args.languages,
        cache_folder=args.cache_folder,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        valid_fraction=args.valid_fraction,
        max_utterances=args.max_utterances,
        deb_files=args.deb,
        num_workers=args.num_workers,
    )
    print(
        f"asterisk demo ({', '.join(args.languages)}): "
        f"train {stats['train']['utterances']} utts "
        f"{stats['train']['hours'] * 60:.2f} min, "
        f"valid {stats['valid']['utterances']} utts "
        f"{stats['valid']['hours'] * 60:.2f} min"
        f"{' (skipped, already prepared)' if stats.get('skipped') else ''} "
        f"in {time.perf_counter() - t0:.1f} s -> {Path(args.save_folder).resolve()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
