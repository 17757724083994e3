"""Random-projection quantizers: the frozen target makers of BEST-RQ and Latent-RQ.

A *source* is one input the targets are computed from: the stacked Mel frames
(``"mel"``, stage 0) or one layer of the frozen target encoder (``"layer5"``,
stages >= 1; names from :mod:`latent_rq_brain.layers`). Each source owns ``n`` codebooks, each with its own random
projection ``A`` (input_dim x codebook_dim, Xavier-normal) and its own codebook
of ``V`` unit-norm codewords. The target of a frame ``x`` for one codebook is

    y = argmin_v || c_v - normalize(A x) ||  =  argmax_v  <c_v, normalize(A x)>

because both sides have unit norm. That is one fp32 matmul per codebook, with no
(B, V, T, D) broadcast. All buffers come from a generator seeded with
``(seed, source name)``, so every rank (and every later run with the same seed)
builds the same quantizer; they are frozen, saved in checkpoints and never
trained.

Authors
 * latent-rq developers 2026
"""

import contextlib
import hashlib
import zlib

import torch

from latent_rq_brain.layers import MEL_SOURCE, check_target_layers, layer_source
from latent_rq_brain.safe_load import load_weights
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)


@contextlib.contextmanager
def full_fp32_matmul():
    """IEEE fp32 matmuls inside (no TF32, which SpeechBrain switches on for
    CUDA): with TF32 about 0.14% of the codes differ from a float64 reference
    on an H100 (results/performance_h100.md)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def source_seed(seed, name):
    """Stable 63-bit seed for one source, independent of Python's hash salt.

    Example
    -------
    >>> source_seed(1, "mel") == source_seed(1, "mel")
    True
    >>> source_seed(1, "mel") != source_seed(1, "layer5")
    True
    """
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


@register_checkpoint_hooks
class RandomProjectionQuantizer(torch.nn.Module):
    """N frozen random-projection codebooks, grouped by input source.

    Arguments
    ---------
    sources : dict
        ``{source_name: (input_dim, n_codebooks)}``, e.g.
        ``{"mel": (320, 18), "layer5": (512, 3), ...}``.
    codebook_size : int
        Codewords per codebook (V; paper 4096).
    codebook_dim : int
        Dimension of a codeword (paper 16).
    seed : int
        Seed of every projection and codebook.
    chunk_elements : int, optional
        Upper bound on the elements of one (n, frames, V) score tensor; larger
        inputs are processed in chunks of frames (same result). Default: 2**20
        on CPU (4 MiB chunks: at 16k frames x 18 x 4096 on the 2-core CI-like
        CPU, 1.2 s against 1.6-1.9 s for 2**22, 2.0 s for 2**18 and 2.3x
        slower for 2**26), 2**25 on GPU (276 MiB at 16k frames, 0.7 ms slower
        than 2**27 on an H100).

    Example
    -------
    >>> q = RandomProjectionQuantizer({"mel": (320, 4)}, 64, 8, seed=3)
    >>> codes = q(torch.randn(10, 320), "mel")
    >>> codes.shape, codes.dtype, int(codes.max()) < 64
    (torch.Size([10, 4]), torch.int64, True)
    """

    def __init__(
        self, sources, codebook_size, codebook_dim, seed, chunk_elements=None
    ):
        super().__init__()
        if not sources:
            raise ValueError("RandomProjectionQuantizer needs at least one source")
        self.sources = {k: (int(v[0]), int(v[1])) for k, v in sources.items()}
        self.codebook_size = int(codebook_size)
        self.codebook_dim = int(codebook_dim)
        self.seed = int(seed)
        self.chunk_elements = chunk_elements
        for name, (input_dim, n) in self.sources.items():
            if n < 1:
                raise ValueError(f"source {name!r} needs >= 1 codebook, got {n}")
            gen = torch.Generator().manual_seed(source_seed(self.seed, name))
            # Xavier-normal projection per codebook, as in BEST-RQ.
            std = (2.0 / (input_dim + self.codebook_dim)) ** 0.5
            proj = torch.randn(n, input_dim, self.codebook_dim, generator=gen)
            proj = proj * std
            cb = torch.randn(n, self.codebook_size, self.codebook_dim, generator=gen)
            cb = torch.nn.functional.normalize(cb, dim=-1)
            # (input_dim, n * d): one matmul projects all codebooks of a source.
            self.register_buffer(
                f"proj_{self._key(name)}",
                proj.permute(1, 0, 2).reshape(input_dim, n * self.codebook_dim),
            )
            self.register_buffer(f"codebooks_{self._key(name)}", cb)
        self.requires_grad_(False)

    @staticmethod
    def _key(name):
        return name.replace("-", "m")

    @property
    def n_codebooks(self):
        """Total number of codebooks over all sources."""
        return sum(n for _, n in self.sources.values())

    def projection(self, name):
        """(input_dim, n * codebook_dim) projection of source ``name``."""
        return getattr(self, f"proj_{self._key(name)}")

    def codebooks(self, name):
        """(n, V, codebook_dim) unit-norm codebooks of source ``name``."""
        return getattr(self, f"codebooks_{self._key(name)}")

    def project(self, x, name):
        """Projects frames ``x`` (M, input_dim) to unit vectors (M, n, d), fp32."""
        if name not in self.sources:
            raise KeyError(
                f"quantizer has no source {name!r}; it has {sorted(self.sources)}"
            )
        input_dim, n = self.sources[name]
        if x.shape[-1] != input_dim:
            raise ValueError(
                f"source {name!r} expects input dim {input_dim}, got {x.shape[-1]}"
            )
        with torch.autocast(x.device.type, enabled=False), full_fp32_matmul():
            z = x.float() @ self.projection(name).float()
        z = z.view(x.shape[0], n, self.codebook_dim)
        return torch.nn.functional.normalize(z, dim=-1)

    @torch.no_grad()
    def forward(self, x, name):
        """Nearest codeword of every codebook of ``name`` for frames ``x``.

        Arguments
        ---------
        x : torch.Tensor
            (M, input_dim) frames (only the masked ones, in practice).
        name : str
            The source these frames come from.

        Returns
        -------
        torch.Tensor
            (M, n) int64 codes.
        """
        z = self.project(x, name)  # (M, n, d)
        cb = self.codebooks(name).float()  # (n, V, d)
        n = cb.shape[0]
        budget = self.chunk_elements or (2**25 if x.is_cuda else 2**20)
        step = max(1, int(budget) // (n * self.codebook_size))
        out = []
        with torch.autocast(x.device.type, enabled=False), full_fp32_matmul():
            for s in range(0, z.shape[0], step):
                zc = z[s : s + step].transpose(0, 1)  # (n, m, d)
                scores = torch.bmm(zc, cb.transpose(1, 2))  # (n, m, V)
                out.append(scores.argmax(-1).transpose(0, 1))
        if not out:
            return torch.zeros(0, n, dtype=torch.long, device=x.device)
        return torch.cat(out, 0)

    def checksum(self):
        """SHA-256 of every buffer (names, shapes and bytes), as a hex string."""
        h = hashlib.sha256()
        for name, buf in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(buf.shape)).encode())
            h.update(buf.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def config(self):
        """What a checkpoint must match to be loaded into this quantizer."""
        return {
            "sources": {k: list(v) for k, v in self.sources.items()},
            "codebook_size": self.codebook_size,
            "codebook_dim": self.codebook_dim,
            "seed": self.seed,
        }

    @mark_as_saver
    def _save(self, path):
        torch.save({"config": self.config(), "state": self.state_dict()}, path)

    @classmethod
    def from_file(cls, path):
        """The quantizer saved in a checkpoint's ``quantizer.ckpt``."""
        saved = load_weights(path)
        c = saved["config"]
        sources = {k: tuple(v) for k, v in c["sources"].items()}
        quantizer = cls(sources, c["codebook_size"], c["codebook_dim"], c["seed"])
        quantizer.load_state_dict(saved["state"], strict=True)
        return quantizer

    def check_same(self, path):
        """Raises unless every buffer saved in ``path`` that this quantizer
        also has is equal to its own (branching: comparable targets)."""
        saved = load_weights(path)
        mine = self.state_dict()
        for key, value in saved["state"].items():
            if key in mine and not torch.equal(mine[key].cpu(), value):
                raise ValueError(
                    f"quantizer buffer {key} in {path} differs from this config's "
                    "(different seed or quantizer settings): targets would not "
                    "be comparable"
                )

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        del end_of_epoch
        saved = load_weights(path)
        mine = self.config()
        theirs = saved["config"]
        for key in ("codebook_size", "codebook_dim", "seed"):
            if theirs[key] != mine[key]:
                raise ValueError(
                    f"checkpoint {path} holds a quantizer with {key}="
                    f"{theirs[key]}, but the config asks {key}={mine[key]}"
                )
        missing = {
            k: v for k, v in mine["sources"].items() if theirs["sources"].get(k) != v
        }
        if missing:
            raise ValueError(
                f"checkpoint {path} holds quantizer sources {theirs['sources']}, "
                f"which lack or differ from {missing} asked by the config "
                "(target_layers, n_codebooks or model size changed?)"
            )
        state = {k: v for k, v in saved["state"].items() if k in self.state_dict()}
        self.load_state_dict(state, strict=True)


