"""A second encoder: CNN front-end + SpeechBrain's plain Transformer encoder.

``encoder_architecture: transformer`` (``architecture_transformer.yaml``):
the paper's CNN front-end, a linear projection to ``d_model`` and
``speechbrain.lobes.models.transformer.Transformer.TransformerEncoder``
(pre-norm, relative-position attention by default), in the
:class:`~latent_rq_brain.model.encoder.LayeredEncoder` contract. Exact under padding:
attention ignores padded keys and every other operation is frame-wise.

Authors
 * latent-rq developers 2026
"""

import torch

from latent_rq_brain.model.encoder import (
    LayeredEncoder,
    frontend_stride,
    indexed_layer,
    truncated_copy,
)
from latent_rq_brain.model.features import valid_frames
from latent_rq_brain.model.sb_patches import set_fast_kernels


class TransformerStackEncoder(LayeredEncoder):
    """CNN front-end -> linear projection -> Transformer layers.

    Arguments
    ---------
    frontend : speechbrain.lobes.models.convolution.ConvolutionFrontEnd
        The CNN front-end (its time stride is ``downsampling``).
    projection : speechbrain.nnet.linear.Linear
        Flattened front-end output -> ``d_model`` (paper layer -1 is its output).
    stack : speechbrain.lobes.models.transformer.Transformer.TransformerEncoder
        Built with ``output_hidden_states: True``.
    positional : torch.nn.Module, optional
        Relative position embeddings (``speechbrain.nnet.attention.RelPosEncXL``)
        for ``attention_type: RelPosMHAXL``; None for attention without them.
    fast_frontend, fast_ffn, fast_attention : bool
        The exact speed-ups of :func:`latent_rq_brain.model.sb_patches.set_fast_kernels`.

    Example
    -------
    >>> from latent_rq_brain.sharing.pretrained import PretrainedEncoder, build_encoder
    >>> config = dict(PretrainedEncoder.tiny_config(), encoder_architecture="transformer")
    >>> _, enc = build_encoder(config)
    >>> out, states = enc(torch.randn(2, 16, 80), torch.tensor([4, 3]))
    >>> out.shape, len(states), enc.num_layers, enc.d_model, enc.downsampling
    (torch.Size([2, 4, 32]), 3, 2, 32, 4)
    >>> enc.layer_of("projection.w.weight"), enc.layer_of("stack.layers.1.pos_ffn.ffn.0.w.weight")
    (-1, 1)
    >>> enc.layer_of("stack.norm.norm.weight") is None, enc.truncated_copy(1).num_layers
    (True, 1)
    """

    def __init__(
        self, frontend, projection, stack, positional=None,
        fast_frontend=True, fast_ffn=True, fast_attention=True,
    ):
        super().__init__()
        if not getattr(stack, "output_hidden_states", False):
            raise ValueError("TransformerEncoder must be built with output_hidden_states: True")
        self.frontend = frontend
        self.projection = projection
        self.stack = stack
        self.positional = positional
        set_fast_kernels(self, frontend=fast_frontend, ffn=fast_ffn, attention=fast_attention)

    @property
    def num_layers(self):
        """Number of Transformer layers currently in the stack."""
        return len(self.stack.layers)

    @property
    def d_model(self):
        """Width of the projection and of every layer."""
        return self.projection.w.out_features

    @property
    def downsampling(self):
        """Time stride of the CNN front-end (:func:`~latent_rq_brain.model.encoder.frontend_stride`)."""
        return frontend_stride(self.frontend)

    def truncated_copy(self, n_layers):
        """A frozen deep copy keeping Transformer layers ``0..n_layers-1``."""
        return truncated_copy(self, "stack", n_layers)

    def layer_of(self, name):
        """``-1``: front-end and projection; ``l``: layer ``l``; None: the final norm."""
        if name.startswith(("frontend.", "projection.")):
            return -1
        return indexed_layer(name, "stack.layers.", self.num_layers)

    def forward(self, feats, enc_lens):
        """``(out, hidden_states)``, see :class:`~latent_rq_brain.model.encoder.LayeredEncoder`."""
        src = self.frontend(feats)
        if src.dim() == 4:  # (B, T, F, C) -> (B, T, F * C)
            src = src.reshape(src.shape[0], src.shape[1], -1)
        x = self.projection(src)
        padding = ~valid_frames(enc_lens.to(x.device), x.shape[1])
        pos = self.positional(x) if self.positional is not None else None
        out, _, hidden_states = self.stack(x, src_key_padding_mask=padding, pos_embs=pos)
        return out, hidden_states
