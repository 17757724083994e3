"""The encoder contract, and the paper's encoder: CNN front-end + Conformer.

Everything outside the encoder (target encoder, fine-tuning, export, the
s3prl upstream, probes and analysis) uses an encoder only through
:class:`LayeredEncoder`:

* ``num_layers`` and ``d_model`` (the width of the final output);
* ``layer_dims``: the width of each hidden state (``num_layers + 1`` ints,
  ``d_model`` each by default); an encoder whose stacks have several widths
  says so here, and each target source's projection reads its own width
  (:func:`latent_rq_brain.targets.quantizer.latent_rq_quantizer`);
* ``downsampling``: input feature frames per output frame;
* ``forward(feats, enc_lens) -> (out, hidden_states)``: ``hidden_states`` is
  ``[front-end output, layer 0, ..., layer L-1]``, paper layers ``-1 .. L-1``
  (:mod:`latent_rq_brain.model.layers`), hidden state ``i`` of shape
  (B, T // downsampling, layer_dims[i]): every hidden state at the base rate,
  whatever rate the encoder runs at inside (an encoder with a slower stack
  upsamples its output back);
* padding-exact: the hidden states of an utterance on its valid frames
  (``< enc_lens``) do not depend on the padding after it nor on the other
  utterances of the batch (within float tolerance, ~1e-5 in fp32). The target
  cache, fixed shapes and batch-size-independent targets rely on it;
  ``tests/test_encoder_contract.py`` checks it for every architecture;
* ``truncated_copy(n_layers)``: a frozen copy (eval mode, no gradients) that
  runs only the first ``n_layers`` layers (the Latent-RQ target encoder);
* ``layer_of(name)``: the paper layer a parameter belongs to (``-1`` for the
  front-end, None for what no hidden state passes through, e.g. a final norm);
  fine-tuning picks its trainable layers with it.

A new encoder is a subclass plus an architecture YAML
(:mod:`latent_rq_brain.model.architectures`), selected with ``encoder_architecture``.

The SpeechBrain modules inside :class:`ConformerEncoder` are patched on
construction (:mod:`latent_rq_brain.model.sb_patches`): the Conformer convolution is
made exact under padding, and the fast kernels are switched as the YAML asks.

Authors
 * latent-rq developers 2026
"""

import copy

import torch

from latent_rq_brain.model.sb_patches import patch_padding_exact_convolution, set_fast_kernels


def frozen(module):
    """``module`` in eval mode without gradients (returned for chaining).

    Example
    -------
    >>> net = frozen(torch.nn.Linear(2, 2))
    >>> net.training, net.weight.requires_grad
    (False, False)
    """
    module.eval()
    module.requires_grad_(False)
    return module


def check_truncation(n_layers, num_layers):
    """Validates the ``n_layers`` of :meth:`LayeredEncoder.truncated_copy`.

    Example
    -------
    >>> check_truncation(2, 4)
    2
    >>> check_truncation(5, 4)
    Traceback (most recent call last):
    ...
    ValueError: truncated_copy(n_layers=5): the encoder has 4 layers (0..4 can be kept)
    """
    if not 0 <= int(n_layers) <= num_layers:
        raise ValueError(
            f"truncated_copy(n_layers={n_layers}): the encoder has {num_layers} layers "
            f"(0..{num_layers} can be kept)"
        )
    return int(n_layers)


def frontend_stride(frontend):
    """Time stride of a SpeechBrain front-end (its filter properties): the
    ``downsampling`` of an encoder built on it.

    Example
    -------
    >>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
    >>> frontend_stride(ConvolutionFrontEnd((8, 16, 80), num_blocks=2,
    ...     num_layers_per_block=1, out_channels=(8, 8), kernel_sizes=(3, 3),
    ...     strides=(2, 2), residuals=(False, False)))
    4
    """
    return int(frontend.get_filter_properties().stride)


def truncated_copy(encoder, stack, n_layers):
    """A frozen (:func:`frozen`) deep copy of ``encoder`` whose submodule
    ``stack`` keeps only the first ``n_layers`` of its ``layers`` ModuleList:
    :meth:`LayeredEncoder.truncated_copy` of an encoder with one layer stack.

    Arguments
    ---------
    encoder : LayeredEncoder
        The encoder to copy (unchanged).
    stack : str
        Dotted name of the submodule holding ``layers``, as in
        ``encoder.get_submodule(stack)``.
    n_layers : int
        Layers kept (checked with :func:`check_truncation`).

    Returns
    -------
    LayeredEncoder
        The copy, in eval mode, without gradients.

    Example
    -------
    >>> class Stack(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layers = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))
    >>> net = torch.nn.Module()
    >>> net.num_layers, net.stack = 3, Stack()
    >>> top = truncated_copy(net, "stack", 2)
    >>> len(top.stack.layers), len(net.stack.layers), top.training
    (2, 3, False)
    """
    n_layers = check_truncation(n_layers, encoder.num_layers)
    module = copy.deepcopy(encoder)
    holder = module.get_submodule(stack)
    holder.layers = torch.nn.ModuleList(list(holder.layers)[:n_layers])
    return frozen(module)


def indexed_layer(name, prefix, num_layers):
    """Layer index in a parameter ``name`` that starts with ``prefix``
    (``<prefix><i>.``), None if it does not or ``i >= num_layers``.

    Example
    -------
    >>> indexed_layer("stack.layers.3.ffn.w", "stack.layers.", 4)
    3
    >>> indexed_layer("stack.norm.w", "stack.layers.", 4) is None
    True
    """
    if not name.startswith(prefix):
        return None
    layer = int(name[len(prefix):].split(".", 1)[0])
    return layer if layer < num_layers else None


