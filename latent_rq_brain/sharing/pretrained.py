"""Pre-trained encoders from checkpoints, without the training YAML.

Every checkpoint written by ``train.py`` holds ``encoder_spec.ckpt`` (YAML)
(:class:`EncoderSpec`): the few settings that fix the feature extractor and
encoder architecture (those its architecture YAML declares,
:mod:`latent_rq_brain.model.architectures`). :class:`PretrainedEncoder` rebuilds the
model from it, loads ``encoder.ckpt`` and returns all hidden states (front-end
output plus every layer, :class:`~latent_rq_brain.model.encoder.LayeredEncoder`) for
a batch of 16 kHz waveforms; it is what the probes, the analysis scripts, the
export and the s3prl upstream use::

    enc = PretrainedEncoder.from_checkpoint("results/demo")
    hidden_states, enc_lens = enc(wavs, wav_lens)

:func:`load_quantizer` gives the run's frozen random-projection quantizer.

Authors
 * latent-rq developers 2026
"""

import ast
import os
import re

import ruamel.yaml
import torch

from latent_rq_brain.model.architectures import (  # noqa: F401 (EncoderSpec & co: older import paths)
    ARCH_BOUNDS,
    _is_number,
    ARCH_KEYS,
    LATENT_KEYS,
    MAX_ENCODER_PARAMETERS,
    ARCHITECTURE_KEY,
    ATTENTION_TYPES,
    DEFAULT_ARCHITECTURE,
    FEATURES_KEY,
    INFO_KEYS,
    OPTIONAL_ARCH_KEYS,
    EncoderSpec,
    architecture_file,
    build_architecture,
    check_arch_values,
    spec_settings,
)
from latent_rq_brain.model.features import ms_to_samples
from latent_rq_brain.sharing.safe_load import CheckpointFileError, check_finite
from latent_rq_brain.targets.quantizer import RandomProjectionQuantizer
from latent_rq_brain.training.branching import load_state
from latent_rq_brain.training.checkpoint_files import (
    ENCODER_FILES,
    checkpoint_info,
    find_checkpoint,
    require_files,
)
from latent_rq_brain.training.hparams import expand_hparams_file

#: The default architecture's YAML (the training YAMLs build it, by name).
ARCHITECTURE_YAML = architecture_file(DEFAULT_ARCHITECTURE)


def build_encoder(config):
    """Builds (features, encoder) of a spec, randomly initialised.

    ``config`` names the architecture (``encoder_architecture``, default
    ``conformer``) and gives its settings (:data:`ARCH_KEYS` and optionally
    :data:`OPTIONAL_ARCH_KEYS` for the default); run-time switches (dropout,
    fast kernels) take the architecture file's defaults. The modules, their
    order and names are those the training YAMLs build.

    Example
    -------
    >>> features, encoder = build_encoder(PretrainedEncoder.tiny_config())
    >>> encoder.num_layers, encoder.d_model
    (2, 32)
    >>> build_encoder({"d_model": 32})
    Traceback (most recent call last):
    ...
    ValueError: encoder config lacks ['sample_rate', 'n_fft', 'n_mels', 'win_length', 'hop_length', 'downsampling', 'cnn_channels', 'nhead', 'num_encoder_layers', 'd_ffn']
    """
    name = config.get(ARCHITECTURE_KEY, DEFAULT_ARCHITECTURE)
    required, optional = spec_settings(name)
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"encoder config lacks {missing}")
    # a spec holds lists (_plain) where the training YAMLs give tuples: `(32, 16)`
    settings = {
        k: tuple(config[k]) if isinstance(config[k], list) else config[k]
        for k in required + tuple(optional) if k in config
    }
    check_arch_values(settings)
    if not re.fullmatch(r"[a-z0-9_]+", str(name)):
        raise ValueError(f"encoder setting encoder_architecture: {name!r} is not a known name")
    built = build_architecture(name, **settings)
    return built["features"], built["encoder"]


#: ``random:<name>`` encoders: a test size, or the architecture of a YAML.
RANDOM_CONFIGS = {"tiny": None, "small": "hparams/small/latent_rq.yaml"}
RANDOM_PREFIX = "random:"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _ArchConstructor(ruamel.yaml.constructor.SafeConstructor):
    """Reads scalars only: HyperPyYAML's ``!tuple`` as a tuple, any other
    tag (``!new:``, ``!name:``, ...) as None. A subclass, so that registering
    these never changes ruamel's shared SafeConstructor (HyperPyYAML uses it)."""


_ArchConstructor.add_constructor(
    "!tuple", lambda loader, node: ast.literal_eval(loader.construct_scalar(node))
)
_ArchConstructor.add_multi_constructor("!", lambda loader, suffix, node: None)


