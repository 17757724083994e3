"""The command-line front door shared by ``train.py``, ``recipes.finetune.train``,
``recipes.probes.train_probe`` and ``tools.target_usage``
(:mod:`latent_rq_brain.training.arguments`): typed run options, did-you-mean, bad
values in one line before torch loads, ``--help`` with the YAML's settings,
paths kept as written, an option given twice named, and nothing created by a
refused setting.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train  # noqa: E402
from latent_rq_brain.training.arguments import UsageError, check_command_line, parse_overrides  # noqa: E402
from test_training import tiny_args, write_corpus  # noqa: E402

SMALL = os.path.join(REPO, "hparams", "small", "latent_rq.yaml")
FINETUNE = os.path.join(REPO, "recipes", "finetune", "hparams", "ctc_sentencepiece.yaml")
PROBE = os.path.join(REPO, "recipes", "probes", "hparams", "classification.yaml")

#: (how to start the script, an hparams file it takes)
SCRIPTS = {
    "train.py": ([os.path.join(REPO, "train.py")], SMALL),
    "recipes.finetune.train": (["-m", "recipes.finetune.train"], FINETUNE),
    "recipes.probes.train_probe": (["-m", "recipes.probes.train_probe"], PROBE),
    "tools.target_usage": (["-m", "tools.target_usage"], SMALL),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), n_train=8, n_valid=2)


def run_script(name, *args, importtime=False):
    start, hparams = SCRIPTS[name]
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, *start, hparams, *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def one_line_error(proc, name, message):
    """Exit status 2, ``<name>: error: <message>`` as the only line, no traceback."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr[-2000:]
    assert proc.stderr.startswith(f"{name}: error: ") and message in proc.stderr, proc.stderr


def heavy_imports(stderr):
    """Top-level torch / speechbrain imports in ``python -X importtime`` output."""
    return [line for line in stderr.splitlines()
            if line.startswith("import time:") and line.split("|")[-1].strip() in
            ("torch", "speechbrain")]


# ---------------------------------------------------------------- every script
@pytest.mark.parametrize("name, key, hint", [
    ("train.py", "--optimiser_step_limit=5", "--optimizer_step_limit"),
    ("recipes.finetune.train", "--vocab_sise=64", "--vocab_size"),
    ("recipes.probes.train_probe", "--tsk=IC", "--task"),
    ("tools.target_usage", "--sed=3", "--seed"),
])
def test_mistyped_key_is_one_line_with_did_you_mean_before_torch(name, key, hint):
    proc = run_script(name, key, importtime=True)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]
    assert errors == [f"{name}: error: unknown setting {key.split('=')[0]}: not a key of "
                      f"{SCRIPTS[name][1]} nor a SpeechBrain run option; did you mean {hint}?"]
    assert heavy_imports(proc.stderr) == []


