"""Tests of everything that makes the training targets: span masks, log-Mel
features, the encoder's layer mapping, the frozen target encoder and the
stage-0 / latent targets.

The central property: an utterance gets the same features, hidden states and
targets whether it is alone or padded in a batch, whatever the batch
composition (padding-exact Fbank + normalisation, padding-exact Conformer
convolution).
"""

import copy
import math

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from latent_rq_brain.training.hparams import expand_hparams_file

from latent_rq_brain.model.layers import hidden_state_index, layer_source
from latent_rq_brain.model.masking import sample_span_mask
from latent_rq_brain.model.sb_patches import PaddingExactConvolutionModule
from latent_rq_brain.targets.maker import TargetMaker, quantizer_sources
from latent_rq_brain.targets.target_encoder import TargetEncoder, normalize_states
from speechbrain.lobes.models.transformer.Conformer import ConvolutionModule

HPARAMS = "hparams/small/latent_rq.yaml"
SR = 16000
DURATIONS = (0.73, 1.5, 2.31)  # -> 74, 151, 232 Mel frames; 19, 38, 58 enc. frames
ORDERS = ((0, 1, 2), (2, 0, 1), (1, 2, 0))
TARGET_LAYERS = [-1, 1]
NUM_LAYERS = 3


# ------------------------------------------------------------ helpers


