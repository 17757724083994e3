"""Tests for recipes/LibriSpeech/librispeech_prepare.py on a fake corpus."""

import csv
import doctest
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from recipes.LibriSpeech import librispeech_prepare as lp
from recipes.LibriSpeech.librispeech_prepare import prepare_librispeech

REPO_ROOT = Path(__file__).resolve().parents[1]
SR = 16000
HEADER = ["ID", "duration", "wav", "spk_id", "wrd"]

# split -> speaker -> chapter -> list of (utterance index, n_samples)
LAYOUT = {
    "train-clean-100": {
        "19": {"198": [(0, 4000), (1, 8000)]},
        "26": {"495": [(0, 5600)], "496": [(3, 2400)]},
    },
    "train-clean-360": {
        "100": {"121669": [(0, 3200), (1, 7200)]},
        "1001": {"134707": [(0, 4800)]},
    },
    "dev-clean": {
        "84": {"121123": [(0, 6400)]},
        "174": {"50561": [(0, 1600), (1, 3000)]},
    },
}
TRAIN = ["train-clean-100", "train-clean-360"]
DEV = ["dev-clean"]


def write_flac(path, n_samples, sr=SR, seed=0):
    """Writes random noise of n_samples samples to a 16-bit flac file."""
    rng = np.random.default_rng(seed)
    audio = rng.uniform(-0.5, 0.5, n_samples).astype("float32")
    soundfile.write(str(path), audio, sr, format="FLAC", subtype="PCM_16")


def make_corpus(root):
    """Builds a fake LibriSpeech tree; returns the expected rows per split."""
    expected = {}
    seed = 0
    for split, speakers in LAYOUT.items():
        expected[split] = {}
        for spk, chapters in speakers.items():
            for chap, utts in chapters.items():
                chap_dir = root / split / spk / chap
                chap_dir.mkdir(parents=True)
                lines = []
                for idx, n in utts:
                    utt_id = f"{spk}-{chap}-{idx:04d}"
                    words = f"WORDS OF {utt_id} IN {split.upper()}"
                    flac = chap_dir / f"{utt_id}.flac"
                    write_flac(flac, n, seed=seed)
                    seed += 1
                    lines.append(f"{utt_id} {words}\n")
                    expected[split][utt_id] = {
                        "duration": n / SR,
                        "wav": os.path.abspath(flac),
                        "spk_id": spk,
                        "wrd": words,
                    }
                trans = chap_dir / f"{spk}-{chap}.trans.txt"
                trans.write_text("".join(lines))
    return expected


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [dict(zip(header, r)) for r in reader]
    return header, rows


def check_rows(rows, expected):
    """Checks CSV rows against the expected {utt_id: fields} mapping."""
    assert [r["ID"] for r in rows] == sorted(expected)
    for row in rows:
        exp = expected[row["ID"]]
        dur = float(row["duration"])
        assert dur == pytest.approx(exp["duration"], abs=1e-3)
        assert os.path.isabs(row["wav"])
        assert row["wav"] == exp["wav"]
        assert Path(row["wav"]).is_file()
        assert row["spk_id"] == exp["spk_id"]
        assert row["wrd"] == exp["wrd"]


@pytest.fixture
def corpus(tmp_path):
    data = tmp_path / "LibriSpeech"
    expected = make_corpus(data)
    return data, tmp_path / "save", expected


def run_prep(data, save, **kwargs):
    kwargs.setdefault("tr_splits", TRAIN)
    kwargs.setdefault("dev_splits", DEV)
    kwargs.setdefault("num_workers", 1)
    prepare_librispeech(data, save, **kwargs)


@pytest.mark.parametrize("num_workers", [1, 2])
def test_csv_contents(corpus, num_workers):
    data, save, expected = corpus
    run_prep(data, save, num_workers=num_workers)

    assert sorted(p.name for p in save.iterdir()) == sorted(
        [f"{s}.csv" for s in TRAIN + DEV]
        + ["train.csv", "librispeech_prepare.json"]
    )
    for split in TRAIN + DEV:
        csv_path = save / f"{split}.csv"
        first_line = csv_path.read_text().splitlines()[0]
        assert first_line == "ID,duration,wav,spk_id,wrd"
        header, rows = read_csv(csv_path)
        assert header == HEADER
        assert all(len(r) == len(HEADER) for r in rows)
        check_rows(rows, expected[split])


def test_merged_csv(corpus):
    data, save, expected = corpus
    run_prep(data, save, merge_name="all_train.csv")
    header, rows = read_csv(save / "all_train.csv")
    assert header == HEADER
    n_train = sum(len(expected[s]) for s in TRAIN)
    assert len(rows) == n_train == 7
    # Concatenation in tr_splits order, each part sorted by ID.
    ids = [r["ID"] for r in rows]
    assert ids == sorted(expected[TRAIN[0]]) + sorted(expected[TRAIN[1]])
    both = {**expected[TRAIN[0]], **expected[TRAIN[1]]}
    for row in rows:
        assert float(row["duration"]) == pytest.approx(
            both[row["ID"]]["duration"], abs=1e-3
        )
        assert row["spk_id"] == both[row["ID"]]["spk_id"]
    # Dev rows are not merged.
    assert not set(ids) & set(expected["dev-clean"])
    assert not (save / "train.csv").exists()


def test_merged_csv_equals_split_csvs(corpus):
    data, save, _ = corpus
    run_prep(data, save)
    _, merged = read_csv(save / "train.csv")
    _, a = read_csv(save / f"{TRAIN[0]}.csv")
    _, b = read_csv(save / f"{TRAIN[1]}.csv")
    assert merged == a + b


