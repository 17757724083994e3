"""Targets of BEST-RQ and Latent-RQ: the one place they are made.

A :class:`TargetMaker` holds the quantizer and the target sources
(:mod:`latent_rq_brain.targets.target_sources`) and turns the clean features of a
batch into the codes the heads predict::

    stage 0 : feats (B, T, 80) -> stack 4 frames (B, T/4, 320)   -> source "mel"
    stage>=1: feats -> target encoder -> layer l, normalised       -> source "layer<l>"
              (one source per target layer, (N - A)/K codebooks each, after
               the first A = anchor_codebooks codebooks of "mel": the anchors)
    codes = concat over the stage's sources of quantizer(frames[mask], source)   (M, N)

A data-fitted source (PCA projection, k-means codebooks) is fitted at the start
of its stage on a sample of its own input frames (:meth:`TargetMaker.fit`), the
training set's seeded sample of :func:`sample_batches`, on rank 0, then
broadcast (:func:`fit_stage_sources`).

Training (:class:`latent_rq_brain.training.brain.LatentRQBrain`), the offline target
cache, the code-usage tool (``tools/target_usage.py``) and the analysis
(``recipes/analysis``) all call it.

Authors
 * latent-rq developers 2026
"""

import contextlib
import logging

import torch

from latent_rq_brain.model.features import valid_frames
from latent_rq_brain.model.layers import MEL_SOURCE, layer_source, source_layer
from latent_rq_brain.targets.target_cache import cache_batches
from latent_rq_brain.targets.target_sources import LayerFrames, MelFrames, TargetSources
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.distributed import if_main_process, is_distributed_initialized

logger = logging.getLogger(__name__)


def quantizer_sources(quantizer, target_encoder, downsampling, anchor_codebooks):
    """The :class:`~latent_rq_brain.targets.target_sources.TargetSources` of a paper
    quantizer (groups ``mel`` and ``layer<l>``, as saved in a checkpoint): its
    Mel group, and a layer source of ``target_encoder`` for each of its target
    layers (all of them without a target encoder).

    Example
    -------
    >>> from latent_rq_brain.targets.quantizer import latent_rq_quantizer
    >>> q = latent_rq_quantizer(4, 16, 4, 320, 32, [0, 1], 2, seed=1)
    >>> [s.name for s in quantizer_sources(q, None, 4, 0).all()]
    ['mel', 'layer0', 'layer1']
    """
    layers = (target_encoder.target_layers if target_encoder is not None
              else [source_layer(n) for n in quantizer.sources if n != MEL_SOURCE])
    mel_dim = quantizer.sources[MEL_SOURCE][0]
    groups = [quantizer.source(layer_source(layer)) for layer in layers]
    latent = [LayerFrames(target_encoder, layer, group.input_dim, **group.config())
              for layer, group in zip(layers, groups)]
    return TargetSources(MelFrames(downsampling, mel_dim), latent, anchor_codebooks)


class TargetMaker:
    """Features -> codes, for any stage.

    Arguments
    ---------
    quantizer : latent_rq_brain.targets.quantizer.RandomProjectionQuantizer
        The frozen codebooks, one group per source.
    sources : latent_rq_brain.targets.target_sources.TargetSources
        Where the frames of each group come from, and in which stage.

    Example
    -------
    >>> from latent_rq_brain.targets.quantizer import RandomProjectionQuantizer
    >>> from latent_rq_brain.targets.target_encoder import TargetEncoder
    >>> q = RandomProjectionQuantizer({"mel": (320, 2), "layer0": (8, 2)}, 16, 4, seed=1)
    >>> make = TargetMaker(q, quantizer_sources(q, TargetEncoder([0]), 4, 0))
    >>> feats, enc_lens = torch.randn(2, 12, 80), torch.tensor([3, 2])
    >>> make(feats, enc_lens, valid_frames(enc_lens, 3), stage=0).shape
    torch.Size([5, 2])
    >>> make.sources(0), make.sources(1)
    (['mel'], ['layer0'])
    >>> TargetMaker(q, quantizer_sources(q, TargetEncoder([0]), 4, 1)).sources(1)
    ['mel', 'layer0']
    """

    def __init__(self, quantizer, sources):
        self.quantizer = quantizer
        self.target_sources = sources
        self.downsampling = sources.mel.downsampling

    @property
    def anchor_codebooks(self):
        """Mel codebooks that stay targets in stages >= 1."""
        return self.target_sources.anchor_codebooks

    @property
    def target_encoder(self):
        """The target encoder the layer sources read (settable, e.g. by benchmarks)."""
        return self.target_sources.target_encoder

    @target_encoder.setter
    def target_encoder(self, value):
        self.target_sources.target_encoder = value

    def sources(self, stage):
        """The names of the sources whose codes are the targets of ``stage``."""
        return [s.name for s in self.target_sources.active(stage)]

    @torch.no_grad()
    def inputs(self, feats, enc_lens, sources):
        """``{name: (B, T // downsampling, dim)}``: the frames of the sources
        named ``sources`` (layer sources share one target-encoder run)."""
        shared = {}
        return {name: self.target_sources.by_name(name).frames(feats, enc_lens, shared)
                for name in sources}

    @torch.no_grad()
    def __call__(self, feats, enc_lens, frames, stage):
        """(M, N) int64 codes of the ``frames`` (a (B, T // downsampling) bool
        mask: the masked frames in training, all valid ones elsewhere),
        codebooks of each source of ``stage`` in turn."""
        shared, codes = {}, []
        for source in self.target_sources.active(stage):
            x = source.frames(feats, enc_lens, shared)
            if source.count is None:
                codes.append(self.quantizer(x[frames], source.group))
            else:  # the first codebooks of the group (anchors)
                codes.append(self.quantizer(x[frames], source.group, source.count))
        return torch.cat(codes, 1)

    def all_frames(self, feats, enc_lens, stage):
        """(sum(enc_lens), N) codes of every valid frame, utterance by utterance."""
        T = feats.shape[1] // self.downsampling
        return self(feats, enc_lens, valid_frames(enc_lens, T), stage)

    def groups_to_fit(self, stage):
        """The codebook groups of ``stage``'s sources that are data-fitted."""
        groups = []
        for source in self.target_sources.active(stage):
            if source.group not in groups and self.quantizer.source(source.group).needs_fit:
                groups.append(source.group)
        return groups

    @torch.no_grad()
    def fit(self, batches, stage, max_frames, seed):
        """Fits the data-fitted sources of ``stage`` that are not fitted yet.

        Arguments
        ---------
        batches : iterable
            ``(feats, enc_lens)`` of the sample, in a fixed order (the same on
            every rank); every valid frame is taken until ``max_frames``.
        stage : int
            The stage whose sources are fitted.
        max_frames : int
            Size of the sample of each source.
        seed : int
            Seed of the k-means initialisation.

        Returns
        -------
        list of str
            The sources that were fitted (empty for the paper's quantizer,
            which then reads no batch).
        """
        names = [n for n in self.groups_to_fit(stage) if self.quantizer.needs_fit(n)]
        if not names:
            return []
        sample = {n: [] for n in names}
        count = 0
        for feats, enc_lens in batches:
            T = feats.shape[1] // self.downsampling
            frames = valid_frames(enc_lens, T)
            for name, x in self.inputs(feats, enc_lens, names).items():
                sample[name].append(x[frames].float().cpu())
            count += int(frames.sum())
            if count >= max_frames:
                break
        for name in names:
            x = torch.cat(sample[name])[: int(max_frames)]
            self.quantizer.fit(name, x, seed)
        return names


