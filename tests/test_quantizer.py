"""Tests of the random-projection quantizer (latent_rq_brain.targets.quantizer).

Checked here: the fp32 argmax-of-dot-products implementation equals a
brute-force float64 nearest-neighbour reference (also in chunks, also with no
frames), buffers are seeded per (seed, source) and never trained, the
SpeechBrain checkpoint hooks round-trip and refuse mismatched checkpoints, and
autocast does not lower the quantizer's precision.
"""

import re
import zlib

import pytest
import torch

from latent_rq_brain.targets.quantizer import (
    RandomProjectionQuantizer,
    latent_rq_quantizer,
    source_seed,
)

# Codes may legitimately differ from the float64 reference only where the best
# and second-best codewords are within float32 rounding of each other.
TIE_MARGIN = 1e-5


def reference_codes(q, x, name):
    """Brute-force nearest codeword, in float64, one codebook at a time.

    Returns the (M, n) codes and the (M, n, V) squared distances.
    """
    input_dim, n = q.sources[name]
    d = q.codebook_dim
    A = q.projection(name).double().reshape(input_dim, n, d)
    C = q.codebooks(name).double()  # (n, V, d)
    x = x.double()
    codes, dists = [], []
    for i in range(n):
        z = x @ A[:, i, :]  # (M, d)
        z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # explicit squared L2 distance ||c_v - z||^2 for every pair
        diff = C[i][None, :, :] - z[:, None, :]  # (M, V, d)
        dist = diff.square().sum(-1)  # (M, V)
        codes.append(dist.argmin(-1))
        dists.append(dist)
    if x.shape[0] == 0:
        return torch.zeros(0, n, dtype=torch.long), torch.zeros(0, n, C.shape[1])
    return torch.stack(codes, 1), torch.stack(dists, 1)


def assert_matches_reference(q, x, name):
    codes = q(x, name)
    ref, dist = reference_codes(q, x, name)
    n = q.sources[name][1]
    assert codes.shape == (x.shape[0], n)
    assert codes.dtype == torch.long
    if x.shape[0] == 0:
        return codes
    assert int(codes.min()) >= 0 and int(codes.max()) < q.codebook_size
    # 1. the chosen codeword is always a nearest one (up to float32 rounding)
    chosen = dist.gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    best = dist.min(-1).values
    assert float((chosen - best).max()) <= TIE_MARGIN
    # 2. the codes are exactly the reference wherever the nearest is unambiguous
    if dist.shape[-1] == 1:
        clear = torch.ones_like(codes, dtype=torch.bool)
    else:
        top2 = dist.topk(2, dim=-1, largest=False).values
        clear = (top2[..., 1] - top2[..., 0]) > TIE_MARGIN
    assert float(clear.float().mean()) > 0.99  # the check is not vacuous
    assert torch.equal(codes[clear], ref[clear])
    return codes


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: intra-op threads only add overhead (and spin badly when
    the cores are busy, e.g. next to a training run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SOURCES = {
    "mel": (320, 4),
    "layer-1": (32, 3),
    "layer5": (48, 1),
    "layer12": (7, 2),
}


@pytest.mark.parametrize(
    "codebook_size,codebook_dim", [(64, 8), (512, 16), (3, 2), (1, 4)]
)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_matches_bruteforce_reference(name, codebook_size, codebook_dim):
    q = RandomProjectionQuantizer(SOURCES, codebook_size, codebook_dim, seed=11)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}/{codebook_size}".encode()))
    input_dim = SOURCES[name][0]
    for M in (1, 5, 257):
        x = torch.randn(M, input_dim, generator=gen) * 3.0 + 0.5
        assert_matches_reference(q, x, name)
    if codebook_size == 1:
        assert bool((q(x, name) == 0).all())


