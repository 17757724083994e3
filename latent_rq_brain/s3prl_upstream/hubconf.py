"""s3prl hub entries: ``-u latent_rq_local -k <checkpoint folder>``."""

from .expert import UpstreamExpert as _UpstreamExpert


def latent_rq_local(ckpt, *args, **kwargs):
    """A latent-rq checkpoint (output folder, save folder or CKPT+ folder)."""
    return _UpstreamExpert(ckpt, *args, **kwargs)


def latent_rq(ckpt, *args, **kwargs):
    """Alias of :func:`latent_rq_local`."""
    return latent_rq_local(ckpt, *args, **kwargs)
