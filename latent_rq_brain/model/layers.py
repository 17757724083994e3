"""Paper layer indices: validation, mapping to hidden states, quantizer sources.

Layer indices follow the paper: ``-1`` is the CNN front-end output (projected
to ``d_model`` by ``TransformerASR.custom_src_module``: the input of the first
Conformer layer) and ``0 .. L-1`` are the outputs of the Conformer layers,
zero-indexed, before the encoder's final LayerNorm. SpeechBrain's
``output_hidden_states`` list holds exactly these, so paper layer ``l`` is
``hidden_states[l + 1]`` (:func:`hidden_state_index`).

A quantizer *source* is what one group of codebooks reads: ``"mel"`` (the
stacked Mel frames, stage 0) or ``"layer<l>"`` (paper layer ``l`` of the target
encoder, stages >= 1); :func:`layer_source` and :func:`source_layer` convert.

Authors
 * latent-rq developers 2026
"""

import numbers
import re

#: The quantizer source of BEST-RQ (stage 0) targets.
MEL_SOURCE = "mel"


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


def check_target_layers(value, num_layers=None):
    """Validates a ``target_layers`` setting: a non-empty list of distinct ints,
    each a valid paper layer of a ``num_layers``-layer encoder (if given).

    The one place ``target_layers`` is checked (quantizer and target encoder
    call it).

    Example
    -------
    >>> check_target_layers([5, 6])
    [5, 6]
    >>> check_target_layers([5, 17], num_layers=17)
    Traceback (most recent call last):
     ...
    ValueError: target layer 17 is out of range: valid layers are -1 (CNN front-end output) to 16 (last of 17 Conformer layers)
    >>> check_target_layers("5,6")
    Traceback (most recent call last):
     ...
    ValueError: target_layers must be a list of layer indices like [5, 6, 7], got '5,6'
    """
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
    if num_layers is not None:
        for layer in layers:
            hidden_state_index(layer, num_layers)
    return layers


def layer_source(layer):
    """Name of the quantizer source that reads paper layer ``layer``.

    Example
    -------
    >>> layer_source(-1), layer_source(7)
    ('layer-1', 'layer7')
    """
    return f"layer{int(layer)}"


def source_layer(name):
    """Paper layer index of a ``layer<l>`` source, ``None`` for ``mel``.

    Example
    -------
    >>> source_layer("layer-1"), source_layer("layer5"), source_layer("mel")
    (-1, 5, None)
    >>> source_layer("conv")
    Traceback (most recent call last):
     ...
    ValueError: unknown source 'conv': expected 'mel' or 'layer<index>'
    """
    if name == MEL_SOURCE:
        return None
    m = re.fullmatch(r"layer(-?\d+)", name)
    if not m:
        raise ValueError(f"unknown source {name!r}: expected 'mel' or 'layer<index>'")
    return int(m.group(1))
