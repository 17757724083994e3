"""A Zipformer-like encoder: layer stacks at several frame rates, U-Net shaped.

``encoder_architecture: zipformer`` (``architecture_zipformer.yaml``), after
Zipformer (Yao et al., "Zipformer: A faster and better encoder for automatic
speech recognition", arXiv 2310.11230), written small, from torch modules:

* the paper's CNN front-end (4x) and a linear projection to ``d_model`` give
  the *base rate* (paper layer -1);
* ``num_encoder_layers`` layers are split over stacks (:func:`stack_layer_counts`);
  stack ``s`` runs at ``1 / factors[s]`` of the base rate, the factors rising
  then falling (:func:`u_shape_factors`: 1, 2, 4, 8, 4, 2 for six stacks);
* a stack takes its input at the base rate, pools groups of ``factor`` frames
  into one with learned weights (:class:`WeightedDownsample`), runs its layers
  (self-attention, convolution module, feed-forward; pre-norm residual), and
  repeats each low-rate frame ``factor`` times to come back to the base rate;
* a learned per-channel *bypass* mixes the stack's input ``x`` and its
  up-sampled output ``y``: ``x + c * (y - x)`` (:class:`ZipformerStack`).

Hidden states: one per *layer*, every one at the base rate and ``d_model``
wide (one width for all stacks): the hidden state of layer ``j`` of a stack is
the stack's bypass output had the stack ended after layer ``j``. So the
hidden state of a stack's last layer is the next stack's input, layer indices
count attention layers as in the other encoders, and
:meth:`ZipformerEncoder.truncated_copy` (keep the first ``n`` layers, cutting a
stack short if needed) gives the same hidden states as the full encoder.

Exact under padding: attention ignores padded keys, the convolution module
zeroes padded frames before its depthwise convolution, pooling averages valid
frames only (a group that straddles the end pools its valid frames), and
every other operation is frame-wise. There is no positional encoding: the
convolution modules carry position. BiasNorm and the Swoosh activations of
Zipformer are options (``norm``, ``activation``) measured in
``results/performance.md``; Zipformer's Balancer and Whiten modules (training
aids made of many elementwise operations) are left out.

Authors
 * latent-rq developers 2026
"""

import copy

import torch
import torch.nn.functional as F

from latent_rq_brain.model.encoder import LayeredEncoder, check_truncation, frontend_stride, frozen
from latent_rq_brain.model.features import valid_frames
from latent_rq_brain.model.sb_patches import set_fast_kernels


def u_shape_factors(num_stacks, max_factor=8):
    """Down-sampling factor of each stack: doubling up to the middle, then
    halving, capped at ``max_factor`` (Zipformer's 1, 2, 4, 8, 4, 2).

    Example
    -------
    >>> u_shape_factors(6), u_shape_factors(4), u_shape_factors(3), u_shape_factors(8)
    ([1, 2, 4, 8, 4, 2], [1, 2, 4, 2], [1, 2, 2], [1, 2, 4, 8, 8, 8, 4, 2])
    >>> u_shape_factors(6, max_factor=4)
    [1, 2, 4, 4, 4, 2]
    """
    if num_stacks < 1 or max_factor < 1:
        raise ValueError(f"num_stacks: {num_stacks}, max_factor: {max_factor} must be >= 1")
    return [min(2 ** i, 2 ** (num_stacks - i), int(max_factor)) for i in range(num_stacks)]


def stack_layer_counts(num_layers, factors):
    """Layers of each stack: ``num_layers`` split evenly, the remainder going
    to the lowest-rate stacks first (where a layer is cheapest).

    Example
    -------
    >>> stack_layer_counts(8, [1, 2, 4, 8, 4, 2])
    [1, 1, 2, 2, 1, 1]
    >>> stack_layer_counts(16, [1, 2, 4, 8, 4, 2])
    [2, 3, 3, 3, 3, 2]
    >>> stack_layer_counts(3, [1, 2, 2])
    [1, 1, 1]
    """
    n = len(factors)
    counts = [num_layers // n] * n
    by_rate = sorted(range(n), key=lambda s: (-factors[s], s))
    for s in by_rate[: num_layers % n]:
        counts[s] += 1
    return counts


class BiasNorm(torch.nn.Module):
    """Zipformer's BiasNorm: ``x / rms(x - b) * exp(g)``, a learned per-channel
    bias ``b`` (only inside the RMS) and one learned log-scale ``g``.

    Example
    -------
    >>> norm = BiasNorm(4)
    >>> y = norm(torch.randn(2, 3, 4) * 10)
    >>> torch.allclose(y.pow(2).mean(-1), torch.ones(2, 3), atol=1e-4)
    True
    """

    def __init__(self, d_model, eps=1e-6):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(d_model))
        self.log_scale = torch.nn.Parameter(torch.zeros(()))
        self.eps = eps

    def forward(self, x):
        """Normalises the last dimension of ``x``."""
        scale = torch.rsqrt((x - self.bias).pow(2).mean(-1, keepdim=True) + self.eps)
        return x * (scale * self.log_scale.exp())


