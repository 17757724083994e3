"""One run per output folder: a lock file naming the process that holds it.

``train.py`` takes ``<output_folder>/.lock`` before it reads or writes
anything there. A second run into the same folder stops at once with an error
naming the holder's PID and host; a lock left by a process that is gone (same
host, PID no longer running: a killed run) is taken over with a warning. The
lock is removed when the process exits. A lock held from another host cannot
be checked: delete it by hand once that run is gone.

Authors
 * latent-rq developers 2026
"""

import atexit
import json
import logging
import os
import socket
import time

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


def pid_alive(pid):
    """Whether a process ``pid`` runs on this host.

    Example
    -------
    >>> pid_alive(os.getpid())
    True
    """
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, under another user
        return True
    return True


def read_lock(path):
    """``{"pid", "host"}`` of a lock file, or None if it is unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) and "pid" in holder else None
    except (OSError, ValueError):
        return None


def acquire_output_lock(folder, wait_s=1.0):
    """Takes the lock of ``folder`` (created if needed); returns its path.

    Re-entrant within a process. Raises RuntimeError if another live process
    holds it.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    deadline = time.time() + wait_s
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if holder is None and time.time() < deadline:
                time.sleep(0.05)  # its holder may be writing it right now
                continue
            if holder is not None and holder.get("host") == me["host"]:
                if int(holder["pid"]) == me["pid"]:
                    return path
                if pid_alive(holder["pid"]):
                    raise RuntimeError(
                        f"output folder {folder} is in use by PID {holder['pid']} on "
                        f"host {holder['host']} (lock {path}): wait for that run to "
                        "end or use another output_folder"
                    ) from None
            elif holder is not None:
                raise RuntimeError(
                    f"output folder {folder} is in use by PID {holder['pid']} on "
                    f"host {holder.get('host')} (lock {path}); this host cannot "
                    "check it: wait for that run to end, use another output_folder, "
                    f"or delete {path} if that run is gone"
                ) from None
            logger.warning(
                f"taking over the lock {path} of "
                + (f"PID {holder['pid']}, which is not running" if holder else "a process "
                   "that died while writing it")
            )
            os.remove(path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        atexit.register(release_output_lock, path)
        return path


def release_output_lock(path):
    """Removes the lock at ``path`` if this process holds it."""
    holder = read_lock(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        os.remove(path)
