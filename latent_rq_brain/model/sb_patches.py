"""Patches of SpeechBrain 1.1 modules: one bug fix and four exact speed-ups.

Each class below is a drop-in subclass of a SpeechBrain module (same
parameters, same state dict) swapped in by assigning ``__class__``, and each
says what it changes upstream, so that it can be proposed there as is.

Bug fix (always on, see :class:`latent_rq_brain.model.encoder.ConformerEncoder`):

* :class:`PaddingExactConvolutionModule`. Upstream bug: the Conformer
  ``ConvolutionModule`` (``speechbrain.lobes.models.transformer.Conformer``)
  masks its *output* on padded frames but not its input, so the depthwise
  convolution leaks padding into the last ``kernel_size // 2`` frames of every
  shorter utterance in a batch: outputs (and Latent-RQ targets) depend on batch
  composition. Fix: zero padded frames before the depthwise convolution.

Speed-ups (same outputs to float rounding; YAML switches ``fast_frontend``,
``fast_ffn`` and ``fast_attention``, see :func:`set_fast_kernels`):

* :class:`ChannelsLastConv2d`. Upstream: ``speechbrain.nnet.CNN.Conv2d``
  transposes the front-end's (B, T, F, C) activations to (B, C, F, T), which
  makes the reflection padding and the convolution copy them whole, forward
  and backward. Here the same convolution runs on a channels-last view of the
  (B, T, F, C) tensor (kernel transposed to (T, F)): no layout copies;
* :class:`BatchMajorFeedForward`. Upstream:
  ``speechbrain.nnet.attention.PositionalwiseFeedForward`` permutes to
  (T, B, d) first, so each linear layer runs as a batched matmul over T;
  position-wise, it needs no permutation at all;
* :class:`FusedRelPosMHAXL`. Upstream: ``speechbrain.nnet.attention.RelPosMHAXL``
  materialises the content scores, adds the shifted position scores, masks,
  soft-maxes, masks again and multiplies, each a pass over a (B, H, T, T)
  tensor. Here the shifted position scores (with the padding mask folded in)
  are the additive mask of ``torch.nn.functional.scaled_dot_product_attention``,
  which does the rest in one fused kernel. Same scale (SpeechBrain's
  ``1 / sqrt(d_model)``), same parameters; attention weights are not returned
  (SpeechBrain's encoder discards them);
* :class:`FastRoPEMHA` (with ``attention_type: RoPEMHA``, same switch
  ``fast_attention``). Upstream: ``speechbrain.nnet.attention.RoPEMHA`` keeps
  its rotation in a process-wide cache (which breaks when the first call
  runs under ``torch.inference_mode``), may compare query and key with
  ``torch.equal`` and expands the padding mask to (B, H, T, T); here the
  rotation is computed per call and the mask stays (B, 1, 1, T).

Authors
 * latent-rq developers 2026
"""

import math

import torch
import torch.nn.functional as F

from speechbrain.lobes.models.transformer.Conformer import ConvolutionModule
from speechbrain.nnet.attention import PositionalwiseFeedForward, RelPosMHAXL, RoPEMHA
from speechbrain.nnet.CNN import Conv2d, get_padding_elem


class PaddingExactConvolutionModule(ConvolutionModule):
    """SpeechBrain's Conformer ConvolutionModule, zeroing padding before the conv.

    Same parameters and state dict as :class:`ConvolutionModule`; only the
    non-streaming, non-causal path differs (padded frames are zeroed after the
    GLU bottleneck, before the depthwise convolution). Other paths are left to
    SpeechBrain.
    """

    def forward(self, x, mask=None, dynchunktrain_config=None):
        """See :meth:`ConvolutionModule.forward`."""
        if mask is None or dynchunktrain_config is not None or self.causal:
            return super().forward(x, mask, dynchunktrain_config)
        out = self.layer_norm(x).transpose(1, 2)
        out = self.bottleneck(out)
        out = out.masked_fill(mask.transpose(1, 2), 0.0)
        out = self.conv(out).transpose(1, 2)
        out = self.after_conv(out)
        return out.masked_fill(mask, 0.0)


