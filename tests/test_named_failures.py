"""Failures that name their cause: out of memory outside training batches
(validation, the target-cache build, the probes), non-finite weights loaded
from a damaged checkpoint versus made in training, and the mask-length advice.

The allocation failure is the CPU allocator's ``RuntimeError``, raised by a
monkeypatched forward.
"""

import os

import pytest
import soundfile
import torch

from latent_rq_brain.targets.target_encoder import unwrap
from test_training import latest_ckpt, tiny_args, train, write_corpus

#: What the CPU allocator raises when an allocation fails.
ALLOC_FAIL = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
              "memory: you tried to allocate 21474836480 bytes. Error code 12 (Cannot allocate "
              "memory)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), n_train=8, n_valid=3)


def longest_of(manifest):
    """(ID, wav) of the longest utterance of a manifest."""
    import csv

    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    row = max(rows, key=lambda r: soundfile.info(r["wav"]).duration)
    return row["ID"], row["wav"]


# ---------------------------------------------------------------- out of memory
def test_out_of_memory_in_validation_names_the_utterance(tmp_path, corpus, monkeypatch):
    from latent_rq_brain.training.brain import LatentRQBrain
    import speechbrain as sb

    forward = LatentRQBrain.compute_forward

    def oom_in_valid(self, batch, stage):
        if stage != sb.Stage.TRAIN:
            raise RuntimeError(ALLOC_FAIL)
        return forward(self, batch, stage)

    monkeypatch.setattr(LatentRQBrain, "compute_forward", oom_in_valid)
    uid, wav = longest_of(corpus["valid"])  # one valid batch: all of them
    with pytest.raises(torch.OutOfMemoryError) as err:
        train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[]",
                             "--optimizer_step_limit=2",
                             "--valid_dataloader_opts={batch_size: 8}"))
    message = str(err.value)
    assert message.startswith("out of memory in valid on a batch of 3 utterance(s)")
    assert f"its longest: {uid} ({wav}, " in message and "Lower max_batch_len" in message


def test_out_of_memory_building_the_target_cache_names_the_utterance(tmp_path, corpus,
                                                                      monkeypatch):
    from latent_rq_brain.targets.maker import TargetMaker

    def oom(*args, **kwargs):
        raise RuntimeError(ALLOC_FAIL)

    monkeypatch.setattr(TargetMaker, "all_frames", oom)
    with pytest.raises(torch.OutOfMemoryError) as err:
        train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[1]", "--target_cache=True",
                             "--optimizer_step_limit=2"))
    message = str(err.value)
    assert message.startswith("out of memory building the target cache of stage 1 on a batch")
    assert "its longest: train" in message and ".wav, " in message
    assert "Lower target_cache_batch_seconds" in message


def test_other_runtime_errors_pass_through_unchanged(tmp_path, corpus, monkeypatch):
    from latent_rq_brain.targets.maker import TargetMaker

    def other(*args, **kwargs):
        raise RuntimeError("shapes do not match")

    monkeypatch.setattr(TargetMaker, "all_frames", other)
    with pytest.raises(RuntimeError, match="^shapes do not match$"):
        train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[1]", "--target_cache=True",
                             "--optimizer_step_limit=2"))


def test_out_of_memory_in_a_probe_names_the_utterance(tmp_path, monkeypatch):
    from recipes.probes.train_probe import ProbeBrain
    from test_probes import run_probe, tone_task

    def oom(self, batch, stage):
        raise RuntimeError(ALLOC_FAIL)

    monkeypatch.setattr(ProbeBrain, "compute_forward", oom)
    data = tone_task(str(tmp_path / "data"), sizes=(8, 4, 4))
    with pytest.raises(torch.OutOfMemoryError) as err:
        run_probe("classification.yaml", data, tmp_path / "p", "--task=TONE",
                  "--label_column=label", "--number_of_epochs=1")
    message = str(err.value)
    assert message.startswith("out of memory on a batch of ")
    assert "its longest: " in message and "Lower batch_size" in message
    assert "max_batch_len" not in message  # not a setting of the probes


def test_out_of_memory_caching_probe_hidden_states_names_the_utterance(tmp_path):
    from recipes.probes.probing import HiddenStateCache

    class Encoder:
        sample_rate = 16000

        def __call__(self, wavs, rel):
            raise RuntimeError(ALLOC_FAIL)

    audio = {"short": torch.zeros(8000), "long": torch.zeros(48000)}
    cache = HiddenStateCache(Encoder())
    with pytest.raises(torch.OutOfMemoryError) as err:
        cache.build({uid: f"/data/{uid}.wav" for uid in audio},
                     read_audio=lambda path: audio[os.path.basename(path)[:-4]])
    assert str(err.value).startswith(
        "out of memory caching hidden states on a batch of 2 utterance(s) padded to 3.0 s")
    assert "its longest: long (/data/long.wav, 3.0 s). Lower cache_batch_seconds" in str(err.value)


# ---------------------------------------------------------------- non-finite weights
def test_weights_loaded_non_finite_are_named_as_a_damaged_checkpoint(tmp_path, corpus):
    run = tmp_path / "run"
    train.main(tiny_args(run, corpus, "--stage_transitions=[]", "--optimizer_step_limit=1"))
    ckpt = latest_ckpt(run / "save")
    state = torch.load(ckpt.paramfiles["encoder"], weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name][...] = float("nan")
    torch.save(state, ckpt.paramfiles["encoder"])
    with pytest.raises(RuntimeError) as err:
        train.main(tiny_args(run, corpus, "--stage_transitions=[]", "--optimizer_step_limit=2"))
    message = str(err.value)
    assert f"the weights loaded from {ckpt.path} are non-finite" in message
    assert "damaged" in message and "lower lr" not in message


def test_weights_made_non_finite_in_training_advise_a_lower_lr(tmp_path, corpus):
    from test_training import built, fit_batches

    brain, loader = built(tmp_path, corpus, "--stage_transitions=[]")
    fit_batches(brain, loader, 1)
    with torch.no_grad():
        next(unwrap(brain.modules.encoder).parameters())[0] = float("nan")
    with pytest.raises(RuntimeError, match="they became non-finite in training.*lower lr"):
        brain.check_finite_weights("the end of epoch 1")


# ---------------------------------------------------------------- mask length advice
@pytest.mark.parametrize("length, prob, advice, not_advice", [
    ("1", "1.0", "Lower mask_prob (mask_length is 1 already) or raise avoid_if_shorter_than",
     "Lower mask_length"),
    ("1000", "0.4", "Lower mask_length or raise avoid_if_shorter_than", "mask_length is 1"),
])
def test_mask_length_advice_fits_the_value(tmp_path, corpus, length, prob, advice, not_advice):
    with pytest.raises(ValueError) as err:
        train.build(tiny_args(tmp_path, corpus, f"--mask_length={length}",
                              f"--mask_prob={prob}"))
    assert "masks every frame" in str(err.value)
    assert advice in str(err.value) and not_advice not in str(err.value)
