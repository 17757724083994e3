"""Reliability of the data path: target-cache and audio-check keys on the
content of every audio file, and the stereo downmix.

Each test fails on the code that keyed on size and modification time only,
or averaged channels blindly. Synthetic audio only.
"""

import logging
import os

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from latent_rq_brain.targets import target_cache
from latent_rq_brain.training.data import (
    AUDIO_HASHES,
    AudioHashes,
    DataError,
    checked_manifest,
    read_audio_checked,
)
from test_reliability import key_parts

SR = 16000


def noise_wav(path, seconds=1.0, seed=0, channels=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, (int(seconds * SR), channels)).astype("float32")
    soundfile.write(str(path), x if channels > 1 else x[:, 0], SR)
    return str(path)


def replace_keeping_size_and_mtime(path, seed):
    """Other audio of the same size, the old modification time restored
    (what ``os.utime`` or a tar extraction does)."""
    st = os.stat(path)
    tmp = noise_wav(str(path) + ".new.wav", seed=seed)
    os.replace(tmp, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(path) == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns


def one_wav_dataset(path):
    return DynamicItemDataset({"a": {"wav": str(path), "duration": 1.0}})


# ---------------------------------------------------------------- target cache key
@pytest.mark.parametrize("remembered", [False, True])
def test_cache_key_follows_content_with_mtime_restored(tmp_path, remembered):
    path = noise_wav(tmp_path / "a.wav", seed=0)
    ds = one_wav_dataset(path)
    memo = str(tmp_path / AUDIO_HASHES) if remembered else None
    hashes = AudioHashes(memo)
    key = target_cache.cache_key(*key_parts(), "fp32", ds, hashes=hashes)
    hashes.save()
    assert target_cache.cache_key(*key_parts(), "fp32", ds, hashes=AudioHashes(memo)) == key
    replace_keeping_size_and_mtime(path, seed=1)
    assert target_cache.cache_key(*key_parts(), "fp32", ds, hashes=AudioHashes(memo)) != key


def test_cache_key_follows_a_retargeted_symlink(tmp_path):
    a, b = noise_wav(tmp_path / "a.wav", seed=0), noise_wav(tmp_path / "b.wav", seed=1)
    st = os.stat(a)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    link = tmp_path / "link.wav"
    os.symlink(a, link)
    ds = one_wav_dataset(link)
    hashes = AudioHashes(str(tmp_path / AUDIO_HASHES))
    key = target_cache.cache_key(*key_parts(), "fp32", ds, hashes=hashes)
    hashes.save()
    os.remove(link)
    os.symlink(b, link)
    hashes = AudioHashes(str(tmp_path / AUDIO_HASHES))
    assert target_cache.cache_key(*key_parts(), "fp32", ds, hashes=hashes) != key


def test_remembered_hashes_are_not_recomputed(tmp_path, monkeypatch):
    """A re-check with unchanged files reads no audio bytes (stat only)."""
    paths = [noise_wav(tmp_path / f"{k}.wav", seed=k) for k in range(3)]
    memo = str(tmp_path / AUDIO_HASHES)
    first = AudioHashes(memo)
    digests = [first.digest(p) for p in paths]
    first.save()
    real_open = open

    def no_audio_reads(file, *args, **kwargs):
        assert not str(file).endswith(".wav"), f"{file} read although its hash is remembered"
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_audio_reads)
    again = AudioHashes(memo)
    assert [again.digest(p) for p in paths] == digests
    assert not again.changed


def test_damaged_hash_file_means_hashing_again(tmp_path):
    path = noise_wav(tmp_path / "a.wav")
    memo = tmp_path / AUDIO_HASHES
    memo.write_bytes(b"\x00garbage")
    assert AudioHashes(str(memo)).digest(path) == AudioHashes().digest(path)


# ---------------------------------------------------------------- audio check
def test_audio_check_follows_a_wav_replaced_behind_an_unchanged_manifest(tmp_path):
    """Same manifest bytes, the wav now a 0.05 s clip: refused as in a fresh folder."""
    wav = noise_wav(tmp_path / "a.wav", seconds=1.0)
    csv = tmp_path / "m.csv"
    csv.write_text(f"ID,duration,wav\nu1,1.0,{wav}\n")
    out = str(tmp_path / "out")
    checked_manifest(str(csv), None, SR, out)
    st = os.stat(wav)
    noise_wav(str(wav) + ".short.wav", seconds=0.05)
    os.replace(str(wav) + ".short.wav", wav)
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError, match=r"lasts 0.050 s but the manifest says 1.000 s"):
        checked_manifest(str(csv), None, SR, out)
    with pytest.raises(DataError, match=r"lasts 0.050 s but the manifest says 1.000 s"):
        checked_manifest(str(csv), None, SR, str(tmp_path / "fresh"))


def test_audio_check_is_still_cached_for_unchanged_files(tmp_path, monkeypatch):
    wav = noise_wav(tmp_path / "a.wav")
    csv = tmp_path / "m.csv"
    csv.write_text(f"ID,duration,wav\nu1,1.0,{wav}\n")
    out = str(tmp_path / "out")
    checked_manifest(str(csv), None, SR, out)
    assert os.path.exists(os.path.join(out, AUDIO_HASHES))

    def boom(path, *a, **k):
        raise AssertionError("audio checked again although nothing changed")

    monkeypatch.setattr(soundfile, "info", boom)
    assert list(checked_manifest(str(csv), None, SR, out)) == ["u1"]


# ---------------------------------------------------------------- stereo
def test_cancelling_stereo_is_not_turned_into_silence(tmp_path, caplog):
    left = np.random.default_rng(0).uniform(-0.5, 0.5, 1600).astype("float32")
    path = str(tmp_path / "phase.wav")
    soundfile.write(path, np.stack([left, -left], 1), SR, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="latent_rq_brain.training.data"):
        sig = read_audio_checked(path, SR)
    assert float(sig.abs().max()) > 0.4
    assert torch.equal(sig, torch.from_numpy(left))
    assert f"{path}: its 2 channels cancel in the mono mix" in caplog.text
    assert "channel 0 alone" in caplog.text


def test_ordinary_stereo_is_still_averaged(tmp_path, caplog):
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (1600, 2)).astype("float32")
    path = str(tmp_path / "st.wav")
    soundfile.write(path, x, SR, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="latent_rq_brain.training.data"):
        sig = read_audio_checked(path, SR)
    assert torch.allclose(sig, torch.from_numpy(x.mean(1)))
    assert "cancel" not in caplog.text


def test_silent_stereo_stays_silent_without_a_warning(tmp_path, caplog):
    path = str(tmp_path / "zero.wav")
    soundfile.write(path, np.zeros((1600, 2), "float32"), SR, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="latent_rq_brain.training.data"):
        sig = read_audio_checked(path, SR)
    assert not sig.any() and "cancel" not in caplog.text

