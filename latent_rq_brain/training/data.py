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
import functools
import hashlib
import json
import logging
import os

import soundfile
import torch

import speechbrain as sb
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.data_utils import batch_pad_right
from speechbrain.dataio.dataset import DynamicItemDataset

from latent_rq_brain.model.features import ms_to_samples

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("ID", "duration", "wav")
#: Side file (in the output folder) remembering each audio file's content hash.
AUDIO_HASHES = ".audio_hashes.json"
#: A multi-channel file whose mono mix has less than this fraction of its
#: channels' mean energy (-20 dB) cancels in the mix: one channel is used.
CANCELLATION_RATIO = 0.01


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


class AudioHashes:
    """Content hashes of audio files, remembered in a side file.

    :meth:`digest` is the BLAKE2b hash of a file's bytes (symbolic links
    resolved). It is taken from the side file when the file's size,
    modification time, inode and change time are those remembered with it,
    and recomputed when any of them changed: a file replaced by other audio of
    the same size with its modification time restored (``os.utime``, a tar
    extraction) changes its change time or inode, hence is hashed again.

    Arguments
    ---------
    path : str, optional
        The side file (:data:`AUDIO_HASHES` in the output folder); None:
        nothing remembered, every file is hashed.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> wav = os.path.join(d, "a.wav")
    >>> _ = open(wav, "wb").write(b"RIFF")
    >>> hashes = AudioHashes(os.path.join(d, AUDIO_HASHES))
    >>> hashes.digest(wav)
    'f9d45a7be062711cbb5ca8c8e2699db2'
    >>> hashes.save()
    >>> AudioHashes(os.path.join(d, AUDIO_HASHES)).digest(wav)  # no read: remembered
    'f9d45a7be062711cbb5ca8c8e2699db2'
    >>> hashes.digest(os.path.join(d, "missing.wav")) is None
    True
    """

    def __init__(self, path=None):
        self.path = path
        self.known = {}
        self.changed = False
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    known = json.load(f)
                if isinstance(known, dict):
                    self.known = known
            except (OSError, ValueError):
                pass  # none yet, or damaged: every file is hashed again

    def digest(self, path):
        """Hex content hash of the audio file ``path``; None if it cannot be read."""
        try:
            real = os.path.realpath(path)
            st = os.stat(real)
        except (OSError, TypeError, ValueError):
            return None
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_dev]
        entry = self.known.get(real)
        if isinstance(entry, list) and entry[:-1] == stamp:
            return entry[-1]
        try:
            with open(real, "rb") as f:
                digest = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
        except OSError:
            return None
        self.known[real] = stamp + [digest]
        self.changed = True
        return digest

    def save(self):
        """Writes the side file (atomically) if a hash was added; a failure
        to write it only costs a re-hash next time."""
        if self.path is None or not self.changed:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.known, f)
            os.replace(tmp, self.path)
            self.changed = False
        except OSError as err:
            logger.warning(f"cannot write {self.path} ({err}): audio is hashed again next time")
            try:
                os.remove(tmp)
            except OSError:
                pass


def checked_manifest(csv_path, data_root, sample_rate, cache_dir=None):
    """:func:`read_manifest` + :func:`check_audio_files`, cached per content.

    The check is skipped when ``cache_dir`` holds a marker for the same manifest
    bytes, data_root, sample rate and the same content of every audio file
    (:class:`AudioHashes`, remembered in ``cache_dir``): a wav replaced behind
    an unchanged manifest is checked again.
    """
    rows = read_manifest(csv_path, data_root)
    marker = hashes = None
    if cache_dir is not None:
        hashes = AudioHashes(os.path.join(cache_dir, AUDIO_HASHES))
        h = hashlib.sha256()
        with open(csv_path, "rb") as f:
            h.update(f.read() + f"|{data_root}|{sample_rate}".encode())
        for row in rows.values():
            h.update(f"|{hashes.digest(row['wav'])}".encode())
        marker = os.path.join(cache_dir, f".audio_checked_{h.hexdigest()[:16]}.json")
    if marker is None or not os.path.exists(marker):
        check_audio_files(rows, csv_path, sample_rate)
        if marker is not None:
            os.makedirs(cache_dir, exist_ok=True)
            with open(marker, "w", encoding="utf-8") as f:
                json.dump({"manifest": os.path.abspath(csv_path), "n": len(rows)}, f)
    if hashes is not None:
        hashes.save()
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
    return torch.from_numpy(downmix(data, path))


