"""Reliability: non-finite data and weights, target cache integrity, resume,
the output-folder lock and degenerate settings (issue 12).

Each test fails on the code before the guard it checks. Tiny runs as in
``tests/test_training.py``, on synthetic audio.
"""

import os

import numpy as np
import pytest
import soundfile
import torch

from latent_rq_brain.target_encoder import unwrap
from test_training import built, fit_batches, latest_ckpt, state_copy, tiny_args, train, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def poison_wav(path, n_nan=None):
    """Rewrites a wav as float samples, with NaN in all (None) or n_nan samples."""
    x, sr = soundfile.read(path, dtype="float32")
    if n_nan is None:
        x[:] = np.nan
    else:
        x[np.linspace(0, len(x) - 1, n_nan).astype(int)] = np.nan
    soundfile.write(path, x, sr, subtype="FLOAT")


def all_finite(module):
    return all(bool(torch.isfinite(v).all()) for v in unwrap(module).state_dict().values())


# ---------------------------------------------------------------- non-finite data and weights
@pytest.mark.parametrize("n_nan", [None, 100])
def test_nan_audio_is_skipped_named_and_counted(tmp_path, n_nan):
    corpus = write_corpus(str(tmp_path / "data"), n_train=8, n_valid=2)
    poison_wav(str(tmp_path / "data" / "train3.wav"), n_nan)
    out = tmp_path / "run"
    brain = train.main(tiny_args(out, corpus, "--stage_transitions=[]",
                                 "--optimizer_step_limit=4"))
    assert "non-finite audio or features (NaN/Inf): train3" in open(out / "log.txt").read()
    assert brain.optimizer_step == 4
    assert all_finite(brain.modules.encoder) and all_finite(brain.modules.heads)
    ckpt = latest_ckpt(out / "save")
    saved = torch.load(ckpt.paramfiles["encoder"], weights_only=True)
    assert all(bool(torch.isfinite(v).all()) for v in saved.values())
    log = open(out / "train_log.txt").read()
    assert "skipped_utterances: 1" in log


def test_non_finite_loss_never_updates_weights(tmp_path, corpus, monkeypatch):
    brain, loader = built(tmp_path, corpus, "--stage_transitions=[]")
    fit_batches(brain, loader, 1)
    before, step = state_copy(brain.modules.encoder), brain.optimizer_step
    orig = type(brain).compute_objectives
    monkeypatch.setattr(type(brain), "compute_objectives",
                        lambda self, *a: orig(self, *a) * float("nan"))
    brain.nonfinite_count = 0  # set by SpeechBrain's epoch loop
    fit_batches(brain, loader, 2)  # within SpeechBrain's nonfinite_patience (3)
    after = state_copy(brain.modules.encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert brain.optimizer_step == step and brain.train_stats.skipped_steps == 2


def test_checkpoint_with_non_finite_weights_is_never_written(tmp_path, corpus):
    brain, loader = built(tmp_path, corpus, "--stage_transitions=[]")
    fit_batches(brain, loader, 1)
    with torch.no_grad():
        next(unwrap(brain.modules.encoder).parameters())[0] = float("nan")
    before = latest_ckpt(tmp_path / "save")
    with pytest.raises(RuntimeError, match="non-finite weights .* no checkpoint is written"):
        brain._save_intra_epoch_ckpt()
    assert latest_ckpt(tmp_path / "save") == before


def test_run_never_ends_with_status_0_and_non_finite_weights(tmp_path, corpus, monkeypatch):
    from latent_rq_brain.brain import LatentRQBrain

    def poison_without_saving(self, stage, stage_loss, epoch=None):
        with torch.no_grad():
            next(unwrap(self.modules.heads).parameters())[0] = float("nan")

    monkeypatch.setattr(LatentRQBrain, "on_stage_end", poison_without_saving)
    with pytest.raises(RuntimeError, match="non-finite weights at the end of training"):
        train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[]",
                             "--optimizer_step_limit=1"))