def swoosh_r(x):
    """Zipformer's SwooshR: ``log(1 + exp(x - 1)) - 0.08 x - 0.313261687``
    (zero at 0).

    Example
    -------
    >>> abs(float(swoosh_r(torch.zeros(1)))) < 1e-6
    True
    """
    return F.softplus(x - 1.0) - 0.08 * x - 0.313261687


class SwooshR(torch.nn.Module):
    """:func:`swoosh_r` as a module."""

    def forward(self, x):
        """Applies :func:`swoosh_r`."""
        return swoosh_r(x)


#: ``norm`` and ``activation`` choices of :class:`ZipformerEncoder`.
NORMS = {"layernorm": torch.nn.LayerNorm, "biasnorm": BiasNorm}
ACTIVATIONS = {"swish": torch.nn.SiLU, "swoosh": SwooshR, "gelu": torch.nn.GELU}


def _choice(table, key, value):
    if value not in table:
        raise ValueError(f"zipformer {key}: {value!r} must be one of {sorted(table)}")
    return table[value]


class WeightedDownsample(torch.nn.Module):
    """Pools each group of ``factor`` frames into one: a weighted average with
    learned weights (softmax over the group's positions), over the group's
    valid frames only, so a group that straddles the end of an utterance
    pools the same frames whatever padding follows.

    Example
    -------
    >>> down = WeightedDownsample(2)
    >>> x = torch.tensor([[[1.0], [3.0], [5.0], [7.0], [9.0]]])
    >>> y, valid = down(x, torch.tensor([[True, True, True, False, False]]))
    >>> y[..., 0].tolist(), valid.tolist()
    ([[2.0, 5.0, 0.0]], [[True, True, False]])
    """

    def __init__(self, factor):
        super().__init__()
        self.factor = int(factor)
        self.weights = torch.nn.Parameter(torch.zeros(self.factor))

    def forward(self, x, valid):
        """``(y, valid_low)``: (B, ceil(T / factor), D) pooled frames and
        their validity, of (B, T, D) frames ``x`` with (B, T) validity."""
        B, T, D = x.shape
        f = self.factor
        G = -(-T // f)
        if G * f != T:
            x = F.pad(x, (0, 0, 0, G * f - T))
            valid = F.pad(valid, (0, G * f - T))
        w = valid.view(B, G, f).to(x.dtype) * self.weights.softmax(0)
        total = w.sum(-1, keepdim=True)
        w = w / total.clamp_min(torch.finfo(x.dtype).tiny)
        y = torch.matmul(w.unsqueeze(2), x.view(B, G, f, D)).squeeze(2)
        return y, total.squeeze(-1) > 0


class SelfAttention(torch.nn.Module):
    """Multi-head self-attention on one fused kernel
    (``scaled_dot_product_attention``); padded keys are ignored. No dropout
    on the attention weights: on CPU it forces the unfused kernel, and the
    Bernoulli draws over (heads, T, T) cost more than the layer's matmuls."""

    def __init__(self, d_model, nhead):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"zipformer d_model: {d_model} must be a multiple of nhead: {nhead}")
        self.nhead = nhead
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.out = torch.nn.Linear(d_model, d_model)

    def forward(self, x, valid):
        """(B, T, D) -> (B, T, D); ``valid`` (B, T) marks the keys to attend."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.nhead, D // self.nhead).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class ConvolutionModule(torch.nn.Module):
    """Pointwise projection + GLU, depthwise convolution over time,
    activation, pointwise projection; padded frames are zeroed before the
    depthwise convolution (exact under padding; no batch norm)."""

    def __init__(self, d_model, kernel_size, activation):
        super().__init__()
        self.in_proj = torch.nn.Linear(d_model, 2 * d_model)
        self.depthwise = torch.nn.Conv1d(
            d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model
        )
        self.activation = activation()
        self.out_proj = torch.nn.Linear(d_model, d_model)

    def forward(self, x, valid):
        """(B, T, D) -> (B, T, D)."""
        x = F.glu(self.in_proj(x), dim=-1).masked_fill(~valid[..., None], 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        return self.out_proj(self.activation(x))


class ZipformerLayer(torch.nn.Module):
    """Pre-norm residual layer: self-attention, convolution module, feed-forward."""

    def __init__(self, d_model, nhead, d_ffn, kernel_size, norm, activation, dropout=0.0):
        super().__init__()
        self.norm_attn = norm(d_model)
        self.attn = SelfAttention(d_model, nhead)
        self.norm_conv = norm(d_model)
        self.conv = ConvolutionModule(d_model, kernel_size, activation)
        self.norm_ffn = norm(d_model)
        self.ffn = torch.nn.Sequential(
            torch.nn.Linear(d_model, d_ffn), activation(), torch.nn.Dropout(dropout),
            torch.nn.Linear(d_ffn, d_model),
        )
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x, valid):
        """(B, T, D) -> (B, T, D) with (B, T) valid frames."""
        x = x + self.dropout(self.attn(self.norm_attn(x), valid))
        x = x + self.dropout(self.conv(self.norm_conv(x), valid))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class ZipformerStack(torch.nn.Module):
    """Layers at ``1 / factor`` of the base rate, with a learned bypass.

    Example
    -------
    >>> layer = lambda: ZipformerLayer(8, 2, 16, 3, torch.nn.LayerNorm, torch.nn.SiLU)
    >>> stack = ZipformerStack([layer(), layer()], 8, factor=4)
    >>> states = stack(torch.randn(2, 10, 8), valid_frames(torch.tensor([10, 7]), 10))
    >>> len(states), states[-1].shape
    (2, torch.Size([2, 10, 8]))
    """

    def __init__(self, layers, d_model, factor=1):
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)  # registered first: a layer's parameters lead
        self.factor = int(factor)
        self.bypass = torch.nn.Parameter(torch.full((d_model,), 0.5))
        self.downsample = WeightedDownsample(factor) if self.factor > 1 else None

    def forward(self, x, valid):
        """Base-rate outputs ``x + c * (up(y_j) - x)`` after each layer ``j``,
        of the (B, T, D) base-rate input ``x`` with (B, T) validity."""
        T = x.shape[1]
        y, low = self.downsample(x, valid) if self.downsample is not None else (x, valid)
        states = []
        for layer in self.layers:
            y = layer(y, low)
            up = y.repeat_interleave(self.factor, dim=1)[:, :T] if self.factor > 1 else y
            states.append(torch.lerp(x, up.to(x.dtype), self.bypass.to(x.dtype)))
        return states


class ZipformerEncoder(LayeredEncoder):
    """CNN front-end -> projection -> stacks at several frame rates -> norm.

    Arguments
    ---------
    frontend : speechbrain.lobes.models.convolution.ConvolutionFrontEnd
        The CNN front-end (its time stride is ``downsampling``).
    projection : speechbrain.nnet.linear.Linear
        Flattened front-end output -> ``d_model`` (paper layer -1 is its output).
    d_model, nhead, d_ffn : int
        Width of every layer and hidden state, attention heads, feed-forward width.
    num_encoder_layers : int
        Layers in all, split over the stacks (:func:`stack_layer_counts`).
    num_stacks : int
        Stacks (at most ``num_encoder_layers``), at the rates of :func:`u_shape_factors`.
    max_factor : int
        Lowest rate: ``1 / max_factor`` of the base rate.
    kernel_size : int
        Depthwise convolution kernel (low-rate frames of a stack).
    norm : str
        ``layernorm`` or ``biasnorm`` (:class:`BiasNorm`).
    activation : str
        ``swish``, ``swoosh`` (:func:`swoosh_r`) or ``gelu``.
    dropout : float
        Dropout on every residual branch and inside the feed-forward.
    fast_frontend : bool
        Channels-last front-end convolutions (:func:`~latent_rq_brain.model.sb_patches.set_fast_kernels`).

    Example
    -------
    >>> from latent_rq_brain.sharing.pretrained import PretrainedEncoder, build_encoder
    >>> config = dict(PretrainedEncoder.tiny_config(), encoder_architecture="zipformer",
    ...               num_encoder_layers=4)
    >>> _, enc = build_encoder(config)
    >>> enc.factors, enc.layer_counts
    ([1, 2, 4, 2], [1, 1, 1, 1])
    >>> out, states = enc(torch.randn(2, 24, 80), torch.tensor([6, 5]))
    >>> out.shape, len(states), enc.num_layers, enc.d_model, enc.downsampling
    (torch.Size([2, 6, 32]), 5, 4, 32, 4)
    >>> enc.layer_of("projection.w.weight"), enc.layer_of("stacks.2.layers.0.attn.qkv.weight")
    (-1, 2)
    >>> enc.layer_of("stacks.3.downsample.weights"), enc.layer_of("norm.weight") is None
    (3, True)
    >>> enc.truncated_copy(3).layer_counts
    [1, 1, 1]
    """

    def __init__(
        self, frontend, projection, d_model, nhead, d_ffn, num_encoder_layers,
        num_stacks=6, max_factor=8, kernel_size=31, norm="layernorm", activation="swish",
        dropout=0.0, fast_frontend=True,
    ):
        super().__init__()
        norm_cls = _choice(NORMS, "norm", norm)
        act_cls = _choice(ACTIVATIONS, "activation", activation)
        if num_encoder_layers < 1:
            raise ValueError(f"zipformer num_encoder_layers: {num_encoder_layers} must be >= 1")
        factors = u_shape_factors(min(int(num_stacks), int(num_encoder_layers)), max_factor)
        counts = stack_layer_counts(int(num_encoder_layers), factors)
        self.frontend = frontend
        self.projection = projection
        self.stacks = torch.nn.ModuleList(
            ZipformerStack(
                [ZipformerLayer(d_model, nhead, d_ffn, kernel_size, norm_cls, act_cls, dropout)
                 for _ in range(n)],
                d_model, f,
            )
            for f, n in zip(factors, counts)
        )
        self.norm = norm_cls(d_model)
        self._d_model = int(d_model)
        set_fast_kernels(self, frontend=fast_frontend, ffn=True, attention=True)

    @property
    def factors(self):
        """Down-sampling factor of each stack (of the base rate)."""
        return [s.factor for s in self.stacks]

    @property
    def layer_counts(self):
        """Layers in each stack."""
        return [len(s.layers) for s in self.stacks]

    @property
    def num_layers(self):
        """Layers in all stacks."""
        return sum(self.layer_counts)

    @property
    def d_model(self):
        """Width of every layer and hidden state."""
        return self._d_model

    @property
    def downsampling(self):
        """Time stride of the CNN front-end: the base rate."""
        return frontend_stride(self.frontend)

    def truncated_copy(self, n_layers):
        """A frozen deep copy keeping layers ``0..n_layers-1`` (the stack that
        holds the last one cut short, the stacks above it dropped)."""
        n_layers = check_truncation(n_layers, self.num_layers)
        module = copy.deepcopy(self)
        kept = []
        for stack in module.stacks:
            if n_layers <= 0:
                break
            stack.layers = torch.nn.ModuleList(list(stack.layers)[:n_layers])
            n_layers -= len(stack.layers)
            kept.append(stack)
        module.stacks = torch.nn.ModuleList(kept)
        return frozen(module)

    def layer_of(self, name):
        """``-1``: front-end and projection; ``l``: layer ``l``, and a stack's
        bypass and pooling weights belong to its first layer; None: the final
        norm."""
        if name.startswith(("frontend.", "projection.")):
            return -1
        if not name.startswith("stacks."):
            return None
        parts = name.split(".")
        s = int(parts[1])
        if s >= len(self.stacks):
            return None
        first = sum(self.layer_counts[:s])
        if parts[2] == "layers":
            j = int(parts[3])
            return first + j if j < len(self.stacks[s].layers) else None
        return first

    def forward(self, feats, enc_lens):
        """``(out, hidden_states)``, see :class:`~latent_rq_brain.model.encoder.LayeredEncoder`:
        one hidden state per layer, all at the base rate."""
        src = self.frontend(feats)
        if src.dim() == 4:  # (B, T, F, C) -> (B, T, F * C)
            src = src.reshape(src.shape[0], src.shape[1], -1)
        x = self.projection(src)
        valid = valid_frames(enc_lens.to(x.device), x.shape[1])
        hidden_states = [x]
        for stack in self.stacks:
            hidden_states += stack(x, valid)
            x = hidden_states[-1]
        return self.norm(x), hidden_states


def encoder_flops_ratio(factors, counts):
    """Layer compute at the stacks' rates over the same layers all at the base
    rate (matmuls scale with frames, so ``sum(n / f) / sum(n)``; attention
    scores even less).

    Example
    -------
    >>> round(encoder_flops_ratio([1, 2, 4, 8, 4, 2], [1, 1, 2, 2, 1, 1]), 3)
    0.375
    """
    return sum(n / f for f, n in zip(factors, counts)) / sum(counts)


__all__ = [
    "BiasNorm", "WeightedDownsample", "ZipformerEncoder", "ZipformerLayer", "ZipformerStack",
    "stack_layer_counts", "swoosh_r", "u_shape_factors", "encoder_flops_ratio",
]