_WARNED_DOWNMIX = set()  # files warned about, once per process


def downmix(data, path="audio"):
    """Mono waveform of a (samples, channels) array: the mean of the
    channels, unless they cancel in it (the mix has less than
    :data:`CANCELLATION_RATIO` of the channels' mean energy, e.g. right =
    -left): then the loudest channel alone, with a warning naming the file.

    Example
    -------
    >>> import numpy as np
    >>> left = np.array([0.5, -0.25, 0.125], dtype="float32")
    >>> downmix(np.stack([left, left], axis=1)).tolist()
    [0.5, -0.25, 0.125]
    >>> downmix(np.stack([left, -left], axis=1), "x.wav").tolist()  # not silence
    [0.5, -0.25, 0.125]
    """
    mono = data.mean(axis=1)
    if data.shape[1] == 1:
        return mono
    energy = (data.astype("float64") ** 2).mean(axis=0)
    if energy.max() > 0 and float((mono.astype("float64") ** 2).mean()) < (
        CANCELLATION_RATIO * energy.mean()
    ):
        k = int(energy.argmax())
        if path not in _WARNED_DOWNMIX:
            _WARNED_DOWNMIX.add(path)
            logger.warning(
                f"{path}: its {data.shape[1]} channels cancel in the mono mix (out of "
                f"phase: the mean of the channels is near silence), so channel {k} alone "
                "is used; fix the file (e.g. `sox in.wav out.wav remix 1`)"
            )
        mono = data[:, k].copy()
    return mono


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
    min_samples = ms_to_samples(sr, hparams["win_length"])
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
    valid_kwargs = dict(hparams["valid_dataloader_opts"])
    if hparams.get("fixed_shapes"):
        train_kwargs = fixed_shape_loader_kwargs(sets["train"], hparams, train_kwargs)
        # validation batches padded to the same lengths (its own batch size)
        valid_kwargs["collate_fn"] = train_kwargs["collate_fn"]
    elif hparams.get("max_batch_len"):
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


