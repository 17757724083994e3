"""Random-projection quantizers: the frozen target makers of BEST-RQ and Latent-RQ.

A *source* is one input the targets are computed from: the stacked Mel frames
(``"mel"``, stage 0) or one layer of the frozen target encoder (``"layer5"``,
stages >= 1; names from :mod:`latent_rq_brain.model.layers`). Each source owns ``n`` codebooks, each with its own random
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

import collections
import contextlib
import hashlib
import zlib

import torch

from latent_rq_brain.model.layers import (
    MEL_SOURCE,
    check_target_layers,
    hidden_state_index,
    layer_source,
)
from latent_rq_brain.sharing.safe_load import load_weights
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)


@contextlib.contextmanager
def full_fp32_matmul():
    """IEEE fp32 matmuls inside (no TF32, which SpeechBrain switches on for
    CUDA), which changes some codes against a float64 reference
    (results/performance.md)."""
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


class Projection:
    """How a :class:`TargetSource` projects its frames (one kind of the
    target-source contract). ``fits``: whether :meth:`fit` changes anything;
    ``fit(source, x)`` sets the source's ``proj`` (and ``mean``) buffers from a
    sample ``x`` (M, input_dim) float64 of its frames; ``check(source)`` refuses
    settings the kind cannot work with."""

    name = None
    fits = False

    def check(self, source):
        """Raises if ``source``'s settings do not suit this kind."""

    def fit(self, source, x):
        """Fits ``source``'s projection on frames ``x`` (no-op by default)."""


class RandomProjection(Projection):
    """The paper's Xavier-normal random projection, drawn once, never fitted."""

    name = "random"


class PCAProjection(Projection):
    """PCA whitening fitted on a sample of the source's frames (RWTH's
    refinement): ``mean`` and a projection onto the top ``codebook_dim``
    principal components (float64 eigendecomposition, signs fixed so that each
    component's largest entry is positive), the same for every codebook of the
    source (their random codebooks differ)."""

    name = "pca"
    fits = True

    def check(self, source):
        if source.codebook_dim > source.input_dim:
            raise ValueError(
                f"target_projection: pca keeps codebook_dim={source.codebook_dim} components, "
                f"more than the source's input dim {source.input_dim}"
            )

    def fit(self, source, x):
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / (x.shape[0] - 1)
        vals, vecs = torch.linalg.eigh(cov)  # ascending
        vals = vals.flip(0)[: source.codebook_dim].clamp_min(1e-8)
        vecs = vecs.flip(1)[:, : source.codebook_dim]
        sign = torch.sign(vecs.gather(0, vecs.abs().argmax(0, keepdim=True)))
        w = vecs * sign / vals.sqrt()  # (input_dim, d): whitening
        source.mean.copy_(mean.float())
        source.proj.copy_(w.repeat(1, source.n).float())


class Codewords:
    """Where a :class:`TargetSource`'s codewords come from (one kind of the
    target-source contract). ``fits`` and ``fit(source, x, seed)`` as for
    :class:`Projection`; ``fit`` runs after the projection's."""

    name = None
    fits = False

    def check(self, source):
        """Raises if ``source``'s settings do not suit this kind."""

    def fit(self, source, x, seed):
        """Fits ``source``'s codebooks on frames ``x`` (no-op by default)."""


class RandomCodewords(Codewords):
    """The paper's random unit-norm codewords, drawn once, never fitted."""

    name = "random"


class KMeansCodewords(Codewords):
    """Each codebook becomes ``codebook_size`` spherical k-means centroids
    (scikit-learn, seeded with ``seed`` and the codebook's index) of the
    sample's projected unit vectors (HuBERT-like), so a code is the nearest
    centroid. Deterministic for a given sample and seed."""

    name = "kmeans"
    fits = True

    def fit(self, source, x, seed):
        from sklearn.cluster import KMeans

        z = source.project(x.float().to(source.proj.device)).cpu().double()  # (M, n, d)
        for i in range(source.n):
            km = KMeans(source.codebook_size, n_init=1, max_iter=100,
                        random_state=(int(seed) * 1009 + i) % (2**31 - 1))
            km.fit(z[:, i].numpy())
            c = torch.from_numpy(km.cluster_centers_).float()
            source.codebooks[i].copy_(torch.nn.functional.normalize(c, dim=-1))


