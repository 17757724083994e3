"""Encoder architectures: one YAML each, selected by ``encoder_architecture``.

An architecture is a HyperPyYAML file in this folder that builds
``features`` (:class:`~latent_rq_brain.model.features.MelFeatures`) and ``encoder``
(a :class:`~latent_rq_brain.model.encoder.LayeredEncoder`) from a few settings:

* ``conformer`` (the paper's, the default): ``architecture.yaml``;
* ``<name>``: ``architecture_<name>.yaml`` (e.g. ``transformer``).

Its top-level settings are its interface: ``!PLACEHOLDER`` ones are required
(the training YAML or a checkpoint's ``encoder_spec.ckpt`` gives them), the
others have defaults (those of a frozen, pre-trained encoder). The training
YAMLs build it with :func:`build_architecture` (``!apply:``), and
:mod:`latent_rq_brain.sharing.pretrained` rebuilds it from a checkpoint with the same
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
import torch
import yaml

from latent_rq_brain.model.features import module_settings, setting_differences
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

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
    >>> architecture_file("mamba")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: encoder_architecture: 'mamba' has no file .../architecture_mamba.yaml; available: conformer, ...
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
    >>> from latent_rq_brain.sharing.pretrained import PretrainedEncoder
    >>> built = build_architecture("conformer", **PretrainedEncoder.tiny_config())
    >>> built["encoder"].num_layers, built["encoder"].downsampling
    (2, 4)
    >>> build_architecture("conformer", d_model=32)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../architecture.yaml needs the settings ['sample_rate', ...]
    """
    from hyperpyyaml import load_hyperpyyaml

    from latent_rq_brain.model.encoder import LayeredEncoder

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
            "latent_rq_brain.model.encoder.LayeredEncoder)"
        )
    if "downsampling" in settings and int(settings["downsampling"]) != encoder.downsampling:
        raise ValueError(
            f"downsampling: {settings['downsampling']} but the encoder of {path} "
            f"downsamples by {encoder.downsampling}: set downsampling: {encoder.downsampling}"
        )
    return built


# ---------------------------------------------------------------- the spec
#: Settings that fix features and encoder of the default architecture: the
#: ``!PLACEHOLDER`` keys of ``architecture.yaml`` (another architecture's are
#: those of its own YAML: :func:`spec_settings`).
ARCH_KEYS, OPTIONAL_ARCH_KEYS = spec_settings(DEFAULT_ARCHITECTURE)
#: ``OPTIONAL_ARCH_KEYS``: architecture settings with a default (older
#: checkpoints lack them), e.g. ``{"attention_type": "RelPosMHAXL"}``.
#: Settings recorded for information (what the targets were made from).
INFO_KEYS = ("target_layers", "target_norm", "seed")
#: Settings of an autoencoder's bottleneck (:mod:`latent_rq_brain.model.autoencoder`),
#: recorded when the run has them: the encoder then also gives ``z``.
LATENT_KEYS = ("latent_dim", "latent_regularizer")
#: Every plain setting of the resolved feature extractor (features.module_settings).
FEATURES_KEY = "feature_settings"


def _plain(value):
    """YAML-safe copy: tuples -> lists.

    Example
    -------
    >>> _plain((32, (1, 2))), _plain(3)
    ([32, [1, 2]], 3)
    """
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def arch_differences(saved, current):
    """How two specs (settings as :class:`EncoderSpec` records them) differ in
    their architecture: its name, then each setting its YAML declares
    (:func:`spec_settings`), a setting absent from a spec taking the YAML's
    default (older checkpoints lack the newer settings).

    Returns
    -------
    list of ``(setting, saved value, current value)``

    Example
    -------
    >>> a = {"d_model": 32, "attention_type": "RoPEMHA"}
    >>> arch_differences(a, {"d_model": 64})
    [('d_model', 32, 64), ('attention_type', 'RoPEMHA', 'RelPosMHAXL')]
    >>> arch_differences(a, dict(a, encoder_architecture="transformer"))
    [('encoder_architecture', 'conformer', 'transformer')]
    """
    names = [spec.get(ARCHITECTURE_KEY, DEFAULT_ARCHITECTURE) for spec in (saved, current)]
    if names[0] != names[1]:
        return [(ARCHITECTURE_KEY, names[0], names[1])]
    required, optional = spec_settings(names[0])
    differ = []
    for key in required + tuple(optional):
        a, b = (_plain(spec.get(key, optional.get(key))) for spec in (saved, current))
        if a != b:
            differ.append((key, a, b))
    return differ