# ---------------------------------------------------------------- fixed shapes
class LengthBuckets:
    """A few fixed (batch, samples) shapes chosen from a duration histogram.

    Every batch of a bucket has the same batch size and is padded to the same
    number of samples, so ``torch.compile`` (static shapes) sees only
    ``len(buckets)`` input shapes. Bucket ``k`` holds the utterances longer
    than bucket ``k - 1`` and at most ``samples[k]`` long; its batch size is
    the most utterances of that length in ``max_batch_len`` seconds. The upper
    edges are chosen among encoder-frame counts that are multiples of
    ``frame_multiple`` (tensor-core friendly) by dynamic programming over the
    histogram of the durations: they minimise the padded seconds of the whole
    set (:attr:`padding_waste`). An edge of ``n`` encoder frames is
    ``(downsampling * n - 1) * hop`` samples: exactly ``downsampling * n`` Mel
    frames (STFT with ``center=True``), no extra padding to a multiple.

    Arguments
    ---------
    durations : list of float
        Seconds of every utterance (the manifest's ``duration`` column).
    max_batch_len : float
        Seconds of (padded) audio per batch.
    num_shapes : int
        Number of buckets (shapes).
    sample_rate : int
        Samples per second.
    hop_length : float
        Frame shift in ms.
    downsampling : int
        Mel frames per encoder frame.
    frame_multiple : int
        Encoder-frame counts of the edges are multiples of this.

    Example
    -------
    >>> b = LengthBuckets([1.0, 1.1, 1.2, 3.9, 4.0], max_batch_len=8, num_shapes=2)
    >>> b.encoder_frames, b.batch_sizes
    ([32, 104], [6, 1])
    >>> b.bucket_of(1.1), b.bucket_of(3.95), round(b.padding_waste, 3)
    (0, 1, 0.075)
    """

    def __init__(
        self,
        durations,
        max_batch_len,
        num_shapes,
        sample_rate=16000,
        hop_length=10,
        downsampling=4,
        frame_multiple=8,
    ):
        if not durations:
            raise ValueError("LengthBuckets needs at least one duration")
        if int(num_shapes) < 1:
            raise ValueError(f"num_shapes must be >= 1, got {num_shapes}")
        self.sample_rate = int(sample_rate)
        self.hop = ms_to_samples(sample_rate, hop_length)
        self.downsampling = int(downsampling)
        step = int(frame_multiple)
        # candidate edges: every multiple of ``step`` encoder frames up to the
        # first one that holds the longest utterance
        n_max = max(durations) * self.sample_rate
        cands = [step]
        while self._samples(cands[-1]) < n_max:
            cands.append(cands[-1] + step)
        counts = [0] * len(cands)
        sums = [0.0] * len(cands)
        for d in durations:
            k = self._first_fit(cands, d)
            counts[k] += 1
            sums[k] += d
        edges = self._best_edges(cands, counts, sums, min(int(num_shapes), len(cands)))
        self.encoder_frames = edges
        self.samples = [self._samples(n) for n in edges]
        for s in self.samples:
            if s / self.sample_rate > max_batch_len:
                raise ValueError(
                    f"max_batch_len={max_batch_len} s cannot hold one utterance of "
                    f"{s / self.sample_rate:.2f} s: raise it or lower avoid_if_longer_than"
                )
        self.batch_sizes = [
            int(max_batch_len * self.sample_rate // s) for s in self.samples
        ]
        self.counts = [0] * len(edges)
        padded = 0.0
        for d in durations:
            k = self.bucket_of(d)
            self.counts[k] += 1
            padded += self.samples[k] / self.sample_rate
        #: padded seconds over the seconds computed on, over the whole set
        self.padding_waste = 1.0 - sum(durations) / padded

    def _samples(self, enc_frames):
        return (self.downsampling * enc_frames - 1) * self.hop

    def _first_fit(self, edges_frames, duration):
        n = duration * self.sample_rate
        for k, e in enumerate(edges_frames):
            if n <= self._samples(e) + 1e-6:
                return k
        return len(edges_frames) - 1

    def _best_edges(self, cands, counts, sums, k_max):
        """Edges (a subset of ``cands`` ending with the last) minimising the
        padded seconds: DP over the histogram, O(k_max * len(cands)^2)."""
        n = len(cands)
        sec = [self._samples(c) / self.sample_rate for c in cands]
        pc, ps = [0], [0.0]
        for c, s in zip(counts, sums):
            pc.append(pc[-1] + c)
            ps.append(ps[-1] + s)

        def waste(i, j):  # bins i..j (inclusive) padded to cands[j]
            return (pc[j + 1] - pc[i]) * sec[j] - (ps[j + 1] - ps[i])

        inf = float("inf")
        # best[k][j]: least waste of bins 0..j with k + 1 edges, the last at j
        best = [[waste(0, j) for j in range(n)]]
        back = [[-1] * n]
        for _ in range(1, k_max):
            row, brow = [inf] * n, [-1] * n
            for j in range(n):
                for i in range(j):
                    w = best[-1][i] + waste(i + 1, j)
                    if w < row[j] - 1e-9:
                        row[j], brow[j] = w, i
            best.append(row)
            back.append(brow)
        k = min(range(k_max), key=lambda k: best[k][n - 1])
        edges, j = [], n - 1
        while j >= 0 and k >= 0:
            edges.append(cands[j])
            j, k = back[k][j], k - 1
        return sorted(edges)

    def bucket_of(self, duration):
        """Index of the bucket of an utterance of ``duration`` seconds."""
        n = duration * self.sample_rate
        for k, s in enumerate(self.samples):
            if n <= s + 1e-6:
                return k
        return len(self.samples) - 1

    def pad_length(self, n_samples):
        """The bucket length (samples) a batch whose longest utterance has
        ``n_samples`` samples is padded to (itself if longer than all)."""
        for s in self.samples:
            if n_samples <= s:
                return s
        return int(n_samples)

    def shapes(self):
        """``[(batch, samples, encoder frames)]`` of every bucket."""
        return list(zip(self.batch_sizes, self.samples, self.encoder_frames))

    def describe(self):
        """One line per bucket and the waste, for the log and the README."""
        lines = [
            f"bucket {k}: <= {s / self.sample_rate:.2f} s ({n} encoder frames), "
            f"batch {b}, {c} utterances"
            for k, (b, s, n, c) in enumerate(
                zip(self.batch_sizes, self.samples, self.encoder_frames, self.counts)
            )
        ]
        lines.append(f"padding waste {100 * self.padding_waste:.1f}%")
        return "\n".join(lines)


class FixedShapeBatchSampler(torch.utils.data.Sampler):
    """Batches of a fixed size per :class:`LengthBuckets` bucket.

    Each epoch shuffles the utterances of every bucket, cuts them into
    batches of the bucket's size, drops the incomplete last batch of each
    bucket (other utterances each epoch: at most ``batch - 1`` per bucket and
    epoch are skipped) and shuffles the order of the batches. Together with
    :class:`BucketPadding` every batch has one of ``len(buckets)`` shapes.

    Example
    -------
    >>> durations = [1.0] * 7 + [4.0] * 3
    >>> b = LengthBuckets(durations, max_batch_len=8, num_shapes=2)
    >>> sampler = FixedShapeBatchSampler(durations, b, seed=1)
    >>> sorted(len(batch) for batch in sampler), len(sampler)
    ([1, 1, 1, 6], 4)
    """

    def __init__(self, durations, buckets, shuffle=True, seed=0):
        self.buckets = buckets
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.members = [[] for _ in buckets.samples]
        for i, d in enumerate(durations):
            self.members[buckets.bucket_of(d)].append(i)

    def set_epoch(self, epoch):
        """Called by SpeechBrain's distributed wrapper (and by __iter__)."""
        self.epoch = int(epoch)

    def __len__(self):
        return sum(
            len(m) // b for m, b in zip(self.members, self.buckets.batch_sizes)
        )

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        batches = []
        for members, size in zip(self.members, self.buckets.batch_sizes):
            order = members
            if self.shuffle:
                order = [members[i] for i in torch.randperm(len(members), generator=g)]
            batches += [
                order[i : i + size] for i in range(0, len(order) - size + 1, size)
            ]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g)]
        return iter(batches)


