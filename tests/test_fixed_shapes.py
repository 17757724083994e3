"""Fixed-shape batches, compile, the inference-mode target forward and RoPE.

Padding a batch to its bucket's shape changes neither targets nor loss (the
model is padding-exact: ``test_speed_paths``); the loader yields only the
bucket shapes; the target encoder's inference-mode forward gives the codes of
a plain ``no_grad`` forward; ``attention_type: RoPEMHA`` trains.
"""

import os

import numpy as np
import pytest
import torch

import speechbrain as sb
from speechbrain.dataio.batch import PaddedBatch
from test_speed_paths import forward_eval, stage1_brain
import train
from test_training import built, fit_batches, tiny_args, write_corpus
from latent_rq_brain.model.sb_patches import set_fast_kernels
from latent_rq_brain.targets.target_encoder import normalize_states
from latent_rq_brain.training.data import BucketPadding, FixedShapeBatchSampler, LengthBuckets


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), n_train=8, n_valid=4)


def test_length_buckets_fit_every_utterance_and_cut_waste():
    rng = np.random.default_rng(0)
    durations = [float(d) for d in rng.uniform(1.0, 20.0, 2000)]
    wastes = []
    for k in (1, 2, 4, 8):
        b = LengthBuckets(durations, max_batch_len=600, num_shapes=k)
        assert len(b.samples) == k and b.samples == sorted(b.samples)
        assert all(n % 8 == 0 for n in b.encoder_frames)
        for d in durations:  # every utterance fits its bucket, not the one below
            j = b.bucket_of(d)
            assert d * 16000 <= b.samples[j] + 1e-6
            assert j == 0 or d * 16000 > b.samples[j - 1]
        assert all(bs * s <= 600 * 16000 for bs, s in zip(b.batch_sizes, b.samples))
        padded = sum(b.samples[b.bucket_of(d)] for d in durations) / 16000
        assert b.padding_waste == pytest.approx(1 - sum(durations) / padded)
        wastes.append(b.padding_waste)
    assert wastes == sorted(wastes, reverse=True) and wastes[-1] < 0.12  # uniform 1-20 s: about half a bucket width
    assert "padding waste" in b.describe()


def test_sampler_drops_only_incomplete_batches_and_reshuffles():
    durations = [1.0] * 10 + [3.0] * 7
    b = LengthBuckets(durations, max_batch_len=7, num_shapes=2)
    sampler = FixedShapeBatchSampler(durations, b, seed=3)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert len(epoch) == len(sampler)
        for batch in epoch:
            k = b.bucket_of(durations[batch[0]])
            assert len(batch) == b.batch_sizes[k]
            assert all(b.bucket_of(durations[i]) == k for i in batch)
    assert first != second  # another order (and other dropped utterances)


def test_fixed_shape_loader_yields_bucket_shapes_only(tmp_path, corpus):
    brain, loader = built(tmp_path, corpus, "--fixed_shapes=True", "--max_batch_len=5",
                          "--fixed_shape_count=2")
    buckets = loader.collate_fn.keywords["padding_func"].buckets
    shapes = {(bs, s) for bs, s, _ in buckets.shapes()}
    seen = set()
    for batch in loader:
        wavs, _ = batch.sig
        seen.add(tuple(wavs.shape))
        feats, enc_lens, _ = brain.batch_features(batch)
        assert feats.shape[1] == 4 * buckets.encoder_frames[buckets.samples.index(wavs.shape[1])]
    assert seen and seen <= shapes
    fit_batches(brain, loader, 2)  # trains on them
    # validation batches are padded to the bucket lengths too
    _, _, valid_data, _, valid_opts = train.build(
        tiny_args(tmp_path / "v", corpus, "--fixed_shapes=True", "--max_batch_len=5",
                  "--fixed_shape_count=2"))
    valid = brain.make_dataloader(valid_data, stage=sb.Stage.VALID, **valid_opts)
    assert {b.sig[0].shape[1] for b in valid} <= set(buckets.samples)


@pytest.mark.parametrize("stage", [0, 1])
def test_bucket_padding_gives_same_targets_and_loss(tmp_path, corpus, stage):
    brain, loader = stage1_brain(tmp_path, corpus, "--target_cache=False")
    brain.schedule.stage = stage
    examples = [loader.dataset[i] for i in range(4)]
    plain = PaddedBatch(examples).to(brain.device)
    # one bucket longer than every utterance: every batch is padded further
    buckets = LengthBuckets([float(brain.hparams.avoid_if_longer_than)], 60, 1)
    padded = PaddedBatch(examples, padding_func=BucketPadding(buckets)).to(brain.device)
    assert padded.sig[0].shape[1] == buckets.samples[0] > plain.sig[0].shape[1] + 16000
    a, loss_a = forward_eval(brain, plain)
    b, loss_b = forward_eval(brain, padded)
    T = a["mask"].shape[1]
    assert b["mask"].shape[1] > T and not b["mask"][:, T:].any()
    assert torch.equal(a["mask"], b["mask"][:, :T])
    assert torch.equal(a["targets"], b["targets"])
    assert torch.allclose(a["logits"], b["logits"], atol=1e-4)
    assert abs(float(loss_a) - float(loss_b)) < 1e-5


