"""Encoder architectures: one YAML each, selected by ``encoder_architecture``.

An architecture is a HyperPyYAML file in this folder that builds
``features`` (:class:`~latent_rq_brain.features.MelFeatures`) and ``encoder``
(a :class:`~latent_rq_brain.encoder.LayeredEncoder`) from a few settings:

* ``conformer`` (the paper's, the default): ``architecture.yaml``;
* ``<name>``: ``architecture_<name>.yaml`` (e.g. ``transformer``).

Its top-level settings are its interface: ``!PLACEHOLDER`` ones are required
(the training YAML or a checkpoint's ``encoder_spec.ckpt`` gives them), the
others have defaults (those of a frozen, pre-trained encoder). The training
YAMLs build it with :func:`build_architecture` (``!apply:``), and
:mod:`latent_rq_brain.pretrained` rebuilds it from a checkpoint with the same
function: same modules, same order, same seeded weights, same names.
Features and CNN front-end are one shared file, ``frontend.yaml``, that each
architecture includes (``frontend: !include:frontend.yaml``, then
``features: !ref <frontend[features]>``). Adding an architecture is its YAML
and its encoder module; nothing here.

Authors
 * latent-rq developers 2026
"""

import functools
import glob
import json
import os

import ruamel.yaml

#: The paper's architecture (CNN front-end + Conformer): ``architecture.yaml``.
DEFAULT_ARCHITECTURE = "conformer"
#: The training-YAML key that selects the architecture.
ARCHITECTURE_KEY = "encoder_architecture"
#: Settings that change speed or training noise, never what trained weights
#: compute: not part of a checkpoint's spec (a frozen encoder takes the
#: architecture file's defaults: no dropout, fast kernels).
RUNTIME_KEYS = ("dropout", "fast_frontend", "fast_ffn", "fast_attention")

FOLDER = os.path.dirname(os.path.abspath(__file__))


def available_architectures():
    """Names of the architecture files in this folder.

    Example
    -------
    >>> available_architectures()[:1], "transformer" in available_architectures()
    (['conformer'], True)
    """
    names = sorted(
        os.path.basename(p)[len("architecture_"):-len(".yaml")]
        for p in glob.glob(os.path.join(FOLDER, "architecture_*.yaml"))
    )
    return [DEFAULT_ARCHITECTURE] + names


def architecture_file(name):
    """Path of the YAML of architecture ``name``.

    Example
    -------
    >>> os.path.basename(architecture_file("conformer"))
    'architecture.yaml'
    >>> architecture_file("zipformer")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: encoder_architecture: 'zipformer' has no file .../architecture_zipformer.yaml; available: conformer, ...
    """
    name = str(name)
    base = "architecture.yaml" if name == DEFAULT_ARCHITECTURE else f"architecture_{name}.yaml"
    path = os.path.join(FOLDER, base)
    if not os.path.isfile(path):
        raise ValueError(
            f"{ARCHITECTURE_KEY}: {name!r} has no file {path}; available: "
            + ", ".join(available_architectures())
        )
    return path


def architecture_settings(name=DEFAULT_ARCHITECTURE):
    """``(required, defaults)`` settings of an architecture, read from its YAML:
    the top-level ``!PLACEHOLDER`` keys (in file order) and the top-level plain
    values.

    Example
    -------
    >>> required, defaults = architecture_settings("conformer")
    >>> required[:3], defaults["attention_type"], defaults["dropout"]
    (('sample_rate', 'n_fft', 'n_mels'), 'RelPosMHAXL', 0.0)
    """
    required, defaults = _read_settings(architecture_file(name))
    return required, dict(defaults)


@functools.lru_cache(maxsize=None)
def _read_settings(path):
    with open(path, encoding="utf-8") as f:
        tree = ruamel.yaml.YAML().load(f)
    required, defaults = [], {}
    for key, value in tree.items():
        tag = getattr(getattr(value, "tag", None), "value", None)
        if tag == "!PLACEHOLDER":
            required.append(key)
        elif tag is None and not isinstance(value, dict):
            defaults[key] = value
    return tuple(required), defaults


def spec_settings(name=DEFAULT_ARCHITECTURE):
    """``(required, optional)`` settings a checkpoint records for an
    architecture: :func:`architecture_settings` without :data:`RUNTIME_KEYS`.

    Example
    -------
    >>> required, optional = spec_settings("conformer")
    >>> "cnn_channels" in required, optional
    (True, {'attention_type': 'RelPosMHAXL'})
    """
    required, defaults = architecture_settings(name)
    return required, {k: v for k, v in defaults.items() if k not in RUNTIME_KEYS}


def _yaml_value(value):
    """One override value as HyperPyYAML text (tuples keep their type).

    Example
    -------
    >>> _yaml_value((32, 16)), _yaml_value([1, 2]), _yaml_value("RelPosMHAXL"), _yaml_value(None)
    ('!tuple (32, 16)', '[1, 2]', '"RelPosMHAXL"', 'null')
    """
    if isinstance(value, tuple):
        return f"!tuple ({', '.join(str(v) for v in value)}{',' if len(value) == 1 else ''})"
    return json.dumps(value)


def build_architecture(name=DEFAULT_ARCHITECTURE, **settings):
    """Builds an architecture's YAML with ``settings``; returns its objects
    (``features``, ``encoder`` and the parts they are made of).

    Settings the architecture does not declare are left out (a training YAML
    passes one list whichever architecture it selects); a missing required
    one, or a ``downsampling`` other than the encoder's, is an error.

    Example
    -------
    >>> from latent_rq_brain.pretrained import PretrainedEncoder
    >>> built = build_architecture("conformer", **PretrainedEncoder.tiny_config())
    >>> built["encoder"].num_layers, built["encoder"].downsampling
    (2, 4)
    >>> build_architecture("conformer", d_model=32)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../architecture.yaml needs the settings ['sample_rate', ...]
    """
    from hyperpyyaml import load_hyperpyyaml

    from latent_rq_brain.encoder import LayeredEncoder

    path = architecture_file(name)
    required, defaults = architecture_settings(name)
    missing = [k for k in required if k not in settings]
    if missing:
        raise ValueError(f"{path} needs the settings {missing}")
    overrides = "\n".join(
        f"{k}: {_yaml_value(v)}" for k, v in settings.items() if k in required or k in defaults
    )
    with open(path, encoding="utf-8") as f:
        built = load_hyperpyyaml(f, overrides)
    encoder = built.get("encoder")
    if not isinstance(encoder, LayeredEncoder) or "features" not in built:
        raise ValueError(
            f"{path} must build `features` and `encoder` (a "
            "latent_rq_brain.encoder.LayeredEncoder)"
        )
    if "downsampling" in settings and int(settings["downsampling"]) != encoder.downsampling:
        raise ValueError(
            f"downsampling: {settings['downsampling']} but the encoder of {path} "
            f"downsamples by {encoder.downsampling}: set downsampling: {encoder.downsampling}"
        )
    return built
