"""Bad data gets a clear error naming the file, line, ID or value at fault.

Every test writes its own audio (numpy + soundfile) and manifests under
``tmp_path``; nothing outside the repository is read.
"""

import logging
import os
import re
import sys

import numpy as np
import pytest
import soundfile
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train  # noqa: E402
from latent_rq_brain.training import data  # noqa: E402
from latent_rq_brain.training.data import (  # noqa: E402
    DataError,
    check_audio_files,
    checked_manifest,
    dataio_prepare,
    make_dataset,
    read_audio_checked,
    read_manifest,
)

SR = 16000


# ---------------------------------------------------------------- helpers
def write_wav(path, seconds=1.0, sr=SR, channels=1, value=None):
    """Writes a short noise (or constant ``value``) wav; returns its path as str."""
    n = int(round(seconds * sr))
    if value is None:
        rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
        x = (0.1 * rng.standard_normal((n, channels))).astype("float32")
    else:
        x = np.full((n, channels), value, dtype="float32")
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    soundfile.write(str(path), x if channels > 1 else x[:, 0], sr)
    return str(path)


def write_manifest(path, rows, header="ID,duration,wav"):
    """Writes a CSV manifest: ``rows`` are lists of cells (already strings)."""
    lines = [header] + [",".join(str(c) for c in r) for r in rows]
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def at(path):
    """Regex matching a path literally."""
    return re.escape(str(path))


@pytest.fixture
def good(tmp_path):
    """A manifest with two good 1 s / 1.5 s utterances."""
    a = write_wav(tmp_path / "a.wav", 1.0)
    b = write_wav(tmp_path / "b.wav", 1.5)
    return write_manifest(tmp_path / "good.csv", [["u1", 1.0, a], ["u2", 1.5, b]])


# ---------------------------------------------------------------- manifests
def test_good_manifest_reads_and_checks(good):
    rows = checked_manifest(good, None, SR)
    assert list(rows) == ["u1", "u2"]
    assert rows["u2"]["duration"] == 1.5 and rows["u2"]["line"] == 3


def test_missing_manifest(tmp_path):
    path = str(tmp_path / "nope" / "train.csv")
    with pytest.raises(DataError, match=at(path) + ".*does not exist"):
        read_manifest(path)
    with pytest.raises(DataError, match="does not exist"):
        read_manifest("")


@pytest.mark.parametrize(
    "header, missing",
    [
        ("ID,wav", "duration"),
        ("ID,duration", "wav"),
        ("Duration,wav", "ID"),
        ("utt,length,path", "ID"),
    ],
)
def test_manifest_lacking_a_column(tmp_path, header, missing):
    path = write_manifest(tmp_path / "m.csv", [["u1", "1.0"]], header=header)
    with pytest.raises(DataError, match=at(path) + r" lacks column\(s\).*'" + missing + "'") as err:
        read_manifest(path)
    # the actual header is shown, and what was expected
    assert header.split(",")[0] in str(err.value)
    assert "['ID', 'duration', 'wav']" in str(err.value)


def test_zero_byte_manifest(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("")
    with pytest.raises(DataError, match=at(path) + r" lacks column\(s\)"):
        read_manifest(str(path))


def test_header_only_manifest(tmp_path):
    path = write_manifest(tmp_path / "m.csv", [])
    with pytest.raises(DataError, match=at(path) + " is empty"):
        read_manifest(path)


@pytest.mark.parametrize("value", ["abc", "", "1,5s"])
def test_non_numeric_duration(tmp_path, value):
    wav = write_wav(tmp_path / "a.wav")
    rows = [["u1", "1.0", wav], ["u2", f'"{value}"', wav]]
    path = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(
        DataError,
        match=at(path) + r", line 3 \(ID u2\): duration " + re.escape(repr(value)) + " is not a number",
    ):
        read_manifest(path)


@pytest.mark.parametrize("value", ["0", "-1.5", "nan"])
def test_non_positive_duration(tmp_path, value):
    wav = write_wav(tmp_path / "a.wav")
    path = write_manifest(tmp_path / "m.csv", [["u1", value, wav]])
    shown = str(float(value))
    with pytest.raises(
        DataError, match=at(path) + r", line 2 \(ID u1\): duration " + re.escape(shown) + " must be > 0"
    ):
        read_manifest(path)


def test_duplicate_id(tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    rows = [["u1", 1.0, wav], ["u2", 1.0, wav], ["u1", 1.0, wav]]
    path = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(DataError, match=at(path) + ", line 4: duplicate ID 'u1'"):
        read_manifest(path)


def test_empty_id(tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, wav], [" ", 1.0, wav]])
    with pytest.raises(DataError, match=at(path) + ", line 3: empty ID"):
        read_manifest(path)