class BucketPadding:
    """SpeechBrain's padding function, padding further to the bucket length.

    A drop-in ``padding_func`` of :class:`speechbrain.dataio.batch.PaddedBatch`:
    1-D signals are padded to :meth:`LengthBuckets.pad_length` of the longest,
    and their relative lengths rescaled to the new length (the model is
    padding-exact, so targets and loss do not change).

    Example
    -------
    >>> pad = BucketPadding(LengthBuckets([0.1, 0.2], max_batch_len=1, num_shapes=1))
    >>> x, rel = pad([torch.ones(1000), torch.ones(500)])
    >>> x.shape, torch.round(rel * x.shape[1]).long().tolist()
    (torch.Size([2, 4960]), [1000, 500])
    """

    def __init__(self, buckets):
        self.buckets = buckets

    def __call__(self, tensors, **kwargs):
        padded, rel = batch_pad_right(tensors, **kwargs)
        if padded.dim() != 2:
            return padded, rel
        n = padded.shape[1]
        target = self.buckets.pad_length(n)
        if target > n:
            padded = torch.nn.functional.pad(padded, (0, target - n))
            rel = torch.tensor([t.shape[0] / target for t in tensors])
        return padded, rel


def fixed_shape_loader_kwargs(dataset, hparams, loader_kwargs):
    """Loader options for ``fixed_shapes: True``: the batch sampler and collate
    function of :class:`LengthBuckets`, logged with their padding waste."""
    durations = [float(dataset.data[i]["duration"]) for i in dataset.data_ids]
    buckets = LengthBuckets(
        durations,
        hparams["max_batch_len"],
        hparams["fixed_shape_count"],
        hparams["sample_rate"],
        hparams["hop_length"],
        hparams["downsampling"],
        hparams.get("fixed_shape_frame_multiple", 8),
    )
    logger.info("fixed-shape buckets:\n" + buckets.describe())
    kwargs = dict(loader_kwargs)
    kwargs.pop("batch_size", None)
    kwargs.pop("shuffle", None)
    kwargs["batch_sampler"] = FixedShapeBatchSampler(
        durations, buckets, seed=hparams.get("seed", 0)
    )
    kwargs["collate_fn"] = functools.partial(PaddedBatch, padding_func=BucketPadding(buckets))
    return kwargs


