"""s3prl hub entry: ``-u latent_rq_local -k <one CKPT+ folder>``.

Only ``latent_rq_local`` is exported (``__all__``): s3prl lists every public
callable of ``hub.py`` and counts names without ``_local``/``_url``/``_custom``
as ready to use without a checkpoint, which a latent-rq upstream never is.

``-k`` must name one ``CKPT+`` folder: a run or save folder would resolve to
its newest checkpoint each time s3prl builds the upstream, so an evaluation
run after more pre-training would silently load other weights than training.

Example
-------
>>> latent_rq_local("/nonexistent")
Traceback (most recent call last):
...
ValueError: no checkpoint found at /nonexistent (expected a run's output folder, its save folder with CKPT+* sub-folders, one CKPT+* folder, or <run folder>@stage<k>)
"""

import os

from latent_rq_brain.training.checkpoint_files import ENCODER_FILES, find_checkpoint

from .expert import UpstreamExpert as _UpstreamExpert

__all__ = ["latent_rq_local"]


def _one_checkpoint(ckpt):
    """``ckpt`` if it is one ``CKPT+`` folder, else a ValueError naming the one to use."""
    if not ckpt:
        raise ValueError("latent_rq_local needs -k <CKPT+ folder of a latent-rq run>")
    ckpt = os.fspath(ckpt)
    if os.path.isfile(os.path.join(ckpt, "CKPT.yaml")):
        return ckpt
    newest = find_checkpoint(ckpt, needed=ENCODER_FILES).path
    raise ValueError(
        f"-k {ckpt} is a run or save folder, whose newest checkpoint can change: "
        f"give one CKPT+ folder, e.g. its newest now, -k {newest}"
    )


def latent_rq_local(ckpt, *args, **kwargs):
    """A latent-rq checkpoint: one ``CKPT+`` folder (see the module docstring)."""
    return _UpstreamExpert(_one_checkpoint(ckpt), *args, **kwargs)