def test_empty_wav_column(tmp_path):
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, ""]])
    with pytest.raises(DataError, match=at(path) + r", line 2 \(ID u1\): empty wav"):
        read_manifest(path)


def test_data_root_without_data_root(tmp_path):
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, "$data_root/a.wav"]])
    with pytest.raises(
        DataError, match=at(path) + r", line 2: wav '\$data_root/a.wav' uses \$data_root but no data_root"
    ):
        read_manifest(path)


def test_data_root_is_substituted(tmp_path):
    root = tmp_path / "corpus"
    wav = write_wav(root / "spk" / "a.wav")
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, "$data_root/spk/a.wav"]])
    rows = checked_manifest(path, str(root), SR)
    assert rows["u1"]["wav"] == wav


def test_relative_wav_resolves_against_manifest_folder(tmp_path, monkeypatch):
    folder = tmp_path / "lists"
    wav = write_wav(folder / "audio" / "a.wav")
    path = write_manifest(folder / "m.csv", [["u1", 1.0, "audio/a.wav"]])
    monkeypatch.chdir(tmp_path)  # somewhere else: must not matter
    rows = checked_manifest(os.path.relpath(path, tmp_path), None, SR)
    assert rows["u1"]["wav"] == wav
    assert read_audio_checked(rows["u1"]["wav"], SR).shape == (SR,)


def test_extra_columns_are_kept_and_ragged_rows_ignored(tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    path = write_manifest(
        tmp_path / "m.csv", [["u1", 1.0, wav, "spk1", "HELLO", "extra"]], header="ID,duration,wav,spk_id,wrd"
    )
    row = read_manifest(path)["u1"]
    assert row["spk_id"] == "spk1" and row["wrd"] == "HELLO" and None not in row


# ---------------------------------------------------------------- audio files
def check(path, sample_rate=SR, data_root=None):
    return check_audio_files(read_manifest(path, data_root), path, sample_rate)


def test_missing_audio_file(tmp_path):
    missing = str(tmp_path / "gone.wav")
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, missing]])
    with pytest.raises(DataError, match=r"1 bad audio entry in " + at(path)) as err:
        check(path)
    assert re.search(at(path) + r", line 2 \(ID u1\): audio file " + at(missing) + " does not exist", str(err.value))


def test_random_bytes_named_wav(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, str(bad)]])
    with pytest.raises(DataError, match=r"line 2 \(ID u1\): cannot read audio file " + at(bad)):
        check(path)
    with pytest.raises(DataError, match="cannot read audio file " + at(bad)):
        read_audio_checked(str(bad), SR)


def test_zero_byte_wav(tmp_path):
    bad = tmp_path / "empty.wav"
    bad.write_bytes(b"")
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, str(bad)]])
    with pytest.raises(DataError, match="cannot read audio file " + at(bad)):
        check(path)


def test_wav_with_no_samples(tmp_path):
    bad = write_wav(tmp_path / "silent.wav", 0.0)
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, bad]])
    with pytest.raises(DataError, match=at(bad) + " lasts 0.000 s but the manifest says 1.000 s"):
        check(path)
    with pytest.raises(DataError, match=at(bad) + " has 0 samples, fewer than the 1 needed"):
        read_audio_checked(bad, SR)


def test_truncated_wav_header(tmp_path):
    full = write_wav(tmp_path / "full.wav", 1.0)
    bad = tmp_path / "cut_header.wav"
    bad.write_bytes(open(full, "rb").read()[:20])  # inside the fmt chunk
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, str(bad)]])
    with pytest.raises(DataError, match=r"\(ID u1\): cannot read audio file " + at(bad)):
        check(path)
    with pytest.raises(DataError, match="cannot read audio file " + at(bad)):
        read_audio_checked(str(bad), SR)