def latent_rq_quantizer(
    n_codebooks,
    codebook_size,
    codebook_dim,
    mel_dim,
    latent_dim,
    target_layers,
    num_layers,
    seed,
):
    """The quantizer of a Latent-RQ run: N codebooks on the stacked Mel frames
    (stage 0) and N / K codebooks on each of the K target layers (stages >= 1).

    Example
    -------
    >>> q = latent_rq_quantizer(6, 32, 4, 320, 64, [5, 6, 7], 17, seed=1)
    >>> q.sources
    {'mel': (320, 6), 'layer5': (64, 2), 'layer6': (64, 2), 'layer7': (64, 2)}
    >>> latent_rq_quantizer(18, 32, 4, 320, 64, [1, 2, 3, 4], 17, seed=1)
    Traceback (most recent call last):
     ...
    ValueError: n_codebooks=18 is not divisible by the 4 target_layers [1, 2, 3, 4]: each layer needs the same number of codebooks (e.g. n_codebooks=16 or 20, or 3 or 6 layers)
    """
    layers = check_target_layers(target_layers, num_layers)
    K = len(layers)
    if n_codebooks % K:
        lo, hi = n_codebooks - n_codebooks % K, n_codebooks + K - n_codebooks % K
        counts = " or ".join(str(c) for c in sorted({lo, hi}) if c > 0)
        divisors = [k for k in range(1, n_codebooks + 1) if n_codebooks % k == 0]
        near = sorted(divisors, key=lambda k: (abs(k - K), -k))[:2]
        raise ValueError(
            f"n_codebooks={n_codebooks} is not divisible by the {K} target_layers "
            f"{layers}: each layer needs the same number of codebooks (e.g. "
            f"n_codebooks={counts}, or {' or '.join(map(str, sorted(near)))} layers)"
        )
    sources = {MEL_SOURCE: (mel_dim, n_codebooks)}
    for layer in layers:
        sources[layer_source(layer)] = (latent_dim, n_codebooks // K)
    return RandomProjectionQuantizer(sources, codebook_size, codebook_dim, seed)
