"""Weights-only reading of checkpoint files, whatever the environment says.

Every file this project reads with ``torch.load`` goes through
:func:`load_weights`, which always passes ``weights_only=True``: an explicit
``True`` wins over ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (torch 2.11,
``torch/serialization.py``: that variable only flips calls that leave
``weights_only`` unset). SpeechBrain's own loaders (``torch_recovery`` for
modules and optimizers, the schedulers' ``load``, the ``Pretrainer``'s
transfer) call ``torch.load`` without it, so the variable would make them
unpickle anything; :func:`weights_only_loads` makes every ``torch.load`` they
call weights-only, and :func:`install` wraps SpeechBrain's
``Checkpointer._call_load_hooks`` and ``Pretrainer._call_load_hooks`` in it
(done when this module is imported; every loader of the project imports it).

Errors name the file and never suggest ``weights_only=False``:

* :class:`UnsafeCheckpointError`: the file holds pickled objects other than
  tensors and plain containers (a class or function to call: code);
* :class:`CorruptCheckpointError`: empty, truncated or not a PyTorch file.

Both are ``ValueError``; resume skips a corrupt checkpoint (a save killed
half-way) but stops at an unsafe one.

Authors
 * latent-rq developers 2026
"""

import contextlib
import os
import pickle
import re
import threading

import torch

from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.parameter_transfer import Pretrainer


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be read as weights (names the file)."""

    def __init__(self, path, message):
        super().__init__(message)
        self.path = str(path)


class UnsafeCheckpointError(CheckpointFileError):
    """A checkpoint file holding pickled code: refused, never executed."""


class CorruptCheckpointError(CheckpointFileError):
    """An empty, truncated or unreadable checkpoint file."""


class NonFiniteWeightsError(CheckpointFileError):
    """A weights file holding NaN or Inf values (a diverged or damaged model)."""


def check_finite(state, path):
    """Raises :class:`NonFiniteWeightsError` naming ``path`` and the first
    tensors of the state dict ``state`` that hold NaN or Inf.

    Example
    -------
    >>> check_finite({"w": torch.ones(2)}, "encoder.ckpt")
    >>> check_finite({"w": torch.ones(2), "b": torch.tensor([1.0, float("nan")])}, "encoder.ckpt")
    Traceback (most recent call last):
    ...
    latent_rq_brain.sharing.safe_load.NonFiniteWeightsError: encoder.ckpt: tensor b holds 1 non-finite value(s) (NaN or Inf): the weights of a diverged or damaged model; use another checkpoint or model folder
    """
    bad = []
    for name, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point():
            n = int((~torch.isfinite(value)).sum())
            if n:
                bad.append(f"{name} holds {n} non-finite value(s)")
    if bad:
        more = f" (and {len(bad) - 3} more tensors)" if len(bad) > 3 else ""
        raise NonFiniteWeightsError(
            path,
            f"{path}: tensor {'; '.join(bad[:3])}{more} (NaN or Inf): the weights of a "
            "diverged or damaged model; use another checkpoint or model folder",
        )


_GLOBAL = re.compile(r"GLOBAL (\S+)")
_ORIGINAL_LOAD = torch.load


def _describe(path):
    try:
        return f"{os.path.getsize(path)} bytes"
    except (OSError, TypeError):
        return "size unknown"


def _reason(err):
    """A short cause from a torch error, without its ``weights_only=False`` advice."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    lines = [ln for ln in lines if "weights_only" not in ln and "torch.load" not in ln]
    text = lines[-1] if lines else "end of file"
    return f"{type(err).__name__}: {text[:200]}"


def load_weights(path, map_location="cpu", **kwargs):
    """``torch.load(path, weights_only=True)``, with errors naming ``path``.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "empty.ckpt")
    >>> open(path, "wb").close()
    >>> load_weights(path)
    Traceback (most recent call last):
    ...
    latent_rq_brain.sharing.safe_load.CorruptCheckpointError: cannot read .../empty.ckpt (0 bytes): it is empty, truncated or not a PyTorch file (EOFError: end of file); a save killed half-way or a damaged copy: use another checkpoint
    """
    kwargs.pop("weights_only", None)
    try:
        return _ORIGINAL_LOAD(path, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as err:
        found = _GLOBAL.search(str(err))
        if found:
            raise UnsafeCheckpointError(
                path,
                f"refused to load {path}: it holds pickled code ({found.group(1)}), "
                "not only tensors and plain containers, and loading it could run that "
                "code. Checkpoints of this project never hold any: delete this file "
                "(or its checkpoint folder) and use a checkpoint from a trusted source",
            ) from None
        raise CorruptCheckpointError(path, _corrupt_message(path, err)) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (EOFError, RuntimeError, ValueError, OSError) as err:  # OSError: truncated zip
        raise CorruptCheckpointError(path, _corrupt_message(path, err)) from None


def _corrupt_message(path, err):
    return (
        f"cannot read {path} ({_describe(path)}): it is empty, truncated or not a "
        f"PyTorch file ({_reason(err)}); a save killed half-way or a damaged copy: "
        "use another checkpoint"
    )


_LOCK = threading.Lock()
_DEPTH = [0]  # open weights_only_loads() blocks, all threads together


def _forced_load(f, map_location=None, pickle_module=None, **kwargs):
    """``torch.load`` as seen inside :func:`weights_only_loads`."""
    if pickle_module is not None:
        raise UnsafeCheckpointError(
            f, f"refused to load {f} with a custom pickle_module (not weights-only)"
        )
    return load_weights(f, map_location=map_location, **kwargs)


@contextlib.contextmanager
def weights_only_loads():
    """Within this block every ``torch.load`` call is weights-only (whatever
    ``weights_only`` or the environment say) and names the file on error.

    Example
    -------
    >>> with weights_only_loads():
    ...     torch.load is _forced_load
    True
    >>> torch.load is _ORIGINAL_LOAD
    True
    """
    with _LOCK:
        _DEPTH[0] += 1
        torch.load = _forced_load
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                torch.load = _ORIGINAL_LOAD


def _weights_only(method):
    def wrapped(self, *args, **kwargs):
        with weights_only_loads():
            return method(self, *args, **kwargs)

    wrapped.__wrapped__ = method
    wrapped.__doc__ = method.__doc__
    wrapped._latent_rq_weights_only = True
    return wrapped


def install():
    """Makes SpeechBrain's checkpoint and pre-trainer loads weights-only (idempotent).

    Example
    -------
    >>> install()
    >>> Checkpointer._call_load_hooks._latent_rq_weights_only
    True
    """
    for cls in (Checkpointer, Pretrainer):
        if not getattr(cls._call_load_hooks, "_latent_rq_weights_only", False):
            cls._call_load_hooks = _weights_only(cls._call_load_hooks)


install()