def test_truncated_wav_data(tmp_path):
    full = write_wav(tmp_path / "full.wav", 2.0)
    bad = tmp_path / "cut_data.wav"
    bad.write_bytes(open(full, "rb").read()[: 44 + 2 * SR // 2])  # 0.5 s of 16-bit data left
    path = write_manifest(tmp_path / "m.csv", [["u1", 2.0, str(bad)]])
    with pytest.raises(DataError, match=r"\(ID u1\): " + at(bad) + " lasts 0.500 s but the manifest says 2.000 s"):
        check(path)


def test_wrong_sample_rate(tmp_path):
    bad = write_wav(tmp_path / "narrow.wav", 1.0, sr=8000)
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, bad]])
    with pytest.raises(DataError, match=r"\(ID u1\): " + at(bad) + " has sample rate 8000 Hz, expected 16000 Hz") as err:
        check(path)
    assert "sox" in str(err.value)  # says how to fix it
    with pytest.raises(DataError, match=at(bad) + " has sample rate 8000 Hz, expected 16000 Hz"):
        read_audio_checked(bad, SR)


def test_duration_disagrees_with_audio(tmp_path):
    wav = write_wav(tmp_path / "a.wav", 1.0)
    path = write_manifest(tmp_path / "m.csv", [["ok", 1.05, wav], ["u7", 3.0, wav]])
    with pytest.raises(DataError, match=r"1 bad audio entry") as err:
        check(path)
    assert re.search(r"line 3 \(ID u7\): " + at(wav) + " lasts 1.000 s but the manifest says 3.000 s", str(err.value))
    assert "ID ok" not in str(err.value)  # 50 ms off is within tolerance


