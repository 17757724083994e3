"""Latent-target variants beyond the paper: the target-source contract, anchors,
data-fitted projections and codebooks, the EMA target encoder.

Each contract is checked on its own (anchored codes are Mel codes for exactly
``anchor_codebooks``; PCA whitens its sample; k-means codes are the nearest
centroids; an EMA step moves the targets), then in tiny training runs: fitted
at the transition, saved, restored exactly on resume, identical on two DDP
ranks. The paper's quantizer keeps its checkpoint format (no new buffers, no
``kinds``).
"""

import os
import subprocess
import sys

import pytest
import torch

from latent_rq_brain.model.features import valid_frames
from latent_rq_brain.targets.maker import TargetMaker, quantizer_sources
from latent_rq_brain.targets.quantizer import RandomProjectionQuantizer, TargetSource, latent_rq_quantizer
from latent_rq_brain.targets.target_encoder import TargetEncoder, autocast_weights
from test_training import REPO, built, fit_batches, latest_ckpt, tiny_args, train, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def quantizer(**kw):
    args = dict(n_codebooks=6, codebook_size=32, codebook_dim=4, mel_dim=40, latent_dim=24,
                target_layers=[0, 1], num_layers=2, seed=3)
    args.update(kw)
    return latent_rq_quantizer(**args)