def test_idempotent(corpus, caplog):
    data, save, _ = corpus
    run_prep(data, save)
    outputs = sorted(save.iterdir())
    past = 1_000_000_000  # 2001: any rewrite would move mtime to "now"
    for p in outputs:
        os.utime(p, ns=(past * 10**9, past * 10**9))
    contents = {p: p.read_bytes() for p in outputs}

    with caplog.at_level("INFO", logger=lp.logger.name):
        run_prep(data, save)
    assert "skipping" in caplog.text
    assert sorted(save.iterdir()) == outputs
    for p in outputs:
        assert p.stat().st_mtime_ns == past * 10**9, p
        assert p.read_bytes() == contents[p]

    marker = json.loads((save / "librispeech_prepare.json").read_text())
    assert marker["tr_splits"] == TRAIN
    assert marker["dev_splits"] == DEV
    assert marker["merge_name"] == "train.csv"


def test_rerun_when_options_change_or_output_missing(corpus):
    data, save, expected = corpus
    run_prep(data, save)
    # Changed options: the dev-only run must rewrite and update the marker.
    run_prep(data, save, tr_splits=["train-clean-100"])
    _, merged = read_csv(save / "train.csv")
    assert [r["ID"] for r in merged] == sorted(expected["train-clean-100"])
    marker = json.loads((save / "librispeech_prepare.json").read_text())
    assert marker["tr_splits"] == ["train-clean-100"]
    # A deleted output triggers a new preparation even with the same options.
    (save / "dev-clean.csv").unlink()
    run_prep(data, save, tr_splits=["train-clean-100"])
    _, rows = read_csv(save / "dev-clean.csv")
    check_rows(rows, expected["dev-clean"])


def test_skip_prep(tmp_path):
    missing = tmp_path / "does-not-exist"
    save = tmp_path / "save"
    # No error although the data folder is missing, and nothing is written.
    assert prepare_librispeech(missing, save, skip_prep=True) is None
    assert not save.exists()


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nope" / "LibriSpeech"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        run_prep(missing, tmp_path / "save")


def test_missing_split(corpus):
    data, save, _ = corpus
    with pytest.raises(FileNotFoundError) as err:
        run_prep(data, save, tr_splits=["train-clean-100", "train-other-500"])
    msg = str(err.value)
    assert str(data / "train-other-500") in msg
    # The splits that do exist are listed.
    for found in ["dev-clean", "train-clean-100", "train-clean-360"]:
        assert found in msg
    assert not (save / "train-clean-100.csv").exists()


def test_split_without_flac(corpus):
    data, save, _ = corpus
    empty = data / "dev-other" / "1" / "2"
    empty.mkdir(parents=True)
    (empty / "1-2.trans.txt").write_text("")
    split_dir = re.escape(str(data / "dev-other"))
    with pytest.raises(FileNotFoundError, match=split_dir):
        run_prep(data, save, dev_splits=["dev-other"])


def test_transcript_without_flac(corpus):
    data, save, _ = corpus
    trans = data / "train-clean-360" / "100" / "121669" / "100-121669.trans.txt"
    with open(trans, "a") as f:
        f.write("100-121669-0007 A LINE WITHOUT AUDIO\n")
    missing_flac = trans.parent / "100-121669-0007.flac"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing_flac))):
        run_prep(data, save)


def test_flac_without_transcript(corpus):
    data, save, _ = corpus
    orphan = data / "dev-clean" / "84" / "121123" / "84-121123-0042.flac"
    write_flac(orphan, 1600)
    with pytest.raises(ValueError, match=re.escape(str(orphan))):
        run_prep(data, save)


@pytest.mark.parametrize("num_workers", [1, 2])
def test_wrong_sample_rate(corpus, num_workers):
    data, save, _ = corpus
    bad = data / "train-clean-100" / "26" / "496" / "26-496-0003.flac"
    write_flac(bad, 1200, sr=8000)
    assert soundfile.info(str(bad)).samplerate == 8000
    with pytest.raises(ValueError, match=re.escape(str(bad))) as err:
        run_prep(data, save, num_workers=num_workers)
    assert "8000" in str(err.value)
    assert not (save / "librispeech_prepare.json").exists()


def test_failed_rerun_invalidates_marker(corpus):
    data, save, _ = corpus
    run_prep(data, save)
    bad = data / "train-clean-100" / "19" / "198" / "19-198-0001.flac"
    write_flac(bad, 1200, sr=8000)
    # Different options force a re-run, which fails half-way ...
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        run_prep(data, save, merge_name="other.csv")
    # ... and the old marker is gone, so a later run cannot wrongly skip.
    assert not (save / "librispeech_prepare.json").exists()


def test_cli(corpus):
    data, save, expected = corpus
    script = REPO_ROOT / "recipes" / "LibriSpeech" / "librispeech_prepare.py"
    res = subprocess.run(
        [
            sys.executable,
            str(script),
            str(data),
            str(save),
            "--splits",
            "train-clean-360",
            "--dev-splits",
            "dev-clean",
            "--num-workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    _, rows = read_csv(save / "train.csv")
    check_rows(rows, expected["train-clean-360"])
    _, rows = read_csv(save / "dev-clean.csv")
    check_rows(rows, expected["dev-clean"])
    assert not (save / "train-clean-100.csv").exists()


def test_doctests():
    result = doctest.testmod(lp, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
