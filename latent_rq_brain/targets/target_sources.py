"""The target-source contract: where the frames of each group of codebooks come from.

A *target source* is one object that owns

* where its frames come from: :meth:`FrameSource.frames` turns the clean
  features of a batch into (B, T / downsampling, input_dim) frames (stacked
  Mel frames, a layer of the target encoder, any frozen module);
* when it is a target: :meth:`FrameSource.active` (stage 0 or stages >= 1)
  and how many of its codebooks it uses (``count``; None = all);
* its quantizer kind: ``projection`` and ``codebooks`` (kind names or objects
  of :mod:`latent_rq_brain.targets.quantizer`, e.g. ``pca`` / ``kmeans``), fitted at
  the start of its stage (:meth:`latent_rq_brain.targets.maker.TargetMaker.fit`);
* its state: the frozen objects it reads (:meth:`FrameSource.frozen_parts`:
  the target encoder, a frozen module), which the target cache key, the
  cross-rank checksums and the checkpoints iterate over
  (:class:`TargetSources`), and its plain settings (:meth:`FrameSource.settings`,
  in the cache key).

:class:`TargetSources` holds the sources of a run: the Mel source of stage 0,
the Mel anchors of stages >= 1 (:class:`MelAnchors`, the first
``anchor_codebooks`` Mel codebooks) and the latent sources of stages >= 1 (one
:class:`LayerFrames` per target layer: the paper), which share the codebooks
left (:func:`build_quantizer`). A new source is a subclass of
:class:`FrameSource` listed in the YAML's ``latent_sources``: nothing else
changes, and its settings and frozen parts are keyed, checksummed and saved.

Authors
 * latent-rq developers 2026
"""

import collections

import torch

from latent_rq_brain.model.features import module_settings
from latent_rq_brain.model.layers import MEL_SOURCE, check_target_layers, hidden_state_index, layer_source
from latent_rq_brain.targets.quantizer import RandomProjectionQuantizer, split_codebooks
from latent_rq_brain.training.stats import checksum_tensors
from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook


def stack_frames(feats, downsampling):
    """(B, T, C) features -> (B, T // k, k * C): the Mel frames of each
    encoder frame, side by side (T is a multiple of ``downsampling``).

    Example
    -------
    >>> x = torch.arange(16.0).view(1, 8, 2)
    >>> stack_frames(x, 4)[0, 1].tolist()
    [8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    """
    B, T, C = feats.shape
    return feats.view(B, T // downsampling, downsampling * C)


def _kind_name(kind):
    return kind if isinstance(kind, str) else kind.name


class FrameSource:
    """The target-source contract (see the module docstring); by default a
    latent source: a target in stages >= 1, all its codebooks.

    Arguments
    ---------
    name : str
        Its name, and the name of its codebook group in the quantizer.
    input_dim : int
        Width of its frames.
    projection : str or latent_rq_brain.targets.quantizer.Projection
        Quantizer projection kind (``random``: the paper).
    codebooks : str or latent_rq_brain.targets.quantizer.Codewords
        Quantizer codeword kind (``random``: the paper).

    Example
    -------
    >>> class Doubled(FrameSource):
    ...     def frames(self, feats, enc_lens, shared):
    ...         return 2 * stack_frames(feats, 4)
    >>> src = Doubled("doubled", 320, projection="pca")
    >>> src.active(0), src.active(2), src.kind()
    (False, True, {'projection': 'pca', 'codebooks': 'random'})
    >>> src.settings()["class"], src.settings()["input_dim"]
    ('latent_rq_brain.targets.target_sources.Doubled', 320)
    """

    #: codebooks of its group it uses (None: all)
    count = None

    def __init__(self, name, input_dim, projection="random", codebooks="random"):
        self.name = str(name)
        self.input_dim = int(input_dim)
        self.projection = projection
        self.codebooks = codebooks

    @property
    def group(self):
        """The quantizer codebook group it reads (its name)."""
        return self.name

    def active(self, stage):
        """Whether its codes are targets in ``stage`` (default: stages >= 1)."""
        return stage >= 1

    def kind(self):
        """Its quantizer kind, ``{}`` for the paper's random projection quantizer."""
        kind = {"projection": _kind_name(self.projection),
                "codebooks": _kind_name(self.codebooks)}
        return {} if kind == {"projection": "random", "codebooks": "random"} else kind

    def frames(self, feats, enc_lens, shared):
        """(B, T // downsampling, input_dim) frames of the features ``feats``
        (B, T, n_mels) with ``enc_lens`` valid encoder frames; ``shared`` is a
        dict the sources of one call share (e.g. one target-encoder run)."""
        raise NotImplementedError

    def settings(self):
        """Every plain setting (its class and public attributes): part of the
        target-cache key."""
        cls = type(self)
        return dict(module_settings(self), **{"class": f"{cls.__module__}.{cls.__qualname__}"})

    def frozen_parts(self):
        """``{attribute: object}``: the modules and checksummed objects it reads
        (keyed, checksummed across ranks and saved)."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_")
                and (isinstance(v, torch.nn.Module) or callable(getattr(v, "checksum", None)))}


class MelFrames(FrameSource):
    """The stacked Mel frames: the targets of stage 0 (BEST-RQ), all ``N`` codebooks.

    Example
    -------
    >>> mel = MelFrames(downsampling=4, input_dim=8)
    >>> mel.name, mel.active(0), mel.active(1), mel.frames(torch.zeros(1, 8, 2), None, {}).shape
    ('mel', True, False, torch.Size([1, 2, 8]))
    """

    def __init__(self, downsampling, input_dim, name=MEL_SOURCE):
        super().__init__(name, input_dim)
        self.downsampling = int(downsampling)

    def active(self, stage):
        return stage == 0

    def frames(self, feats, enc_lens, shared):
        return stack_frames(feats, self.downsampling)


class MelAnchors(FrameSource):
    """The first ``count`` codebooks of the Mel source, targets in stages >= 1
    (BiRQ's anchors); it reads the Mel source's codebook group.

    Example
    -------
    >>> anchors = MelAnchors(MelFrames(4, 8), 2)
    >>> anchors.group, anchors.count, anchors.active(0), anchors.active(1)
    ('mel', 2, False, True)
    """

    def __init__(self, source, count):
        super().__init__(source.name, source.input_dim)
        self.source = source
        self.count = int(count)

    @property
    def group(self):
        return self.source.group

    def frames(self, feats, enc_lens, shared):
        return self.source.frames(feats, enc_lens, shared)

    def settings(self):
        return dict(super().settings(), count=self.count, source=self.source.settings())


class LayerFrames(FrameSource):
    """Paper layer ``layer`` of the target encoder, normalised (fp32): one
    latent source of Latent-RQ. The sources of one call share one run of the
    target encoder.

    Example
    -------
    >>> from latent_rq_brain.targets.target_encoder import TargetEncoder
    >>> src = LayerFrames(TargetEncoder([3]), 3, 64)
    >>> src.name, list(src.frozen_parts())
    ('layer3', ['target_encoder'])
    """

    def __init__(self, target_encoder, layer, input_dim, projection="random",
                 codebooks="random"):
        super().__init__(layer_source(layer), input_dim, projection, codebooks)
        self.target_encoder = target_encoder
        self.layer = int(layer)

    def frames(self, feats, enc_lens, shared):
        key = ("target_encoder", id(self.target_encoder))
        if key not in shared:
            shared[key] = self.target_encoder(feats, enc_lens)
        return shared[key][self.layer]


class ModuleFrames(FrameSource):
    """Any frozen module as a latent source: ``module(feats, enc_lens)`` ->
    (B, T // downsampling, input_dim), run without gradients, in eval mode,
    read as fp32. Its settings and weights are in the cache key, its
    checksum is compared across ranks and it is saved in the checkpoints.

    Example
    -------
    >>> class Pool(torch.nn.Module):
    ...     def forward(self, feats, enc_lens):
    ...         return stack_frames(feats, 4)[..., :3]
    >>> src = ModuleFrames("pool", Pool(), 3)
    >>> src.frames(torch.randn(2, 8, 2), None, {}).shape, list(src.frozen_parts())
    (torch.Size([2, 2, 3]), ['module'])
    """

    def __init__(self, name, module, input_dim, projection="random", codebooks="random"):
        super().__init__(name, input_dim, projection, codebooks)
        self.module = module.eval().requires_grad_(False)

    @torch.no_grad()
    def frames(self, feats, enc_lens, shared):
        self.module.eval()
        return self.module(feats, enc_lens).float()


def layer_sources(target_encoder, input_dim, num_layers, projection, codebooks):
    """One :class:`LayerFrames` per target layer of ``target_encoder``, checked
    against a ``num_layers``-layer encoder: the paper's latent sources.
    ``input_dim``: one width for every layer, or the encoder's ``layer_dims``
    (one width per hidden state, front-end output first), so that each source
    reads its own layer's width.

    Example
    -------
    >>> from latent_rq_brain.targets.target_encoder import TargetEncoder
    >>> [s.name for s in layer_sources(TargetEncoder([1, 2]), 32, 4, "random", "random")]
    ['layer1', 'layer2']
    >>> [s.input_dim for s in layer_sources(TargetEncoder([-1, 1]), [8, 12, 16], 2, "random",
    ...                                      "random")]
    [8, 16]
    """
    layers = check_target_layers(target_encoder.target_layers, num_layers)
    if isinstance(input_dim, (list, tuple)):
        if len(input_dim) != int(num_layers) + 1:
            raise ValueError(
                f"layer_dims {list(input_dim)} must give one width per hidden state: "
                f"{int(num_layers) + 1} for {num_layers} layers (front-end output first)")
        dims = [int(input_dim[hidden_state_index(layer, num_layers)]) for layer in layers]
    else:
        dims = [int(input_dim)] * len(layers)
    return [LayerFrames(target_encoder, layer, dim, projection, codebooks)
            for layer, dim in zip(layers, dims)]


def part_settings(part):
    """Cache-key settings of a frozen part: its ``key_settings()`` if it has
    one, else its plain settings and tensor digests (a module)."""
    if callable(getattr(part, "key_settings", None)):
        return part.key_settings()
    return module_settings(part, tensors=True)


def part_checksum(part):
    """Cross-rank checksum of a frozen part: its ``checksum()``, else its state's."""
    if callable(getattr(part, "checksum", None)):
        return part.checksum()
    return checksum_tensors(part.state_dict().items())


class TargetSources:
    """The target sources of a run, in code order.

    Stage 0: the Mel source, all ``N`` codebooks. Stages >= 1: the first
    ``anchor_codebooks`` Mel codebooks (:class:`MelAnchors`, if any), then the
    ``latent`` sources, which share the other codebooks equally.

    Arguments
    ---------
    mel : FrameSource
        The source of stage 0 (:class:`MelFrames`).
    latent : list of FrameSource
        The sources of stages >= 1 (:func:`layer_sources`: the paper).
    anchor_codebooks : int
        Mel codebooks that stay targets in stages >= 1 (0: the paper).

    Example
    -------
    >>> from latent_rq_brain.targets.target_encoder import TargetEncoder
    >>> te = TargetEncoder([0, 1])
    >>> s = TargetSources(MelFrames(4, 320), layer_sources(te, 32, 2, "random", "random"), 2)
    >>> [x.name for x in s.active(0)], [(x.name, x.count) for x in s.active(1)]
    (['mel'], [('mel', 2), ('layer0', None), ('layer1', None)])
    >>> s.groups(6)
    {'mel': (320, 6), 'layer0': (32, 2), 'layer1': (32, 2)}
    >>> list(s.frozen_parts())
    ['target_encoder']
    """

    def __init__(self, mel, latent, anchor_codebooks):
        self.mel = mel
        self.latent = list(latent)
        if not self.latent:
            raise ValueError("latent_sources is empty: stages >= 1 need at least one source")
        self.anchor_codebooks = int(anchor_codebooks)
        self.anchors = MelAnchors(mel, self.anchor_codebooks) if self.anchor_codebooks else None
        names = [s.group for s in [mel, *self.latent]]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"target sources {doubled} are listed twice: names must differ")

    def all(self):
        """Every source, in code order (Mel, anchors, latent sources)."""
        return [self.mel, *([self.anchors] if self.anchors else []), *self.latent]

    def active(self, stage):
        """The sources whose codes are the targets of ``stage``, in code order."""
        return [s for s in self.all() if s.active(stage)]

    def by_name(self, name):
        """The source (not an anchor) named ``name``."""
        for s in [self.mel, *self.latent]:
            if s.name == name:
                return s
        raise KeyError(f"no target source {name!r}; the sources are "
                       f"{[s.name for s in [self.mel, *self.latent]]}")

    def groups(self, n_codebooks):
        """``{group: (input_dim, codebooks)}`` of the quantizer: ``N`` on the Mel
        source, (N - anchor_codebooks) / K on each of the K latent sources."""
        names = [s.name for s in self.latent]
        described = "target_layers " + str([s.layer for s in self.latent]) if all(
            isinstance(s, LayerFrames) for s in self.latent) else f"latent sources {names}"
        each = split_codebooks(n_codebooks, self.anchor_codebooks, len(self.latent), described)
        out = {self.mel.group: (self.mel.input_dim, int(n_codebooks))}
        out.update((s.group, (s.input_dim, each)) for s in self.latent)
        return out

    def kinds(self):
        """``{group: kind}`` of the sources that are not the paper's random kind."""
        return {s.group: s.kind() for s in [self.mel, *self.latent] if s.kind()}

    def frozen_parts(self):
        """``{label: object}`` of every source's frozen parts, each object once
        (the attribute name; ``<source>.<attribute>`` if two objects share it)."""
        out = collections.OrderedDict()
        for source in self.all():
            for attr, part in source.frozen_parts().items():
                if any(p is part for p in out.values()):
                    continue
                out[attr if attr not in out else f"{source.name}.{attr}"] = part
        return out

    def add_recoverables(self, checkpointer):
        """Makes every frozen part that ``checkpointer`` does not hold yet (the
        YAML lists the target encoder) and that it can save (a module, or an
        object with checkpoint hooks) a recoverable, ``target_source.<label>``.

        Example
        -------
        >>> from speechbrain.utils.checkpoints import Checkpointer
        >>> from latent_rq_brain.targets.target_encoder import TargetEncoder
        >>> te = TargetEncoder([0])
        >>> pool = ModuleFrames("pool", torch.nn.Linear(3, 3), 3)
        >>> s = TargetSources(MelFrames(4, 320), [pool, *layer_sources(te, 8, 2, "random", "random")], 0)
        >>> ckpt = Checkpointer("/tmp/unused", {"target_encoder": te})
        >>> s.add_recoverables(ckpt)
        >>> sorted(ckpt.recoverables)
        ['target_encoder', 'target_source.module']
        """
        held = checkpointer.recoverables.values()
        for label, part in self.frozen_parts().items():
            if any(part is obj for obj in held):
                continue
            if get_default_hook(part, DEFAULT_SAVE_HOOKS) is not None:
                checkpointer.add_recoverable(f"target_source.{label}", part)

    def settings(self):
        """Cache-key settings: every source's settings and every frozen part's."""
        return {"sources": [s.settings() for s in self.all()],
                "frozen": {k: part_settings(p) for k, p in self.frozen_parts().items()}}

    def checksums(self):
        """``{label: checksum}`` of the frozen parts (compared across ranks)."""
        return {k: part_checksum(p) for k, p in self.frozen_parts().items()}

    def check_cacheable(self):
        """Raises if a frozen part changes within a stage (``check_cacheable()``
        of the part: the EMA target encoder), so that targets cannot be cached."""
        for part in self.frozen_parts().values():
            if callable(getattr(part, "check_cacheable", None)):
                part.check_cacheable()

    def after_optimizer_step(self, encoder, step, stage):
        """Lets the frozen parts of ``stage``'s sources follow the student after
        an optimizer step (``after_optimizer_step(encoder, step)`` of the part:
        the EMA target encoder)."""
        seen = []
        for source in self.active(stage):
            for part in source.frozen_parts().values():
                hook = getattr(part, "after_optimizer_step", None)
                if callable(hook) and not any(p is part for p in seen):
                    seen.append(part)
                    hook(encoder, step)

    @property
    def target_encoder(self):
        """The target encoder the layer sources read (None without one)."""
        for s in self.latent:
            if isinstance(s, LayerFrames):
                return s.target_encoder
        return None

    @target_encoder.setter
    def target_encoder(self, value):
        for s in self.latent:
            if isinstance(s, LayerFrames):
                s.target_encoder = value


def build_quantizer(sources, n_codebooks, codebook_size, codebook_dim, seed):
    """The random-projection quantizer of ``sources``: one codebook group per
    source (:meth:`TargetSources.groups`), of the source's kind.

    Example
    -------
    >>> from latent_rq_brain.targets.target_encoder import TargetEncoder
    >>> s = TargetSources(MelFrames(4, 320), layer_sources(TargetEncoder([5, 6]), 64, 17, "pca", "random"), 0)
    >>> q = build_quantizer(s, 6, 32, 4, seed=1)
    >>> q.sources, q.config()["kinds"]["layer5"]
    ({'mel': (320, 6), 'layer5': (64, 3), 'layer6': (64, 3)}, {'projection': 'pca', 'codebooks': 'random'})
    """
    return RandomProjectionQuantizer(sources.groups(n_codebooks), codebook_size, codebook_dim,
                                     seed, kinds=sources.kinds())