def anisotropic(n, dim, seed=0):
    """Frames with a mean and very different variances per direction."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 1, dim)
    mix = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    return (torch.randn(n, dim, generator=g) * scale) @ mix + 3.0


# ---------------------------------------------------------------- the contract


def test_paper_quantizer_keeps_its_checkpoint_format():
    q = quantizer()
    assert "kinds" not in q.config()
    assert sorted(q.state_dict()) == sorted(
        f"{p}_{s}" for s in ("mel", "layer0", "layer1") for p in ("proj", "codebooks"))
    assert not any(q.needs_fit(s) for s in q.sources)


def test_unknown_kind_is_refused_by_name():
    with pytest.raises(ValueError, match="target_projection must be one of"):
        quantizer(target_projection="ica")
    with pytest.raises(ValueError, match="target_codebooks must be one of"):
        quantizer(target_codebooks="vq")
    with pytest.raises(ValueError, match="anchor_codebooks=6 must be"):
        quantizer(anchor_codebooks=6)
    with pytest.raises(ValueError, match="n_codebooks - anchor_codebooks = 5"):
        quantizer(anchor_codebooks=1)


def test_anchored_codes_use_mel_for_exactly_anchor_codebooks():
    q = quantizer(anchor_codebooks=2)
    assert q.sources == {"mel": (40, 6), "layer0": (24, 2), "layer1": (24, 2)}
    states = {0: torch.randn(2, 5, 24), 1: torch.randn(2, 5, 24)}

    class Snapshot:  # a stand-in target encoder
        target_layers = [0, 1]

        def __call__(self, feats, enc_lens):
            return states

    make = TargetMaker(q, quantizer_sources(q, Snapshot(), 4, anchor_codebooks=2))
    feats, enc_lens = torch.randn(2, 20, 10), torch.tensor([5, 3])
    frames = valid_frames(enc_lens, 5)
    codes = make(feats, enc_lens, frames, stage=1)
    mel = q(feats.view(2, 5, 40)[frames], "mel")
    assert codes.shape == (8, 6)
    assert torch.equal(codes[:, :2], mel[:, :2])  # the first two Mel codebooks
    assert torch.equal(codes[:, 2:4], q(states[0][frames], "layer0"))
    assert torch.equal(codes[:, 4:], q(states[1][frames], "layer1"))
    assert torch.equal(make(feats, enc_lens, frames, stage=0), mel)  # stage 0: all Mel


def test_pca_whitens_its_sample():
    x = anisotropic(4000, 12)
    src = TargetSource(12, 3, 16, 4, torch.Generator().manual_seed(0), projection="pca")
    src.fit(x, seed=1)
    z = (x - src.mean) @ src.proj[:, :4]
    cov = torch.cov(z.T)
    assert torch.allclose(cov, torch.eye(4), atol=1e-3)
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-3)
    # every codebook of the source reads the same whitened components
    assert torch.equal(src.proj[:, :4], src.proj[:, 8:12])
    # the top components: the whitened space keeps the largest variances
    top = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)[:4]
    kept = 1 / src.proj[:, :4].norm(dim=0).square()
    assert torch.allclose(kept, top, rtol=1e-3)


def test_kmeans_codes_are_the_nearest_centroids():
    x = anisotropic(3000, 10, seed=1)
    src = TargetSource(10, 2, 16, 3, torch.Generator().manual_seed(0), codebooks="kmeans")
    before = src.codebooks.clone()
    src.fit(x, seed=1)
    assert not torch.equal(before, src.codebooks)
    assert torch.allclose(src.codebooks.norm(dim=-1), torch.ones(2, 16), atol=1e-5)
    z = src.project(x)  # (M, 2, 3) unit vectors
    codes = src(x)
    for i in range(2):
        nearest = torch.cdist(z[:, i], src.codebooks[i]).argmin(1)
        assert torch.equal(codes[:, i], nearest)
    # fitted codebooks are all used on their own sample (random ones are not)
    assert len(codes[:, 0].unique()) == 16


def test_fit_is_deterministic_saved_and_restored(tmp_path):
    x = {"layer0": anisotropic(2000, 24), "layer1": anisotropic(2000, 24, seed=2)}
    a, b = (quantizer(target_projection="pca", target_codebooks="kmeans") for _ in range(2))
    for q in (a, b):
        assert q.needs_fit("layer0") and not q.needs_fit("mel")
        for name, frames in x.items():
            q.fit(name, frames)
    assert a.checksum() == b.checksum() and not a.needs_fit("layer0")
    a._save(tmp_path / "quantizer.ckpt")
    c = RandomProjectionQuantizer.from_file(tmp_path / "quantizer.ckpt")
    assert c.checksum() == a.checksum() and not c.needs_fit("layer1")
    assert torch.equal(c(x["layer0"], "layer0"), a(x["layer0"], "layer0"))
    fresh = quantizer(target_projection="pca", target_codebooks="kmeans")
    fresh._load(tmp_path / "quantizer.ckpt")
    assert fresh.checksum() == a.checksum()
    with pytest.raises(ValueError, match="target_projection or target_codebooks changed"):
        quantizer()._load(tmp_path / "quantizer.ckpt")


def test_ema_step_moves_the_targets_and_the_converted_copy_follows():
    from recipes.analysis.common import RANDOM_TINY, load_model

    enc, _ = load_model(RANDOM_TINY)
    student = enc.encoder
    te = TargetEncoder([0], norm="none")
    te.snapshot(student, step=0)
    feats = torch.randn(2, 40, int(enc.config["n_mels"]))
    enc_lens = torch.tensor([10, 7])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_before = te(feats, enc_lens)[0].clone()
    before = te(feats, enc_lens)[0].clone()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert torch.equal(te(feats, enc_lens)[0], before)  # a frozen snapshot
    te.ema_update(student, decay=0.5)
    after = te(feats, enc_lens)[0]
    assert not torch.allclose(after, before)
    p_t = dict(te.module.named_parameters())
    for name, p in student.named_parameters():
        if name in p_t:
            break
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_after = te(feats, enc_lens)[0]
        expected = autocast_weights(te.module, torch.bfloat16)(feats, enc_lens)[1][1].float()
    assert not torch.allclose(low_after, low_before)  # the bf16 runner copy was rebuilt
    assert torch.equal(low_after, expected)


# ---------------------------------------------------------------- in training

VARIANTS = {
    "anchored": ["--anchor_codebooks=2"],
    "pca": ["--target_projection=pca"],
    "kmeans": ["--target_codebooks=kmeans"],
    "ema": ["--target_encoder_ema=True", "--target_cache=False", "--ema_decay=0.9",
            "--ema_end_decay=0.99", "--ema_anneal_steps=4"],
}
FIT = ["--fit_frames=300", "--codebook_size=16"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_trains_and_resumes_exactly(tmp_path, corpus, variant):
    args = ["--stage_transitions=[2]", *FIT, *VARIANTS[variant]]
    brain = train.main(tiny_args(tmp_path, corpus, *args, "--optimizer_step_limit=4"))
    assert brain.schedule.stage == 1 and brain.optimizer_step == 4
    q, te = brain.quantizer, brain.target_encoder
    if variant in ("pca", "kmeans"):
        assert q.config()["kinds"]["layer0"]["projection"] == variant.replace("kmeans", "random")
        assert bool(q.source("layer0").fitted) and bool(q.source("layer2").fitted)
    if variant == "ema":  # moved away from the snapshot of step 2
        snap = torch.load(latest_ckpt(tmp_path / "save").paramfiles["target_encoder"],
                          weights_only=True)
        assert snap["snapshot_step"] == 2
    saved_q, saved_te = q.checksum(), te.checksum()
    resumed, _ = built(tmp_path, corpus, *args, "--optimizer_step_limit=6")
    assert resumed.optimizer_step == 4 and resumed.schedule.stage == 1
    assert resumed.quantizer.checksum() == saved_q
    assert resumed.target_encoder.checksum() == saved_te
    assert not resumed.quantizer.needs_fit("layer0")


def test_ema_target_encoder_moves_during_training_and_refuses_the_cache(tmp_path, corpus):
    args = ["--stage_transitions=[2]", *VARIANTS["ema"]]
    brain, loader = built(tmp_path, corpus, *args)
    fit_batches(brain, loader, 3)  # the transition at step 2, then one EMA step
    assert brain.schedule.stage == 1
    first = brain.target_encoder.checksum()
    fit_batches(brain, loader, 1)
    assert brain.target_encoder.checksum() != first
    with pytest.raises(ValueError, match="target_encoder_ema: True"):  # before anything runs
        train.build(tiny_args(tmp_path / "cached", corpus, "--target_encoder_ema=True",
                              "--target_cache=True"))


def test_paper_run_fits_nothing(tmp_path, corpus):
    brain = train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[2]",
                                 "--optimizer_step_limit=3"))
    assert "kinds" not in brain.quantizer.config()
    assert brain.targets.anchor_codebooks == 0


DDP_DRIVER = r'''
import os, sys, torch
sys.path.insert(0, os.environ["REPO"])
import train

brain = train.main(sys.argv[1:])
rank = torch.distributed.get_rank()
torch.save({"quantizer": brain.quantizer.checksum(), "fitted": bool(brain.quantizer.source("layer0").fitted),
            "stage": brain.schedule.stage},
           os.path.join(os.environ["PROBE_DIR"], f"rank{rank}.pt"))
'''


def test_two_ranks_hold_identical_fitted_sources(tmp_path, corpus):
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER)
    env = dict(os.environ, REPO=REPO, PROBE_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    args = tiny_args(tmp_path / "out", corpus, "--stage_transitions=[2]", "--optimizer_step_limit=3",
                     "--distributed_backend=gloo", "--target_projection=pca",
                     "--target_codebooks=kmeans", "--anchor_codebooks=2", *FIT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29573", str(driver), *args]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["stage"] == r1["stage"] == 1
    assert r0["fitted"] and r1["fitted"]
    assert r0["quantizer"] == r1["quantizer"]