def yaml_config(hparams_file):
    """The encoder spec (:class:`EncoderSpec`) of a training YAML, read
    without building anything (the architecture has one home: the YAML).

    Example
    -------
    >>> c = yaml_config(os.path.join(REPO, "hparams/small/latent_rq.yaml"))
    >>> c["cnn_channels"], c["d_model"], c["num_encoder_layers"]
    ([32, 16], 96, 4)
    """
    from hyperpyyaml import resolve_references

    hparams_file, overrides = expand_hparams_file(hparams_file)
    overrides = ruamel.yaml.YAML().load(overrides or "{}")
    overrides.update(data_folder="-", init_from=None)
    with open(hparams_file, encoding="utf-8") as f:
        resolved = resolve_references(f, overrides)
    tree = ruamel.yaml.YAML(typ="safe", pure=True)
    tree.Constructor = _ArchConstructor  # its own registry: no global side effect
    hparams = tree.load(resolved)
    for key, value in hparams.items():
        if isinstance(value, str) and value.startswith("("):
            hparams[key] = ast.literal_eval(value)
    return EncoderSpec.from_hparams(hparams).config


class PretrainedEncoder(torch.nn.Module):
    """A pre-trained (or random) encoder returning every hidden state.

    Arguments
    ---------
    config : dict
        An encoder spec (:class:`EncoderSpec`'s settings; :data:`INFO_KEYS` optional).
    info : dict, optional
        Where the weights came from (checkpoint, stage, step).

    Example
    -------
    >>> enc = PretrainedEncoder.from_config(PretrainedEncoder.tiny_config())
    >>> wavs = torch.randn(2, 16001)
    >>> states, enc_lens = enc(wavs, torch.tensor([1.0, 0.5]))
    >>> len(states), states[0].shape, enc_lens.tolist()
    (3, torch.Size([2, 26, 32]), [26, 13])
    >>> enc.downsample_rate, enc.hidden_size, enc.num_hidden_states, enc.mel_target_dim
    (640, 32, 3, 320)
    """

    def __init__(self, config, info=None):
        super().__init__()
        self.config = dict(config)
        self.features, self.encoder = build_encoder(self.config)
        self.bottleneck = None  # an autoencoder's: z = bottleneck mean of the final output
        if self.config.get("latent_dim") is not None:
            from latent_rq_brain.model.autoencoder import Bottleneck

            dim = self.config["latent_dim"]
            if not _is_number(dim) or int(dim) != dim:
                raise ValueError(f"encoder setting latent_dim: {dim!r} must be an integer")
            self.bottleneck = Bottleneck(self.encoder.d_model, int(dim),
                                         self.config.get("latent_regularizer", "none"))
        self.info = dict(info or {})
        self.sample_rate = int(self.config["sample_rate"])
        hop = ms_to_samples(self.sample_rate, self.config["hop_length"])
        self.downsample_rate = hop * self.encoder.downsampling
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def tiny_config():
        """A 2-layer, d=32 configuration for tests and examples."""
        return {
            "sample_rate": 16000,
            "n_fft": 400,
            "n_mels": 80,
            "win_length": 25,
            "hop_length": 10,
            "downsampling": 4,
            "cnn_channels": [8, 8],
            "d_model": 32,
            "nhead": 2,
            "num_encoder_layers": 2,
            "d_ffn": 64,
            "target_layers": [0],
            "target_norm": "utterance",
            "seed": 1,
        }

    @classmethod
    def from_config(cls, config, seed=None):
        """A randomly initialised encoder (``seed`` makes it reproducible)."""
        if seed is not None:
            torch.manual_seed(seed)
        return cls(config, info={"checkpoint": None, "stage": None, "step": 0})

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu"):
        """Loads the encoder of a training checkpoint (any name
        :func:`latent_rq_brain.training.checkpoint_files.find_checkpoint` takes)."""
        older = ("(written by an older latent-rq): resume that run for one step with "
                 "the current code to add it")
        try:
            ckpt = find_checkpoint(path, needed=ENCODER_FILES)
        except ValueError as err:
            if "lacks encoder_spec.ckpt" not in str(err):
                raise
            raise ValueError(f"{err}; one without encoder_spec.ckpt {older}") from None
        files = ckpt.paramfiles
        spec = files.get("encoder_spec")
        if spec is None:
            raise ValueError(f"checkpoint {ckpt.path} has no encoder_spec.ckpt {older}")
        config = EncoderSpec.read(spec)
        require_files(ckpt, ["encoder"] + (["bottleneck"] if "latent_dim" in config else []))
        info = checkpoint_info(ckpt)
        info.update({k: config[k] for k in INFO_KEYS if k in config})
        model = cls(config, info)
        try:
            load_state(model.encoder, files["encoder"], map_location, "encoder")
        except CheckpointFileError:
            raise  # names the file: empty, truncated, corrupt or unsafe
        except ValueError as err:
            raise ValueError(
                f"{files['encoder']} does not fit the architecture in {spec}: {err}"
            ) from err
        check_finite(model.encoder.state_dict(), files["encoder"])
        if model.bottleneck is not None:
            load_state(model.bottleneck, files["bottleneck"], map_location, "bottleneck")
            check_finite(model.bottleneck.state_dict(), files["bottleneck"])
        return model

    @classmethod
    def load(cls, name, seed=0):
        """The one resolver of encoder names: a checkpoint (run folder, save
        folder, ``CKPT+*`` folder, ``<run>@stage<k>``) or ``random:<config>``
        (``tiny``, ``small`` = ``hparams/small/latent_rq.yaml``, or any
        training YAML: seeded random initialisation of that architecture).

        Example
        -------
        >>> enc = PretrainedEncoder.load("random:tiny")
        >>> enc.num_hidden_states, enc.hidden_size, enc.info["checkpoint"]
        (3, 32, 'random:tiny')
        >>> PretrainedEncoder.load("random:huge")
        Traceback (most recent call last):
        ...
        ValueError: unknown random encoder 'random:huge': use random:tiny, random:small or random:<training YAML>
        """
        name = str(name)
        if name.startswith(RANDOM_PREFIX):
            which = name[len(RANDOM_PREFIX):]
            path = RANDOM_CONFIGS.get(which, which)
            if path is None:
                config = cls.tiny_config()
            elif os.path.isfile(os.path.join(REPO, path)) or os.path.isfile(path):
                full = path if os.path.isfile(path) else os.path.join(REPO, path)
                config = dict(cls.tiny_config(), **yaml_config(full))
            else:
                raise ValueError(
                    f"unknown random encoder {name!r}: use random:tiny, random:small "
                    "or random:<training YAML>"
                )
            enc = cls.from_config(config, seed=seed)
            enc.info["checkpoint"] = name
            return enc
        if "@stage" not in name and not os.path.exists(name):
            raise ValueError(f"checkpoint {name!r} does not exist")
        return cls.from_checkpoint(name)

    @property
    def hidden_size(self):
        """Width of the encoder's output (``d_model``; every hidden state's
        unless :attr:`layer_dims` says otherwise)."""
        return self.encoder.d_model

    @property
    def layer_dims(self):
        """Width of each hidden state, front-end output first.

        Example
        -------
        >>> PretrainedEncoder.load("random:tiny").layer_dims
        [32, 32, 32]
        """
        return list(self.encoder.layer_dims)

    @property
    def num_hidden_states(self):
        """Front-end output + one per layer."""
        return self.encoder.num_layers + 1

    @property
    def mel_target_dim(self):
        """Width of the stage-0 (BEST-RQ) targets: the Mel bins of the
        encoder's ``downsampling`` frames, stacked (``target_sources.stack_frames``)."""
        return int(self.config["n_mels"]) * self.encoder.downsampling

    def train(self, mode=True):
        """Stays in eval mode: the encoder is frozen (no dropout)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, wavs, wav_lens=None):
        """All hidden states of a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            (B, S) zero-padded 16 kHz waveforms.
        wav_lens : torch.Tensor, optional
            (B,) relative lengths in (0, 1] (SpeechBrain convention).

        Returns
        -------
        hidden_states : list of torch.Tensor
            ``num_hidden_states`` tensors (B, T, hidden_size): front-end
            output, then layers 0..L-1 (paper layers -1..L-1).
            Frames past ``enc_lens`` are padding.
        enc_lens : torch.Tensor
            (B,) valid encoder frames: ceil((n_samples // hop + 1) / downsampling)
            (40 ms frames in the paper's configuration).
        """
        hidden_states, _, enc_lens = self.encode_latent(wavs, wav_lens)
        return hidden_states, enc_lens

    @property
    def latent_dim(self):
        """Width of ``z`` (None: no bottleneck, not an autoencoder)."""
        return None if self.bottleneck is None else self.bottleneck.latent_dim

    @torch.no_grad()
    def encode_latent(self, wavs, wav_lens=None):
        """``(hidden_states, z, enc_lens)``: :meth:`forward`'s outputs and an
        autoencoder's latent ``z`` (B, T, latent_dim), the bottleneck's mean
        of the final encoder output at the encoder's frame rate (None without
        a bottleneck).

        Example
        -------
        >>> enc = PretrainedEncoder.from_config(dict(PretrainedEncoder.tiny_config(), latent_dim=4))
        >>> states, z, lens = enc.encode_latent(torch.randn(1, 16000))
        >>> len(states), z.shape, enc.latent_dim
        (3, torch.Size([1, 26, 4]), 4)
        """
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be (batch, samples), got {tuple(wavs.shape)}")
        S = wavs.shape[1]
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        n_samples = torch.round(wav_lens.float().cpu() * S).long()
        feats, _, enc_lens = self.features(wavs, n_samples)
        out, hidden_states = self.encoder(feats, enc_lens)
        z = None if self.bottleneck is None else self.bottleneck(out)[1]
        return list(hidden_states), z, enc_lens.cpu()


def load_quantizer(path):
    """The frozen random-projection quantizer of a training checkpoint."""
    ckpt = find_checkpoint(path, needed=("quantizer",))
    return RandomProjectionQuantizer.from_file(require_files(ckpt, ["quantizer"])["quantizer"])
