"""Tests of the Asterisk demo-corpus preparation (no network, no apt needed).

Authors
 * latent-rq contributors 2026
"""

import csv
import gzip
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from latent_rq_brain.training import data  # noqa: E402
from recipes.demo import prepare_asterisk as pa  # noqa: E402

SR = 16000


def _encode_g722(signal, path):
    """Encodes int16 mono 16 kHz samples to a raw (container-less) .g722."""
    av = pytest.importorskip("av", reason="PyAV (pip install av) is needed")
    try:
        av.codec.Codec("g722", "w")
    except Exception as err:  # pragma: no cover - depends on the FFmpeg build
        pytest.skip(f"this PyAV/FFmpeg build cannot encode G.722: {err}")
    buf = io.BytesIO()
    with av.open(buf, "w", format="g722") as out:
        stream = out.add_stream("g722", rate=SR)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            signal.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SR
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    Path(path).write_bytes(buf.getvalue())


def _tone(seconds, freq=440.0, amplitude=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


# --------------------------------------------------------------------------
# Transcript parser
# --------------------------------------------------------------------------

TRANSCRIPT = (
    "\ufeff; Core Asterisk Sounds in English\n"
    "\n"
    "agent-pass: Please enter your password followed by the pound key.\n"
    "digits/1: one\n"
    "beep: [this is a simple beep tone]\n"
    "vm-options: Pour enregistrer: votre   message\n"
    "  letters/at:  at [@]  \n"
    "this line has no colon\n"
    "; commented: out\n"
)


def test_parse_transcript_lines_inline():
    got = pa.parse_transcript_lines(TRANSCRIPT.splitlines())
    assert got == {
        "agent-pass": "Please enter your password followed by the pound key.",
        "digits/1": "one",
        "beep": "[this is a simple beep tone]",
        # split on the FIRST colon only, inner whitespace collapsed
        "vm-options": "Pour enregistrer: votre message",
        "letters/at": "at [@]",
    }


@pytest.mark.parametrize("gz", [False, True])
def test_parse_transcripts_file_plain_and_gz(tmp_path, gz):
    if gz:
        path = tmp_path / "core-sounds-it.txt.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(TRANSCRIPT)
    else:
        path = tmp_path / "core-sounds-it.txt"
        path.write_text(TRANSCRIPT, encoding="utf-8")
    got = pa.parse_transcripts(path)
    assert got["digits/1"] == "one"
    assert len(got) == 5
    # The BOM must not leak into the first key or any value.
    assert not any("\ufeff" in k or "\ufeff" in v for k, v in got.items())


def test_nonspeech_tag_detection():
    assert pa._NONSPEECH_RE.match("[this is a simple beep tone]")
    assert not pa._NONSPEECH_RE.match("at [@]")
    assert not pa._NONSPEECH_RE.match("one")


# --------------------------------------------------------------------------
# Stable hash split
# --------------------------------------------------------------------------


def test_stable_hash_is_deterministic_across_processes():
    names = ["digits/1", "vm-options", "agent-pass", "letters/at"]
    here = [data.stable_hash(n) for n in names]
    assert all(0.0 <= h < 1.0 for h in here)
    assert len(set(here)) == len(names)
    code = (
        "import sys; sys.path.insert(0, %r);"
        "from latent_rq_brain.training import data;"
        "print(repr([data.stable_hash(n) for n in %r]))" % (str(REPO), names)
    )
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert eval(out) == here


def test_split_disjoint_and_fraction():
    names = [f"prompt-{i}" for i in range(20000)]
    fraction = 0.05
    valid = {n for n in names if pa.is_valid(n, fraction)}
    train = {n for n in names if not pa.is_valid(n, fraction)}
    assert valid.isdisjoint(train)
    assert len(valid) + len(train) == len(names)
    # Binomial std is ~0.0015 here: 0.04..0.06 is > 6 sigma.
    assert 0.04 < len(valid) / len(names) < 0.06
    # Same call, same answer.
    assert valid == {n for n in names if pa.is_valid(n, fraction)}
    # Monotonic in the fraction: a larger valid set contains the smaller one.
    assert valid <= {n for n in names if pa.is_valid(n, 0.10)}
    assert not any(pa.is_valid(n, 0.0) for n in names[:1000])


# --------------------------------------------------------------------------
# CSV writer
# --------------------------------------------------------------------------


def test_write_csv_header_and_quoting(tmp_path):
    rows = [
        {
            "ID": "en-vm-options",
            "duration": 16.36925,
            "wav": "/abs/wav/en/vm-options.wav",
            "spk_id": "asterisk-en",
            "wrd": 'Press 1, then "pound"',
        },
        {
            "ID": "fr-digits.1",
            "duration": 1.25,
            "wav": "/abs/wav/fr/digits/1.wav",
            "spk_id": "asterisk-fr",
            "wrd": "",
        },
    ]
    out = tmp_path / "train.csv"
    data.write_manifest(rows, out)
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "ID,duration,wav,spk_id,wrd"
    with open(out, newline="", encoding="utf-8") as f:
        back = list(csv.DictReader(f))
    assert [r["ID"] for r in back] == ["en-vm-options", "fr-digits.1"]
    assert back[0]["wrd"] == 'Press 1, then "pound"'
    assert back[1]["wrd"] == ""
    assert float(back[0]["duration"]) == pytest.approx(16.36925)
    assert all(len(r) == 5 for r in back)
    assert not (tmp_path / "train.csv.tmp").exists()


def test_write_manifest_rejects_unknown_column(tmp_path):
    row = {"ID": "a", "duration": 1, "wav": "/a", "spk_id": "s", "wrd": "", "x": 1}
    with pytest.raises(ValueError):
        data.write_manifest([row], tmp_path / "x.csv")


# --------------------------------------------------------------------------
# G.722 decoding (the test encodes its own G.722 file with PyAV)
# --------------------------------------------------------------------------


def test_decode_g722_roundtrip(tmp_path):
    signal = _tone(1.5, freq=440.0)
    g722 = tmp_path / "tone.g722"
    _encode_g722(signal, g722)
    # G.722 is 64 kbit/s: 4 bits per 16 kHz sample.
    assert g722.stat().st_size == pytest.approx(signal.size / 2, abs=64)

    samples, sr = pa.decode_g722(g722)
    assert sr == SR
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert abs(samples.size - signal.size) <= 64
    # The decoded tone keeps its pitch and (roughly) its level.
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * SR / samples.size
    assert abs(peak_hz - 440.0) < 5.0
    assert pa.rms_dbfs(samples) == pytest.approx(pa.rms_dbfs(signal), abs=2.0)
    # Waveform match once the codec delay is compensated (lossy codec).
    n = min(samples.size, signal.size) - 200
    ref = signal[:n].astype(np.float64)
    best = max(
        np.corrcoef(ref, samples[d : d + n].astype(np.float64))[0, 1]
        for d in range(0, 100)
    )
    assert best > 0.95


def test_decode_to_wav_statuses(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    speechy = _tone(2.0, freq=300.0) + _tone(2.0, freq=1200.0, amplitude=0.1)
    cases = {
        "ok": speechy,
        "short": _tone(0.5),
        "long": _tone(3.0),
        "silent": np.zeros(2 * SR, dtype=np.int16),
    }
    for name, signal in cases.items():
        g722 = tmp_path / f"{name}.g722"
        _encode_g722(signal, g722)
        wav = tmp_path / "out" / f"{name}.wav"
        status, n_samples, wav_path = pa.decode_to_wav(
            str(g722), str(wav), min_duration=1.0, max_duration=2.5
        )
        assert status == name, (name, status)
        assert abs(n_samples - signal.size) <= 64
        assert os.path.isabs(wav_path)
        # Only kept prompts are written.
        assert wav.exists() == (name == "ok")

    info = soundfile.info(str(tmp_path / "out" / "ok.wav"))
    assert info.samplerate == SR
    assert info.channels == 1
    assert info.subtype == "PCM_16"

    empty = tmp_path / "empty.g722"
    empty.write_bytes(b"")
    assert pa.decode_to_wav(str(empty), str(tmp_path / "e.wav"))[0] == "empty"
    assert not (tmp_path / "e.wav").exists()


# --------------------------------------------------------------------------
# End to end on fake .deb packages built locally (dpkg-deb, no apt/network)
# --------------------------------------------------------------------------


def _build_deb(root, package, out_dir):
    debian = root / "DEBIAN"
    debian.mkdir(parents=True, exist_ok=True)
    (debian / "control").write_text(
        f"Package: {package}\nVersion: 9.9-1\nArchitecture: all\n"
        "Maintainer: test <t@example.org>\nDescription: test package\n"
    )
    deb = out_dir / f"{package}_9.9-1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_prepare_asterisk_end_to_end_with_local_debs(tmp_path, caplog):
    voice = tmp_path / "pkg_audio/usr/share/asterisk/sounds/zz_ZZ_f_Test"
    (voice / "digits").mkdir(parents=True)
    names = [f"prompt-{i:02d}" for i in range(30)] + ["digits/1"]
    for i, name in enumerate(names):
        _encode_g722(_tone(1.2 + 0.01 * i, freq=200.0 + 10 * i), voice / f"{name}.g722")
    _encode_g722(_tone(0.3), voice / "tiny.g722")  # too short
    _encode_g722(np.zeros(SR * 2, dtype=np.int16), voice / "quiet.g722")  # silent
    _encode_g722(_tone(1.5), voice / "beep.g722")  # non-speech tag
    doc = tmp_path / "pkg_text/usr/share/doc/asterisk-core-sounds-zz"
    doc.mkdir(parents=True)
    lines = ["; test", "digits/1: one, two", "beep: [beep tone]"]
    lines += [f"prompt-{i:02d}: Prompt number {i}." for i in range(20)]
    with gzip.open(doc / "core-sounds-zz.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    debs = tmp_path / "debs"
    debs.mkdir()
    deb_files = [
        _build_deb(tmp_path / "pkg_audio", "asterisk-core-sounds-zz-g722", debs),
        _build_deb(tmp_path / "pkg_text", "asterisk-core-sounds-zz", debs),
    ]

    out = tmp_path / "out"
    kwargs = dict(
        languages=["zz"],
        cache_folder=tmp_path / "cache",
        valid_fraction=0.2,
        deb_files=deb_files,
        num_workers=2,
    )
    stats = pa.prepare_asterisk(out, **kwargs)
    assert stats["skipped"] is False
    assert stats["packages"] == {
        "asterisk-core-sounds-zz-g722": "9.9-1",
        "asterisk-core-sounds-zz": "9.9-1",
    }
    assert stats["transcript_files"] == ["core-sounds-zz.txt.gz"]

    rows = {}
    for split in ("train", "valid"):
        with open(out / f"{split}.csv", newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == data.CSV_HEADER
            split_rows = list(reader)
        ids = [r["ID"] for r in split_rows]
        assert ids == sorted(ids)
        assert stats[split]["utterances"] == len(split_rows)
        hours = sum(float(r["duration"]) for r in split_rows) / 3600
        assert stats[split]["hours"] == pytest.approx(hours)
        for r in split_rows:
            rows[r["ID"]] = (split, r)
    # 31 good prompts, the short/silent/non-speech ones are dropped.
    assert len(rows) == len(names)
    assert "zz-tiny" not in rows and "zz-quiet" not in rows and "zz-beep" not in rows
    split, digit = rows["zz-digits.1"]
    assert digit["wrd"] == "one, two"
    assert digit["spk_id"] == "asterisk-zz"
    assert rows["zz-prompt-25"][1]["wrd"] == ""  # no transcript line
    for split, r in rows.values():
        assert os.path.isabs(r["wav"]) and os.path.isfile(r["wav"])
        assert 1.0 <= float(r["duration"]) <= 20.0
        name = r["ID"][len("zz-") :].replace(".", "/")
        assert (split == "valid") == pa.is_valid(name, 0.2)
    assert {s for s, _ in rows.values()} == {"train", "valid"}

    # Second call: same options -> skipped, outputs untouched.
    mtime = (out / "train.csv").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        again = pa.prepare_asterisk(out, **kwargs)
    assert again["skipped"] is True
    assert "skipping" in caplog.text
    assert again["train"] == stats["train"]
    assert (out / "train.csv").stat().st_mtime_ns == mtime

    # Different options -> redone (cap on the number of utterances).
    capped = pa.prepare_asterisk(out, max_utterances=10, **kwargs)
    assert capped["skipped"] is False
    total = capped["train"]["utterances"] + capped["valid"]["utterances"]
    assert total == 10
    assert len(list((out / "wav").rglob("*.wav"))) == 10
