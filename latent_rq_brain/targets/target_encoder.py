"""The frozen target encoder of Latent-RQ.

A snapshot of the student encoder, taken at a stage transition, frozen (eval
mode, ``requires_grad_(False)``) and kept *outside* ``Brain.modules`` so that
SpeechBrain neither trains it, nor wraps it in DDP, nor switches it back to
train mode. Its forward stops after the deepest target layer. It returns the
hidden states of ``target_layers`` (paper indices, see
:mod:`latent_rq_brain.model.layers`), each normalised before the
random projection:

* ``"utterance"`` (the YAML default): per-utterance, per-dimension
  mean/variance over valid frames, the hidden-state analogue of the
  per-utterance Mel normalisation. It removes the offset that all frames of a
  layer share (its code usage against ``"layer"``: docs/training.md,
  "Target normalisation");
* ``"layer"``: per-frame standardisation over features (LayerNorm without
  affine), independent of the rest of the utterance;
* ``"none"``: raw hidden states.

By default (the paper) the snapshot stays frozen for its whole stage. With
``ema=True`` (an exponential moving average, :meth:`TargetEncoder.ema_update`,
data2vec's teacher) it follows the student after every optimizer step instead
(:meth:`TargetEncoder.after_optimizer_step`); the decay rises linearly from
``ema_decay`` to ``ema_end_decay`` over ``ema_anneal_steps`` steps after the
snapshot (:func:`ema_decay_at`). Its targets then change every step, so they
cannot be cached (:meth:`TargetEncoder.check_cacheable`), and a resume that
switches EMA on or off is refused.

Authors
 * latent-rq developers 2026
"""

import copy
import hashlib

import torch

from latent_rq_brain.model.features import module_settings, valid_frames
from latent_rq_brain.model.layers import check_target_layers, hidden_state_index
from latent_rq_brain.sharing.safe_load import load_weights
from speechbrain.nnet.attention import RoPEMHA
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

NORMS = ("layer", "utterance", "none")


def unwrap(module):
    """The plain module inside DDP/DataParallel and torch.compile wrappers."""
    while True:
        inner = getattr(module, "module", None)
        if inner is None:
            inner = getattr(module, "_orig_mod", None)
        if inner is None:
            return module
        module = inner


def autocast_weights(module, dtype):
    """A frozen copy of ``module`` whose matmul weights are already ``dtype``.

    Autocast casts the weights of linear layers and convolutions to its
    dtype at every call, unless they are leaves that require grad (the only
    casts it caches): a frozen target encoder would pay a cast of every
    weight at every step. This copy holds those weights (``torch.nn.Linear``,
    ``Conv1d``, ``Conv2d`` weight and bias, and the ``in_proj_weight`` of
    attention, which SpeechBrain feeds to ``F.linear``) in ``dtype``, so
    autocast's casts become no-ops; every other parameter (norms, position
    biases) stays as it is. Under autocast to ``dtype`` its outputs equal
    those of ``module`` bit for bit.

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    >>> low = autocast_weights(net, torch.bfloat16)
    >>> low[0].weight.dtype, low[1].weight.dtype, net[0].weight.dtype
    (torch.bfloat16, torch.float32, torch.float32)
    >>> x = torch.randn(3, 4)
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     bool(torch.equal(low(x), net(x)))
    True
    """
    low = copy.deepcopy(module)
    matmul_types = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)
    for sub in low.modules():
        names = ("weight", "bias") if isinstance(sub, matmul_types) else ("in_proj_weight",)
        for name in names:
            p = getattr(sub, name, None)
            if isinstance(p, torch.nn.Parameter) and p.is_floating_point():
                setattr(sub, name, torch.nn.Parameter(p.detach().to(dtype), requires_grad=False))
    return low


def normalize_states(states, enc_lens, norm):
    """Normalises (B, T, d) hidden states as described in the module docstring.

    Example
    -------
    >>> x = torch.randn(2, 5, 4) * 3 + 1
    >>> y = normalize_states(x, torch.tensor([5, 3]), "layer")
    >>> bool(torch.allclose(y.mean(-1), torch.zeros(2, 5), atol=1e-5))
    True
    """
    if norm == "layer":
        return torch.nn.functional.layer_norm(states, states.shape[-1:])
    if norm == "utterance":
        valid = valid_frames(enc_lens.to(states.device), states.shape[1])
        valid = valid.unsqueeze(-1).float()
        n = valid.sum(1, keepdim=True)
        mean = (states * valid).sum(1, keepdim=True) / n
        var = ((states - mean) * valid).square().sum(1, keepdim=True) / n
        return (states - mean) / (var + 1e-5).sqrt()
    if norm == "none":
        return states
    raise ValueError(f"target_norm must be one of {NORMS}, got {norm!r}")