@pytest.mark.parametrize("chunk_elements", [1, 7, 4 * 64 * 3, 4 * 64 * 10 + 1])
def test_chunked_path_equals_unchunked_and_reference(chunk_elements):
    big = RandomProjectionQuantizer(SOURCES, 64, 8, seed=3)
    small = RandomProjectionQuantizer(SOURCES, 64, 8, seed=3, chunk_elements=chunk_elements)
    assert small.checksum() == big.checksum()
    gen = torch.Generator().manual_seed(chunk_elements)
    for M in (1, 3, 10, 31):  # step sizes 1, 3, 10: M not a multiple of them
        x = torch.randn(M, 320, generator=gen)
        codes = assert_matches_reference(small, x, "mel")
        assert torch.equal(codes, big(x, "mel"))


@pytest.mark.parametrize("chunk_elements", [1, 2**26])
def test_zero_frames(chunk_elements):
    q = RandomProjectionQuantizer(SOURCES, 64, 8, seed=3, chunk_elements=chunk_elements)
    for name, (input_dim, n) in SOURCES.items():
        codes = q(torch.zeros(0, input_dim), name)
        assert codes.shape == (0, n)
        assert codes.dtype == torch.long
        # also the (B, T, F)[mask] path with an all-False mask
        x = torch.randn(2, 5, input_dim)
        codes = q(x[torch.zeros(2, 5, dtype=torch.bool)], name)
        assert codes.shape == (0, n)


def test_codes_are_per_frame():
    """A frame's code does not depend on the other frames it is quantised with."""
    q = RandomProjectionQuantizer(SOURCES, 64, 8, seed=5, chunk_elements=64 * 4 * 3)
    x = torch.randn(50, 320, generator=torch.Generator().manual_seed(0))
    all_codes = q(x, "mel")
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(q(x[perm], "mel"), all_codes[perm])
    for i in (0, 17, 49):
        assert torch.equal(q(x[i : i + 1], "mel"), all_codes[i : i + 1])


def test_input_checks():
    q = RandomProjectionQuantizer(SOURCES, 64, 8, seed=5)
    with pytest.raises(KeyError, match="layer7"):
        q(torch.randn(3, 48), "layer7")
    with pytest.raises(ValueError, match="expects input dim 48, got 47"):
        q(torch.randn(3, 47), "layer5")
    with pytest.raises(ValueError):
        RandomProjectionQuantizer({}, 64, 8, seed=5)
    with pytest.raises(ValueError):
        RandomProjectionQuantizer({"mel": (320, 0)}, 64, 8, seed=5)


# ------------------------------------------------------------ seeding


def test_same_seed_same_buffers_different_seed_different():
    a = RandomProjectionQuantizer(SOURCES, 64, 8, seed=7)
    b = RandomProjectionQuantizer(SOURCES, 64, 8, seed=7)
    c = RandomProjectionQuantizer(SOURCES, 64, 8, seed=8)
    assert a.checksum() == b.checksum()
    assert a.checksum() != c.checksum()
    for name in SOURCES:
        assert torch.equal(a.projection(name), b.projection(name))
        assert torch.equal(a.codebooks(name), b.codebooks(name))
        assert not torch.equal(a.projection(name), c.projection(name))
        assert not torch.equal(a.codebooks(name), c.codebooks(name))
    # the global RNG plays no part
    torch.manual_seed(0)
    d = RandomProjectionQuantizer(SOURCES, 64, 8, seed=7)
    torch.manual_seed(1)
    e = RandomProjectionQuantizer(SOURCES, 64, 8, seed=7)
    assert d.checksum() == e.checksum() == a.checksum()


def test_sources_are_seeded_independently():
    """Each source's buffers depend on (seed, name) only, not on the others."""
    alone = RandomProjectionQuantizer({"layer5": (48, 1)}, 64, 8, seed=7)
    full = RandomProjectionQuantizer(SOURCES, 64, 8, seed=7)
    assert torch.equal(alone.projection("layer5"), full.projection("layer5"))
    assert torch.equal(alone.codebooks("layer5"), full.codebooks("layer5"))
    # ... and two sources of equal shape get different buffers
    twin = RandomProjectionQuantizer({"a": (16, 2), "b": (16, 2)}, 64, 8, seed=7)
    assert not torch.equal(twin.projection("a"), twin.projection("b"))
    assert not torch.equal(twin.codebooks("a"), twin.codebooks("b"))
    assert source_seed(7, "a") != source_seed(7, "b")
    assert source_seed(7, "a") != source_seed(8, "a")