#: How a source projects its frames, by kind name: the paper's random matrix, or
#: PCA whitening fitted on a sample of the source's frames (RWTH's refinement).
PROJECTIONS = {kind.name: kind for kind in (RandomProjection, PCAProjection)}
#: Where a source's codewords come from, by kind name: random unit vectors (the
#: paper), or spherical k-means centroids of a sample of projected frames.
CODEBOOKS = {kind.name: kind for kind in (RandomCodewords, KMeansCodewords)}


def _kind(value, kinds, setting):
    """The kind object of ``value`` (a name of ``kinds``, or a kind object)."""
    if isinstance(value, str) and value in kinds:
        return kinds[value]()
    base = Projection if setting == "target_projection" else Codewords
    if isinstance(value, base):
        return value
    raise ValueError(f"{setting} must be one of {tuple(kinds)}, got {value!r}")


class TargetSource(torch.nn.Module):
    """One source's ``n`` codebooks: frames (M, input_dim) -> codes (M, n).

    The contract of every kind of target source:

    * ``forward(x, count=None)``: the nearest codeword of each of the first
      ``count`` (default all) codebooks, (M, count) int64;
    * ``needs_fit`` and ``fit(x, seed)``: a data-fitted source is fitted on a
      sample of its frames at a stage transition (a no-op for the paper's
      random source); ``fitted`` says whether it has been;
    * ``config()``: its settings; :meth:`RandomProjectionQuantizer.state`:
      its buffers by checkpoint name (checksummed, saved and restored).

    ``projection="random", codebooks="random"`` is the paper's
    random-projection quantizer, with buffers ``proj`` (input_dim, n * d) and
    ``codebooks`` (n, V, d) drawn from ``generator`` exactly as BEST-RQ does.
    Any fitted kind adds a ``mean`` (input_dim,) subtracted before the
    projection and a ``fitted`` flag; until fitted it codes like the random one.

    Example
    -------
    >>> gen = torch.Generator().manual_seed(0)
    >>> src = TargetSource(8, 2, 16, 4, gen, projection="pca", codebooks="kmeans")
    >>> src.needs_fit, bool(src.fitted)
    (True, False)
    >>> src.fit(torch.randn(500, 8), seed=1)
    >>> bool(src.fitted), src(torch.randn(3, 8)).shape
    (True, torch.Size([3, 2]))
    """

    def __init__(self, input_dim, n, codebook_size, codebook_dim, generator,
                 projection="random", codebooks="random", chunk_elements=None, name="source"):
        super().__init__()
        if n < 1:
            raise ValueError(f"a target source needs >= 1 codebook, got {n}")
        self.input_dim, self.n = int(input_dim), int(n)
        self.codebook_size, self.codebook_dim = int(codebook_size), int(codebook_dim)
        self.projection_fit = _kind(projection, PROJECTIONS, "target_projection")
        self.codebook_fit = _kind(codebooks, CODEBOOKS, "target_codebooks")
        self.projection_kind, self.codebook_kind = self.projection_fit.name, self.codebook_fit.name
        self.name = name
        #: fitted on data (anything but the paper's random source)
        self.needs_fit = self.projection_fit.fits or self.codebook_fit.fits
        self.projection_fit.check(self)
        self.codebook_fit.check(self)
        self.chunk_elements = chunk_elements
        # Xavier-normal projection per codebook, as in BEST-RQ.
        std = (2.0 / (self.input_dim + self.codebook_dim)) ** 0.5
        proj = torch.randn(n, input_dim, codebook_dim, generator=generator) * std
        cb = torch.randn(n, codebook_size, codebook_dim, generator=generator)
        # (input_dim, n * d): one matmul projects all codebooks of a source.
        self.register_buffer("proj", proj.permute(1, 0, 2).reshape(input_dim, n * codebook_dim))
        self.register_buffer("codebooks", torch.nn.functional.normalize(cb, dim=-1))
        if self.needs_fit:
            self.register_buffer("mean", torch.zeros(input_dim))
            self.register_buffer("fitted", torch.tensor(False))
        self.requires_grad_(False)

    def config(self):
        """The kind of this source (empty for the paper's random source)."""
        if not self.needs_fit:
            return {}
        return {"projection": self.projection_kind, "codebooks": self.codebook_kind}

    def project(self, x, count=None):
        """Frames (M, input_dim) -> unit vectors (M, count, d), fp32."""
        count = self.n if count is None else int(count)
        if x.shape[-1] != self.input_dim:
            raise ValueError(
                f"source {self.name!r} expects input dim {self.input_dim}, got {x.shape[-1]}"
            )
        with torch.autocast(x.device.type, enabled=False), full_fp32_matmul():
            x = x.float()
            if self.needs_fit:
                x = x - self.mean.float()
            z = x @ self.proj[:, : count * self.codebook_dim].float()
        z = z.view(x.shape[0], count, self.codebook_dim)
        return torch.nn.functional.normalize(z, dim=-1)

    @torch.no_grad()
    def forward(self, x, count=None):
        """(M, count) int64 nearest codewords (by cosine) of frames ``x``."""
        z = self.project(x, count)  # (M, n, d)
        n = z.shape[1]
        cb = self.codebooks[:n].float()  # (n, V, d)
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

    @torch.no_grad()
    def fit(self, x, seed):
        """Fits the data-fitted parts on a sample ``x`` (M, input_dim) of frames.

        The projection kind fits first (:class:`PCAProjection`), then the
        codeword kind on the projected sample (:class:`KMeansCodewords`).
        """
        if not self.needs_fit:
            return
        x = x.detach().to("cpu", torch.float64)
        if x.shape[0] < max(self.codebook_size, self.codebook_dim + 1):
            raise ValueError(
                f"fitting a target source needs at least {max(self.codebook_size, self.codebook_dim + 1)} "
                f"frames (codebook_size), got {x.shape[0]}: raise fit_frames or use more data"
            )
        self.projection_fit.fit(self, x)
        self.codebook_fit.fit(self, x, seed)
        self.fitted.fill_(True)