@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("value, message", [
    ("abc", "--optimizer_step_limit=abc is not a valid int"),
    ("0", "optimizer_step_limit: 0 must be an integer >= 1"),
])
def test_bad_run_option_value_is_one_line_before_torch(name, value, message):
    proc = run_script(name, f"--optimizer_step_limit={value}", importtime=True)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]
    assert len(errors) == 1 and errors[0].startswith(f"{name}: error: ") and message in errors[0]
    assert heavy_imports(proc.stderr) == []


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_option_given_twice_is_named(name):
    one_line_error(run_script(name, "--seed=3", "--seed", "4"), name,
                   "--seed is given twice (3 and 4): give each setting once")
    one_line_error(run_script(name, "--device=cpu", "--device=cpu"), name,
                   "--device is given twice")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_lists_the_yaml_settings_with_their_comments(name):
    proc = run_script(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--optimizer_step_limit" in proc.stdout  # SpeechBrain's run options
    assert f"settings of {os.path.relpath(SCRIPTS[name][1], REPO)}" in proc.stdout
    settings = [ln.strip() for ln in proc.stdout.splitlines() if ln.startswith("  --")]
    if SCRIPTS[name][1] == SMALL:  # a thin file: its settings, then its base file's
        assert "--target_layers=[1, 2]  paper layer indices: -1 = CNN front-end output, " \
               "0..3 here" in settings
        assert "settings of hparams/latent_rq_schedule.yaml" in proc.stdout
        assert any(s.startswith("--mask_prob=0.4  fairseq convention") for s in settings)
    else:
        assert any(s.startswith("--number_of_epochs=") for s in settings)


# ---------------------------------------------------------------- typed run options
def test_finetune_takes_a_step_limit(tmp_path):
    """``--optimizer_step_limit=3`` is typed (SpeechBrain leaves it a string)."""
    from test_finetune import run_finetune
    from test_probes import tone_task

    data = tone_task(str(tmp_path / "data"), sizes=(12, 4, 4))
    res = run_finetune(data, tmp_path / "ft", "--number_of_epochs=2",
                       "--optimizer_step_limit=3")
    assert res["optimizer_steps"] == 3


# ---------------------------------------------------------------- values
def test_path_values_are_kept_as_written():
    _, overrides = check_command_line([SMALL, "--output_folder=/tmp/x/a=b/c #1",
                                       "--train_csv=1000", "--init_from=null",
                                       "--target_layers=[0, 2]", "--seed=7"])
    assert overrides == {"output_folder": "/tmp/x/a=b/c #1", "train_csv": "1000",
                         "init_from": None, "target_layers": [0, 2], "seed": 7}
    # any plain string keeps its '=' and '#'
    assert parse_overrides(["--data_prep=null", "--encoder_architecture=a=b #c"]) == {
        "data_prep": None, "encoder_architecture": "a=b #c"}


def test_output_folder_with_equals_and_hash_is_used_as_written(tmp_path, corpus):
    out = tmp_path / "a=b" / "c #1"
    brain = train.build(tiny_args(out, corpus))[0]
    assert brain.hparams.output_folder == str(out)
    assert (out / "hyperparams.yaml").is_file() and (out / "save").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a=b"]
    assert sorted(p.name for p in (tmp_path / "a=b").iterdir()) == ["c #1"]


@pytest.mark.parametrize("value, message", [
    ("-5", "max_batch_len: -5 must be a number of seconds > 0"),
    ("0", "max_batch_len: 0 must be a number of seconds > 0"),
    ("abc", "max_batch_len: abc must be a number of seconds > 0"),
    ("0.5", "max_batch_len: 0.5 s cannot hold the longest utterance kept "
            "(avoid_if_longer_than: 20.0 s)"),
])
def test_nonsensical_max_batch_len_is_refused(value, message):
    with pytest.raises(UsageError) as err:
        check_command_line([SMALL, f"--max_batch_len={value}"])
    assert message in str(err.value)


def test_sensible_max_batch_len_is_taken():
    for args in (["--max_batch_len=null"], ["--max_batch_len=20"],
                 ["--max_batch_len=20", "--avoid_if_longer_than=20"],
                 ["--max_batch_len=5", "--avoid_if_longer_than=4.5"],
                 ["--fixed_shapes=True", "--max_batch_len=5"]):  # the buckets check it
        check_command_line([SMALL, *args])


@pytest.mark.parametrize("setting, message", [
    ("--codebook_size=1", "codebook_size: 1 must be >= 2"),
    ("--mask_prob=0", "mask_prob: 0 must be in (0, 1]"),
    ("--mask_length=0", "mask_length: 0 must be >= 1"),
    ("--warmup_steps=0", "warmup_steps: 0 must be an integer >= 1"),
])
def test_nonsense_setting_is_refused_before_anything_is_created(tmp_path, corpus, setting,
                                                                message):
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("]", r"\]")):
        train.build(tiny_args(out, corpus, setting))
    assert not (tmp_path / "new").exists()


def test_refusal_after_loading_removes_the_folders_it_created(tmp_path, corpus):
    """A mask that covers every frame is only known once the features are
    built (the YAML loaded, SpeechBrain's Checkpointer made save/): the
    folders that load created are removed again."""
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match="masks every frame"):
        train.build(tiny_args(out, corpus, "--mask_length=1000"))
    assert not (tmp_path / "new").exists()
    # a folder that existed before is kept
    out.mkdir(parents=True)
    with pytest.raises(ValueError, match="masks every frame"):
        train.build(tiny_args(out, corpus, "--mask_length=1000"))
    assert out.is_dir() and list(out.iterdir()) == []