def test_latent_rq_quantizer_buffers_do_not_depend_on_other_layers():
    kw = dict(
        n_codebooks=6, codebook_size=64, codebook_dim=8, mel_dim=320,
        latent_dim=32, num_layers=9, seed=1000,
    )
    q56 = latent_rq_quantizer(target_layers=[5, 6], **kw)
    q57 = latent_rq_quantizer(target_layers=[5, 7], **kw)
    q123 = latent_rq_quantizer(target_layers=[1, 2, 3], **kw)
    assert q56.sources["layer5"] == q57.sources["layer5"] == (32, 3)
    assert torch.equal(q56.projection("layer5"), q57.projection("layer5"))
    assert torch.equal(q56.codebooks("layer5"), q57.codebooks("layer5"))
    assert not torch.equal(q56.codebooks("layer6"), q57.codebooks("layer7"))
    # the stage-0 (Mel) quantizer is the same whatever the target layers
    for other in (q57, q123):
        assert torch.equal(q56.projection("mel"), other.projection("mel"))
        assert torch.equal(q56.codebooks("mel"), other.codebooks("mel"))
    x = torch.randn(20, 320, generator=torch.Generator().manual_seed(0))
    assert torch.equal(q56(x, "mel"), q123(x, "mel"))
    # and a seed change changes it
    q_other_seed = latent_rq_quantizer(target_layers=[5, 6], **{**kw, "seed": 1001})
    assert not torch.equal(q56.codebooks("mel"), q_other_seed.codebooks("mel"))
    assert q56.n_codebooks == 12


def test_latent_rq_quantizer_rejects_bad_layers():
    kw = dict(
        n_codebooks=6, codebook_size=64, codebook_dim=8, mel_dim=320,
        latent_dim=32, num_layers=4, seed=1,
    )
    with pytest.raises(ValueError, match="out of range"):
        latent_rq_quantizer(target_layers=[1, 4], **kw)
    with pytest.raises(ValueError, match="out of range"):
        latent_rq_quantizer(target_layers=[-2], **kw)
    with pytest.raises(ValueError, match="duplicates"):
        latent_rq_quantizer(target_layers=[1, 1], **kw)
    with pytest.raises(ValueError, match="empty"):
        latent_rq_quantizer(target_layers=[], **kw)
    with pytest.raises(ValueError, match="not divisible"):
        latent_rq_quantizer(target_layers=[0, 1, 2, 3], **kw)


# ------------------------------------------------------------ frozen buffers


def test_buffers_never_train():
    q = RandomProjectionQuantizer(SOURCES, 64, 8, seed=2)
    assert list(q.parameters()) == []
    buffers = dict(q.named_buffers())
    assert len(buffers) == 2 * len(SOURCES)
    for name, buf in buffers.items():
        assert not buf.requires_grad, name
    # they are in the state dict (by checkpoint name), so they are checkpointed
    ptrs = sorted(b.data_ptr() for b in q.state_dict().values())
    assert ptrs == sorted(b.data_ptr() for b in buffers.values())
    assert sorted(q.state_dict()) == sorted(
        f"{part}_{name.replace('-', 'm')}" for name in SOURCES for part in ("proj", "codebooks"))
    for name, (input_dim, n) in SOURCES.items():
        cb = q.codebooks(name)
        assert cb.shape == (n, 64, 8)
        assert torch.allclose(cb.norm(dim=-1), torch.ones(n, 64), atol=1e-6)
        assert q.projection(name).shape == (input_dim, n * 8)
    # an optimiser over a model containing the quantizer cannot reach it
    model = torch.nn.ModuleDict({"q": q, "lin": torch.nn.Linear(320, 4)})
    before = q.checksum()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x = torch.randn(6, 320, requires_grad=True)
    codes = q(x, "mel")
    assert not codes.requires_grad
    loss = model["lin"](x).sum() + q.project(x, "mel").sum()
    loss.backward()
    opt.step()
    assert q.checksum() == before
    assert all(b.grad is None for b in q.buffers())