def test_several_problems_reported_at_once(tmp_path):
    ok = write_wav(tmp_path / "ok.wav", 1.0)
    narrow = write_wav(tmp_path / "narrow.wav", 1.0, sr=8000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all" * 10)
    rows = [["good", 1.0, ok], ["gone", 1.0, str(tmp_path / "gone.wav")], ["narrow", 1.0, narrow],
            ["junk", 1.0, str(junk)], ["long", 9.0, ok]]
    path = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(DataError, match="4 bad audio entries in " + at(path) + ":") as err:
        check(path)
    msg = str(err.value)
    for line, uid in ((3, "gone"), (4, "narrow"), (5, "junk"), (6, "long")):
        assert f"line {line} (ID {uid})" in msg
    assert "ID good" not in msg and "more)" not in msg


def test_many_problems_are_capped_with_a_count(tmp_path):
    rows = [[f"u{i}", 1.0, str(tmp_path / f"gone{i}.wav")] for i in range(13)]
    path = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(DataError, match=r"13 bad audio entries in " + at(path) + r" \(and 3 more\):") as err:
        check(path)
    msg = str(err.value)
    assert "(ID u9)" in msg and "(ID u10)" not in msg
    assert msg.count("does not exist") == 10


# ---------------------------------------------------------------- cache
def test_check_is_cached_and_skips_audio(tmp_path, good, monkeypatch):
    cache = tmp_path / "out"
    checked_manifest(good, None, SR, str(cache))
    markers = [f for f in os.listdir(cache) if f.startswith(".audio_checked_")]
    assert len(markers) == 1

    def boom(path, *a, **k):
        raise AssertionError(f"soundfile.info({path}) called although the check is cached")

    monkeypatch.setattr(soundfile, "info", boom)
    rows = checked_manifest(good, None, SR, str(cache))  # no audio read
    assert list(rows) == ["u1", "u2"]
    # without a cache, the audio is checked again
    with pytest.raises(DataError, match="cannot read audio file.*called although"):
        checked_manifest(good, None, SR)


def test_changed_manifest_is_checked_again(tmp_path, good):
    cache = str(tmp_path / "out")
    checked_manifest(good, None, SR, cache)
    with open(good, "a", encoding="utf-8") as f:
        f.write(f"u3,1.0,{tmp_path / 'new_missing.wav'}\n")
    with pytest.raises(DataError, match=r"line 4 \(ID u3\): audio file .*new_missing.wav does not exist"):
        checked_manifest(good, None, SR, cache)
    assert len([f for f in os.listdir(cache) if f.startswith(".audio_checked_")]) == 1


def test_other_sample_rate_is_checked_again(tmp_path, good):
    cache = str(tmp_path / "out")
    checked_manifest(good, None, SR, cache)
    with pytest.raises(DataError, match="expected 8000 Hz"):
        checked_manifest(good, None, 8000, cache)


def test_failed_check_writes_no_marker(tmp_path):
    cache = tmp_path / "out"
    path = write_manifest(tmp_path / "m.csv", [["u1", 1.0, str(tmp_path / "gone.wav")]])
    with pytest.raises(DataError):
        checked_manifest(path, None, SR, str(cache))
    assert not cache.exists() or not os.listdir(cache)


# ---------------------------------------------------------------- reading
def test_stereo_is_averaged_to_mono(tmp_path):
    path = str(tmp_path / "stereo.wav")
    x = np.stack([np.full(800, 0.25), np.full(800, -0.75)], 1).astype("float32")
    soundfile.write(path, x, SR, subtype="FLOAT")
    sig = read_audio_checked(path, SR)
    assert sig.shape == (800,) and sig.dtype == torch.float32
    assert torch.allclose(sig, torch.full((800,), -0.25))


def test_read_missing_audio(tmp_path):
    gone = str(tmp_path / "gone.wav")
    with pytest.raises(DataError, match="cannot read audio file " + at(gone)):
        read_audio_checked(gone, SR)


def test_audio_shorter_than_min_samples(tmp_path):
    short = write_wav(tmp_path / "short.wav", 0.01)  # 160 samples
    with pytest.raises(DataError, match=at(short) + " has 160 samples, fewer than the 400 needed"):
        read_audio_checked(short, SR, min_samples=400)
    assert read_audio_checked(short, SR, min_samples=160).shape == (160,)


# ---------------------------------------------------------------- datasets
@pytest.mark.parametrize("durations", [(0.3, 0.5), (25.0, 31.0)], ids=["too_short", "too_long"])
def test_everything_filtered_out_by_duration(tmp_path, durations):
    rows = [[f"u{i}", d, str(tmp_path / f"{i}.wav")] for i, d in enumerate(durations)]
    path = write_manifest(tmp_path / "m.csv", rows)
    lo, hi = min(durations), max(durations)
    with pytest.raises(DataError, match=r"no utterance of " + at(path) + r" lasts between 1\.0 s and 20\.0 s") as err:
        make_dataset(read_manifest(path), path, 1.0, 20.0, SR, 400)
    assert f"from {lo:.2f} to {hi:.2f} s" in str(err.value)
    assert "avoid_if_shorter_than" in str(err.value)


def test_partly_filtered_dataset_reads_audio(tmp_path):
    wav = write_wav(tmp_path / "a.wav", 1.5)
    path = write_manifest(tmp_path / "m.csv", [["short", 0.2, wav], ["kept", 1.5, wav], ["long", 60, wav]])
    ds = make_dataset(read_manifest(path), path, 1.0, 20.0, SR, 400)
    assert len(ds) == 1
    item = ds[0]
    assert item["id"] == "kept" and item["sig"].shape == (int(1.5 * SR),)


def test_unchecked_dataset_fails_naming_the_file(tmp_path):
    """With check_audio off, a bad file still fails clearly when it is read."""
    gone = str(tmp_path / "gone.wav")
    path = write_manifest(tmp_path / "m.csv", [["u1", 2.0, gone]])
    ds = make_dataset(read_manifest(path), path, 1.0, 20.0, SR, 400)
    with pytest.raises(DataError, match="cannot read audio file " + at(gone)):
        ds[0]


def small_hparams(train_csv, valid_csv, out, **extra):
    hp = {
        "sample_rate": SR,
        "win_length": 25,
        "train_csv": train_csv,
        "valid_csv": valid_csv,
        "data_root": None,
        "check_audio": True,
        "output_folder": str(out),
        "avoid_if_shorter_than": 1.0,
        "avoid_if_longer_than": 20.0,
        "train_dataloader_opts": {"num_workers": 0},
        "valid_dataloader_opts": {"batch_size": 2},
        "max_batch_len": 10,
        "num_buckets": 4,
    }
    hp.update(extra)
    return hp


def test_dataio_prepare_checks_valid_too(tmp_path, good):
    narrow = write_wav(tmp_path / "narrow.wav", 1.0, sr=8000)
    bad = write_manifest(tmp_path / "valid.csv", [["v1", 1.0, narrow]])
    with pytest.raises(DataError, match=at(bad) + r", line 2 \(ID v1\): " + at(narrow) + " has sample rate 8000"):
        dataio_prepare(small_hparams(good, bad, tmp_path / "out"))
    train_data, valid_data, train_kwargs, _ = dataio_prepare(small_hparams(good, good, tmp_path / "out"))
    assert len(train_data) == 2 and len(valid_data) == 2 and "batch_sampler" in train_kwargs
    train_data, valid_data, _, _ = dataio_prepare(small_hparams(good, None, tmp_path / "out"))
    assert valid_data is None


def test_dataio_prepare_too_short(tmp_path):
    wav = write_wav(tmp_path / "a.wav", 0.5)
    path = write_manifest(tmp_path / "train.csv", [["u1", 0.5, wav]])
    for check_audio in (True, False):
        with pytest.raises(DataError, match=r"no utterance of " + at(path) + r" lasts between 1\.0 s and 20\.0 s"):
            dataio_prepare(small_hparams(path, None, tmp_path / "out", check_audio=check_audio))


# ---------------------------------------------------------------- end to end
@pytest.fixture
def restore_logging():
    """train.main sets up SpeechBrain's file logging and excepthook: undo it."""
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, sys.excepthook
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook = hook


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


def test_train_main_stops_on_missing_audio_and_loses_nothing(tmp_path, restore_logging):
    ok_wav = write_wav(tmp_path / "data" / "ok.wav", 2.0)
    ok = write_manifest(tmp_path / "data" / "valid.csv", [["v1", 2.0, ok_wav]])
    gone = str(tmp_path / "data" / "gone.wav")
    bad = write_manifest(tmp_path / "data" / "train.csv", [["t1", 2.0, ok_wav], ["t2", 2.0, gone]])
    out = tmp_path / "out"
    # a previous run's checkpoint, which a failed start must leave alone
    ckpt = out / "save" / "CKPT+2026-01-01+00-00-00+00"
    ckpt.mkdir(parents=True)
    (ckpt / "CKPT.yaml").write_text("end-of-epoch: false\nstep: 123\nunixtime: 1.0\n")
    (ckpt / "encoder.ckpt").write_bytes(b"weights")
    (out / "save" / "marker").write_text("keep me")
    before = snapshot(out / "save")

    argv = [
        os.path.join(REPO, "hparams/small/latent_rq.yaml"),
        "--data_prep=null",
        f"--train_csv={bad}",
        f"--valid_csv={ok}",
        f"--output_folder={out}",
        "--device=cpu",
        "--noprogressbar",
    ]
    with pytest.raises(DataError, match=r"line 3 \(ID t2\): audio file " + at(gone) + " does not exist") as err:
        train.main(argv)
    assert str(bad) in str(err.value)
    assert snapshot(out / "save") == before
    # the failed check is not cached: the next start checks again
    assert not [f for f in os.listdir(out) if f.startswith(".audio_checked_")]


# ---------------------------------------------------------------- Excel's CSV UTF-8
def test_manifest_with_byte_order_mark(tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    path = tmp_path / "m.csv"
    path.write_text(f"ID,duration,wav\nu1,1.0,{wav}\n", encoding="utf-8-sig")  # as Excel saves it
    assert list(read_manifest(str(path))) == ["u1"]


def test_required_columns_match_case_insensitively(tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    path = tmp_path / "m.csv"
    path.write_text(f"id,wav,duration,speaker\nu1,{wav},1.0,s1\n")  # ../shared/data style
    rows = read_manifest(str(path))
    assert list(rows) == ["u1"] and rows["u1"]["duration"] == 1.0 and rows["u1"]["speaker"] == "s1"