#: Generous upper bounds of a quantizer's sizes read from a received
#: checkpoint (the paper: 16 codebooks of 8192 codes of dimension 16).
QUANTIZER_BOUNDS = {"codebook_size": 2**20, "codebook_dim": 4096, "input_dim": 2**16,
                    "codebooks": 1024}
#: Bound of a quantizer's projection and codebook elements, all sources together.
MAX_QUANTIZER_ELEMENTS = 2**30


def check_quantizer_sizes(config, path="quantizer.ckpt"):
    """Refuses, naming the setting, file and bound, a saved quantizer
    ``config`` whose sizes are not positive integers within
    :data:`QUANTIZER_BOUNDS` (and :data:`MAX_QUANTIZER_ELEMENTS` in all),
    before anything is allocated.

    Example
    -------
    >>> check_quantizer_sizes({"codebook_size": 8192, "codebook_dim": 16, "sources": {"mel": [320, 16]}})
    >>> check_quantizer_sizes({"codebook_size": 10**9, "codebook_dim": 16, "sources": {}}, "q.ckpt")
    Traceback (most recent call last):
    ...
    ValueError: q.ckpt: quantizer setting codebook_size: 1000000000 must be an integer in [1, 1048576] (quantizer.QUANTIZER_BOUNDS): refused before allocating anything
    """
    def bounded(name, value, bound):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
            raise ValueError(
                f"{path}: quantizer setting {name}: {value!r} must be an integer in "
                f"[1, {bound}] (quantizer.QUANTIZER_BOUNDS): refused before allocating anything"
            )
        return value

    if not isinstance(config, dict) or not isinstance(config.get("sources"), dict):
        raise ValueError(f"{path}: not a quantizer of this project (no sources in its config)")
    size = bounded("codebook_size", config.get("codebook_size"), QUANTIZER_BOUNDS["codebook_size"])
    dim = bounded("codebook_dim", config.get("codebook_dim"), QUANTIZER_BOUNDS["codebook_dim"])
    total = 0
    for name, value in config["sources"].items():
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"{path}: quantizer source {name!r}: {value!r} is not [input_dim, codebooks]")
        input_dim = bounded(f"sources.{name} input_dim", value[0], QUANTIZER_BOUNDS["input_dim"])
        n = bounded(f"sources.{name} codebooks", value[1], QUANTIZER_BOUNDS["codebooks"])
        total += n * dim * (input_dim + size)
    if total > MAX_QUANTIZER_ELEMENTS:
        raise ValueError(
            f"{path}: the quantizer's sources would hold {total:.2e} values, above the "
            f"bound {MAX_QUANTIZER_ELEMENTS:.2e} (quantizer.MAX_QUANTIZER_ELEMENTS): "
            "refused before allocating anything"
        )