def is_out_of_memory(err):
    """Whether ``err`` is an allocation failure (CUDA, or the CPU allocator)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def out_of_memory_message(batch, data, sample_rate, longer_than=None, where="",
                          batch_setting="max_batch_len"):
    """What to say when a batch runs out of memory: its size, padded length
    and longest utterance (ID, file, duration), and the settings to change.

    ``where`` (e.g. ``"in valid"``) says what was running; ``batch_setting``
    names the setting that sizes such batches. A batch of cached hidden states
    (``batch.hidden``, no ``sig``) is measured in frames.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> batch = SimpleNamespace(id=["a", "b"], sig=(torch.zeros(2, 32000), torch.tensor([0.5, 1.0])))
    >>> out_of_memory_message(batch, {"b": {"wav": "b.wav"}}, 16000, 30.0)
    'out of memory on a batch of 2 utterance(s) padded to 2.0 s (3.0 s of audio); its longest: b (b.wav, 2.0 s). Lower max_batch_len, or avoid_if_longer_than (now 30.0 s) to leave out such utterances, or remove b from the manifest'
    >>> out_of_memory_message(batch, {}, 16000, where="in valid", batch_setting="batch_size")[:60]
    'out of memory in valid on a batch of 2 utterance(s) padded t'
    """
    signal = getattr(batch, "sig", None)
    if signal is None:
        signal = batch.hidden
    wavs, rel = signal
    scale, unit = (sample_rate, " s") if getattr(batch, "sig", None) is not None else (1, " frames")
    padded = wavs.shape[1] / scale
    seconds = [float(r) * padded for r in rel]
    longest = max(range(len(seconds)), key=seconds.__getitem__)
    uid = batch.id[longest]
    wav = (data.get(uid) or {}).get("wav", "?")
    leave_out = (f", or avoid_if_longer_than (now {longer_than} s) to leave out such utterances"
                 if longer_than is not None or batch_setting == "max_batch_len" else "")
    where = f" {where}" if where else ""
    return (
        f"out of memory{where} on a batch of {len(seconds)} utterance(s) padded to "
        f"{padded:.1f}{unit} ({sum(seconds):.1f}{unit} of audio); its longest: {uid} "
        f"({wav}, {seconds[longest]:.1f}{unit}). Lower {batch_setting}{leave_out}, "
        f"or remove {uid} from the manifest"
    )


def named_out_of_memory(err, batch, datasets, sample_rate, longer_than=None, where="",
                        batch_setting="max_batch_len"):
    """``err`` itself if it is not an allocation failure, else a
    ``torch.OutOfMemoryError`` naming the batch's longest utterance
    (:func:`out_of_memory_message`; its file looked up in ``datasets``, each
    a dataset with ``data`` or None), to raise ``from err``.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> batch = SimpleNamespace(id=["a"], sig=(torch.zeros(1, 16000), torch.tensor([1.0])))
    >>> oom = RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory")
    >>> str(named_out_of_memory(oom, batch, [None], 16000, where="in valid"))[:38]
    'out of memory in valid on a batch of 1'
    >>> other = ValueError("x")
    >>> named_out_of_memory(other, batch, [], 16000) is other
    True
    """
    if not is_out_of_memory(err) or isinstance(err, NamedOutOfMemoryError):
        return err  # not out of memory, or named already (by an inner batch)
    data = {}
    for dataset in datasets:
        data.update(getattr(getattr(dataset, "dataset", dataset), "data", None) or {})
    return NamedOutOfMemoryError(out_of_memory_message(
        batch, data, sample_rate, longer_than, where, batch_setting))


class NamedOutOfMemoryError(torch.OutOfMemoryError):
    """Out of memory, with the utterance at fault named (:func:`named_out_of_memory`)."""
