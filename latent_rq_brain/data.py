"""Manifests, audio checks and data loading for any corpus given as a CSV.

A manifest is a CSV with the columns ``ID,duration,wav`` (matched
case-insensitively; ``spk_id`` and ``wrd`` optional, others ignored). ``wav`` may be absolute, relative to the
manifest's folder, or start with ``$data_root`` (SpeechBrain's convention,
replaced by ``data_root``). Every problem is reported with the manifest, line,
ID and value at fault, before any training starts.

Authors
 * latent-rq developers 2026
"""

import csv
import hashlib
import json
import logging
import os

import soundfile
import torch

import speechbrain as sb
from speechbrain.dataio.dataset import DynamicItemDataset

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("ID", "duration", "wav")


class DataError(ValueError):
    """Bad manifest or audio: the message names the file, line or value."""


def read_manifest(csv_path, data_root=None):
    """Reads and checks a manifest, returning ``{ID: row}`` with absolute wav paths.

    Arguments
    ---------
    csv_path : str
        Manifest path.
    data_root : str, optional
        Replaces ``$data_root`` in the ``wav`` column.

    Returns
    -------
    dict
        ``{ID: {"duration": float, "wav": str, ...}}`` in file order.

    Example
    -------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = os.path.join(d, "m.csv")
    >>> _ = open(p, "w").write("ID,duration,wav\\nu1,1.5,a.wav\\n")
    >>> read_manifest(p)["u1"]["wav"] == os.path.join(d, "a.wav")
    True
    """
    if not csv_path or not os.path.isfile(csv_path):
        raise DataError(f"manifest {csv_path!r} does not exist")
    base = os.path.dirname(os.path.abspath(csv_path))
    check_utf8(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        by_lower = {h.strip().lower(): h for h in header}
        missing = [c for c in REQUIRED_COLUMNS if c.lower() not in by_lower]
        if missing:
            raise DataError(
                f"manifest {csv_path} lacks column(s) {missing}; its header is "
                f"{header}, expected at least {list(REQUIRED_COLUMNS)}"
            )
        # required columns match case-insensitively (``id`` works as ``ID``)
        rename = {by_lower[c.lower()]: c for c in REQUIRED_COLUMNS}
        rows = {}
        for line, row in enumerate(reader, start=2):
            row = {rename.get(k, k): v for k, v in row.items()}
            uid = (row["ID"] or "").strip()
            if not uid:
                raise DataError(f"manifest {csv_path}, line {line}: empty ID")
            if uid in rows:
                raise DataError(f"manifest {csv_path}, line {line}: duplicate ID {uid!r}")
            try:
                duration = float(row["duration"])
            except (TypeError, ValueError):
                raise DataError(
                    f"manifest {csv_path}, line {line} (ID {uid}): duration "
                    f"{row['duration']!r} is not a number"
                ) from None
            if not duration > 0:
                raise DataError(
                    f"manifest {csv_path}, line {line} (ID {uid}): duration "
                    f"{duration} must be > 0"
                )
            wav = (row["wav"] or "").strip()
            if not wav:
                raise DataError(f"manifest {csv_path}, line {line} (ID {uid}): empty wav")
            if "$data_root" in wav:
                if data_root is None:
                    raise DataError(
                        f"manifest {csv_path}, line {line}: wav {wav!r} uses "
                        "$data_root but no data_root was given"
                    )
                wav = wav.replace("$data_root", os.path.abspath(str(data_root)))
            if not os.path.isabs(wav):
                wav = os.path.join(base, wav)
            row = {k: v for k, v in row.items() if k is not None}
            row.update(duration=duration, wav=wav, line=line)
            del row["ID"]
            rows[uid] = row
    if not rows:
        raise DataError(f"manifest {csv_path} is empty: it has a header but no utterances")
    return rows


def check_utf8(path):
    """Raises a :class:`DataError` naming the file and line of the first
    byte sequence that is not UTF-8."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"manifest {path}, line {line}: byte {raw[err.start:err.start + 1]!r} at "
            f"offset {err.start} is not UTF-8 ({err.reason}); re-save the manifest "
            "as UTF-8"
        ) from None


def check_audio_files(rows, csv_path, sample_rate, tolerance=0.1):
    """Checks every wav exists, is readable, has ``sample_rate`` and its duration.

    Reads only the headers (``soundfile.info``). Raises one :class:`DataError`
    listing up to 10 problems (and how many there are in all).
    """
    problems = []
    for uid, row in rows.items():
        path, where = row["wav"], f"{csv_path}, line {row['line']} (ID {uid})"
        if not os.path.isfile(path):
            problems.append(f"{where}: audio file {path} does not exist")
            continue
        try:
            info = soundfile.info(path)
        except Exception as err:  # soundfile raises several types
            problems.append(f"{where}: cannot read audio file {path}: {err}")
            continue
        if info.samplerate != sample_rate:
            problems.append(
                f"{where}: {path} has sample rate {info.samplerate} Hz, expected "
                f"{sample_rate} Hz (resample it, e.g. `sox in.wav -r {sample_rate} out.wav`)"
            )
            continue
        actual = info.frames / info.samplerate
        if info.frames == 0 or abs(actual - row["duration"]) > tolerance + 0.01 * actual:
            problems.append(
                f"{where}: {path} lasts {actual:.3f} s but the manifest says "
                f"{row['duration']:.3f} s"
            )
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise DataError(
            f"{len(problems)} bad audio entr{'y' if len(problems) == 1 else 'ies'} in "
            f"{csv_path}{more}:\n  " + "\n  ".join(problems[:10])
        )


def checked_manifest(csv_path, data_root, sample_rate, cache_dir=None):
    """:func:`read_manifest` + :func:`check_audio_files`, cached per manifest content.

    The check is skipped when ``cache_dir`` holds a marker for the same manifest
    bytes, data_root and sample rate.
    """
    rows = read_manifest(csv_path, data_root)
    marker = None
    if cache_dir is not None:
        with open(csv_path, "rb") as f:
            key = hashlib.sha256(
                f.read() + f"|{data_root}|{sample_rate}".encode()
            ).hexdigest()[:16]
        marker = os.path.join(cache_dir, f".audio_checked_{key}.json")
    if marker is None or not os.path.exists(marker):
        check_audio_files(rows, csv_path, sample_rate)
        if marker is not None:
            os.makedirs(cache_dir, exist_ok=True)
            with open(marker, "w", encoding="utf-8") as f:
                json.dump({"manifest": os.path.abspath(csv_path), "n": len(rows)}, f)
    return rows


def read_audio_checked(path, sample_rate, min_samples=1):
    """Reads a mono float32 waveform, failing with the file name on any problem.

    Example
    -------
    >>> try:
    ...     read_audio_checked("/nonexistent.wav", 16000)
    ... except DataError as err:
    ...     print(str(err)[:43])
    cannot read audio file /nonexistent.wav: Er
    """
    try:
        data, sr = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as err:
        raise DataError(f"cannot read audio file {path}: {err}") from err
    if sr != sample_rate:
        raise DataError(f"audio file {path} has sample rate {sr} Hz, expected {sample_rate} Hz")
    if data.shape[0] < min_samples:
        raise DataError(
            f"audio file {path} has {data.shape[0]} samples, fewer than the "
            f"{min_samples} needed"
        )
    return torch.from_numpy(data.mean(axis=1))


def duration_filter_report(rows, csv_path, min_duration, max_duration):
    """A line on the utterances the duration filters drop, with hours; None if none.

    Example
    -------
    >>> rows = {"a": {"duration": 0.5}, "b": {"duration": 3.0}, "c": {"duration": 30.0}}
    >>> duration_filter_report(rows, "m.csv", 1.0, 20.0)
    'm.csv: duration filters dropped 1 utterance(s) shorter than 1.0 s (0.000 h) and 1 longer than 20.0 s (0.008 h); kept 1 (0.001 h)'
    """
    durs = [float(r["duration"]) for r in rows.values()]
    short = [d for d in durs if d < min_duration]
    long = [d for d in durs if d > max_duration]
    if not short and not long:
        return None
    kept = sum(durs) - sum(short) - sum(long)
    return (
        f"{csv_path}: duration filters dropped {len(short)} utterance(s) shorter than "
        f"{min_duration} s ({sum(short) / 3600:.3f} h) and {len(long)} longer than "
        f"{max_duration} s ({sum(long) / 3600:.3f} h); kept "
        f"{len(durs) - len(short) - len(long)} ({kept / 3600:.3f} h)"
    )


def make_dataset(rows, csv_path, min_duration, max_duration, sample_rate, min_samples):
    """DynamicItemDataset with the audio pipeline, filtered by duration."""
    data = {uid: {"duration": r["duration"], "wav": r["wav"]} for uid, r in rows.items()}
    dataset = DynamicItemDataset(data)
    kept = dataset.filtered_sorted(
        key_min_value={"duration": min_duration},
        key_max_value={"duration": max_duration},
    )
    if len(kept) == 0:
        durs = [r["duration"] for r in rows.values()]
        raise DataError(
            f"no utterance of {csv_path} lasts between {min_duration} s and "
            f"{max_duration} s (its durations range from {min(durs):.2f} to "
            f"{max(durs):.2f} s): adjust avoid_if_shorter_than / avoid_if_longer_than"
        )
    kept.filter_report = duration_filter_report(rows, csv_path, min_duration, max_duration)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_audio_checked(wav, sample_rate, min_samples)

    kept.add_dynamic_item(audio_pipeline)
    kept.set_output_keys(["id", "sig"])
    return kept


def dataio_prepare(hparams):
    """Train/valid datasets and loader options from the hparams' manifests.

    Returns
    -------
    train_data, valid_data, train_loader_kwargs, valid_loader_kwargs
    """
    sr = hparams["sample_rate"]
    # shortest audio giving one encoder frame: a full STFT window
    min_samples = int(sr * hparams["win_length"] / 1000)
    sets = {}
    for split in ("train", "valid"):
        csv_path = hparams[f"{split}_csv"]
        if split == "valid" and not csv_path:
            sets[split] = None
            continue
        if not csv_path:
            raise DataError(f"{split}_csv is not set: give a manifest path")
        if hparams.get("check_audio", True):
            rows = checked_manifest(
                csv_path, hparams.get("data_root"), sr, hparams["output_folder"]
            )
        else:
            rows = read_manifest(csv_path, hparams.get("data_root"))
        sets[split] = make_dataset(
            rows,
            csv_path,
            hparams["avoid_if_shorter_than"],
            hparams["avoid_if_longer_than"],
            sr,
            min_samples,
        )
    train_kwargs = dict(hparams["train_dataloader_opts"])
    if hparams.get("max_batch_len"):
        train_kwargs["batch_sampler"] = sb.dataio.sampler.DynamicBatchSampler(
            sets["train"],
            max_batch_length=hparams["max_batch_len"],
            num_buckets=min(hparams["num_buckets"], len(sets["train"])),
            length_func=lambda x: x["duration"],
            shuffle=True,
            batch_ordering="random",
        )
        train_kwargs.pop("batch_size", None)
        train_kwargs.pop("shuffle", None)
    valid_kwargs = dict(hparams["valid_dataloader_opts"])
    return sets["train"], sets["valid"], train_kwargs, valid_kwargs


def stable_hash(key):
    """Returns a process-independent hash of a string in [0, 1).

    Unlike the built-in ``hash``, this does not depend on PYTHONHASHSEED.

    Arguments
    ---------
    key : str
        The string to hash.

    Returns
    -------
    float
        The first 8 bytes of the SHA-1 of ``key`` (UTF-8) divided by 2**64.

    Example
    -------
    >>> stable_hash("digits/1") == stable_hash("digits/1")
    True
    >>> 0.0 <= stable_hash("x") < 1.0
    True
    """
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


#: Columns of the training manifests written by the data preparations.
CSV_HEADER = ["ID", "duration", "wav", "spk_id", "wrd"]


def write_manifest(rows, csv_file, header=CSV_HEADER, lineterminator="\n"):
    """Writes manifest rows to a CSV file, atomically (through a temporary file).

    The ``csv`` module quotes fields holding commas or quotes; a key not in
    ``header`` is an error.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = os.path.join(tmp, "x.csv")
    ...     row = {"ID": "en-a", "duration": 1.5, "wav": "/a.wav",
    ...            "spk_id": "asterisk-en", "wrd": "Hi, there"}
    ...     write_manifest([row], out)
    ...     print(open(out).read().strip())
    ID,duration,wav,spk_id,wrd
    en-a,1.5,/a.wav,asterisk-en,"Hi, there"
    """
    csv_file = os.fspath(csv_file)
    tmp_file = csv_file + ".tmp"
    with open(tmp_file, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, lineterminator=lineterminator)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp_file, csv_file)