@register_checkpoint_hooks
class RandomProjectionQuantizer(torch.nn.Module):
    """N frozen codebooks, grouped by input source (one :class:`TargetSource` each).

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
        on CPU, 2**25 on GPU (results/performance.md).
    kinds : dict, optional
        ``{source_name: {"projection": ..., "codebooks": ...}}`` for data-fitted
        sources (:class:`TargetSource`); every other source is the paper's
        random-projection quantizer.

    Example
    -------
    >>> q = RandomProjectionQuantizer({"mel": (320, 4)}, 64, 8, seed=3)
    >>> codes = q(torch.randn(10, 320), "mel")
    >>> codes.shape, codes.dtype, int(codes.max()) < 64
    (torch.Size([10, 4]), torch.int64, True)
    """

    def __init__(
        self, sources, codebook_size, codebook_dim, seed, chunk_elements=None, kinds=None
    ):
        super().__init__()
        if not sources:
            raise ValueError("RandomProjectionQuantizer needs at least one source")
        self.sources = {k: (int(v[0]), int(v[1])) for k, v in sources.items()}
        self.codebook_size = int(codebook_size)
        self.codebook_dim = int(codebook_dim)
        self.seed = int(seed)
        self.chunk_elements = chunk_elements
        kinds = {k: dict(v) for k, v in (kinds or {}).items() if v}
        unknown = sorted(set(kinds) - set(self.sources))
        if unknown:
            raise ValueError(f"kinds name sources {unknown} the quantizer does not have")
        self.parts = torch.nn.ModuleDict()
        for name, (input_dim, n) in self.sources.items():
            if n < 1:
                raise ValueError(f"source {name!r} needs >= 1 codebook, got {n}")
            gen = torch.Generator().manual_seed(source_seed(self.seed, name))
            self.parts[self._key(name)] = TargetSource(
                input_dim, n, self.codebook_size, self.codebook_dim, gen,
                chunk_elements=chunk_elements, name=name, **kinds.get(name, {}),
            )
        self.requires_grad_(False)

    @staticmethod
    def _key(name):
        return name.replace("-", "m")

    def source(self, name):
        """The :class:`TargetSource` of ``name``."""
        if name not in self.sources:
            raise KeyError(
                f"quantizer has no source {name!r}; it has {sorted(self.sources)}"
            )
        return self.parts[self._key(name)]

    @property
    def n_codebooks(self):
        """Total number of codebooks over all sources."""
        return sum(n for _, n in self.sources.values())

    def projection(self, name):
        """(input_dim, n * codebook_dim) projection of source ``name``."""
        return self.source(name).proj

    def codebooks(self, name):
        """(n, V, codebook_dim) unit-norm codebooks of source ``name``."""
        return self.source(name).codebooks

    def project(self, x, name):
        """Projects frames ``x`` (M, input_dim) to unit vectors (M, n, d), fp32."""
        return self.source(name).project(x)

    @torch.no_grad()
    def forward(self, x, name, count=None):
        """Nearest codeword of every codebook of ``name`` for frames ``x``.

        Arguments
        ---------
        x : torch.Tensor
            (M, input_dim) frames (only the masked ones, in practice).
        name : str
            The source these frames come from.
        count : int, optional
            Only the first ``count`` codebooks of the source (anchors).

        Returns
        -------
        torch.Tensor
            (M, n) int64 codes.
        """
        return self.source(name)(x, count)

    def needs_fit(self, name):
        """Whether source ``name`` is data-fitted and not fitted yet."""
        src = self.source(name)
        return src.needs_fit and not bool(src.fitted)

    def fit(self, name, x, seed=None):
        """Fits source ``name`` on frames ``x`` (:meth:`TargetSource.fit`)."""
        self.source(name).fit(x, self.seed if seed is None else seed)

    def unfit(self, names):
        """Marks data-fitted sources as not fitted (a new target encoder)."""
        for name in names:
            src = self.source(name)
            if src.needs_fit:
                src.fitted.fill_(False)

    def state(self):
        """Every buffer by its checkpoint name (``proj_<source>``,
        ``codebooks_<source>``, and ``mean_`` / ``fitted_`` of fitted sources),
        in source order: what is checksummed, saved and loaded."""
        out = collections.OrderedDict()
        for name in self.sources:
            src, key = self.source(name), self._key(name)
            out[f"proj_{key}"] = src.proj.detach()
            out[f"codebooks_{key}"] = src.codebooks.detach()
            if src.needs_fit:
                out[f"mean_{key}"] = src.mean.detach()
                out[f"fitted_{key}"] = src.fitted.detach()
        out._metadata = collections.OrderedDict({"": {"version": 1}})
        return out

    def state_dict(self, *args, **kwargs):
        """:meth:`state`: the buffers by checkpoint name (not by sub-module)."""
        return self.state()

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """:meth:`load_state` (every buffer, by checkpoint name)."""
        self.load_state(state_dict)

    def load_state(self, state):
        """Copies ``state`` (names of :meth:`state`, all of them) into the buffers."""
        mine = self.state()
        if set(state) != set(mine):
            raise ValueError(
                f"quantizer state has buffers {sorted(state)}, expected {sorted(mine)}"
            )
        for key, value in state.items():
            if value.shape != mine[key].shape:
                raise ValueError(
                    f"quantizer buffer {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(mine[key].shape)}"
                )
            mine[key].copy_(value)

    def checksum(self):
        """SHA-256 of every buffer (names, shapes and bytes), as a hex string."""
        h = hashlib.sha256()
        for name, buf in sorted(self.state().items()):
            h.update(name.encode())
            h.update(str(tuple(buf.shape)).encode())
            h.update(buf.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def config(self):
        """What a checkpoint must match to be loaded into this quantizer."""
        out = {
            "sources": {k: list(v) for k, v in self.sources.items()},
            "codebook_size": self.codebook_size,
            "codebook_dim": self.codebook_dim,
            "seed": self.seed,
        }
        kinds = {k: self.source(k).config() for k in self.sources if self.source(k).needs_fit}
        if kinds:  # absent for the paper's quantizer (its checkpoints stay as they were)
            out["kinds"] = kinds
        return out

    @mark_as_saver
    def _save(self, path):
        torch.save({"config": self.config(), "state": self.state()}, path)

    @classmethod
    def from_file(cls, path):
        """The quantizer saved in a checkpoint's ``quantizer.ckpt``; its
        sizes are bounded (:func:`check_quantizer_sizes`) before anything is built."""
        saved = load_weights(path)
        c = saved["config"]
        check_quantizer_sizes(c, path)
        sources = {k: tuple(v) for k, v in c["sources"].items()}
        quantizer = cls(sources, c["codebook_size"], c["codebook_dim"], c["seed"],
                        kinds=c.get("kinds"))
        quantizer.load_state(saved["state"])
        return quantizer

    def check_same(self, path):
        """Raises unless every source saved in ``path`` that this quantizer also
        has with the same shape and kind holds the same buffers (branching:
        comparable targets). Sources whose codebook count or kind differ (an
        anchored or data-fitted layer source) are new in the branch."""
        saved = load_weights(path)
        theirs = saved["config"]
        mine = self.state()
        for name in self.sources:
            same_kind = theirs.get("kinds", {}).get(name, {}) == self.source(name).config()
            if theirs["sources"].get(name) != list(self.sources[name]) or not same_kind:
                continue
            if self.source(name).needs_fit:
                continue  # refitted at the branch's transition
            for part in ("proj", "codebooks"):
                key = f"{part}_{self._key(name)}"
                if key in saved["state"] and not torch.equal(mine[key].cpu(), saved["state"][key]):
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
                "(target_layers, n_codebooks, anchor_codebooks or model size changed?)"
            )
        if theirs.get("kinds", {}) != mine.get("kinds", {}):
            raise ValueError(
                f"checkpoint {path} holds target sources of kinds "
                f"{theirs.get('kinds', {})}, but the config asks {mine.get('kinds', {})} "
                "(target_projection or target_codebooks changed?): resume with the same "
                "settings, or branch a new run with --init_from"
            )
        state = {k: v for k, v in saved["state"].items() if k in self.state()}
        self.load_state(state)


