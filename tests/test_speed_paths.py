"""Every fast path equals its plain path: same targets, same loss.

Fast paths: the masked-only forward (reference: ``tools.bench.plain_forward``)
and the YAML switches, on by default: ``truncate_target_encoder``,
``target_cache``, ``fast_frontend``, ``fast_ffn``, ``fast_attention``.
"""

import functools
import os

import pytest
import torch

import speechbrain as sb
from test_training import built, fit_batches, write_corpus
from latent_rq_brain.model.sb_patches import (
    BatchMajorFeedForward,
    ChannelsLastConv2d,
    FusedRelPosMHAXL,
    set_fast_kernels,
)
from latent_rq_brain.targets.target_encoder import TargetEncoder, unwrap
from tools.bench import plain_forward


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), n_train=8, n_valid=4)


def stage1_brain(tmp_path, corpus, *extra):
    """A tiny Brain after 2 stage-0 steps and a transition to stage 1."""
    brain, loader = built(tmp_path, corpus, "--stage_transitions=[]", *extra)
    brain.train_dataset = loader.dataset
    fit_batches(brain, loader, 2)
    brain.transition(1)
    return brain, loader


def forward_eval(brain, batch):
    """compute_forward with the seeded (validation) masks, and its loss."""
    with torch.no_grad():
        brain.modules.eval()
        out = brain.compute_forward(batch, sb.Stage.VALID)
        brain.valid_stats = brain.train_stats
        loss = brain.compute_objectives(out, batch, sb.Stage.VALID)
    return out, loss