@register_checkpoint_hooks
class EncoderSpec:
    """What :class:`~latent_rq_brain.sharing.pretrained.PretrainedEncoder` needs to
    rebuild a run's encoder.

    Saved into every checkpoint (``encoder_spec.ckpt``, YAML text): the
    architecture's settings (:func:`spec_settings`), its name when it is not
    the default (``encoder_architecture``), :data:`INFO_KEYS`, and every plain
    setting of the resolved feature extractor (:data:`FEATURES_KEY`,
    :func:`latent_rq_brain.model.features.module_settings`: hop and window lengths,
    FFT size, Mel range...). Loading (a resume) checks the file is whole and
    refuses, naming them, architecture settings (those the architecture's own
    YAML declares, :func:`arch_differences`) or feature settings that differ
    from the configuration's: the encoder's state dict cannot tell a hop
    length, nor a convolution's padding.

    Example
    -------
    >>> from latent_rq_brain.sharing.pretrained import PretrainedEncoder
    >>> spec = EncoderSpec.from_hparams(dict(PretrainedEncoder.tiny_config(), lr=1))
    >>> sorted(spec.config) == sorted(ARCH_KEYS + INFO_KEYS)
    True
    """

    def __init__(self, config):
        self.config = dict(config)

    @classmethod
    def from_hparams(cls, hparams):
        """Picks the architecture's settings and :data:`INFO_KEYS` from hparams."""
        name = hparams.get(ARCHITECTURE_KEY, DEFAULT_ARCHITECTURE)
        required, optional = spec_settings(name)
        missing = [k for k in required if k not in hparams]
        if missing:
            raise ValueError(
                f"hparams lack the encoder settings {missing} "
                f"({os.path.basename(architecture_file(name))})"
            )
        keys = required + tuple(optional) + INFO_KEYS + LATENT_KEYS
        config = {k: _plain(hparams[k]) for k in keys if k in hparams}
        if name != DEFAULT_ARCHITECTURE:  # default unnamed: older specs read the same
            config[ARCHITECTURE_KEY] = name
        if isinstance(hparams.get("features"), torch.nn.Module):
            config[FEATURES_KEY] = module_settings(hparams["features"])
        return cls(config)

    @classmethod
    def register(cls, checkpointer, hparams):
        """Adds the spec of ``hparams`` to ``checkpointer`` (optional: older
        checkpoints lack it), so that every checkpoint carries it and a resume
        checks it."""
        checkpointer.add_recoverable("encoder_spec", cls.from_hparams(hparams), optional_load=True)

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.config, f, sort_keys=True)

    @staticmethod
    def read(path):
        """The settings saved in ``path``; KeyError if it is not whole."""
        with open(path, encoding="utf-8") as f:
            saved = yaml.safe_load(f) or {}
        if not isinstance(saved, dict):
            raise KeyError(f"{path} holds no settings (a {type(saved).__name__})")
        required, _ = spec_settings(saved.get(ARCHITECTURE_KEY, DEFAULT_ARCHITECTURE))
        missing = [k for k in required if k not in saved]
        if missing:
            raise KeyError(f"{path} lacks {missing}")
        return saved

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        """Checks the file is whole (a truncated one raises KeyError) and that
        its settings are those of this configuration (ValueError naming each)."""
        del end_of_epoch
        saved = self.read(path)
        differ = [
            f"{k}: {a!r} (checkpoint) != {b!r} (config)"
            for k, a, b in arch_differences(saved, self.config)
        ] + setting_differences(saved.get(FEATURES_KEY) or {}, self.config.get(FEATURES_KEY) or {})
        if differ:
            raise ValueError(
                f"{path} was written with other encoder or feature settings than "
                f"this configuration's: {'; '.join(differ)}"
            )