def test_bucket_padding_with_target_cache(tmp_path, corpus):
    brain, loader = stage1_brain(tmp_path, corpus)
    assert brain.target_cache is not None
    examples = [loader.dataset[i] for i in range(4)]
    buckets = LengthBuckets([float(brain.hparams.avoid_if_longer_than)], 60, 1)
    out = {}
    for name, batch in (("plain", PaddedBatch(examples)),
                        ("padded", PaddedBatch(examples, padding_func=BucketPadding(buckets)))):
        brain.modules.eval()
        torch.manual_seed(0)  # same random (training) masks
        with torch.no_grad():
            out[name] = brain.compute_forward(batch, sb.Stage.TRAIN)
    assert torch.equal(out["plain"]["targets"], out["padded"]["targets"])


def test_inference_mode_target_forward_equals_no_grad(tmp_path, corpus):
    brain, loader = stage1_brain(tmp_path, corpus, "--target_cache=False")
    te = brain.target_encoder
    batch = next(iter(loader)).to(brain.device)
    feats, enc_lens, _ = brain.batch_features(batch)
    fast = te(feats, enc_lens)
    with torch.no_grad():
        _, states = te.module(feats, enc_lens)
    for layer in te.target_layers:
        ref = normalize_states(states[layer + 1].float(), enc_lens, te.norm)
        assert fast[layer].is_inference() and fast[layer].dtype == torch.float32
        assert torch.equal(fast[layer], ref)
    valid = torch.arange(feats.shape[1] // 4)[None] < enc_lens[:, None]
    codes = brain.compute_targets(feats, enc_lens, valid)
    assert not codes.is_inference()  # usable as cross-entropy targets
    fit_batches(brain, loader, 2)  # online stage-1 steps: backward through the student


def test_rope_attention_trains_and_is_padding_exact(tmp_path, corpus):
    from speechbrain.nnet.attention import RoPEMHA

    brain, loader = stage1_brain(tmp_path, corpus, "--attention_type=RoPEMHA",
                                 "--target_cache=False")
    assert any(isinstance(m, RoPEMHA) for m in brain.modules.encoder.modules())
    assert any(isinstance(m, RoPEMHA) for m in brain.target_encoder.module.modules())
    examples = [loader.dataset[i] for i in range(4)]
    buckets = LengthBuckets([float(brain.hparams.avoid_if_longer_than)], 60, 1)
    a, loss_a = forward_eval(brain, PaddedBatch(examples))
    b, loss_b = forward_eval(brain, PaddedBatch(examples, padding_func=BucketPadding(buckets)))
    assert torch.equal(a["targets"], b["targets"])
    assert abs(float(loss_a) - float(loss_b)) < 1e-5
    before = {n: p.detach().clone() for n, p in brain.modules.encoder.named_parameters()}
    brain.modules.train()
    fit_batches(brain, loader, 1)
    changed = [n for n, p in brain.modules.encoder.named_parameters()
               if not torch.equal(p, before[n])]
    assert any("mha_layer" in n for n in changed)
    # SpeechBrain's own RoPEMHA (fast_attention off): the target forward falls
    # back to no_grad, its rotation cache stays usable for training
    for module in (brain.modules.encoder, brain.target_encoder.module):
        set_fast_kernels(module, attention=False)
    assert any(type(m) is RoPEMHA for m in brain.target_encoder.module.modules())
    fit_batches(brain, loader, 1)


@pytest.mark.skipif(
    not os.environ.get("LATENT_RQ_SLOW"),
    reason="torch.compile (inductor) of the tiny model takes minutes on a 2-core CPU: "
    "LATENT_RQ_SLOW=1 runs it",
)
def test_compile_with_fixed_shapes_trains(tmp_path, corpus):
    brain, loader = built(tmp_path, corpus, "--fixed_shapes=True", "--max_batch_len=5",
                          "--fixed_shape_count=2", "--compile",
                          "--compile_target_encoder=True", "--stage_transitions=[1]",
                          "--target_cache=False")
    assert hasattr(brain.modules.encoder, "_orig_mod")
    fit_batches(brain, loader, 3)  # stage 0, the transition, stage 1 online
    assert brain.schedule.stage == 1
    assert brain.target_encoder.runner() is not brain.target_encoder.module


def test_target_forward_with_low_precision_weights_is_bitwise_autocast(tmp_path, corpus):
    brain, loader = stage1_brain(tmp_path, corpus, "--target_cache=False")
    te = brain.target_encoder
    feats, enc_lens, _ = brain.batch_features(next(iter(loader)).to(brain.device))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = te(feats, enc_lens)
        runner = te.runner("cpu")
        with torch.no_grad():
            _, states = te.module(feats, enc_lens)  # autocast casts the fp32 weights
    assert runner is not te.module and runner.transformer.encoder.layers[0].mha_layer \
        .in_proj_weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in te.module.parameters())  # checkpoint
    for layer in te.target_layers:
        ref = normalize_states(states[layer + 1].float(), enc_lens, te.norm)
        assert torch.equal(fast[layer], ref)
    assert te.runner("cpu") is te.module  # no autocast: the snapshot itself
