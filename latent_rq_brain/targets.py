"""Targets of BEST-RQ and Latent-RQ: the one place they are made.

A :class:`TargetMaker` holds the frozen parts, the random-projection quantizer
and the target encoder, and turns the clean features of a batch into the codes
the heads predict::

    stage 0 : feats (B, T, 80) -> stack 4 frames (B, T/4, 320)   -> source "mel"
    stage>=1: feats -> target encoder -> layer l, normalised       -> source "layer<l>"
              (one source per target layer, N/K codebooks each)
    codes = concat over sources of quantizer(inputs[frames], source)   (M, N)

Training (:class:`latent_rq_brain.brain.LatentRQBrain`), the offline target
cache, the code-usage tool (``tools/target_usage.py``) and the analysis
(``recipes/analysis``) all call it; the layer rules are in
:mod:`latent_rq_brain.layers`.

Authors
 * latent-rq developers 2026
"""

import torch

from latent_rq_brain.features import valid_frames
from latent_rq_brain.layers import MEL_SOURCE, layer_source, source_layer


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
    """

    def __init__(self, quantizer, target_encoder, downsampling=4):
        self.quantizer = quantizer
        self.target_encoder = target_encoder
        self.downsampling = int(downsampling)

    def sources(self, stage):
        """The quantizer sources whose codes are the targets of ``stage``."""
        if stage == 0:
            return [MEL_SOURCE]
        return [layer_source(layer) for layer in self.target_encoder.target_layers]

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
        return torch.cat(
            [self.quantizer(x[frames], name) for name, x in inputs.items()], 1
        )

    def all_frames(self, feats, enc_lens, stage):
        """(sum(enc_lens), N) codes of every valid frame, utterance by utterance."""
        T = feats.shape[1] // self.downsampling
        return self(feats, enc_lens, valid_frames(enc_lens, T), stage)