#: Values ``attention_type`` may take (SpeechBrain's TransformerASR).
ATTENTION_TYPES = ("RelPosMHAXL", "RoPEMHA", "regularMHA", "hypermixing")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_numbers(value):
    """A number, or a non-empty list (tuple) of them, nested at most once
    (per-stack settings such as widths ``[96, 128]``)."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(
            _is_number(v) or (isinstance(v, (list, tuple)) and v and all(map(_is_number, v)))
            for v in value
        )
    return _is_number(value)


#: Generous upper bounds of the architecture settings read from a checkpoint
#: or a received model folder, checked before anything is allocated (the
#: paper's model: d_model 512... 1024, d_ffn 2048... 4096, 12... 24 layers).
ARCH_BOUNDS = {
    "sample_rate": 192000,
    "n_fft": 16384,
    "n_mels": 1024,
    "win_length": 1000,
    "hop_length": 1000,
    "downsampling": 64,
    "cnn_channels": 4096,
    "d_model": 8192,
    "nhead": 256,
    "num_encoder_layers": 256,
    "d_ffn": 65536,
}
#: Bound of the encoder's estimated parameter count (front-end projection and
#: layers; 2e9 float32 weights: 8 GB).
MAX_ENCODER_PARAMETERS = 2 * 10**9


def check_arch_values(settings):
    """Refuses architecture settings that are not plain numbers or lists of
    numbers (or, for ``attention_type``, a known name): they are written into
    the HyperPyYAML overrides of an architecture YAML, where a string such as
    ``!apply:os.system [...]`` read from a checkpoint or a model folder would
    run. Sizes must lie in (0, :data:`ARCH_BOUNDS`], and the layers' weights
    within :data:`MAX_ENCODER_PARAMETERS`, so that a received folder cannot
    make the loader allocate without bound.

    Example
    -------
    >>> check_arch_values({"n_fft": 400, "widths": [96, 128], "cnn_channels": (8, 8)})
    >>> check_arch_values({"n_fft": "!apply:os.system ['true']"})
    Traceback (most recent call last):
    ...
    ValueError: encoder setting n_fft: "!apply:os.system ['true']" must be a number or a list of numbers
    >>> check_arch_values({"widths": [96, "x"]})
    Traceback (most recent call last):
    ...
    ValueError: encoder setting widths: [96, 'x'] must be a number or a list of numbers
    >>> check_arch_values({"d_ffn": 100000000})
    Traceback (most recent call last):
    ...
    ValueError: encoder setting d_ffn: 100000000 is above its bound 65536 (pretrained.ARCH_BOUNDS): refused before allocating anything
    """
    _check_types(settings)
    for key, bound in ARCH_BOUNDS.items():
        values = settings.get(key)
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        for value in values:
            if value is None:
                continue
            if not value > 0:
                raise ValueError(f"encoder setting {key}: {value!r} must be > 0")
            if value > bound:
                raise ValueError(
                    f"encoder setting {key}: {value!r} is above its bound {bound} "
                    "(pretrained.ARCH_BOUNDS): refused before allocating anything"
                )
    d = settings.get("d_model") or 0
    channels = settings.get("cnn_channels") or [0]
    estimate = (settings.get("num_encoder_layers") or 0) * (
        7 * d * d + 4 * d * (settings.get("d_ffn") or 0)  # attention, convolution, 2 FFNs
    ) + max(channels) * (settings.get("n_mels") or 0) * d  # front-end projection
    if estimate > MAX_ENCODER_PARAMETERS:
        raise ValueError(
            f"encoder settings d_model: {d}, d_ffn: {settings.get('d_ffn')}, "
            f"num_encoder_layers: {settings.get('num_encoder_layers')} give about "
            f"{estimate:.2e} parameters, above the bound {MAX_ENCODER_PARAMETERS:.0e} "
            "(pretrained.MAX_ENCODER_PARAMETERS): refused before allocating anything"
        )


def _check_types(settings):
    """The type half of :func:`check_arch_values`."""
    for key, value in settings.items():
        if key == "attention_type":
            if value not in ATTENTION_TYPES:
                raise ValueError(
                    f"encoder setting attention_type: {value!r} must be one of {ATTENTION_TYPES}"
                )
        elif key == "cnn_channels":
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise ValueError(f"encoder setting cnn_channels: {value!r} must be a list of integers")
        elif not _is_numbers(value):
            raise ValueError(
                f"encoder setting {key}: {value!r} must be a number or a list of numbers"
            )
