"""Span masking aligned to encoder frames, and the learned mask embedding.

Masks are drawn on the encoder's time axis (one frame = ``downsampling`` input
frames = 40 ms for the 4x CNN front-end). A masked encoder frame replaces all of
its input Mel frames by a learned mask embedding, so the student never sees any
part of a frame it must predict.

``mask_prob`` follows the fairseq / wav2vec 2.0 / HuBERT convention: an
utterance of ``n`` encoder frames gets ``max(1, round(mask_prob * n /
mask_length))`` spans of ``mask_length`` frames whose start frames are drawn
uniformly without replacement. Spans may overlap, so the realised masked
fraction is a little below ``mask_prob``; it is measured and logged.

Authors
 * latent-rq developers 2026
"""

import torch


def sample_span_mask(enc_lens, mask_prob, mask_length, generator=None, num_frames=None):
    """Random span mask over encoder frames.

    Arguments
    ---------
    enc_lens : torch.Tensor
        (B,) int, valid encoder frames of each utterance.
    mask_prob : float
        Fraction of frames chosen as span material before overlaps (0 < p <= 1).
    mask_length : int
        Span length in encoder frames.
    generator : torch.Generator, optional
        CPU generator, for reproducible masks (validation, tests).
    num_frames : int, optional
        Width of the mask, at least ``max(enc_lens)`` (a batch padded to a
        fixed shape); the mask is drawn on ``max(enc_lens)`` frames, so the
        same generator gives the same spans whatever the padding.

    Returns
    -------
    torch.Tensor
        (B, num_frames or max(enc_lens)) bool on ``enc_lens.device``; never
        True on padding, at least one True per utterance.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> m = sample_span_mask(torch.tensor([50, 20]), 0.4, 5, generator=g)
    >>> m.shape, bool(m[1, 20:].any()), bool(m.any(1).all())
    (torch.Size([2, 50]), False, True)
    >>> g = torch.Generator().manual_seed(0)
    >>> wide = sample_span_mask(torch.tensor([50, 20]), 0.4, 5, g, num_frames=64)
    >>> bool(torch.equal(wide[:, :50], m)), bool(wide[:, 50:].any())
    (True, False)
    """
    if not 0.0 < float(mask_prob) <= 1.0:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
    if int(mask_length) < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    lens = enc_lens.detach().to("cpu", torch.long)
    B, T = lens.shape[0], int(lens.max())
    n_starts = (lens - mask_length + 1).clamp(min=1)
    n_spans = torch.round(mask_prob * lens.double() / mask_length).long()
    n_spans = torch.minimum(n_spans.clamp(min=1), n_starts)
    scores = torch.rand(B, T, generator=generator)
    pos = torch.arange(T)
    scores[pos[None, :] >= n_starts[:, None]] = 2.0  # never a start
    ranks = scores.argsort(1).argsort(1)
    starts = (ranks < n_spans[:, None]).long()
    # frame t is masked if a span started in (t - mask_length, t]
    c = torch.nn.functional.pad(starts.cumsum(1), (mask_length, 0))
    covered = (c[:, mask_length:] - c[:, :T]) > 0
    covered &= pos[None, :] < lens[:, None]
    if num_frames is not None and num_frames > T:
        covered = torch.nn.functional.pad(covered, (0, num_frames - T))
    return covered.to(enc_lens.device)


class MaskEmbedding(torch.nn.Module):
    """Learned vector that replaces the input frames of masked encoder frames.

    Arguments
    ---------
    input_size : int
        Feature dimension of an input frame (80 Mel bins).
    downsampling : int
        Input frames per encoder frame (4 for the 2-block stride-2 CNN).

    Example
    -------
    >>> emb = MaskEmbedding(80, 4)
    >>> feats = torch.randn(2, 8, 80)
    >>> mask = torch.tensor([[True, False], [False, False]])
    >>> out = emb(feats, mask)
    >>> bool((out[0, :4] == emb.embedding).all()), bool((out[0, 4:] == feats[0, 4:]).all())
    (True, True)
    """

    def __init__(self, input_size, downsampling=4):
        super().__init__()
        self.downsampling = int(downsampling)
        self.embedding = torch.nn.Parameter(torch.empty(input_size))
        self.reset_parameters()

    def reset_parameters(self):
        """Small random init, like wav2vec 2.0's ``mask_emb``."""
        torch.nn.init.uniform_(self.embedding, -0.1, 0.1)

    def forward(self, feats, mask):
        """Replaces frames of ``feats`` (B, T, F) under ``mask`` (B, T // downsampling)."""
        frame_mask = mask.repeat_interleave(self.downsampling, dim=1)
        frame_mask = frame_mask[:, : feats.shape[1]].unsqueeze(-1)
        return torch.where(frame_mask, self.embedding.to(feats.dtype), feats)
