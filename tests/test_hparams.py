"""The paper YAML files, target_layers overrides and configuration errors.

Each paper model (~146M parameters) is built once per module.
"""

import os
import sys

import pytest
import ruamel.yaml
from hyperpyyaml import load_hyperpyyaml

import speechbrain as sb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train  # noqa: E402
from latent_rq_brain.targets.target_encoder import TargetEncoder  # noqa: E402
from latent_rq_brain.training.hparams import expand_hparams_file  # noqa: E402
from latent_rq_brain.training.stages import StageSchedule  # noqa: E402

SMALL = os.path.join(REPO, "hparams", "small", "latent_rq.yaml")

# file -> (optimizer_step_limit, stage_transitions, initial_stage)
PAPER = {
    "best_rq": (500_000, [], 0),
    "latent_rq_stage1": (250_000, [], 1),
    "latent_rq_stage2": (400_000, [], 2),
    "latent_rq_stage3": (500_000, [], 3),
    "latent_rq_schedule": (500_000, [100_000, 250_000, 400_000], 0),
}
PAPER_LAYERS = [5, 6, 7, 8, 9, 10]


def paper_path(name):
    return os.path.join(REPO, "hparams", f"{name}.yaml")


def needs_init_from(name):
    """The stage files branch from a checkpoint: ``init_from: !PLACEHOLDER``."""
    return name.startswith("latent_rq_stage")


def load(path, tmp, **overrides):
    """Loads a YAML with its placeholders filled in: ``data_folder`` (paper
    files) and ``init_from`` (stage files)."""
    base = {"data_folder": str(tmp), "output_folder": str(tmp / "out")}
    if needs_init_from(os.path.basename(path)):
        base["init_from"] = str(tmp)
    base.update(overrides)
    path, text = expand_hparams_file(path, base)
    with open(path, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, text)


def trainable(hparams):
    return sum(
        p.numel()
        for m in hparams["modules"].values()
        for p in m.parameters()
        if p.requires_grad
    )


