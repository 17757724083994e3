"""Synthetic speech-like audio for tests and benchmarks (no data needed).

Authors
 * latent-rq developers 2026
"""

import csv
import os

import numpy as np
import soundfile


def synth_utterance(rng, seconds, sample_rate=16000):
    """A gliding harmonic source with a syllable-rate envelope, plus noise.

    Example
    -------
    >>> x = synth_utterance(np.random.default_rng(0), 0.5)
    >>> x.shape, x.dtype, float(abs(x).max()) <= 0.3 + 1e-6
    ((8000,), dtype('float32'), True)
    """
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    x = x * env + 0.05 * rng.standard_normal(t.shape)
    return (0.3 * x / np.abs(x).max()).astype("float32")


def write_corpus(folder, durations, name="train", seed=0, sample_rate=16000):
    """Writes one wav per duration and a manifest ``<folder>/<name>.csv``.

    Returns
    -------
    str
        The manifest path.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    rows = []
    for i, dur in enumerate(durations):
        wav = os.path.join(folder, f"{name}{i}.wav")
        soundfile.write(wav, synth_utterance(rng, dur, sample_rate), sample_rate)
        rows.append([f"{name}{i}", round(float(dur), 3), wav])
    path = os.path.join(folder, f"{name}.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "wav"])
        w.writerows(rows)
    return path
