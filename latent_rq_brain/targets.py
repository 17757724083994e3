"""Targets of BEST-RQ and Latent-RQ: the one place they are made.

A :class:`TargetMaker` holds the frozen parts, the random-projection quantizer
and the target encoder, and turns the clean features of a batch into the codes
the heads predict::

    stage 0 : feats (B, T, 80) -> stack 4 frames (B, T/4, 320)   -> source "mel"
    stage>=1: feats -> target encoder -> layer l, normalised       -> source "layer<l>"
              (one source per target layer, (N - A)/K codebooks each, after
               the first A = anchor_codebooks codebooks of "mel": the anchors)
    codes = concat over sources of quantizer(inputs[frames], source)   (M, N)

A data-fitted source (PCA projection, k-means codebooks) is fitted at the start
of its stage on a sample of its own input frames (:meth:`TargetMaker.fit`), the
training set's seeded sample of :func:`sample_batches`, on rank 0, then
broadcast (:func:`fit_stage_sources`).

Training (:class:`latent_rq_brain.brain.LatentRQBrain`), the offline target
cache, the code-usage tool (``tools/target_usage.py``) and the analysis
(``recipes/analysis``) all call it; the layer rules are in
:mod:`latent_rq_brain.layers`.

Authors
 * latent-rq developers 2026
"""

import contextlib
import logging

import torch

from latent_rq_brain.features import valid_frames
from latent_rq_brain.layers import MEL_SOURCE, layer_source, source_layer
from latent_rq_brain.target_cache import cache_batches
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.distributed import if_main_process, is_distributed_initialized

logger = logging.getLogger(__name__)


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


class TargetMaker:
    """Features -> codes, for any stage.

    Arguments
    ---------
    quantizer : latent_rq_brain.quantizer.RandomProjectionQuantizer
        The frozen codebooks (sources ``mel`` and ``layer<l>``).
    target_encoder : latent_rq_brain.target_encoder.TargetEncoder
        The frozen snapshot feeding the ``layer<l>`` sources (stages >= 1).
    downsampling : int
        Mel frames per encoder frame (4).
    anchor_codebooks : int
        In stages >= 1, this many of the Mel codebooks stay targets (the
        first ones; 0 = the paper: layers only).

    Example
    -------
    >>> from latent_rq_brain.quantizer import RandomProjectionQuantizer
    >>> from latent_rq_brain.target_encoder import TargetEncoder
    >>> q = RandomProjectionQuantizer({"mel": (320, 2)}, 16, 4, seed=1)
    >>> make = TargetMaker(q, TargetEncoder([0]), downsampling=4)
    >>> feats, enc_lens = torch.randn(2, 12, 80), torch.tensor([3, 2])
    >>> make(feats, enc_lens, valid_frames(enc_lens, 3), stage=0).shape
    torch.Size([5, 2])
    >>> make.sources(0), make.sources(1)
    (['mel'], ['layer0'])
    >>> TargetMaker(q, TargetEncoder([0]), anchor_codebooks=1).sources(1)
    ['mel', 'layer0']
    """

    def __init__(self, quantizer, target_encoder, downsampling=4, anchor_codebooks=0):
        self.quantizer = quantizer
        self.target_encoder = target_encoder
        self.downsampling = int(downsampling)
        self.anchor_codebooks = int(anchor_codebooks)

    def sources(self, stage):
        """The quantizer sources whose codes are the targets of ``stage``."""
        if stage == 0:
            return [MEL_SOURCE]
        anchors = [MEL_SOURCE] if self.anchor_codebooks else []
        return anchors + [layer_source(layer) for layer in self.target_encoder.target_layers]

    def _count(self, name, stage):
        """Codebooks of source ``name`` used in ``stage`` (None: all)."""
        return self.anchor_codebooks if name == MEL_SOURCE and stage > 0 else None

    @torch.no_grad()
    def inputs(self, feats, enc_lens, sources):
        """``{source: (B, T // downsampling, dim)}``: what each source quantizes.

        ``mel`` stacks the features; ``layer<l>`` runs the target encoder once
        (normalised hidden states, fp32) for all layer sources.
        """
        out, states = {}, None
        for name in sources:
            layer = source_layer(name)
            if layer is None:
                out[name] = stack_frames(feats, self.downsampling)
                continue
            if states is None:
                states = self.target_encoder(feats, enc_lens)
            out[name] = states[layer]
        return out

    @torch.no_grad()
    def __call__(self, feats, enc_lens, frames, stage):
        """(M, N) int64 codes of the ``frames`` (a (B, T // downsampling) bool
        mask: the masked frames in training, all valid ones elsewhere),
        codebooks of each source in turn."""
        inputs = self.inputs(feats, enc_lens, self.sources(stage))
        codes = []
        for name, x in inputs.items():
            count = self._count(name, stage)
            if count is None:
                codes.append(self.quantizer(x[frames], name))
            else:  # the anchors: the first codebooks of the source
                codes.append(self.quantizer(x[frames], name, count))
        return torch.cat(codes, 1)

    def all_frames(self, feats, enc_lens, stage):
        """(sum(enc_lens), N) codes of every valid frame, utterance by utterance."""
        T = feats.shape[1] // self.downsampling
        return self(feats, enc_lens, valid_frames(enc_lens, T), stage)

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
        names = [n for n in self.sources(stage) if self.quantizer.needs_fit(n)]
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
    at most ``batch_seconds`` of audio (:func:`~latent_rq_brain.target_cache.cache_batches`).

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
    >>> from latent_rq_brain.quantizer import RandomProjectionQuantizer
    >>> from latent_rq_brain.target_encoder import TargetEncoder
    >>> q = RandomProjectionQuantizer({"mel": (320, 2)}, 16, 4, seed=1)
    >>> fit_stage_sources(TargetMaker(q, TargetEncoder([0])), 0, None, None, 100, 1, 60.0)
    []
    """
    quantizer = maker.quantizer
    sources = maker.sources(stage)
    quantizer.unfit(sources)
    if not any(quantizer.needs_fit(n) for n in sources):
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