def sample_batches(dataset, featurize, seed, batch_seconds):
    """``(feats, enc_lens)`` of a seeded sample of ``dataset``: its utterances
    in a ``seed``-ed random order (the same on every machine), in batches of
    at most ``batch_seconds`` of audio (:func:`~latent_rq_brain.targets.target_cache.cache_batches`).

    A generator: nothing is read (and no random number drawn) before the
    first batch is asked for.

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        The training set (``data_ids``, ``data``, items with ``sig``).
    featurize : callable
        ``featurize(batch) -> (feats, enc_lens, ...)`` of a ``PaddedBatch``.
    seed : int
        Seed of the order.
    batch_seconds : float
        Audio per batch (``target_cache_batch_seconds``).
    """
    gen = torch.Generator().manual_seed(seed)
    ids = [dataset.data_ids[i] for i in torch.randperm(len(dataset.data_ids), generator=gen)]
    position = {u: i for i, u in enumerate(dataset.data_ids)}
    chunks = cache_batches(dataset, batch_seconds, ids)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=[[position[u] for u in c] for c in chunks],
        collate_fn=PaddedBatch)
    for batch in loader:
        feats, enc_lens = featurize(batch)[:2]
        yield feats, enc_lens


def fit_stage_sources(maker, stage, dataset, featurize, max_frames, seed, batch_seconds,
                      context=None):
    """Fits the data-fitted target sources of ``stage`` (PCA, k-means) afresh;
    a no-op for the paper's random-projection quantizer.

    Fitted on rank 0 (:meth:`TargetMaker.fit`) and broadcast, so every rank
    holds the same buffers (only the fitted sources' buffers are sent).

    Arguments
    ---------
    maker : TargetMaker
        Its quantizer's sources of ``stage`` are unfitted, then fitted.
    stage : int
        The stage that starts.
    dataset : speechbrain.dataio.dataset.DynamicItemDataset or None
        The training set, sampled (:func:`sample_batches`, seed
        ``seed * 104729 + stage``) on rank 0 only; None raises if a source
        needs fitting.
    featurize : callable
        ``featurize(batch) -> (feats, enc_lens, ...)``, see :func:`sample_batches`.
    max_frames : int
        Frames each source is fitted on (``fit_frames``).
    seed : int
        The run's seed; the k-means initialisation's is ``seed * 7919 + stage``.
    batch_seconds : float
        Audio per batch of the sample.
    context : contextlib.AbstractContextManager, optional
        Entered around the fit (the brain's ``training_ctx``: its precision).

    Example
    -------
    >>> from latent_rq_brain.targets.quantizer import latent_rq_quantizer
    >>> q = latent_rq_quantizer(2, 16, 4, 320, 8, [0], 1, seed=1)
    >>> fit_stage_sources(TargetMaker(q, quantizer_sources(q, None, 4, 0)), 0, None, None, 100, 1, 60.0)
    []
    """
    quantizer = maker.quantizer
    sources = maker.groups_to_fit(stage)
    quantizer.unfit(sources)
    if not sources:
        return []
    if dataset is None:
        raise RuntimeError("data-fitted target sources need the training set (fit())")
    fitted = []
    if if_main_process():
        with context if context is not None else contextlib.nullcontext():
            fitted = maker.fit(
                sample_batches(dataset, featurize, seed * 104729 + stage, batch_seconds),
                stage, max_frames, seed * 7919 + stage,
            )
        logger.info(f"fitted target sources {fitted} on {max_frames} frames")
    if is_distributed_initialized():  # the fitted sources' buffers only
        for name in sources:
            if quantizer.source(name).needs_fit:
                for buf in quantizer.source(name).buffers():
                    torch.distributed.broadcast(buf, src=0)
    return fitted
