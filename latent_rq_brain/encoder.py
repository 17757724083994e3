"""The encoder: SpeechBrain's CNN front-end + Conformer, with per-layer states.

Layer indices follow the paper: ``-1`` is the CNN front-end output (projected
to ``d_model`` by ``TransformerASR.custom_src_module``: the input of the first
Conformer layer) and ``0 .. L-1`` are the outputs of the Conformer layers,
zero-indexed, before the encoder's final LayerNorm. SpeechBrain's
``output_hidden_states`` list holds exactly these, so paper layer ``l`` is
``hidden_states[l + 1]`` (:func:`hidden_state_index`).

SpeechBrain's Conformer convolution module masks its *output* on padded frames
but not its input, so the depthwise convolution leaks padding into the last
``kernel_size // 2`` frames of every shorter utterance in a batch: outputs (and
Latent-RQ targets) would depend on batch composition. :class:`LatentRQEncoder`
swaps in :class:`PaddingExactConvolutionModule`, the same module and parameters
with padded frames zeroed before the depthwise convolution.

Authors
 * latent-rq developers 2026
"""

import torch

from speechbrain.lobes.models.transformer.Conformer import ConvolutionModule


def hidden_state_index(layer, num_layers):
    """Index into SpeechBrain's ``hidden_states`` of paper layer ``layer``.

    Example
    -------
    >>> hidden_state_index(-1, 17), hidden_state_index(5, 17), hidden_state_index(16, 17)
    (0, 6, 17)
    >>> hidden_state_index(17, 17)
    Traceback (most recent call last):
     ...
    ValueError: target layer 17 is out of range: valid layers are -1 (CNN front-end output) to 16 (last of 17 Conformer layers)
    """
    layer = int(layer)
    if not -1 <= layer < num_layers:
        raise ValueError(
            f"target layer {layer} is out of range: valid layers are -1 "
            f"(CNN front-end output) to {num_layers - 1} (last of {num_layers} "
            "Conformer layers)"
        )
    return layer + 1


def check_target_layers(value):
    """Validates a ``target_layers`` setting: a non-empty list of distinct ints.

    Example
    -------
    >>> check_target_layers([5, 6])
    [5, 6]
    >>> check_target_layers("5,6")
    Traceback (most recent call last):
     ...
    ValueError: target_layers must be a list of layer indices like [5, 6, 7], got '5,6'
    """
    import numbers

    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"target_layers must be a list of layer indices like [5, 6, 7], got {value!r}"
        )
    for x in value:
        if isinstance(x, bool) or not isinstance(x, numbers.Integral):
            raise ValueError(
                f"target_layers must hold integer layer indices, got {x!r} in {list(value)!r}"
            )
    layers = [int(x) for x in value]
    if not layers:
        raise ValueError("target_layers is empty")
    if len(set(layers)) != len(layers):
        raise ValueError(f"target_layers has duplicates: {layers}")
    return layers


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


class LatentRQEncoder(torch.nn.Module):
    """CNN front-end + Conformer encoder returning output and hidden states.

    Arguments
    ---------
    frontend : speechbrain.lobes.models.convolution.ConvolutionFrontEnd
        The 2-block stride-2 CNN (4x downsampling).
    transformer : speechbrain.lobes.models.transformer.TransformerASR.TransformerASR
        Built with ``encoder_module: conformer``, ``num_decoder_layers: 0`` and
        ``output_hidden_states: True``.

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

    def __init__(self, frontend, transformer):
        super().__init__()
        if not getattr(transformer, "output_hidden_states", False):
            raise ValueError("TransformerASR must be built with output_hidden_states: True")
        if getattr(transformer, "num_decoder_layers", 0):
            raise ValueError("the encoder needs num_decoder_layers: 0")
        self.frontend = frontend
        self.transformer = transformer
        for layer in self.transformer.encoder.layers:
            conv = getattr(layer, "convolution_module", None)
            if type(conv) is ConvolutionModule:
                conv.__class__ = PaddingExactConvolutionModule

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
