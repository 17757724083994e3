"""One run per output folder: a lock file naming the process that holds it.

``train.py`` takes ``<output_folder>/.lock`` before it reads or writes
anything there. A second run into the same folder stops at once with an error
naming the holder's PID and host. The lock is an ``fcntl.flock`` on the file,
which the kernel releases when its process ends however it ends, so a killed
run leaves no lock that needs taking over: the next run takes it (with a
warning naming the dead PID found in the file). Deciding and writing happen
while holding the ``flock``, and a file removed meanwhile (a holder releasing
it) is detected by its inode: there is no window in which two processes both
hold it. A file naming a live process on this host that holds no ``flock``
(written by an older latent-rq) is still respected; one naming another host
cannot be checked: delete it by hand once that run is gone. The lock is
removed when the process exits.

Authors
 * latent-rq developers 2026
"""

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import time

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"

#: Locks this process holds: absolute path -> open file descriptor (holds the flock).
_HELD = {}


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


def _in_use(folder, path, holder):
    if holder is None:
        who = "another process (its lock file is being written)"
    else:
        who = f"PID {holder['pid']} on host {holder.get('host')}"
    return RuntimeError(
        f"output folder {folder} is in use by {who} (lock {path}): wait for that run to "
        "end or use another output_folder"
    )


def _open_locked(path):
    """An fd of ``path`` holding its flock, or None if another process holds it.

    Retries when the file was removed or replaced between open and flock (its
    holder released it), so the flock is always on the file at ``path``.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # released and removed meanwhile: lock the new file


def _holder_of_busy_lock(path, wait_s):
    """The holder named in a lock another process holds (it may be writing it)."""
    deadline = time.time() + wait_s
    holder = read_lock(path)
    while holder is None and time.time() < deadline:
        time.sleep(0.05)
        holder = read_lock(path)
    return holder


def acquire_output_lock(folder, wait_s=1.0):
    """Takes the lock of ``folder`` (created if needed); returns its path.

    Re-entrant within a process. Raises RuntimeError if another live process
    holds it.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    if os.path.abspath(path) in _HELD:
        return path
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    fd = _open_locked(path)
    if fd is None:
        raise _in_use(folder, path, _holder_of_busy_lock(path, wait_s)) from None
    try:
        holder = read_lock(path)
        _check_unlocked_holder(folder, path, holder, me)
        _write_holder(fd, me, path)
    except BaseException:
        os.close(fd)
        raise
    _HELD[os.path.abspath(path)] = fd
    atexit.register(release_output_lock, path)
    return path


def _check_unlocked_holder(folder, path, holder, me):
    """With the flock taken: refuses a holder that may still run (a live PID
    on this host, or another host), warns when taking over a dead one."""
    if holder is None:
        if os.path.getsize(path):
            logger.warning(f"taking over the lock {path} of a process that died while writing it")
        return
    if holder.get("host") != me["host"]:
        raise RuntimeError(
            f"output folder {folder} is in use by PID {holder['pid']} on "
            f"host {holder.get('host')} (lock {path}); this host cannot "
            "check it: wait for that run to end, use another output_folder, "
            f"or delete {path} if that run is gone"
        )
    if int(holder["pid"]) == me["pid"]:
        return
    if pid_alive(holder["pid"]):
        raise _in_use(folder, path, holder)
    logger.warning(f"taking over the lock {path} of PID {holder['pid']}, which is not running")


def _write_holder(fd, me, path):
    """Replaces the lock file's content by ``me`` (the flock is held)."""
    data = json.dumps(me).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    except OSError as err:
        try:
            os.remove(path)  # no empty lock left behind (the flock is still held)
        except OSError:
            pass
        raise OSError(
            err.errno, f"cannot write the lock {path} ({err.strerror}): is the disk full?"
        ) from err


def release_output_lock(path):
    """Removes the lock at ``path`` if this process holds it."""
    fd = _HELD.pop(os.path.abspath(path), None)
    if fd is None:
        return
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.remove(path)  # while still holding the flock: see _open_locked
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
