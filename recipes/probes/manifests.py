"""CSV manifests of probe tasks: writing them and rejecting inconsistent ones.

A probe task is three manifests (``train``, ``valid``, ``test``) with the
columns ``ID,duration,wav`` plus label columns (``wrd`` for ASR, e.g.
``intent`` or ``spk_id`` for classification). :func:`check_task` is run by
every ``prepare_*`` script on what it wrote and by the probe recipe on what it
is given; it raises :class:`~latent_rq_brain.training.data.DataError` naming the file,
line, column and value at fault for

* a missing column, an empty ID or label, a duplicate ID (within or across
  splits), an empty split, a missing audio file;
* a label of ``valid``/``test`` never seen in ``train`` (classification);
* a speaker shared by two splits that must be speaker-disjoint.

Authors
 * latent-rq developers 2026
"""

import contextlib
import csv
import os
import sys
from pathlib import Path

from latent_rq_brain.training.data import DataError, read_manifest, stable_hash

SPLITS = ("train", "valid", "test")


def write_manifest(rows, path, columns):
    """Writes rows (dicts) to a CSV with the given columns, atomically.

    Example
    -------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> write_manifest([{"ID": "a", "duration": 1.0, "wav": "/a.wav", "x": 1}], p,
    ...                ["ID", "duration", "wav"])
    >>> print(open(p).read().strip())
    ID,duration,wav
    a,1.0,/a.wav
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def check_task(
    manifests,
    label_column=None,
    speaker_column=None,
    disjoint=(),
    closed_set=True,
    check_audio=True,
):
    """Reads and cross-checks the manifests of one task.

    Arguments
    ---------
    manifests : dict
        ``{split: csv path}``, usually ``train``, ``valid`` and ``test``.
    label_column : str, optional
        Column that must be present and non-empty in every split.
    speaker_column : str, optional
        Column whose values (speakers; prompts for the Asterisk tasks) two
        splits of a ``disjoint`` pair must not share.
    disjoint : sequence of (str, str)
        Pairs of splits that must not share a speaker, e.g.
        ``[("train", "test"), ("train", "valid"), ("valid", "test")]``.
    closed_set : bool
        Every label of the other splits must occur in ``train``
        (classification; False for transcripts).
    check_audio : bool
        Check that every audio file exists.

    Returns
    -------
    dict
        ``{split: {ID: row}}`` (rows as :func:`latent_rq_brain.training.data.read_manifest`
        returns them: absolute ``wav``, float ``duration``, ``line``).

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> for split, rows in [("train", "a,1,a.wav,yes,s1\\n"), ("test", "b,1,b.wav,no,s2\\n")]:
    ...     _ = open(os.path.join(d, split + ".csv"), "w").write(
    ...         "ID,duration,wav,kw,spk\\n" + rows)
    >>> m = {s: os.path.join(d, s + ".csv") for s in ("train", "test")}
    >>> check_task(m, "kw", "spk", [("train", "test")], check_audio=False)
    Traceback (most recent call last):
    ...
    latent_rq_brain.training.data.DataError: label 'no' (column 'kw') of .../test.csv, line 2 (ID b) never occurs in train manifest .../train.csv (train labels: ['yes'])
    """
    data = {}
    for split, path in manifests.items():
        if not path:
            raise DataError(f"no manifest given for split {split!r}")
        rows = read_manifest(path)  # missing columns, duplicate IDs, empty file
        for column in (label_column, speaker_column if disjoint else None):
            if column is None:
                continue
            first = next(iter(rows.values()))
            if column not in first:
                header = ["ID", "duration", "wav"] + [
                    k for k in first if k not in ("duration", "wav", "line")
                ]
                raise DataError(
                    f"manifest {path} lacks column {column!r}; its header is {header}"
                )
            for uid, row in rows.items():
                if not (row[column] or "").strip():
                    raise DataError(
                        f"manifest {path}, line {row['line']} (ID {uid}): empty "
                        f"{column!r}"
                    )
        data[split] = rows

    seen = {}
    for split, rows in data.items():
        for uid, row in rows.items():
            if uid in seen:
                raise DataError(
                    f"ID {uid!r} is in both {manifests[seen[uid]]} and "
                    f"{manifests[split]} (line {row['line']}): splits must not "
                    "share utterances"
                )
            seen[uid] = split

    if check_audio:
        for split, rows in data.items():
            missing = [
                f"{manifests[split]}, line {r['line']} (ID {uid}): audio file "
                f"{r['wav']} does not exist"
                for uid, r in rows.items()
                if not os.path.isfile(r["wav"])
            ]
            if missing:
                more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
                raise DataError(
                    f"{len(missing)} missing audio file(s) in {manifests[split]}{more}:"
                    "\n  " + "\n  ".join(missing[:10])
                )

    if label_column and closed_set and "train" in data:
        train_labels = {r[label_column].strip() for r in data["train"].values()}
        for split, rows in data.items():
            for uid, row in rows.items():
                label = row[label_column].strip()
                if label not in train_labels:
                    raise DataError(
                        f"label {label!r} (column {label_column!r}) of "
                        f"{manifests[split]}, line {row['line']} (ID {uid}) never "
                        f"occurs in train manifest {manifests['train']} (train "
                        f"labels: {sorted(train_labels)[:20]})"
                    )

    for a, b in disjoint:
        if a not in data or b not in data:
            continue
        spk_a = {r[speaker_column].strip() for r in data[a].values()}
        spk_b = {r[speaker_column].strip() for r in data[b].values()}
        shared = sorted(spk_a & spk_b)
        if shared:
            raise DataError(
                f"{speaker_column} value(s) {shared[:10]} are in both {a} manifest "
                f"{manifests[a]} and {b} manifest {manifests[b]}, but this task "
                f"needs splits disjoint in column {speaker_column!r}"
            )
    return data


def audio_duration(path, sample_rate=16000):
    """Duration in seconds of an audio file, checking it exists and its sample rate.

    Example
    -------
    >>> audio_duration("/nonexistent.wav")
    Traceback (most recent call last):
    ...
    latent_rq_brain.training.data.DataError: audio file /nonexistent.wav does not exist
    """
    import soundfile

    if not os.path.isfile(path):
        raise DataError(f"audio file {path} does not exist")
    try:
        info = soundfile.info(path)
    except Exception as err:  # soundfile raises several types
        raise DataError(f"cannot read audio file {path}: {err}") from err
    if info.samplerate != sample_rate:
        raise DataError(
            f"audio file {path} has sample rate {info.samplerate} Hz, expected "
            f"{sample_rate} Hz (resample it, e.g. `sox in.wav -r {sample_rate} out.wav`)"
        )
    return info.frames / info.samplerate


def hash_split(key, valid_fraction, test_fraction, salt="probes"):
    """``test``, ``valid`` or ``train`` by a stable (SHA-1) hash of ``key``.

    Example
    -------
    >>> hash_split("x", 0.0, 0.0), hash_split("x", 0.0, 0.999999)
    ('train', 'test')
    """
    h = stable_hash(f"{salt}|{key}")
    if h < test_fraction:
        return "test"
    if h < test_fraction + valid_fraction:
        return "valid"
    return "train"


def task_manifests(folder, splits=SPLITS):
    """``{split: <folder>/<split>.csv}``.

    Example
    -------
    >>> task_manifests("out/ic")["test"]
    'out/ic/test.csv'
    """
    return {s: os.path.join(str(folder), f"{s}.csv") for s in splits}


def write_task(folder, splits, columns, **check):
    """Writes ``<folder>/{train,valid,test}.csv`` then checks them (see :func:`check_task`).

    Arguments
    ---------
    folder : str
        Output folder of the task.
    splits : dict
        ``{split: list of row dicts}``; an empty split is an error.
    columns : list of str
        CSV header.
    **check
        Keyword arguments of :func:`check_task`.

    Returns
    -------
    dict
        ``{split: number of utterances}``.
    """
    for split, rows in splits.items():
        if not rows:
            raise DataError(
                f"split {split!r} of task folder {folder} would be empty: check "
                "the input data and the split options"
            )
    paths = task_manifests(folder, list(splits))
    for split, rows in splits.items():
        write_manifest(sorted(rows, key=lambda r: r["ID"]), paths[split], columns)
    check_task(paths, **check)
    return {split: len(rows) for split, rows in splits.items()}


@contextlib.contextmanager
def exit_on_data_error():
    """For command-line entry points: a :class:`DataError` ends the program
    with its message (``error: ...``) instead of a traceback."""
    try:
        yield
    except DataError as err:
        sys.exit(f"error: {err}")