def _reflect_pad(x, dim, p):
    """Reflection padding of ``p`` elements on both ends of dimension ``dim``."""
    if p == 0:
        return x
    n = x.shape[dim]
    if p >= n:
        raise ValueError(
            f"reflection padding of {p} needs more than {p} frames on dim {dim}, got {n}"
        )
    left = x.narrow(dim, 1, p).flip(dim)
    right = x.narrow(dim, n - 1 - p, p).flip(dim)
    return torch.cat([left, x, right], dim)


class ChannelsLastConv2d(Conv2d):
    """SpeechBrain's ``Conv2d`` on (B, T, F[, C]) input without layout copies.

    Same parameters and outputs as :class:`speechbrain.nnet.CNN.Conv2d` with
    ``padding="same"``, ``padding_mode="reflect"`` (the front-end's); any other
    configuration falls back to SpeechBrain's forward.

    Example
    -------
    >>> conv = Conv2d(out_channels=4, input_shape=(2, 12, 10), kernel_size=(3, 3), stride=(2, 2))
    >>> x = torch.randn(2, 12, 10)
    >>> plain = conv(x)
    >>> conv.__class__ = ChannelsLastConv2d
    >>> fast = conv(x)
    >>> fast.shape, bool(torch.allclose(fast, plain, atol=1e-6))
    (torch.Size([2, 6, 5, 4]), True)
    """

    def forward(self, x):
        """See :meth:`speechbrain.nnet.CNN.Conv2d.forward`."""
        if (
            self.skip_transpose
            or self.swap
            or self.padding != "same"
            or self.padding_mode != "reflect"
            or self.max_norm is not None
            or x.dim() != (3 if self.unsqueeze else 4)
            or not isinstance(self.conv, torch.nn.Conv2d)
            or torch.nn.utils.parametrize.is_parametrized(self.conv)
        ):
            return super().forward(x)
        x = x.unsqueeze(-1) if self.unsqueeze else x  # (B, T, F, C)
        pad_t = get_padding_elem(
            self.in_channels, self.stride[-1], self.kernel_size[-1], self.dilation[-1]
        )
        pad_f = get_padding_elem(
            self.in_channels, self.stride[-2], self.kernel_size[-2], self.dilation[-2]
        )
        if pad_t[0] != pad_t[1] or pad_f[0] != pad_f[1]:
            return super().forward(x.squeeze(-1) if self.unsqueeze else x)
        x = _reflect_pad(_reflect_pad(x, 1, pad_t[0]), 2, pad_f[0])
        # SpeechBrain convolves (B, C, F, T) with a (F, T) kernel; the same
        # convolution on the channels-last view (B, C, T, F) uses the kernel
        # transposed to (T, F), and its output permutes back to (B, T, F, C)
        # without a copy.
        y = F.conv2d(
            x.permute(0, 3, 1, 2),
            self.conv.weight.transpose(2, 3),
            self.conv.bias,
            stride=tuple(self.stride[::-1]),
            dilation=tuple(self.dilation[::-1]),
            groups=self.conv.groups,
        ).permute(0, 2, 3, 1)
        if self.unsqueeze and y.shape[-1] == 1:
            y = y.squeeze(-1)
        return y


class BatchMajorFeedForward(PositionalwiseFeedForward):
    """SpeechBrain's position-wise feed-forward, without its (T, B) permutation.

    Example
    -------
    >>> ffn = PositionalwiseFeedForward(d_ffn=16, input_size=8)
    >>> x = torch.randn(2, 5, 8)
    >>> plain = ffn(x)
    >>> ffn.__class__ = BatchMajorFeedForward
    >>> bool(torch.allclose(ffn(x), plain, atol=1e-6))
    True
    """

    def forward(self, x):
        """Applies the feed-forward to (B, T, d) ``x``."""
        return self.ffn(x)


def _packed_self_attention(mha, query, key, value, attn_mask):
    """Whether the fused paths apply: self-attention (one tensor), packed
    projections, no ``attn_mask``; anything else goes to SpeechBrain."""
    return (
        attn_mask is None and mha._qkv_same_embed_dim and query is key and key is value
    )


def _packed_qkv(mha, x):
    """(B, T, H, d) query, key and value of a SpeechBrain self-attention's
    packed ``in_proj_weight`` (value bias added in the activations' dtype)."""
    bsz, qlen = x.shape[:2]
    q, k, v = (
        F.linear(x, mha.in_proj_weight)
        .view(bsz, qlen, mha.num_heads, mha.head_dim * 3)
        .chunk(3, dim=-1)
    )
    if mha.vbias is not None:
        v = v + mha.value_bias_weight.to(v.dtype).view(1, 1, mha.num_heads, mha.vhead_dim)
    return q, k, v