def test_projection_is_xavier_normal_scale():
    q = RandomProjectionQuantizer({"mel": (320, 8)}, 64, 16, seed=2)
    std = float(q.projection("mel").std())
    expected = (2.0 / (320 + 16)) ** 0.5
    assert abs(std - expected) / expected < 0.05


# ------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip(tmp_path):
    q = RandomProjectionQuantizer(SOURCES, 64, 8, seed=4)
    path = tmp_path / "quantizer.ckpt"
    q._save(path)
    other = RandomProjectionQuantizer(SOURCES, 64, 8, seed=4)
    for buf in other.buffers():
        buf.zero_()
    assert other.checksum() != q.checksum()
    other._load(path)
    assert other.checksum() == q.checksum()
    x = torch.randn(9, 320)
    assert torch.equal(other(x, "mel"), q(x, "mel"))


def test_checkpoint_round_trip_through_speechbrain_checkpointer(tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer

    q = RandomProjectionQuantizer(SOURCES, 64, 8, seed=4)
    Checkpointer(tmp_path, {"quantizer": q}).save_checkpoint()
    other = RandomProjectionQuantizer(SOURCES, 64, 8, seed=4)
    for buf in other.buffers():
        buf.fill_(0.5)
    ckpt = Checkpointer(tmp_path, {"quantizer": other}).recover_if_possible()
    assert ckpt is not None
    assert other.checksum() == q.checksum()


def _kw(**over):
    kw = dict(
        n_codebooks=6, codebook_size=64, codebook_dim=8, mel_dim=320,
        latent_dim=32, num_layers=9, seed=1000, target_layers=[5, 6],
    )
    kw.update(over)
    return kw


@pytest.mark.parametrize(
    "other,word",
    [
        (dict(target_layers=[5, 7]), "sources"),
        (dict(target_layers=[5, 6, 7]), "sources"),
        (dict(n_codebooks=4), "sources"),
        (dict(latent_dim=48), "sources"),
        (dict(seed=1001), "seed"),
        (dict(codebook_size=32), "codebook_size"),
        (dict(codebook_dim=4), "codebook_dim"),
    ],
)
def test_loading_a_mismatched_checkpoint_raises(tmp_path, other, word):
    saved = latent_rq_quantizer(**_kw())
    path = tmp_path / "quantizer.ckpt"
    saved._save(path)
    q = latent_rq_quantizer(**_kw(**other))
    before = q.checksum()
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        q._load(path)
    assert word in str(err.value)
    assert q.checksum() == before  # nothing was half-loaded


# ------------------------------------------------------------ precision


def test_autocast_bf16_keeps_fp32():
    q = RandomProjectionQuantizer(SOURCES, 512, 16, seed=9)
    gen = torch.Generator().manual_seed(3)
    for name, (input_dim, _) in SOURCES.items():
        x = torch.randn(300, input_dim, generator=gen)
        plain = q(x, name)
        plain_z = q.project(x, name)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = q(x, name)
            auto_z = q.project(x, name)
            # sanity: autocast really is active for ordinary matmuls here
            assert (x @ q.projection(name)).dtype == torch.bfloat16
        assert auto_z.dtype == torch.float32
        assert torch.equal(auto_z, plain_z)
        assert torch.equal(auto, plain)
        assert_matches_reference(q, x, name)


def test_quantizer_runs_full_fp32_and_restores_matmul_precision():
    """SpeechBrain leaves TF32 on for CUDA; the quantizer must not use it, nor
    change the setting for the rest of the step."""
    from latent_rq_brain.targets.quantizer import RandomProjectionQuantizer, full_fp32_matmul

    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        with full_fp32_matmul():
            assert torch.get_float32_matmul_precision() == "highest"
        q = RandomProjectionQuantizer({"mel": (8, 2)}, 16, 4, seed=0)
        q(torch.randn(5, 8), "mel")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(previous)