def load_tiny_hparams(folder, **overrides):
    over = {
        "d_model": 32,
        "num_encoder_layers": NUM_LAYERS,
        "d_ffn": 64,
        "nhead": 2,
        "target_layers": TARGET_LAYERS,
        "codebook_size": 64,
        "output_folder": str(folder),
    }
    over.update(overrides)
    path, over = expand_hparams_file(HPARAMS, over)
    with open(path) as f:
        return load_hyperpyyaml(f, over)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tensors here are tiny: intra-op threads only add overhead (and
    spin badly when the cores are busy, e.g. next to a training run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hp(tmp_path_factory):
    hparams = load_tiny_hparams(tmp_path_factory.mktemp("hp"))
    hparams["features"].eval()
    hparams["encoder"].eval()
    return hparams


def make_wavs():
    """Deterministic speech-like waveforms (harmonics + AM + noise)."""
    gen = torch.Generator().manual_seed(1234)
    wavs = []
    for i, dur in enumerate(DURATIONS):
        n = int(round(dur * SR))
        t = torch.arange(n) / SR
        f0 = 110.0 + 40.0 * i
        wav = sum(
            torch.sin(2 * math.pi * f0 * k * t + k) / k for k in range(1, 6)
        )
        wav = wav * (0.6 + 0.4 * torch.sin(2 * math.pi * 3.0 * t))
        wav = 0.1 * wav + 0.01 * torch.randn(n, generator=gen)
        wavs.append(wav.float())
    return wavs


WAVS = make_wavs()


def pad_batch(wavs):
    S = max(w.shape[0] for w in wavs)
    out = torch.zeros(len(wavs), S)
    for i, w in enumerate(wavs):
        out[i, : w.shape[0]] = w
    return out, torch.tensor([w.shape[0] for w in wavs])


def features(hp, wavs):
    batch, n = pad_batch(wavs)
    return hp["features"](batch, n)


def stack_mel(feats, k=4):
    B, T, C = feats.shape
    return feats.reshape(B, T // k, k * C)


def top2_margin(q, x, name):
    """(M, n) gap between the best and second-best codeword scores."""
    z = q.project(x, name)  # (M, n, d)
    scores = torch.einsum("mnd,nvd->mnv", z, q.codebooks(name).float())
    top = scores.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def encoder_states(encoder, feats, enc_lens):
    with torch.no_grad():
        out, states = encoder(feats, enc_lens)
    return out, states


# ------------------------------------------------------------ span masks


def _runs(row):
    """(start, length) of the runs of True in a 1-D bool tensor."""
    runs, start = [], None
    for t, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = t
        elif not v and start is not None:
            runs.append((start, t - start))
            start = None
    return runs


def test_span_mask_respects_padding_and_span_length():
    lens = torch.tensor([1000, 37, 5, 3, 1, 12, 250])
    for mask_prob, mask_length in ((0.4, 10), (0.65, 5), (0.1, 2), (1.0, 4)):
        gen = torch.Generator().manual_seed(int(mask_prob * 100) + mask_length)
        m = sample_span_mask(lens, mask_prob, mask_length, generator=gen)
        assert m.shape == (len(lens), int(lens.max()))
        assert m.dtype == torch.bool
        for i, n in enumerate(lens.tolist()):
            assert not bool(m[i, n:].any()), "padding was masked"
            assert bool(m[i, :n].any()), "utterance without a masked frame"
            for start, length in _runs(m[i]):
                if length < mask_length:  # only when clipped by the end
                    assert start == 0 and start + length == n < mask_length
            n_spans = max(1, round(mask_prob * n / mask_length))
            assert int(m[i].sum()) <= min(n, n_spans * mask_length)


def test_span_mask_fraction_for_long_utterances():
    lens = torch.full((64,), 1000)
    gen = torch.Generator().manual_seed(0)
    m = sample_span_mask(lens, 0.4, 10, generator=gen)
    frac = m.float().mean(1)
    assert bool((frac > 0.25).all()) and bool((frac <= 0.4).all())
    # 40 spans of 10 over ~991 starts: expected 1 - (1 - 10/991)^40 ~ 0.33
    assert abs(float(frac.mean()) - (1 - (1 - 10 / 991) ** 40)) < 0.02


def test_span_mask_reproducible_with_generator():
    lens = torch.tensor([300, 120, 7])
    a = sample_span_mask(lens, 0.4, 5, generator=torch.Generator().manual_seed(3))
    b = sample_span_mask(lens, 0.4, 5, generator=torch.Generator().manual_seed(3))
    c = sample_span_mask(lens, 0.4, 5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the global RNG plays no part when a generator is given
    torch.manual_seed(0)
    d = sample_span_mask(lens, 0.4, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, d)


def test_span_mask_rejects_bad_arguments():
    lens = torch.tensor([10])
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="mask_prob"):
            sample_span_mask(lens, p, 2)
    with pytest.raises(ValueError, match="mask_length"):
        sample_span_mask(lens, 0.4, 0)


# ------------------------------------------------------------ features, stage 0


def test_features_do_not_depend_on_padding_or_batch(hp):
    alone = [features(hp, [w]) for w in WAVS]
    for i, (f, fl, el) in enumerate(alone):
        n = WAVS[i].shape[0]
        assert int(fl) == n // 160 + 1
        assert int(el) == math.ceil(int(fl) / 4)
        assert f.shape[1] == 4 * int(el)  # padded to a multiple of 4 only
        assert bool((f[0, int(fl) :] == 0).all())
    for order in ORDERS:
        feats, frame_lens, enc_lens = features(hp, [WAVS[i] for i in order])
        assert feats.shape[1] % 4 == 0
        assert feats.shape[1] == 4 * int(enc_lens.max())
        for b, i in enumerate(order):
            f1, fl1, el1 = alone[i]
            fl = int(frame_lens[b])
            assert fl == int(fl1) and int(enc_lens[b]) == int(el1)
            assert torch.allclose(feats[b, :fl], f1[0, :fl], atol=1e-5)
            assert bool((feats[b, fl:] == 0).all()), "padded frames not zero"
            # valid frames really are normalised per utterance
            assert float(feats[b, :fl].mean(0).abs().max()) < 1e-4


def test_stage0_targets_do_not_depend_on_padding_or_batch(hp):
    q = hp["quantizer"]
    alone = []
    for w in WAVS:
        f, _, el = features(hp, [w])
        alone.append(q(stack_mel(f)[0, : int(el)], "mel"))
    checked = 0
    for order in ORDERS:
        feats, _, enc_lens = features(hp, [WAVS[i] for i in order])
        stacked = stack_mel(feats)
        assert stacked.shape[-1] == 320
        for b, i in enumerate(order):
            n = int(enc_lens[b])
            x = stacked[b, :n]
            codes = q(x, "mel")
            clear = top2_margin(q, x, "mel") > 1e-3
            assert float(clear.float().mean()) > 0.9
            assert torch.equal(codes[clear], alone[i][clear])
            assert float((codes == alone[i]).float().mean()) >= 0.995
            checked += int(clear.sum())
    assert checked > 0


# ------------------------------------------------------------ latent targets


def _alone_and_batched_states(hp, run, orders=ORDERS):
    """``run(feats, enc_lens) -> {key: (B, T, d)}`` for each utterance alone and
    in each batch order. Returns (alone, batched) lists of dicts of tensors,
    cut to the valid frames, indexed by utterance."""
    alone = []
    for w in WAVS:
        f, _, el = features(hp, [w])
        alone.append({k: v[0, : int(el)] for k, v in run(f, el).items()})
    batched = []
    for order in orders:
        feats, _, enc_lens = features(hp, [WAVS[i] for i in order])
        states = run(feats, enc_lens)
        per_utt = [None] * len(order)
        for b, i in enumerate(order):
            per_utt[i] = {k: v[b, : int(enc_lens[b])] for k, v in states.items()}
        batched.append(per_utt)
    return alone, batched


def test_latent_targets_do_not_depend_on_padding_or_batch(hp):
    te = TargetEncoder(TARGET_LAYERS, norm="utterance")
    te.snapshot(hp["encoder"], step=0)
    q = hp["quantizer"]
    alone, batched = _alone_and_batched_states(hp, te)
    n_clear = n_total = 0
    for per_utt in batched:
        for i in range(len(WAVS)):
            for layer in TARGET_LAYERS:
                a, b = alone[i][layer], per_utt[i][layer]
                assert a.shape == b.shape
                assert torch.allclose(a, b, atol=1e-4), (i, layer)
                name = layer_source(layer)
                ca, cb = q(a, name), q(b, name)
                clear = top2_margin(q, a, name) > 1e-3
                assert torch.equal(ca[clear], cb[clear]), (i, layer)
                assert float((ca == cb).float().mean()) >= 0.995
                n_clear += int(clear.sum())
                n_total += clear.numel()
    assert n_clear > 0.9 * n_total  # the exact comparison is not vacuous


def test_stock_convolution_module_leaks_padding(hp):
    """Without PaddingExactConvolutionModule, the shorter utterance's last
    frames change when it is batched with a longer one: the fix has teeth."""
    stock = copy.deepcopy(hp["encoder"]).eval()
    n_swapped = 0
    for layer in stock.transformer.encoder.layers:
        assert type(layer.convolution_module) is PaddingExactConvolutionModule
        layer.convolution_module.__class__ = ConvolutionModule
        n_swapped += 1
    assert n_swapped == NUM_LAYERS
    kernel = stock.transformer.encoder.layers[0].convolution_module.conv.kernel_size[0]

    def states(encoder):
        def run(feats, enc_lens):
            _, hs = encoder_states(encoder, feats, enc_lens)
            return dict(enumerate(hs))

        return run

    for encoder, leaks in ((stock, True), (hp["encoder"], False)):
        alone, batched = _alone_and_batched_states(hp, states(encoder), ORDERS[:2])
        shortest = 0  # 0.73 s, padded in every batch
        for per_utt in batched:
            a, b = alone[shortest], per_utt[shortest]
            # the front-end output (index 0) never sees the convolution module
            assert torch.allclose(a[0], b[0], atol=1e-5)
            diff = max(
                float((a[k][-(kernel // 2) :] - b[k][-(kernel // 2) :]).abs().max())
                for k in range(1, NUM_LAYERS + 1)
            )
            if leaks:
                assert diff > 1e-2, diff
            else:
                assert diff < 1e-4, diff
            # the longest utterance has no padding in any batch: never affected
            longest = len(WAVS) - 1
            for k in range(NUM_LAYERS + 1):
                assert torch.allclose(
                    alone[longest][k], per_utt[longest][k], atol=1e-4
                )


# ------------------------------------------------------------ layer mapping


def test_hidden_state_index():
    assert hidden_state_index(-1, 17) == 0
    for layer in range(17):
        assert hidden_state_index(layer, 17) == layer + 1
    for bad in (-2, 17, 100):
        with pytest.raises(ValueError, match=r"-1 .*to 16"):
            hidden_state_index(bad, 17)
    with pytest.raises(ValueError, match=r"valid layers are -1 .* to 2"):
        hidden_state_index(3, 3)


def test_hidden_states_match_a_hand_computed_forward(hp):
    encoder = hp["encoder"]
    tr = encoder.transformer
    feats, _, enc_lens = features(hp, WAVS)
    out, states = encoder_states(encoder, feats, enc_lens)
    assert len(states) == NUM_LAYERS + 1 == encoder.num_layers + 1
    with torch.no_grad():
        src = encoder.frontend(feats)
        if src.dim() == 4:
            src = src.reshape(src.shape[0], src.shape[1], -1)
        assert src.shape[1] == int(enc_lens.max())
        key_padding = torch.arange(src.shape[1])[None, :] >= enc_lens[:, None]
        x = tr.custom_src_module(src)
        assert x.shape[-1] == encoder.d_model == 32
        pos = tr.positional_encoding(x)
        # paper layer -1: front-end output projected to d_model
        assert torch.allclose(states[hidden_state_index(-1, NUM_LAYERS)], x, atol=1e-6)
        for layer in range(NUM_LAYERS):
            x, _ = tr.encoder.layers[layer](
                x, src_mask=None, src_key_padding_mask=key_padding, pos_embs=pos
            )
            got = states[hidden_state_index(layer, NUM_LAYERS)]
            assert torch.allclose(got, x, atol=1e-5), layer
        # the last state is before the final LayerNorm, the output after it.
        # (Each Conformer layer ends with its own LayerNorm, so with the final
        # norm's initial affine (1, 0) the two nearly coincide: perturb it.)
        assert torch.allclose(tr.encoder.norm(states[-1]), out, atol=1e-5)
        other = copy.deepcopy(encoder)
        for p in other.transformer.encoder.norm.parameters():
            p.mul_(2.0).add_(0.5)
        out2, states2 = encoder_states(other, feats, enc_lens)
        for a, b in zip(states, states2):
            assert torch.equal(a, b)
        assert not torch.allclose(out2, out, atol=1e-1)
        assert torch.allclose(other.transformer.encoder.norm(states[-1]), out2, atol=1e-5)


# ------------------------------------------------------------ target encoder


def test_target_encoder_snapshot_is_frozen_and_truncated(hp):
    live = copy.deepcopy(hp["encoder"])
    live.train()
    te = TargetEncoder(TARGET_LAYERS, norm="none")
    assert not te.active
    with pytest.raises(RuntimeError):
        te(torch.zeros(1, 8, 80), torch.tensor([2]))
    te.snapshot(live, step=123)
    assert te.active and te.snapshot_step == 123
    assert len(te.module.transformer.encoder.layers) == max(TARGET_LAYERS) + 1
    assert live.num_layers == NUM_LAYERS  # the live encoder is not truncated
    assert live.training  # ... nor switched to eval
    assert all(not m.training for m in te.module.modules())
    assert all(not p.requires_grad for p in te.module.parameters())
    assert all(p.requires_grad for p in live.parameters())
    for layer in te.module.transformer.encoder.layers:
        assert type(layer.convolution_module) is PaddingExactConvolutionModule

    feats, _, enc_lens = features(hp, WAVS)
    live.eval()
    _, full = encoder_states(live, feats, enc_lens)
    snap = te(feats, enc_lens)
    assert sorted(snap) == sorted(TARGET_LAYERS)
    for layer in TARGET_LAYERS:
        assert snap[layer].dtype == torch.float32
        assert torch.allclose(snap[layer], full[layer + 1], atol=1e-6), layer
    before_sum = te.checksum()
    before = {k: v.clone() for k, v in snap.items()}

    # training the live encoder afterwards does not touch the snapshot
    with torch.no_grad():
        for p in live.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _, full_after = encoder_states(live, feats, enc_lens)
    assert not torch.allclose(full_after[2], full[2], atol=1e-3)
    after = te(feats, enc_lens)
    assert te.checksum() == before_sum
    for layer in TARGET_LAYERS:
        assert torch.equal(after[layer], before[layer])
    # even if the caller switches it to train mode, forward runs it in eval
    te.module.train()
    again = te(feats, enc_lens)
    for layer in TARGET_LAYERS:
        assert torch.equal(again[layer], before[layer])


def test_target_encoder_rejects_bad_configs(hp):
    with pytest.raises(ValueError, match="norm"):
        TargetEncoder([1], norm="batch")
    with pytest.raises(ValueError, match="duplicates"):
        TargetEncoder([1, 1])
    with pytest.raises(ValueError, match="empty"):
        TargetEncoder([])
    with pytest.raises(ValueError, match="out of range"):
        TargetEncoder([NUM_LAYERS]).snapshot(hp["encoder"], step=0)


def test_target_norms(hp):
    feats, _, enc_lens = features(hp, WAVS)
    _, full = encoder_states(hp["encoder"], feats, enc_lens)
    valid = torch.arange(feats.shape[1] // 4)[None, :] < enc_lens[:, None]
    outs = {}
    for norm in ("none", "layer", "utterance"):
        te = TargetEncoder(TARGET_LAYERS, norm=norm)
        te.snapshot(hp["encoder"], step=0)
        outs[norm] = te(feats, enc_lens)
    for layer in TARGET_LAYERS:
        raw = full[layer + 1]
        # none: the raw hidden states
        assert torch.allclose(outs["none"][layer], raw, atol=1e-6)
        # layer: each frame standardised over its features
        y = outs["layer"][layer]
        assert torch.allclose(y.mean(-1), torch.zeros_like(y[..., 0]), atol=1e-5)
        var = y.var(-1, unbiased=False)
        assert torch.allclose(var, torch.ones_like(var), atol=1e-3)
        ref = (raw - raw.mean(-1, keepdim=True)) / (
            raw.var(-1, unbiased=False, keepdim=True) + 1e-5
        ).sqrt()
        assert torch.allclose(y, ref, atol=1e-5)
        # utterance: each dimension standardised over the utterance's valid frames
        y = outs["utterance"][layer]
        for b in range(len(WAVS)):
            v = y[b, valid[b]]
            assert torch.allclose(v.mean(0), torch.zeros(v.shape[1]), atol=1e-5)
            assert torch.allclose(v.var(0, unbiased=False), torch.ones(v.shape[1]), atol=1e-3)
            r = raw[b, valid[b]]
            ref = (r - r.mean(0)) / (r.var(0, unbiased=False) + 1e-5).sqrt()
            assert torch.allclose(v, ref, atol=1e-4)
        assert torch.allclose(
            normalize_states(raw, enc_lens, "utterance"), y, atol=1e-5
        )
    with pytest.raises(ValueError, match="target_norm"):
        normalize_states(raw, enc_lens, "frame")


# ------------------------------------------------------------ determinism, Brain


def _targets(hp, target_encoder=None):
    return TargetMaker(hp["quantizer"], quantizer_sources(hp["quantizer"], target_encoder, 4, 0))


def test_latent_targets_are_deterministic(hp):
    te = TargetEncoder(TARGET_LAYERS, norm="utterance")
    te.snapshot(hp["encoder"], step=0)
    feats, _, enc_lens = features(hp, WAVS)
    mask = sample_span_mask(enc_lens, 0.4, 5, generator=torch.Generator().manual_seed(0))
    make = _targets(hp, te)
    first = make(feats, enc_lens, mask, stage=1)
    second = make(feats, enc_lens, mask, stage=1)
    q = hp["quantizer"]
    assert first.shape == (int(mask.sum()), q.n_codebooks - q.sources["mel"][1])
    assert torch.equal(first, second)
    # ... and a second, identically seeded snapshot gives the same codes
    te2 = TargetEncoder(TARGET_LAYERS, norm="utterance")
    te2.snapshot(copy.deepcopy(hp["encoder"]), step=0)
    assert te2.checksum() == te.checksum()
    third = _targets(hp, te2)(feats, enc_lens, mask, stage=2)
    assert torch.equal(first, third)
    # layout: codebooks of target_layers[0], then of target_layers[1], ...
    states = te(feats, enc_lens)
    expected = torch.cat(
        [q(states[l][mask], layer_source(l)) for l in TARGET_LAYERS], 1
    )
    assert torch.equal(first, expected)


def test_stage0_targets_in_brain(hp):
    feats, _, enc_lens = features(hp, WAVS)
    mask = sample_span_mask(enc_lens, 0.4, 5, generator=torch.Generator().manual_seed(1))
    targets = _targets(hp)(feats, enc_lens, mask, stage=0)
    q = hp["quantizer"]
    assert targets.shape == (int(mask.sum()), q.sources["mel"][1])
    # encoder frame t stacks Mel frames 4t .. 4t+3
    b, t = mask.nonzero()[0].tolist()
    frame = feats[b, 4 * t : 4 * t + 4].reshape(1, -1)
    assert torch.equal(targets[:1], q(frame, "mel"))
    again = _targets(hp)(feats, enc_lens, mask, stage=0)
    assert torch.equal(targets, again)