def _attend(mha, q, k, v, attn_mask):
    """SDPA of (B, T, H, d) q, k, v with SpeechBrain's scale and dropout,
    then the output projection: (B, T, d_model)."""
    bsz, qlen = q.shape[:2]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=attn_mask,
        dropout_p=mha.dropout if mha.training else 0.0,
        scale=mha.scale,
    )
    return mha.out_proj(out.transpose(1, 2).reshape(bsz, qlen, mha.num_heads * mha.vhead_dim))


class FusedRelPosMHAXL(RelPosMHAXL):
    """SpeechBrain's ``RelPosMHAXL`` self-attention on a fused SDPA kernel.

    Falls back to SpeechBrain's forward for cross-attention, an ``attn_mask``
    or ``mask_pos_future``. Returns ``(output, None)``.

    Example
    -------
    >>> from speechbrain.nnet.attention import RelPosEncXL
    >>> mha = RelPosMHAXL(8, 2, dropout=0.0)
    >>> x = torch.randn(2, 5, 8)
    >>> pos = RelPosEncXL(8)(x)
    >>> pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    >>> plain, _ = mha(x, x, x, pos, key_padding_mask=pad)
    >>> mha.__class__ = FusedRelPosMHAXL
    >>> fused, weights = mha(x, x, x, pos, key_padding_mask=pad)
    >>> bool(torch.allclose(fused, plain, atol=1e-6)), weights
    (True, None)
    """

    def forward(
        self,
        query,
        key,
        value,
        pos_embs,
        key_padding_mask=None,
        attn_mask=None,
        return_attn_weights=True,
    ):
        """See :meth:`speechbrain.nnet.attention.RelPosMHAXL.forward`."""
        if self.mask_pos_future or not _packed_self_attention(self, query, key, value, attn_mask):
            return super().forward(
                query, key, value, pos_embs, key_padding_mask, attn_mask,
                return_attn_weights,
            )
        bsz, heads, dim = query.shape[0], self.num_heads, self.head_dim
        q, k, v = _packed_qkv(self, query)
        # biases in the activations' dtype (the autocast one, if any): upstream
        # adds fp32 biases to bf16 projections, which sends (B, T, H, d)
        # tensors to fp32 and back
        p_k = self.linear_pos(pos_embs).view(1, -1, heads, dim)
        q_u = q + self.pos_bias_u.to(q.dtype).view(1, 1, heads, dim)
        q_v = (q + self.pos_bias_v.to(q.dtype).view(1, 1, heads, dim)).transpose(1, 2)
        # position scores, shifted to (B, H, T, T) exactly as SpeechBrain does
        bias = self.rel_shift(torch.matmul(q_v * self.scale, p_k.permute(0, 2, 3, 1)))
        if key_padding_mask is not None:
            bias = bias.masked_fill(
                key_padding_mask.view(bsz, 1, 1, -1), self.attn_fill_value
            )
        return _attend(self, q_u, k, v, bias.to(q.dtype)), None


def rope_sinusoids(length, head_dim, dtype, device):
    """Cosines, signed sines and pair swap of SpeechBrain's RoPE, for ``length``.

    The values of ``speechbrain.nnet.attention.PrecomputedRoPESinusoids``
    (computed in fp32, cast to ``dtype``), made for the length at hand instead
    of being read from SpeechBrain's process-wide cache: a cache filled under
    ``torch.inference_mode`` (the target encoder) would hand inference tensors
    to the training forward, and a cache is opaque to ``torch.compile``.

    Example
    -------
    >>> from speechbrain.nnet.attention import PrecomputedRoPESinusoids
    >>> cos, sin, swap = rope_sinusoids(5, 8, torch.float32, "cpu")
    >>> ref = PrecomputedRoPESinusoids(5, 8, torch.float32, torch.device("cpu"))
    >>> bool(torch.equal(cos, ref.cosines)), bool(torch.equal(sin, ref.sines))
    (True, True)
    >>> swap.tolist()
    [1, 0, 3, 2, 5, 4, 7, 6]
    """
    angles = torch.exp(
        torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
        * -(math.log(10000.0) / head_dim)
    )
    times = torch.arange(0, length, dtype=torch.float32, device=device)
    times_angles = torch.outer(times, angles)
    cos = torch.cos(times_angles).repeat_interleave(2, dim=-1)
    sign = (-1) ** torch.arange(head_dim, dtype=torch.float32, device=device)
    sin = sign * -torch.sin(times_angles).repeat_interleave(2, dim=-1)
    dims = torch.arange(head_dim, device=device)
    swap = torch.stack([dims[1::2], dims[::2]], dim=-1).reshape(-1)
    return cos.to(dtype), sin.to(dtype), swap


