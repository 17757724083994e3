"""``train.py`` as a newcomer meets it: usage errors before the heavy imports,
a mistyped setting named with the closest one, CPU DDP, CSV manifests without
``data_folder``, and ``--init_from`` checked before anything is written.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train  # noqa: E402
from latent_rq_brain.training.arguments import UsageError, check_command_line  # noqa: E402
from test_training import tiny_args, write_corpus  # noqa: E402

SMALL = os.path.join(REPO, "hparams", "small", "latent_rq.yaml")
PAPER = os.path.join(REPO, "hparams", "latent_rq_schedule.yaml")
STAGE1 = os.path.join(REPO, "hparams", "latent_rq_stage1.yaml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), n_train=8, n_valid=2)


def run_train(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_mistyped_setting_names_the_closest_key_without_traceback():
    proc = run_train(SMALL, "--optimiser_step_limit=5")
    assert proc.returncode == 2
    assert "did you mean --optimizer_step_limit?" in proc.stderr
    assert "Traceback" not in proc.stderr and "KeyError" not in proc.stderr
    assert len(proc.stderr) < 400  # one line, not every key of the YAML


def test_mistyped_yaml_key_names_the_closest_yaml_key():
    with pytest.raises(UsageError, match=r"--target_layer\b.*did you mean --target_layers\?"):
        check_command_line([SMALL, "--target_layer=[1,2]"])
    # keys of the base file count for a thin file
    assert check_command_line([STAGE1, "--d_model=32", "--init_from=x"])[1] == {
        "d_model": 32, "init_from": "x"}


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: param_file"),
    (["hparams/nope.yaml"], "hparams file hparams/nope.yaml not found"),
    ([SMALL, "stray"], "unexpected argument"),
])
def test_usage_errors_are_one_line(argv, message):
    proc = run_train(*argv)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_command_line_is_checked_before_torch_and_speechbrain_load():
    code = (
        "import sys, train\n"
        "try:\n"
        f"    train.check_command_line([{SMALL!r}, '--optimiser_step_limit=5'])\n"
        "except train.UsageError:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'speechbrain') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "heavy: []" in proc.stdout


def run_opts(*argv):
    from speechbrain.utils.run_opts import RunOptions

    return RunOptions.from_command_line_args([SMALL, *argv])[1]


def test_torchrun_without_cuda_uses_gloo_and_says_so(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    opts, note = train.ddp_backend(run_opts(), cuda_available=False)
    assert opts.distributed_backend == "gloo" and "gloo" in note
    assert "distributed_backend" in opts.overridden_args  # else Brain keeps nccl
    # with CUDA, or when the user chose a backend, nothing changes
    opts, note = train.ddp_backend(run_opts(), cuda_available=True)
    assert opts.distributed_backend == "nccl" and note is None
    opts, note = train.ddp_backend(run_opts("--distributed_backend=nccl"), cuda_available=False)
    assert opts.distributed_backend == "nccl" and note is None


def test_no_torchrun_no_backend_change(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    opts, note = train.ddp_backend(run_opts(), cuda_available=False)
    assert opts.distributed_backend == "nccl" and note is None


def test_csv_manifests_need_no_data_folder(tmp_path, corpus):
    """The paper YAML's data_folder is a !PLACEHOLDER: with --data_prep=null
    and CSV manifests it is not asked for."""
    brain, train_data, _, _, _ = train.build([PAPER, *tiny_args(tmp_path / "run", corpus)[1:]])
    assert brain.hparams.data_folder is None
    assert len(train_data) == 8


def written(folder):
    """Files in an output folder (the checkpointer makes an empty save/ folder)."""
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_init_from_another_model_is_refused_in_a_few_lines_before_writing(tmp_path, corpus):
    train.main(tiny_args(tmp_path / "s0", corpus, "--stage_transitions=[]",
                         "--optimizer_step_limit=1"))
    out = tmp_path / "s1"
    branch = ["--stage_transitions=[]", "--initial_stage=1",
              f"--init_from={tmp_path / 's0' / 'save'}"]
    with pytest.raises(ValueError) as err:
        train.build(tiny_args(out, corpus, *branch, "--d_model=48", "--codebook_size=128"))
    message = str(err.value)
    assert "d_model: 32 in the checkpoint, 48 here" in message
    assert "codebook_size: 64 in the checkpoint, 128 here" in message
    assert message.count("--init_from=") == 1 and len(message.splitlines()) < 10
    assert "num_encoder_layers" not in message  # only what differs
    assert written(out) == []  # nothing written

    # another layer set or anchored codebooks: the branch's stage draws those
    # sources afresh, so the same model branches (nothing else differs)
    for change in ("--anchor_codebooks=2", "--target_layers=[1,2]"):
        train.build(tiny_args(tmp_path / "ok", corpus, *branch, change))

    # a quantizer of another seed: the same model, other targets
    with pytest.raises(ValueError, match=r"seed: 1000 in the checkpoint, 7 here"):
        train.build(tiny_args(out, corpus, *branch, "--seed=7"))
    assert written(out) == []


def test_init_from_a_checkpoint_without_spec_summarises_the_mismatch(tmp_path, corpus):
    """Older checkpoints lack encoder_spec.ckpt: the strict load is summarised."""
    train.main(tiny_args(tmp_path / "s0", corpus, "--stage_transitions=[]",
                         "--optimizer_step_limit=1"))
    for spec in (tmp_path / "s0" / "save").glob("CKPT+*/encoder_spec.ckpt"):
        spec.unlink()
    out = tmp_path / "s1"
    with pytest.raises(ValueError) as err:
        train.build(tiny_args(out, corpus, "--stage_transitions=[]", "--initial_stage=1",
                              f"--init_from={tmp_path / 's0' / 'save'}", "--d_ffn=48"))
    message = str(err.value)
    assert "tensor(s) of another shape" in message and len(message) < 1000
    assert written(out) == []


@pytest.mark.skipif(not os.environ.get("LATENT_RQ_SLOW"), reason="LATENT_RQ_SLOW=1 runs it")
def test_torchrun_two_processes_on_cpu(tmp_path, corpus):
    """``torchrun --nproc_per_node=2 train.py ...`` as README writes it, no GPU
    and no --distributed_backend: 4 steps through a transition (the ranks'
    checksums are compared there)."""
    out = tmp_path / "ddp"
    args = tiny_args(out, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=4")
    args = [a for a in args if a != "--device=cpu"]  # the device follows the backend
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run([torchrun, "--nproc_per_node=2", os.path.join(REPO, "train.py"), *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "distributed_backend gloo" in log
    assert "rank checksums at transition to stage 1" in log
