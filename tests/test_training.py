"""Training mechanics: transitions, branching, resume, rank checks.

A tiny model (from hparams/small/latent_rq.yaml with overrides) trains on a
synthetic corpus written to a temporary folder.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

import speechbrain as sb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train  # noqa: E402
from latent_rq_brain.targets.target_encoder import unwrap  # noqa: E402
from latent_rq_brain.training import synthetic  # noqa: E402



def write_corpus(folder, n_train=16, n_valid=4, seed=0):
    """Synthetic train/valid manifests (1.0-2.5 s utterances); returns their paths."""
    rng = np.random.default_rng(seed)
    return {
        split: synthetic.write_corpus(
            folder, [round(float(rng.uniform(1.0, 2.5)), 3) for _ in range(n)], split, seed + k
        )
        for k, (split, n) in enumerate((("train", n_train), ("valid", n_valid)))
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def tiny_args(out, corpus, *extra):
    """Command line of a tiny run on the synthetic corpus (``extra`` wins)."""
    base = [
        f"--output_folder={out}",
        "--data_prep=null",
        f"--train_csv={corpus['train']}",
        f"--valid_csv={corpus['valid']}",
        "--max_batch_len=null",
        "--train_dataloader_opts={batch_size: 4, shuffle: True, num_workers: 0}",
        "--d_model=32",
        "--nhead=2",
        "--num_encoder_layers=3",
        "--d_ffn=64",
        "--n_codebooks=4",
        "--codebook_size=64",
        "--target_layers=[0, 2]",
        "--mask_length=2",
        "--warmup_steps=5",
        "--log_interval=1",
        "--ckpt_interval_minutes=0",
        "--device=cpu",
        "--noprogressbar",
    ]
    keys = {a.split("=")[0] for a in extra}
    base = [a for a in base if a.split("=")[0] not in keys]
    return [os.path.join(REPO, "hparams/small/latent_rq.yaml"), *base, *extra]


def latest_ckpt(save):
    ckpts = sb.utils.checkpoints.Checkpointer(save).list_checkpoints()
    return max(ckpts, key=lambda c: c.meta["unixtime"]) if ckpts else None


def built(out, corpus, *extra):
    """A Brain ready to train (on_fit_start done) and its train loader."""
    brain, train_data, _, train_opts, _ = train.build(tiny_args(out, corpus, *extra))
    loader = brain.make_dataloader(train_data, stage=sb.Stage.TRAIN, **train_opts)
    brain.on_fit_start()
    return brain, loader


def fit_batches(brain, loader, n):
    it = iter(loader)
    for _ in range(n):
        brain.step += 1
        brain.fit_batch(next(it))


def state_copy(module):
    return {k: v.detach().clone() for k, v in unwrap(module).state_dict().items()}


def test_transition_snapshots_encoder_and_resets_heads_optimizer_scheduler(tmp_path, corpus):
    brain, loader = built(tmp_path, corpus, "--stage_transitions=[1000]")
    fit_batches(brain, loader, 3)
    assert brain.schedule.stage == 0 and not brain.target_encoder.active
    encoder_before = state_copy(brain.modules.encoder)
    heads_before = state_copy(brain.modules.heads)
    optimizer_before = brain.optimizer
    assert len(optimizer_before.state) > 0
    assert brain.hparams.lr_annealing.n_steps == 3
    quantizer_sum = brain.quantizer.checksum()

    brain.transition(1)

    te = brain.target_encoder
    assert brain.schedule.stage == 1 and te.active and te.snapshot_step == brain.optimizer_step
    # the target encoder is a frozen, truncated copy of the encoder
    assert not te.module.training
    assert all(not p.requires_grad for p in te.module.parameters())
    assert all(te.module is not m for m in brain.modules.values())
    assert te.module.num_layers == max(te.target_layers) + 1
    for k, v in te.module.state_dict().items():
        assert torch.equal(v, encoder_before[k]), k
    # heads re-initialised, deterministically (seeded by seed and stage)
    heads_after = state_copy(brain.modules.heads)
    assert not torch.equal(heads_after["linear.weight"], heads_before["linear.weight"])
    with torch.random.fork_rng():
        torch.manual_seed(brain.hparams.seed * 7919 + 1)
        ref = torch.nn.Linear(32, 4 * 64)
    assert torch.equal(heads_after["linear.weight"], ref.weight.detach())
    # fresh optimizer and LR scheduler; quantizer unchanged
    assert brain.optimizer is not optimizer_before and len(brain.optimizer.state) == 0
    assert brain.hparams.lr_annealing.n_steps == 0
    assert brain.quantizer.checksum() == quantizer_sum
    # a checkpoint tagged with the stage was written
    ckpt = latest_ckpt(brain.checkpointer.checkpoints_dir)
    assert ckpt.meta["transition_to_stage"] == 1

    # training goes on: the encoder changes, the target encoder does not
    target_before = te.checksum()
    fit_batches(brain, loader, 2)
    assert te.checksum() == target_before
    enc = state_copy(brain.modules.encoder)
    assert any(not torch.equal(enc[k], encoder_before[k]) for k in enc)
    assert brain.hparams.lr_annealing.n_steps == 2


def test_scheduled_run_transitions_at_the_listed_steps(tmp_path, corpus):
    brain = train.main(
        tiny_args(tmp_path, corpus, "--stage_transitions=[3, 6]", "--optimizer_step_limit=8")
    )
    assert brain.optimizer_step == 8
    assert brain.schedule.stage == 2
    assert brain.target_encoder.snapshot_step == 6
    log = open(tmp_path / "train_log.txt").read()
    assert "transition_to_stage: 1, step: 3" in log
    assert "transition_to_stage: 2, step: 6" in log
    stages = [
        c.meta["transition_to_stage"]
        for c in sb.utils.checkpoints.Checkpointer(tmp_path / "save").list_checkpoints()
        if "transition_to_stage" in c.meta
    ]
    assert sorted(stages) == [1, 2]  # transition checkpoints are kept
    # per-step logging: loss, accuracy, code usage, mask fraction, lr, stage, speed
    line = [x for x in log.splitlines() if x.startswith("step: 8")][0]
    for key in ("stage: 2", "lr:", "train loss:", "acc_per_codebook", "codes_used",
                "perplexity", "mask_fraction", "step_time_s", "audio_s_per_s"):
        assert key in line, key


def test_branch_with_init_from_keeps_step_and_snapshots_loaded_encoder(tmp_path, corpus):
    stage0 = train.main(tiny_args(tmp_path / "s0", corpus, "--stage_transitions=[]",
                                  "--optimizer_step_limit=4"))
    assert stage0.schedule.stage == 0
    enc0 = state_copy(stage0.modules.encoder)
    mask0 = state_copy(stage0.modules.mask_embedding)

    brain, _ = built(tmp_path / "s1", corpus, "--stage_transitions=[]", "--initial_stage=1",
                     f"--init_from={tmp_path / 's0' / 'save'}", "--optimizer_step_limit=6")
    # nothing has been trained yet: the transition happens before the first step
    assert brain.optimizer_step == 4 and brain.schedule.stage == 0
    for k, v in state_copy(brain.modules.encoder).items():
        assert torch.equal(v, enc0[k])
    assert torch.equal(state_copy(brain.modules.mask_embedding)["embedding"], mask0["embedding"])

    brain = train.main(tiny_args(tmp_path / "s1b", corpus, "--stage_transitions=[]",
                                 "--initial_stage=1", f"--init_from={tmp_path / 's0' / 'save'}",
                                 "--optimizer_step_limit=6"))
    assert brain.schedule.stage == 1 and brain.target_encoder.snapshot_step == 4
    assert brain.optimizer_step == 6
    for k, v in brain.target_encoder.module.state_dict().items():
        assert torch.equal(v, enc0[k]), k


def test_stage_config_without_init_from_is_refused(tmp_path, corpus):
    with pytest.raises(ValueError, match="init_from"):
        built(tmp_path, corpus, "--stage_transitions=[]", "--initial_stage=1")


def test_init_from_a_folder_without_checkpoint_is_refused(tmp_path, corpus):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoint found"):
        built(tmp_path / "run", corpus, "--initial_stage=1", f"--init_from={tmp_path / 'empty'}")


def test_resume_from_incompatible_checkpoint_fails_clearly(tmp_path, corpus):
    train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=3"))
    before = sorted(os.listdir(tmp_path / "save"))
    with pytest.raises(ValueError, match=r"cannot resume from checkpoint .*CKPT\+.*target_layers"):
        built(tmp_path, corpus, "--target_layers=[1, 2]")
    with pytest.raises(ValueError, match=r"cannot resume from checkpoint .*CKPT\+"):
        built(tmp_path, corpus, "--d_model=48")
    assert sorted(os.listdir(tmp_path / "save")) == before  # nothing lost


def test_killed_run_resumes_with_identical_state(tmp_path, corpus):
    """SIGKILL a training process mid-stage-1, then resume from its checkpoint."""
    out = tmp_path / "run"
    args = tiny_args(out, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=100000",
                     "--ckpt_interval_steps=1")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *args],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            try:  # the live run deletes old intra-epoch checkpoints as we read
                ckpt = latest_ckpt(out / "save") if (out / "save").is_dir() else None
                saved = yaml.safe_load(open(ckpt.paramfiles["brain"])) if ckpt else None
            except (OSError, KeyError, TypeError, yaml.YAMLError):
                saved = None
            if saved and saved.get("optimizer_step", 0) >= 5:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("no stage-1 checkpoint within the deadline")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    brain, _ = built(out, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=100000")
    # the newest checkpoint, or an older one if the kill truncated the newest
    resumed = brain.resumed_from
    saved_brain = yaml.safe_load(open(resumed.paramfiles["brain"]))
    saved_te = torch.load(resumed.paramfiles["target_encoder"], weights_only=True)
    saved_q = torch.load(resumed.paramfiles["quantizer"], weights_only=True)
    assert brain.optimizer_step == saved_brain["optimizer_step"] >= 3  # in stage 1
    assert brain.schedule.stage == 1
    assert brain.target_encoder.snapshot_step == 2 == saved_te["snapshot_step"]
    live = brain.target_encoder.module.state_dict()
    assert live.keys() == saved_te["state"].keys()
    assert all(torch.equal(live[k], saved_te["state"][k]) for k in live)
    assert all(torch.equal(brain.quantizer.state_dict()[k], v) for k, v in saved_q["state"].items())
    assert not brain.target_encoder.module.training

    # and it trains on, in the same stage, without a new transition
    step = brain.optimizer_step
    target_sum = brain.target_encoder.checksum()
    brain2 = train.main(tiny_args(out, corpus, "--stage_transitions=[2]",
                                  f"--optimizer_step_limit={step + 2}"))
    assert brain2.optimizer_step == step + 2 and brain2.schedule.stage == 1
    assert brain2.target_encoder.checksum() == target_sum


def test_interrupted_checkpoint_is_skipped(tmp_path, corpus):
    train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=3"))
    newest = latest_ckpt(tmp_path / "save")
    assert yaml.safe_load(open(newest.paramfiles["brain"]))["optimizer_step"] == 3
    # a save killed half-way: meta written, some files missing
    os.remove(newest.paramfiles["target_encoder"])
    brain, _ = built(tmp_path, corpus, "--stage_transitions=[2]")
    # the broken one is skipped, the older complete (transition) one loaded
    assert brain.optimizer_step == 2 and brain.schedule.stage == 1


@pytest.mark.parametrize("victim", ["encoder", "brain", "encoder_spec"])
def test_truncated_checkpoint_file_is_skipped(tmp_path, corpus, victim):
    """A save killed while writing one file: present but truncated."""
    train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=3"))
    newest = latest_ckpt(tmp_path / "save")
    path = newest.paramfiles[victim]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    brain, _ = built(tmp_path, corpus, "--stage_transitions=[2]")
    assert brain.optimizer_step == 2 and brain.schedule.stage == 1


DDP_DRIVER = r'''
import os, sys, torch
sys.path.insert(0, os.environ["REPO"])
import train

brain = train.main(sys.argv[1:])
rank = torch.distributed.get_rank()
g = torch.Generator().manual_seed(0)
wavs = 0.1 * torch.randn(2, 24000, generator=g)
n = torch.tensor([24000, 17000])
feats, _, enc_lens = brain.modules.features(wavs, n)
valid = torch.arange(feats.shape[1] // 4)[None, :] < enc_lens[:, None]
latent = brain.compute_targets(feats, enc_lens, valid)
stage = brain.schedule.stage
brain.schedule.stage = 0
mel = brain.compute_targets(feats, enc_lens, valid)
brain.schedule.stage = stage
sums = brain.check_rank_consistency("probe")
if rank == 1:  # a rank whose quantizer differs must be caught
    brain.quantizer.codebooks("mel")[0, 0, 0] += 1e-3
try:
    brain.check_rank_consistency("tamper")
    tamper = "no error"
except RuntimeError as err:
    tamper = str(err)
torch.save({"latent": latent, "mel": mel, "sums": sums, "tamper": tamper,
            "step": brain.optimizer_step, "stage": stage,
            "snapshot_step": brain.target_encoder.snapshot_step},
           os.path.join(os.environ["PROBE_DIR"], f"rank{rank}.pt"))
'''


def test_two_process_ddp_run_has_identical_targets_on_both_ranks(tmp_path, corpus):
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER)
    env = dict(os.environ, REPO=REPO, PROBE_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    args = tiny_args(tmp_path / "out", corpus, "--stage_transitions=[2]",
                     "--optimizer_step_limit=4", "--distributed_backend=gloo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29571", str(driver), *args]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for r in (r0, r1):
        assert r["step"] == 4 and r["stage"] == 1 and r["snapshot_step"] == 2
    assert r0["sums"] == r1["sums"]
    assert r0["sums"]["target_encoder"] != "inactive"
    assert torch.equal(r0["latent"], r1["latent"])
    assert torch.equal(r0["mel"], r1["mel"])
    assert "ranks disagree" in r0["tamper"] and "quantizer" in r0["tamper"]
    assert "ranks disagree" in r1["tamper"]


def test_bf16_autocast_trains_with_fp32_targets(tmp_path, corpus):
    """precision: bf16 (the paper setting) runs on CPU autocast; targets stay exact."""
    brain, loader = built(tmp_path, corpus, "--precision=bf16", "--stage_transitions=[1]")
    assert brain.precision == "bf16"
    fit_batches(brain, loader, 3)  # one stage-0 step, then stage 1
    assert brain.schedule.stage == 1
    batch = next(iter(loader)).to(brain.device)
    wavs, rel = batch.sig
    feats, _, enc_lens = brain.modules.features(wavs, torch.round(rel * wavs.shape[1]).long())
    valid = torch.arange(feats.shape[1] // 4)[None] < enc_lens[:, None]
    plain = brain.compute_targets(feats, enc_lens, valid)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = brain.compute_forward(batch, sb.Stage.TRAIN)
        mixed = brain.compute_targets(feats, enc_lens, valid)
        loss = brain.compute_objectives(out, batch, sb.Stage.TRAIN)
    assert out["logits"].dtype == torch.bfloat16 and torch.isfinite(loss)
    # the target encoder runs in bf16 under autocast, the quantizer in fp32:
    # codes agree with the fp32 path on most frames (bf16 rounding of states)
    assert plain.dtype == mixed.dtype == torch.int64
    agree = (plain == mixed).float().mean().item()
    print(f"bf16 vs fp32 target agreement: {agree:.3f}")
    assert agree > 0.9


def test_tensorboard_logging_is_optional(tmp_path, corpus):
    train.main(tiny_args(tmp_path, corpus, "--use_tensorboard=True", "--optimizer_step_limit=2",
                         "--stage_transitions=[]"))
    events = [f for _, _, fs in os.walk(tmp_path / "tensorboard") for f in fs]
    assert any(f.startswith("events.out.tfevents") for f in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "mask_fraction/train", "codes_used/train"} <= tags, tags


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, corpus):
    """Transitions and the LR schedule follow optimizer steps, not batches."""
    brain = train.main(tiny_args(tmp_path, corpus, "--grad_accumulation_factor=2",
                                 "--stage_transitions=[2]", "--optimizer_step_limit=3"))
    assert brain.optimizer_step == 3
    assert brain.target_encoder.snapshot_step == 2
    assert brain.hparams.lr_annealing.n_steps == 1  # one step since the reset
    log = open(tmp_path / "train_log.txt").read()
    assert "transition_to_stage: 1, step: 2" in log
