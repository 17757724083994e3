"""Errors shared by the command line and the checks behind it.

Authors
 * latent-rq developers 2026
"""


class UsageError(ValueError):
    """A command line that cannot run: ``train.py`` prints it without a traceback."""