def test_truncated_target_encoder_equals_full(tmp_path, corpus):
    brain, loader = stage1_brain(tmp_path, corpus, "--target_layers=[0, 1]")
    batch = next(iter(loader)).to(brain.device)
    wavs, rel = batch.sig
    feats, _, enc_lens = brain.modules.features(wavs, torch.round(rel * wavs.shape[1]).long())
    layers = brain.target_encoder.target_layers
    fast = TargetEncoder(layers, "utterance", truncate=True)
    plain = TargetEncoder(layers, "utterance", truncate=False)
    for te in (fast, plain):
        te.snapshot(brain.modules.encoder, 0)
    assert fast.module.num_layers == max(layers) + 1 < plain.module.num_layers
    a, b = fast(feats, enc_lens), plain(feats, enc_lens)
    for layer in layers:
        assert torch.allclose(a[layer], b[layer], atol=1e-5)
    valid = torch.arange(feats.shape[1] // 4)[None] < enc_lens[:, None]
    brain.targets.target_encoder = fast
    codes_fast = brain.compute_targets(feats, enc_lens, valid)
    brain.targets.target_encoder = plain
    codes_plain = brain.compute_targets(feats, enc_lens, valid)
    assert torch.equal(codes_fast, codes_plain)


@pytest.mark.parametrize("stage", [0, 1])
def test_masked_only_forward_equals_plain_forward(tmp_path, corpus, stage):
    brain, loader = stage1_brain(tmp_path, corpus)
    brain.schedule.stage = stage
    batch = next(iter(loader)).to(brain.device)
    fast, loss_fast = forward_eval(brain, batch)
    brain.compute_forward = functools.partial(plain_forward, brain)
    plain, loss_plain = forward_eval(brain, batch)
    assert torch.equal(fast["mask"], plain["mask"])
    assert torch.equal(fast["targets"], plain["targets"])
    assert torch.allclose(fast["logits"], plain["logits"], atol=1e-5)
    assert abs(float(loss_fast) - float(loss_plain)) < 1e-5


def test_target_cache_equals_online_targets(tmp_path, corpus):
    brain, loader = stage1_brain(tmp_path, corpus)
    cache = brain.target_cache
    assert cache is not None and cache.complete(1)
    n_utts = 0
    for batch in loader:
        batch = batch.to(brain.device)
        wavs, rel = batch.sig
        feats, _, enc_lens = brain.modules.features(wavs, torch.round(rel * wavs.shape[1]).long())
        valid = torch.arange(feats.shape[1] // 4)[None] < enc_lens[:, None]
        online = brain.compute_targets(feats, enc_lens, valid)
        cached = cache.lookup(batch.id, enc_lens, brain.device)[valid]
        # the cache pass batched these utterances differently: identical anyway
        assert torch.equal(online, cached)
        n_utts += len(batch.id)
    assert n_utts == 8

    # training reads the cache: the target encoder is not run any more
    def boom(*args, **kwargs):
        raise AssertionError("target encoder ran although the cache is on")

    brain.target_encoder.forward = boom
    fit_batches(brain, loader, 1)


def test_target_cache_is_keyed_and_invalidated(tmp_path, corpus):
    brain, loader = stage1_brain(tmp_path, corpus)
    folder = os.path.join(brain.hparams.output_folder, "target_cache")
    first = brain.target_cache.key
    assert all(f.startswith(first) for f in os.listdir(folder))
    # same snapshot, same everything: same key (a resume reuses the files)
    brain.prepare_target_cache()
    assert brain.target_cache.key == first
    # a new snapshot (next stage) is a new key; stale files are removed
    fit_batches(brain, loader, 1)
    brain.transition(2)
    second = brain.target_cache.key
    assert second != first
    assert all(f.startswith(second) for f in os.listdir(folder))
    # other settings of the objects that make targets are other keys too
    brain.target_encoder.norm = "layer"
    brain.prepare_target_cache()
    assert brain.target_cache.key != second


def test_target_cache_refuses_random_inputs(tmp_path, corpus):
    brain, loader = stage1_brain(tmp_path, corpus)
    brain.hparams.augmentation = lambda x: x
    with pytest.raises(ValueError, match="deterministic inputs.*augmentation"):
        brain.prepare_target_cache()


def test_target_cache_off_runs_online(tmp_path, corpus):
    brain, _ = stage1_brain(tmp_path, corpus, "--target_cache=False")
    assert brain.target_cache is None
    assert not os.path.exists(os.path.join(brain.hparams.output_folder, "target_cache"))


def _grads(brain, batch):
    """Loss and parameter gradients of one forward (seeded masks, no dropout:
    the feed-forward's dropout mask is laid out (T, B) by SpeechBrain, (B, T) by
    the fast path, so its draws differ although their distribution does not)."""
    brain.modules.eval()
    for p in brain.modules.parameters():
        p.grad = None
    out = brain.compute_forward(batch, sb.Stage.VALID)
    loss = brain.compute_objectives(out, batch, sb.Stage.VALID)
    loss.backward()
    return out, loss, {n: p.grad.clone() for n, p in brain.modules.named_parameters()}


FAST_TYPES = {
    "fast_frontend": ChannelsLastConv2d,
    "fast_ffn": BatchMajorFeedForward,
    "fast_attention": FusedRelPosMHAXL,
}


@pytest.mark.parametrize("switch", sorted(FAST_TYPES))
def test_fast_kernels_equal_speechbrain_modules(tmp_path, corpus, switch):
    brain, loader = stage1_brain(tmp_path, corpus)
    brain.valid_stats = brain.train_stats
    batch = next(iter(loader)).to(brain.device)
    encoders = [unwrap(brain.modules.encoder), brain.target_encoder.module]
    fast_types = (FAST_TYPES[switch],)
    assert all(any(type(m) in fast_types for m in e.modules()) for e in encoders)
    keys = list(encoders[0].state_dict())
    results = {}
    for on in (True, False):
        for e in encoders:
            set_fast_kernels(e, **{"frontend": True, "ffn": True, "attention": True,
                                   switch[5:]: on})
        assert any(type(m) in fast_types for m in encoders[0].modules()) == on
        results[on] = _grads(brain, batch)
    assert list(encoders[0].state_dict()) == keys  # same parameters and checkpoints
    (fast, loss_fast, g_fast), (plain, loss_plain, g_plain) = results[True], results[False]
    assert torch.equal(fast["mask"], plain["mask"])
    assert torch.equal(fast["targets"], plain["targets"])  # target encoder: same codes
    assert torch.allclose(fast["logits"], plain["logits"], atol=1e-4)
    assert abs(float(loss_fast) - float(loss_plain)) < 1e-5
    for name, g in g_plain.items():
        scale = float(g.abs().max()) + 1e-12
        assert float((g_fast[name] - g).abs().max()) / scale < 1e-3, name


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_attention_with_padding_and_autocast(autocast):
    from speechbrain.nnet.attention import RelPosEncXL, RelPosMHAXL

    torch.manual_seed(0)
    mha = RelPosMHAXL(32, 4, dropout=0.0)
    torch.nn.init.normal_(mha.pos_bias_u)
    torch.nn.init.normal_(mha.pos_bias_v)
    x = torch.randn(3, 40, 32)
    pos = RelPosEncXL(32)(x)
    lens = torch.tensor([40, 31, 7])
    pad = torch.arange(40)[None] >= lens[:, None]
    outs = {}
    for cls in (RelPosMHAXL, FusedRelPosMHAXL):
        mha.__class__ = cls
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outs[cls] = mha(x, x, x, pos, key_padding_mask=pad)[0].float()
    valid = ~pad
    a, b = outs[RelPosMHAXL][valid], outs[FusedRelPosMHAXL][valid]
    tol = 3e-2 if autocast else 1e-5  # bf16 rounding of two different kernels
    assert float((a - b).abs().max()) < tol * float(a.abs().max())
