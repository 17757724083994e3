"""Targets: where their frames come from (target sources), how they are
quantized (random-projection, PCA and k-means codebooks), the frozen target
encoder, the offline target cache, target quality, and ``TargetMaker``
(:mod:`latent_rq_brain.targets.maker`), the one place targets are made.

The names of :mod:`~latent_rq_brain.targets.maker` are also reachable here
(``latent_rq_brain.targets.TargetMaker``), as in the earlier flat layout where
``latent_rq_brain.targets`` was that module; they are imported on first use.
"""

import importlib
import os


def __getattr__(name):
    """A name of :mod:`latent_rq_brain.targets.maker`, imported on first use.

    Example
    -------
    >>> from latent_rq_brain.targets import TargetMaker
    >>> from latent_rq_brain.targets.maker import TargetMaker as Same
    >>> TargetMaker is Same
    True
    """
    folder = os.path.dirname(os.path.abspath(__file__))
    if name.startswith("__") or os.path.exists(os.path.join(folder, f"{name}.py")):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    maker = importlib.import_module(f"{__name__}.maker")
    try:
        return getattr(maker, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