def ema_decay_at(steps, decay, end_decay, anneal_steps):
    """The EMA decay ``steps`` optimizer steps after the snapshot.

    Example
    -------
    >>> [round(ema_decay_at(s, 0.99, 0.999, 100), 5) for s in (0, 50, 100, 500)]
    [0.99, 0.9945, 0.999, 0.999]
    """
    if anneal_steps <= 0 or steps >= anneal_steps:
        return float(end_decay)
    return float(decay) + (float(end_decay) - float(decay)) * steps / anneal_steps


@register_checkpoint_hooks
class TargetEncoder:
    """Frozen, truncated snapshot of the encoder that feeds the quantizer.

    Arguments
    ---------
    target_layers : list of int
        Paper layer indices (-1 = CNN output, 0..L-1 = Conformer layers).
    norm : str
        One of ``"utterance"``, ``"layer"``, ``"none"``.
    truncate : bool
        Drop the layers above the deepest target layer (default; the plain
        path ``False`` keeps and runs the whole encoder, for benchmarks/tests).
    compile : bool
        Run the snapshot through ``torch.compile(dynamic=False)`` (one graph
        per input shape: use it with ``fixed_shapes: True``). The checkpoint
        holds the plain module either way.
    ema : bool
        Follow the student after every optimizer step (YAML
        ``target_encoder_ema``); needs the three settings below.
    ema_decay, ema_end_decay : float
        EMA decay right after the snapshot, and after ``ema_anneal_steps``.
    ema_anneal_steps : int
        Optimizer steps over which the decay rises linearly.

    Example
    -------
    >>> te = TargetEncoder([0, 1], norm="layer")
    >>> te.active, te.ema
    (False, False)
    >>> TargetEncoder([0], ema=True)
    Traceback (most recent call last):
     ...
    ValueError: target_encoder_ema: True needs ema_decay, ema_end_decay and ema_anneal_steps (got None, None, None)
    """

    def __init__(self, target_layers, norm="utterance", truncate=True, compile=False,
                 ema=False, ema_decay=None, ema_end_decay=None, ema_anneal_steps=None):
        self.target_layers = check_target_layers(target_layers)
        self.ema = bool(ema)
        self.ema_decay, self.ema_end_decay = ema_decay, ema_end_decay
        self.ema_anneal_steps = ema_anneal_steps
        settings = (ema_decay, ema_end_decay, ema_anneal_steps)
        if self.ema and any(x is None for x in settings):
            raise ValueError(
                "target_encoder_ema: True needs ema_decay, ema_end_decay and "
                f"ema_anneal_steps (got {', '.join(map(str, settings))})"
            )
        self.truncate = bool(truncate)
        self.compile = bool(compile)
        self._compiled = self._runner_key = None
        if norm not in NORMS:
            raise ValueError(f"target_norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        self.module = None
        self.snapshot_step = None
        self.template = None  # the live encoder, to rebuild structure on load
        self.version = 0  # bumped by every EMA update (runner copies follow it)

    @property
    def active(self):
        """Whether a snapshot has been taken (stage >= 1)."""
        return self.module is not None

    def attach(self, encoder):
        """Remembers the live encoder (for its structure) and checks the layers."""
        self.template = encoder
        check_target_layers(self.target_layers, unwrap(encoder).num_layers)

    def _frozen_copy(self, encoder):
        encoder = unwrap(encoder)  # the encoder contract: latent_rq_brain.model.encoder
        n_layers = max(self.target_layers) + 1 if self.truncate else encoder.num_layers
        module = encoder.truncated_copy(n_layers)
        self._compiled = None
        return module

    def snapshot(self, encoder, step):
        """Replaces the target encoder by a frozen copy of ``encoder``."""
        self.attach(encoder)
        self.module = self._frozen_copy(encoder)
        self.snapshot_step = int(step)

    @torch.no_grad()
    def ema_update(self, encoder, decay):
        """Moves the snapshot towards ``encoder``: ``t <- decay * t + (1 - decay) * s``
        for every parameter and floating buffer it keeps (integer buffers are
        copied). Identical on every rank, since the students are."""
        if self.module is None:
            raise RuntimeError("EMA update of a target encoder before any snapshot")
        student = dict(unwrap(encoder).named_parameters())
        student.update(unwrap(encoder).named_buffers())
        mine = list(self.module.named_parameters()) + list(self.module.named_buffers())
        for name, t in mine:
            s = student[name].detach().to(t.device)
            if t.is_floating_point():
                t.mul_(decay).add_(s.to(t.dtype), alpha=1.0 - decay)
            else:
                t.copy_(s)
        self.version += 1

    def after_optimizer_step(self, encoder, step):
        """With ``ema``, the EMA update after optimizer step ``step`` (once a
        snapshot exists): :meth:`ema_update` with the decay :func:`ema_decay_at`
        gives ``step - snapshot_step`` steps after the snapshot. A no-op
        otherwise (the paper's frozen snapshot)."""
        if not self.ema or self.module is None:
            return
        steps = step - self.snapshot_step
        self.ema_update(encoder, ema_decay_at(steps, self.ema_decay, self.ema_end_decay,
                                              self.ema_anneal_steps))

    def check_cacheable(self):
        """Raises if the targets of a stage cannot be computed once (``ema``)."""
        if self.ema:
            raise ValueError(
                "target_cache: True cannot be used with target_encoder_ema: True: the "
                "EMA target encoder changes every step, so its targets cannot be "
                "computed once per stage. Set target_cache: False."
            )

    def key_settings(self):
        """What targets read from it: its settings and weights (the cache key)."""
        settings = module_settings(self)
        settings["weights"] = self.checksum()
        return settings

    def _ema_settings(self):
        return {"decay": self.ema_decay, "end_decay": self.ema_end_decay,
                "anneal_steps": self.ema_anneal_steps}

    def runner(self, device_type="cpu"):
        """The module that runs the forward.

        The snapshot itself, or, under autocast to a lower precision, a copy
        whose matmul weights (:func:`autocast_weights`) are already in that
        dtype; compiled if ``compile``. Rebuilt when the snapshot, the
        autocast dtype or a module class (``set_fast_kernels``) changes.
        """
        dtype = None
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
        converted = dtype not in (None, torch.float32)
        # a converted copy must be rebuilt after an EMA update; the snapshot
        # itself (and its compiled wrapper) sees the in-place update
        key = (id(self.module), dtype, self.compile,
               tuple(type(m) for m in self.module.modules()),
               self.version if converted else 0)
        if self._compiled is None or self._runner_key != key:
            module = self.module
            if converted:
                module = autocast_weights(module, dtype)
            if self.compile:
                module = torch.compile(module, dynamic=False)
            self._compiled, self._runner_key = module, key
        return self._compiled

    def forward(self, feats, enc_lens):
        """Normalised hidden states of every target layer.

        Runs in ``torch.inference_mode`` (no autograd bookkeeping, no version
        counters) and in the caller's autocast dtype, with the matmul weights
        stored in that dtype (:meth:`runner`: autocast would re-cast frozen
        weights at every call); the hidden states are cast to fp32 once, for
        the normalisation and the fp32 quantizer. The outputs are inference
        tensors: read them (the quantizer does) outside autograd, never save
        them for a backward pass.

        Returns
        -------
        dict
            ``{layer: (B, T', d) tensor}`` in fp32.
        """
        if self.module is None:
            raise RuntimeError("target encoder used before any snapshot was taken")
        self.module.eval()
        # SpeechBrain's own RoPEMHA caches its rotation process-wide: filled
        # in inference mode, it would break the student's backward pass
        plain_rope = any(type(m) is RoPEMHA for m in self.module.modules())
        with torch.no_grad() if plain_rope else torch.inference_mode():
            return self._forward(feats, enc_lens)

    def _forward(self, feats, enc_lens):
        _, states = self.runner(feats.device.type)(feats, enc_lens)
        n = unwrap(self.template).num_layers if self.template is not None else None
        out = {}
        for layer in self.target_layers:
            h = states[hidden_state_index(layer, n or len(states) - 1)].float()
            out[layer] = normalize_states(h, enc_lens, self.norm)
        return out

    __call__ = forward

    def checksum(self):
        """SHA-256 over the snapshot's parameters and buffers (or 'inactive')."""
        if self.module is None:
            return "inactive"
        h = hashlib.sha256()
        for name, t in sorted(self.module.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    @mark_as_saver
    def _save(self, path):
        saved = {
            "target_layers": self.target_layers,
            "norm": self.norm,
            "snapshot_step": self.snapshot_step,
            "state": None if self.module is None else self.module.state_dict(),
        }
        if self.ema:  # absent for the frozen snapshot (its checkpoints stay as they were)
            saved["ema"] = self._ema_settings()
        torch.save(saved, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        del end_of_epoch
        saved = load_weights(path)
        if saved["state"] is None:
            self.module, self.snapshot_step = None, None
            return
        if saved["target_layers"] != self.target_layers:
            raise ValueError(
                f"checkpoint {path} holds a target encoder for target_layers="
                f"{saved['target_layers']}, but the config asks "
                f"{self.target_layers}: resume with the same layers, or start a "
                "new output folder with --init_from"
            )
        if saved["norm"] != self.norm:
            raise ValueError(
                f"checkpoint {path} used target_norm={saved['norm']!r}, config "
                f"asks {self.norm!r}: resume with the same target_norm"
            )
        if ("ema" in saved) != self.ema:
            raise ValueError(
                f"checkpoint {path} holds a target encoder trained with "
                f"target_encoder_ema: {'ema' in saved}, but the config asks "
                f"target_encoder_ema: {self.ema}: resume with the same setting, or start a "
                "new output folder with --init_from"
            )
        if self.template is None:
            raise RuntimeError("TargetEncoder.attach(encoder) must precede loading")
        module = self._frozen_copy(self.template)
        try:
            module.load_state_dict(saved["state"], strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint {path} holds a target encoder that does not fit the "
                f"configured model: {err}"
            ) from err
        self.module = module
        self.snapshot_step = saved["snapshot_step"]