class FastRoPEMHA(RoPEMHA):
    """SpeechBrain's ``RoPEMHA`` self-attention, exact, without its global cache.

    Upstream: ``speechbrain.nnet.attention.RoPEMHA`` reads the rotation from
    a process-wide memo (inference tensors leak from an inference-mode
    forward into training: "Inference tensors cannot be saved for
    backward"), compares query and key with ``torch.equal`` when they are not
    the same object (a device sync) and expands the padding mask to (B, H, T,
    T). Here the rotation is computed for the length at hand
    (:func:`rope_sinusoids`), and the padding mask goes to
    ``scaled_dot_product_attention`` as a (B, 1, 1, T) boolean. Same
    parameters, same outputs; cross-attention or an ``attn_mask`` fall back to
    SpeechBrain's forward. Returns ``(output, None)``.

    Example
    -------
    >>> mha, x = RoPEMHA(8, 2), torch.randn(2, 5, 8)
    >>> padded = torch.arange(5) >= torch.tensor([[5], [3]])  # lengths 5 and 3
    >>> reference = mha(x, x, x, key_padding_mask=padded)[0]
    >>> mha.__class__ = FastRoPEMHA
    >>> out, weights = mha(x, x, x, key_padding_mask=padded)
    >>> torch.testing.assert_close(out, reference); print(weights)
    None
    """

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None,
                pos_embs=None, return_attn_weights=True):
        """See :meth:`speechbrain.nnet.attention.RoPEMHA.forward`."""
        if not _packed_self_attention(self, query, key, value, attn_mask):
            return super().forward(
                query, key, value, key_padding_mask, attn_mask, pos_embs,
                return_attn_weights,
            )
        bsz, qlen = query.shape[:2]
        q, k, v = _packed_qkv(self, query)
        cos, sin, swap = rope_sinusoids(qlen, self.head_dim, q.dtype, q.device)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (T, 1, d)
        q = q * cos + q.index_select(-1, swap) * sin
        k = k * cos + k.index_select(-1, swap) * sin
        keep = None
        if key_padding_mask is not None:
            keep = ~key_padding_mask.view(bsz, 1, 1, qlen)
        out = _attend(self, q, k, v, keep)
        return (out, None) if return_attn_weights else out


def set_fast_kernels(encoder, frontend=True, ffn=True, attention=True):
    """Switches the exact speed-ups of the module docstring on or off.

    Swaps classes in place (parameters and state dict are untouched), so it
    can be applied to a live or frozen encoder at any time.

    Example
    -------
    >>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
    >>> cnn = ConvolutionFrontEnd((8, 16, 80), num_blocks=2, num_layers_per_block=1,
    ...     out_channels=(8, 8), kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False))
    >>> set_fast_kernels(cnn, frontend=True, ffn=True, attention=True)
    2
    >>> set_fast_kernels(cnn, frontend=False, ffn=False, attention=False)
    2
    """
    swapped = 0
    pairs = [  # (SpeechBrain's class, our fast twin, switch)
        (Conv2d, ChannelsLastConv2d, frontend),
        (PositionalwiseFeedForward, BatchMajorFeedForward, ffn),
        (RelPosMHAXL, FusedRelPosMHAXL, attention),
        (RoPEMHA, FastRoPEMHA, attention),
    ]
    for module in encoder.modules():
        for plain, fast, on in pairs:
            if type(module) in (plain, fast):
                module.__class__ = fast if on else plain
                swapped += 1
                break
    return swapped




def patch_padding_exact_convolution(module):
    """Swaps :class:`PaddingExactConvolutionModule` into every Conformer
    convolution module of ``module``; returns how many were swapped."""
    swapped = 0
    for sub in module.modules():
        if type(sub) is ConvolutionModule:
            sub.__class__ = PaddingExactConvolutionModule
            swapped += 1
    return swapped