def split_codebooks(n_codebooks, anchor_codebooks, K, described):
    """Codebooks of each of the K latent sources of stages >= 1, which share the
    N - A codebooks that are not Mel anchors; ``described`` names the sources
    in the error (``"target_layers [5, 6]"``).

    Example
    -------
    >>> split_codebooks(18, 0, 6, "target_layers [5, 6, 7, 8, 9, 10]"), split_codebooks(6, 2, 2, "x")
    (3, 2)
    """
    anchors = int(anchor_codebooks)
    if not 0 <= anchors < n_codebooks:
        raise ValueError(
            f"anchor_codebooks={anchor_codebooks} must be >= 0 and below "
            f"n_codebooks={n_codebooks} (the rest are the target layers' codebooks)"
        )
    if anchors:
        if (n_codebooks - anchors) % K:
            raise ValueError(
                f"n_codebooks - anchor_codebooks = {n_codebooks - anchors} is not divisible "
                f"by the {K} {described}: each layer needs the same number of "
                "codebooks"
            )
    elif n_codebooks % K:
        lo, hi = n_codebooks - n_codebooks % K, n_codebooks + K - n_codebooks % K
        counts = " or ".join(str(c) for c in sorted({lo, hi}) if c > 0)
        divisors = [k for k in range(1, n_codebooks + 1) if n_codebooks % k == 0]
        near = sorted(divisors, key=lambda k: (abs(k - K), -k))[:2]
        raise ValueError(
            f"n_codebooks={n_codebooks} is not divisible by the {K} {described}: "
            f"each layer needs the same number of codebooks (e.g. "
            f"n_codebooks={counts}, or {' or '.join(map(str, sorted(near)))} layers)"
        )
    return (n_codebooks - anchors) // K