@pytest.fixture(scope="module", params=list(PAPER))
def paper(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    return request.param, load(paper_path(request.param), tmp)


# ---------------------------------------------------------------- paper files
@pytest.mark.parametrize("name", list(PAPER))
def test_paper_placeholders(name, tmp_path):
    """best_rq/schedule need only data_folder; the stage files also init_from."""
    path, text = expand_hparams_file(paper_path(name))
    with open(path, encoding="utf-8") as f:
        assert "data_folder: !PLACEHOLDER" in f.read()
    assert ("init_from: !PLACEHOLDER" in (text or "")) == needs_init_from(name)
    # a missing placeholder is named before anything is built
    path, text = expand_hparams_file(paper_path(name), {"output_folder": str(tmp_path)})
    with open(path, encoding="utf-8") as fin:
        with pytest.raises(ValueError, match="'(data_folder|init_from)' is a !PLACEHOLDER"):
            load_hyperpyyaml(fin, text)
    if needs_init_from(name):
        path, text = expand_hparams_file(
            paper_path(name), {"data_folder": str(tmp_path), "output_folder": str(tmp_path)}
        )
        with open(path, encoding="utf-8") as fin:
            with pytest.raises(ValueError, match="'init_from' is a !PLACEHOLDER"):
                load_hyperpyyaml(fin, text)


def test_paper_settings(paper):
    name, hp = paper
    steps, transitions, initial = PAPER[name]
    assert 140e6 <= trainable(hp) <= 160e6, trainable(hp)
    enc = hp["encoder"]
    assert enc.num_layers == hp["num_encoder_layers"] == 17
    assert enc.d_model == hp["d_model"] == 512
    assert hp["d_ffn"] == 2048
    for layer in enc.transformer.encoder.layers:
        assert layer.ffn_module1[1].ffn[0].out_features == 2048
        assert layer.ffn_module2[1].ffn[0].out_features == 2048
    assert (hp["n_codebooks"], hp["codebook_size"], hp["codebook_dim"]) == (18, 4096, 16)
    q = hp["quantizer"]
    assert (q.codebook_size, q.codebook_dim) == (4096, 16)
    assert q.n_codebooks == 18 + 18  # 18 on Mel frames, 6 layers x 3 on latents
    assert q.sources == {
        "mel": (320, 18),
        **{f"layer{k}": (512, 3) for k in PAPER_LAYERS},
    }
    assert (hp["heads"].n_codebooks, hp["heads"].codebook_size) == (18, 4096)
    assert hp["target_layers"] == PAPER_LAYERS
    assert hp["target_encoder"].target_layers == PAPER_LAYERS
    assert hp["mask_prob"] == 0.4
    assert hp["optimizer_step_limit"] == steps
    assert hp["precision"] == "bf16"
    assert hp["stage_transitions"] == transitions
    assert hp["stage_schedule"].transitions == transitions
    assert hp["initial_stage"] == hp["stage_schedule"].initial_stage == initial
    assert hp["sample_rate"] == 16000
    if needs_init_from(name):
        assert hp["init_from"]  # filled in by the override
    else:
        assert hp["init_from"] is None


def test_paper_files_are_the_schedule_file_plus_a_few_settings():
    """One full recipe: the other paper files are thin files on top of it."""
    full, _ = expand_hparams_file(paper_path("latent_rq_schedule"))
    assert full == paper_path("latent_rq_schedule")
    for name in PAPER:
        path, text = expand_hparams_file(paper_path(name))
        assert os.path.samefile(path, full), name
        keys = set(ruamel.yaml.YAML().load(text or "{}"))
        assert keys <= {"output_folder", "initial_stage", "init_from",
                        "optimizer_step_limit", "stage_transitions"}, (name, keys)


def test_small_file_is_the_schedule_file_plus_what_differs(tmp_path):
    """hparams/small/latent_rq.yaml sets only settings: every object (and its
    architecture) comes from the schedule file."""
    path, text = expand_hparams_file(SMALL)
    assert os.path.samefile(path, paper_path("latent_rq_schedule"))
    keys = set(ruamel.yaml.YAML().load(text))
    assert not keys & {"architecture", "encoder", "quantizer", "modules", "checkpointer"}
    assert {"d_model", "num_encoder_layers", "data_prep", "precision"} <= keys
    hp = load(SMALL, tmp_path)
    assert (hp["d_model"], hp["num_encoder_layers"], hp["precision"]) == (96, 4, "fp32")
    assert hp["train_dataloader_opts"] == {"num_workers": 0}
    assert hp["valid_dataloader_opts"] == {"batch_size": 8, "num_workers": 0}
    # the demo's data preparation replaces LibriSpeech's whole
    from recipes.demo.prepare_asterisk import prepare_asterisk

    assert hp["data_prep"].func is prepare_asterisk and not hp["data_prep"].keywords
    assert hp["data_prep"].args == (str(tmp_path), ["en", "fr", "es", "it", "ru"])


def test_thin_file_cannot_merge_into_another_object(tmp_path):
    """HyperPyYAML would merge a mapping into the base's and keep the base's
    tag: the thin file is refused, naming itself and the key."""
    thin = tmp_path / "thin.yaml"
    thin.write_text(
        f"base_hparams: {paper_path('latent_rq_schedule')}\n"
        "data_prep: !name:recipes.demo.prepare_asterisk.prepare_asterisk\n"
        "    save_folder: x\n"
    )
    with pytest.raises(ValueError, match=r"thin.yaml: data_prep: !name:recipes.demo.prepare_asterisk.prepare_asterisk would be merged into the base's data_prep: !name:recipes.LibriSpeech"):
        expand_hparams_file(str(thin))


# ---------------------------------------------------------------- overrides
@pytest.mark.parametrize(
    "layers",
    [[11, 12, 13, 14, 15, 16], [-1, 0, 1, 2, 3, 4]],
    ids=["upper", "lowest"],
)
def test_target_layers_override_paper(layers, tmp_path):
    hp = load(paper_path("latent_rq_schedule"), tmp_path, target_layers=layers)
    q = hp["quantizer"]
    assert list(q.sources) == ["mel"] + [f"layer{k}" for k in layers]
    assert all(q.sources[f"layer{k}"] == (512, 3) for k in layers)
    assert hp["target_encoder"].target_layers == layers
    # sources with a negative index get a buffer name without "-"
    q.projection(f"layer{layers[0]}")
    q.codebooks(f"layer{layers[0]}")


def test_target_layers_from_the_command_line(tmp_path):
    hparams_file, run_opts, overrides = sb.parse_arguments(
        [SMALL, "--target_layers=[-1,0,1]", f"--output_folder={tmp_path}"]
    )
    assert hparams_file == SMALL
    hparams_file, overrides = expand_hparams_file(hparams_file, overrides)
    with open(hparams_file, encoding="utf-8") as fin:
        hp = load_hyperpyyaml(fin, overrides)
    assert hp["target_layers"] == [-1, 0, 1]
    assert hp["quantizer"].sources == {
        "mel": (320, 6), "layer-1": (96, 2), "layer0": (96, 2), "layer1": (96, 2)
    }
    assert hp["target_encoder"].target_layers == [-1, 0, 1]


def test_target_layers_with_spaces_on_the_command_line(tmp_path):
    """``--target_layers="[0, 3]"`` (a quoted list with spaces) also works."""
    _, _, overrides = sb.parse_arguments(
        [SMALL, "--target_layers=[0, 3]", f"--output_folder={tmp_path}"]
    )
    path, overrides = expand_hparams_file(SMALL, overrides)
    with open(path, encoding="utf-8") as fin:
        hp = load_hyperpyyaml(fin, overrides)
    assert list(hp["quantizer"].sources) == ["mel", "layer0", "layer3"]


# ---------------------------------------------------------------- bad layers
@pytest.mark.parametrize("layers, bad", [([17], 17), ([5, -2], -2), ([16, 40], 40)])
def test_layer_out_of_range_paper(layers, bad, tmp_path):
    with pytest.raises(
        ValueError,
        match=rf"target layer {bad} is out of range: valid layers are -1 .* to 16 \(last of 17 Conformer layers\)",
    ):
        load(paper_path("best_rq"), tmp_path, target_layers=layers)


@pytest.mark.parametrize("layers, bad", [([4], 4), ([-2], -2), ([0, 1, 9], 9)])
def test_layer_out_of_range_small(layers, bad, tmp_path):
    with pytest.raises(
        ValueError, match=rf"target layer {bad} is out of range: valid layers are -1 .* to 3 \(last of 4"
    ):
        load(SMALL, tmp_path, target_layers=layers)


def test_codebooks_not_divisible_by_layers(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"n_codebooks=18 is not divisible by the 4 target_layers \[5, 6, 7, 8\].*n_codebooks=16 or 20",
    ):
        load(paper_path("best_rq"), tmp_path, target_layers=[5, 6, 7, 8])
    with pytest.raises(ValueError, match=r"n_codebooks=6 is not divisible by the 4 target_layers \[0, 1, 2, 3\]"):
        load(SMALL, tmp_path, target_layers=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"n_codebooks=7 is not divisible by the 2 target_layers"):
        load(SMALL, tmp_path, n_codebooks=7)


def test_duplicate_layers(tmp_path):
    with pytest.raises(ValueError, match=r"target_layers has duplicates: \[1, 2, 1\]"):
        load(SMALL, tmp_path, target_layers=[1, 2, 1])
    with pytest.raises(ValueError, match="duplicates"):
        TargetEncoder([3, 3])


def test_empty_layers(tmp_path):
    with pytest.raises(ValueError, match="target_layers is empty"):
        load(SMALL, tmp_path, target_layers=[])
    with pytest.raises(ValueError, match="target_layers is empty"):
        TargetEncoder([])


# ---------------------------------------------------------------- schedule, norm
@pytest.mark.parametrize(
    "transitions",
    [[200, 100], [100, 100], [0, 100], [-5], [100, 250, 250]],
)
def test_stage_schedule_rejects_bad_transitions(transitions):
    with pytest.raises(ValueError, match=r"stage_transitions must be positive and increasing, got \["):
        StageSchedule(transitions)


def test_stage_schedule_rejects_negative_initial_stage():
    with pytest.raises(ValueError, match="initial_stage must be >= 0, got -1"):
        StageSchedule([], initial_stage=-1)


def test_stage_schedule_bad_transitions_from_yaml(tmp_path):
    with pytest.raises(ValueError, match=r"got \[400, 300\]"):
        load(SMALL, tmp_path, stage_transitions=[400, 300])


def test_target_encoder_rejects_unknown_norm(tmp_path):
    with pytest.raises(ValueError, match=r"target_norm must be one of .*'utterance'.*got 'batch'"):
        TargetEncoder([1, 2], norm="batch")
    with pytest.raises(ValueError, match="got 'Layer'"):
        load(SMALL, tmp_path, target_norm="Layer")


# ---------------------------------------------------------------- run options
def test_typed_run_opts():
    _, run_opts, _ = sb.parse_arguments(
        ["x.yaml", "--optimizer_step_limit=7", "--grad_accumulation_factor=2", "--max_grad_norm=3.5"]
    )
    # SpeechBrain 1.1.2 alone: argparse types an option by its default, and
    # optimizer_step_limit defaults to None, so it stays the string '7' (and
    # Brain then compares a str with an int). grad_accumulation_factor (default
    # 1) and max_grad_norm (default 5.0) already come back as int 2 / float 3.5.
    assert run_opts.optimizer_step_limit == "7"
    typed = train.typed_run_opts(run_opts)
    assert typed.optimizer_step_limit == 7 and type(typed.optimizer_step_limit) is int
    assert typed.grad_accumulation_factor == 2 and type(typed.grad_accumulation_factor) is int
    assert typed.max_grad_norm == 3.5 and type(typed.max_grad_norm) is float
    assert typed.overridden_args == run_opts.overridden_args


def test_typed_run_opts_untouched_without_overrides():
    _, run_opts, _ = sb.parse_arguments(["x.yaml", "--device=cpu"])
    assert train.typed_run_opts(run_opts) is run_opts
    assert run_opts.optimizer_step_limit is None


def test_typed_run_opts_rejects_bad_number():
    _, run_opts, _ = sb.parse_arguments(["x.yaml", "--optimizer_step_limit=lots"])
    with pytest.raises(ValueError, match=r"--optimizer_step_limit=lots is not a valid int"):
        train.typed_run_opts(run_opts)


# target_layers that are not a list of integers are named in the error
# (`5`, `5,6`), never silently truncated to another layer (`1.5`, `true`).
@pytest.mark.parametrize("arg", ["--target_layers=5", "--target_layers=5,6", "--target_layers=[1.5, 2]",
                                 "--target_layers=[true, 2]"])
def test_target_layers_must_be_a_list_of_ints(arg, tmp_path):
    _, _, overrides = sb.parse_arguments([SMALL, arg, f"--output_folder={tmp_path}"])
    path, overrides = expand_hparams_file(SMALL, overrides)
    with pytest.raises(ValueError, match="target_layers"):
        with open(path, encoding="utf-8") as fin:
            load_hyperpyyaml(fin, overrides)
