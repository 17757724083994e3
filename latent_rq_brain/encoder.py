"""The encoder: SpeechBrain's CNN front-end + Conformer, with per-layer states.

``forward`` returns the final output and every hidden state: the CNN
front-end output, then each Conformer layer (paper layers ``-1 .. L-1``, see
:mod:`latent_rq_brain.layers`).

The SpeechBrain modules inside are patched on construction
(:mod:`latent_rq_brain.sb_patches`): the Conformer convolution is made exact
under padding, and the fast kernels are switched as the YAML asks.

Authors
 * latent-rq developers 2026
"""

import torch

from latent_rq_brain.sb_patches import patch_padding_exact_convolution, set_fast_kernels


class LatentRQEncoder(torch.nn.Module):
    """CNN front-end + Conformer encoder returning output and hidden states.

    Arguments
    ---------
    frontend : speechbrain.lobes.models.convolution.ConvolutionFrontEnd
        The 2-block stride-2 CNN (4x downsampling).
    transformer : speechbrain.lobes.models.transformer.TransformerASR.TransformerASR
        Built with ``encoder_module: conformer``, ``num_decoder_layers: 0`` and
        ``output_hidden_states: True``.
    fast_frontend : bool
        Channels-last front-end convolutions (:class:`~latent_rq_brain.sb_patches.ChannelsLastConv2d`).
    fast_ffn : bool
        Feed-forward modules without permutation (:class:`~latent_rq_brain.sb_patches.BatchMajorFeedForward`).
    fast_attention : bool
        Relative-position attention on a fused kernel (:class:`~latent_rq_brain.sb_patches.FusedRelPosMHAXL`).

    Example
    -------
    >>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
    >>> from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
    >>> cnn = ConvolutionFrontEnd((8, 16, 80), num_blocks=2, num_layers_per_block=1,
    ...     out_channels=(8, 8), kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False))
    >>> tr = TransformerASR(input_size=160, tgt_vocab=1, d_model=32, nhead=2,
    ...     num_encoder_layers=2, num_decoder_layers=0, d_ffn=64, encoder_module="conformer",
    ...     attention_type="RelPosMHAXL", normalize_before=True, causal=False,
    ...     output_hidden_states=True)
    >>> enc = LatentRQEncoder(cnn, tr)
    >>> out, states = enc(torch.randn(2, 16, 80), torch.tensor([4, 3]))
    >>> out.shape, len(states), enc.num_layers, enc.d_model
    (torch.Size([2, 4, 32]), 3, 2, 32)
    """

    def __init__(
        self, frontend, transformer, fast_frontend=True, fast_ffn=True, fast_attention=True
    ):
        super().__init__()
        if not getattr(transformer, "output_hidden_states", False):
            raise ValueError("TransformerASR must be built with output_hidden_states: True")
        if getattr(transformer, "num_decoder_layers", 0):
            raise ValueError("the encoder needs num_decoder_layers: 0")
        self.frontend = frontend
        self.transformer = transformer
        patch_padding_exact_convolution(self.transformer.encoder)
        set_fast_kernels(
            self, frontend=fast_frontend, ffn=fast_ffn, attention=fast_attention
        )

    @property
    def num_layers(self):
        """Number of Conformer layers currently in the stack."""
        return len(self.transformer.encoder.layers)

    @property
    def d_model(self):
        """Width of the Conformer."""
        return self.transformer.custom_src_module.layers[0].w.out_features

    def forward(self, feats, enc_lens):
        """Encodes ``feats`` (B, T, F), T a multiple of 4.

        Arguments
        ---------
        feats : torch.Tensor
            (B, T, F) features (masked or clean).
        enc_lens : torch.Tensor
            (B,) valid encoder frames.

        Returns
        -------
        out : torch.Tensor
            (B, T // 4, d_model) final encoder output (after the final norm).
        hidden_states : list of torch.Tensor
            ``[front-end output, layer 0, ..., layer L-1]``.
        """
        src = self.frontend(feats)
        rel = enc_lens.to(src.device).float() / src.shape[1]
        out, hidden_states = self.transformer.encode(src, rel)
        return out, hidden_states


def frontend_output_size(cnn_channels, n_mels, downsampling):
    """Width of the CNN front-end's flattened output: the Conformer's ``input_size``.

    The last block's channels times the Mel bins left after ``downsampling``
    (both blocks stride the frequency axis too).

    Example
    -------
    >>> frontend_output_size((32, 16), 80, 4), frontend_output_size((128, 32), 80, 4)
    (320, 640)
    """
    return int(cnn_channels[-1]) * int(n_mels) // int(downsampling)