def latent_rq_quantizer(
    n_codebooks,
    codebook_size,
    codebook_dim,
    mel_dim,
    latent_dim,
    target_layers,
    num_layers,
    seed,
    anchor_codebooks=0,
    target_projection="random",
    target_codebooks="random",
    layer_dims=None,
):
    """The quantizer of a Latent-RQ run: N codebooks on the stacked Mel frames
    (stage 0) and (N - anchor_codebooks) / K codebooks on each of the K target
    layers (stages >= 1); in those stages the first ``anchor_codebooks`` Mel
    codebooks stay targets (BiRQ's anchors; 0 = the paper). The layer sources
    are of kind ``target_projection`` / ``target_codebooks``
    (:class:`TargetSource`; ``random`` / ``random`` = the paper).

    Each layer source reads its own width: ``layer_dims`` (the encoder's
    :attr:`~latent_rq_brain.model.encoder.LayeredEncoder.layer_dims`, one width per
    hidden state, front-end output first) when given, else ``latent_dim`` for
    every layer (``latent_dim`` may then be None).

    Example
    -------
    >>> q = latent_rq_quantizer(6, 32, 4, 320, 64, [5, 6, 7], 17, seed=1)
    >>> q.sources
    {'mel': (320, 6), 'layer5': (64, 2), 'layer6': (64, 2), 'layer7': (64, 2)}
    >>> latent_rq_quantizer(6, 32, 4, 320, 64, [5, 6], 17, seed=1, anchor_codebooks=2).sources
    {'mel': (320, 6), 'layer5': (64, 2), 'layer6': (64, 2)}
    >>> latent_rq_quantizer(4, 32, 4, 320, None, [-1, 1], 2, seed=1, layer_dims=[48, 64, 96]).sources
    {'mel': (320, 4), 'layer-1': (48, 2), 'layer1': (96, 2)}
    >>> latent_rq_quantizer(18, 32, 4, 320, 64, [1, 2, 3, 4], 17, seed=1)
    Traceback (most recent call last):
     ...
    ValueError: n_codebooks=18 is not divisible by the 4 target_layers [1, 2, 3, 4]: each layer needs the same number of codebooks (e.g. n_codebooks=16 or 20, or 3 or 6 layers)
    """
    layers = check_target_layers(target_layers, num_layers)
    if layer_dims is not None and len(layer_dims) != int(num_layers) + 1:
        raise ValueError(
            f"layer_dims {list(layer_dims)} must give one width per hidden state: "
            f"{int(num_layers) + 1} for {num_layers} layers (front-end output first)"
        )
    if layer_dims is None and latent_dim is None:
        raise ValueError("latent_rq_quantizer needs latent_dim or layer_dims")
    per_layer = split_codebooks(n_codebooks, anchor_codebooks, len(layers),
                                f"target_layers {layers}")
    sources = {MEL_SOURCE: (mel_dim, n_codebooks)}
    kind = {"projection": target_projection, "codebooks": target_codebooks}
    kinds = {}
    for layer in layers:
        dim = latent_dim if layer_dims is None else layer_dims[hidden_state_index(layer, num_layers)]
        sources[layer_source(layer)] = (int(dim), per_layer)
        if kind != {"projection": "random", "codebooks": "random"}:
            kinds[layer_source(layer)] = kind
    return RandomProjectionQuantizer(sources, codebook_size, codebook_dim, seed, kinds=kinds)