class LayeredEncoder(torch.nn.Module):
    """The encoder contract (see the module docstring); subclasses implement it.

    Example
    -------
    >>> class Two(LayeredEncoder):
    ...     pass
    >>> Two().num_layers
    Traceback (most recent call last):
    ...
    NotImplementedError: Two must define num_layers (latent_rq_brain.model.encoder.LayeredEncoder)
    """

    def _missing(self, what):
        return NotImplementedError(
            f"{type(self).__name__} must define {what} (latent_rq_brain.model.encoder.LayeredEncoder)"
        )

    @property
    def num_layers(self):
        """Number of layers currently in the stack (paper layers 0..L-1)."""
        raise self._missing("num_layers")

    @property
    def d_model(self):
        """Width of the final output."""
        raise self._missing("d_model")

    @property
    def layer_dims(self):
        """Width of each hidden state, front-end output first (``num_layers + 1``
        ints); ``d_model`` for each unless an encoder says otherwise."""
        return [self.d_model] * (self.num_layers + 1)

    @property
    def downsampling(self):
        """Input feature frames per output frame."""
        raise self._missing("downsampling")

    def forward(self, feats, enc_lens):
        """``(out, hidden_states)`` of (B, T, F) features, T a multiple of
        ``downsampling``, with (B,) valid output frames ``enc_lens``.

        Returns
        -------
        out : torch.Tensor
            (B, T // downsampling, d_model) final output.
        hidden_states : list of torch.Tensor
            ``num_layers + 1`` tensors (B, T // downsampling, layer_dims[i]):
            the front-end output (paper layer -1), then every layer; exact
            under padding (see the module docstring).
        """
        raise self._missing("forward")

    def truncated_copy(self, n_layers):
        """A frozen copy (:func:`frozen`) running only layers ``0..n_layers-1``."""
        raise self._missing("truncated_copy")

    def layer_of(self, name):
        """Paper layer of the parameter ``name`` (as in ``named_parameters()``):
        ``-1`` front-end, ``0..L-1`` layers, None for the rest."""
        raise self._missing("layer_of")


class ConformerEncoder(LayeredEncoder):
    """CNN front-end + Conformer encoder returning output and hidden states.

    Arguments
    ---------
    frontend : speechbrain.lobes.models.convolution.ConvolutionFrontEnd
        The 2-block stride-2 CNN (4x downsampling).
    transformer : speechbrain.lobes.models.transformer.TransformerASR.TransformerASR
        Built with ``encoder_module: conformer``, ``num_decoder_layers: 0`` and
        ``output_hidden_states: True``.
    fast_frontend : bool
        Channels-last front-end convolutions (:class:`~latent_rq_brain.model.sb_patches.ChannelsLastConv2d`).
    fast_ffn : bool
        Feed-forward modules without permutation (:class:`~latent_rq_brain.model.sb_patches.BatchMajorFeedForward`).
    fast_attention : bool
        Relative-position attention on a fused kernel (:class:`~latent_rq_brain.model.sb_patches.FusedRelPosMHAXL`).

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
    >>> enc = ConformerEncoder(cnn, tr)
    >>> out, states = enc(torch.randn(2, 16, 80), torch.tensor([4, 3]))
    >>> out.shape, len(states), enc.num_layers, enc.d_model, enc.downsampling
    (torch.Size([2, 4, 32]), 3, 2, 32, 4)
    >>> top = enc.truncated_copy(1)
    >>> _, first = top(torch.randn(2, 16, 80), torch.tensor([4, 3]))
    >>> top.num_layers, len(first), top.training
    (1, 2, False)
    >>> enc.layer_of("frontend.convblock_0.convs.conv_0.conv.weight")
    -1
    >>> enc.layer_of("transformer.custom_src_module.layers.0.w.weight")
    -1
    >>> enc.layer_of("transformer.encoder.layers.1.ffn_module1.0.w.weight")
    1
    >>> enc.layer_of("transformer.encoder.norm.norm.weight") is None
    True
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

    @property
    def downsampling(self):
        """Time stride of the CNN front-end (:func:`frontend_stride`)."""
        return frontend_stride(self.frontend)

    def truncated_copy(self, n_layers):
        """A frozen deep copy keeping Conformer layers ``0..n_layers-1``."""
        return truncated_copy(self, "transformer.encoder", n_layers)

    def layer_of(self, name):
        """``-1``: CNN front-end and its projection to ``d_model``; ``l``:
        Conformer layer ``l``; None: the final LayerNorm."""
        if name.startswith(("frontend.", "transformer.custom_src_module.")):
            return -1
        return indexed_layer(name, "transformer.encoder.layers.", self.num_layers)

    def forward(self, feats, enc_lens):
        """Encodes ``feats`` (B, T, F), T a multiple of ``downsampling``.

        Arguments
        ---------
        feats : torch.Tensor
            (B, T, F) features (masked or clean).
        enc_lens : torch.Tensor
            (B,) valid encoder frames.

        Returns
        -------
        out : torch.Tensor
            (B, T // downsampling, d_model) final encoder output (after the final norm).
        hidden_states : list of torch.Tensor
            ``[front-end output, layer 0, ..., layer L-1]``.
        """
        src = self.frontend(feats)
        rel = enc_lens.to(src.device).float() / src.shape[1]
        out, hidden_states = self.transformer.encode(src, rel)
        return out, hidden_states


#: The name :class:`ConformerEncoder` had before: checkpoints, exported model
#: folders and YAMLs that name it still build the same encoder.
LatentRQEncoder = ConformerEncoder


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
