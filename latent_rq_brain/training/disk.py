"""Out of disk space: what a failed write means, and the error that names
the folder and its free space (checkpoint saves, the target cache).

Authors
 * latent-rq developers 2026
"""

import errno
import shutil


class DiskFullError(OSError):
    """A checkpoint could not be written for lack of space (names the folder)."""


#: What torch and Python say when a write runs out of space.
_WRITE_FAILED = ("unexpected pos", "file write failed", "No space left", "Disk quota")


def free_space(folder):
    """Free space on the file system of ``folder``, e.g. ``'1.2 GB'``.

    Example
    -------
    >>> free_space("/").endswith("B")
    True
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if free < 1000 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1000


def save_error(err, folder):
    """A :class:`DiskFullError` naming ``folder`` and its free space if ``err``
    (from a save) says a write ran out of space, else None."""
    out_of_space = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not out_of_space and not any(s in str(err) for s in _WRITE_FAILED):
        return None
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DiskFullError(
        errno.ENOSPC,
        f"cannot write a checkpoint into {folder}: the disk is full or over quota "
        f"({free_space(folder)} free there; {type(err).__name__}: {first[:200]}). Free "
        "some space and run the same command again: it resumes from the newest "
        "complete checkpoint (the half-written one is skipped, then removed)",
    )
