"""DDP: a collective timeout from the YAML, and which rank stopped answering.

SpeechBrain 1.1 creates the process group with a 2-hour timeout: a rank that
stops (killed, suspended, swapping, a hung file system) leaves the others
waiting silently for two hours. :func:`init_ddp` creates it with
``ddp_timeout_minutes`` from the YAML instead (default
:data:`DEFAULT_TIMEOUT_MINUTES`, which covers the longest legitimate wait: the
main process preparing the data, or the target-cache build at a transition,
while the other ranks wait at a barrier).

:class:`RankWatch` says which rank it is: every rank touches
``<output_folder>/.ddp_heartbeat/rank<r>`` from a background thread, and
compares the others' modification times with its own (both from the shared
file system's clock, so host clocks need not agree). A rank whose heartbeat is
older than ``stale_s`` is named in a warning (``DDP rank r has not answered for
N s``) and in the error that replaces a collective timeout. A rank that is
alive but waits in another collective keeps its heartbeat fresh, and the
error says so.

Authors
 * latent-rq developers 2026
"""

import datetime
import logging
import os
import threading

import torch

from speechbrain.utils.distributed import ddp_init_group

logger = logging.getLogger(__name__)

#: Default collective timeout (minutes): the longest legitimate wait of a rank.
DEFAULT_TIMEOUT_MINUTES = 60.0


def init_ddp(run_opts, timeout_minutes=None):
    """SpeechBrain's ``ddp_init_group(run_opts)`` with our collective timeout.

    SpeechBrain hard-codes ``timeout=timedelta(seconds=7200)``; this passes
    ``timeout_minutes`` (default :data:`DEFAULT_TIMEOUT_MINUTES`) to
    ``torch.distributed.init_process_group`` instead. Nothing happens when
    not launched distributed.
    """
    minutes = DEFAULT_TIMEOUT_MINUTES if timeout_minutes is None else float(timeout_minutes)
    if not minutes > 0:
        raise ValueError(f"ddp_timeout_minutes: {timeout_minutes} must be > 0")
    real = torch.distributed.init_process_group

    def with_timeout(*args, **kwargs):
        kwargs["timeout"] = datetime.timedelta(minutes=minutes)
        return real(*args, **kwargs)

    torch.distributed.init_process_group = with_timeout
    try:
        ddp_init_group(run_opts)
    finally:
        torch.distributed.init_process_group = real


def is_collective_timeout(err):
    """Whether ``err`` is a collective that timed out (gloo or NCCL).

    Example
    -------
    >>> is_collective_timeout(RuntimeError("... Timed out waiting 4000ms for recv operation"))
    True
    >>> is_collective_timeout(ValueError("timeout"))
    False
    """
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("timed out" in text or "timeout" in text)


class RankWatch:
    """Heartbeats of every rank in a shared folder (see the module docstring).

    Arguments
    ---------
    folder : str
        Shared by every rank (``<output_folder>/.ddp_heartbeat``).
    rank, world_size : int
        This process's rank and the number of ranks.
    interval_s : float
        Seconds between heartbeats.
    stale_s : float
        A rank whose heartbeat is older than this is named as not answering.
    """

    def __init__(self, folder, rank, world_size, interval_s=10.0, stale_s=120.0):
        self.folder, self.rank, self.world_size = folder, int(rank), int(world_size)
        self.interval_s, self.stale_s = float(interval_s), float(stale_s)
        self._stop = threading.Event()
        self._warned = set()
        self._thread = None
        os.makedirs(folder, exist_ok=True)

    def _path(self, rank):
        return os.path.join(self.folder, f"rank{rank}")

    def beat(self):
        """Touches this rank's heartbeat file."""
        path = self._path(self.rank)
        with open(path, "a", encoding="utf-8"):
            pass
        os.utime(path)

    def silent_ranks(self):
        """``{rank: seconds}`` of the ranks whose heartbeat is older than
        ``stale_s`` (a rank without a heartbeat file yet is not counted)."""
        try:
            now = os.path.getmtime(self._path(self.rank))
        except OSError:
            return {}
        silent = {}
        for r in range(self.world_size):
            try:
                age = now - os.path.getmtime(self._path(r))
            except OSError:
                continue
            if r != self.rank and age > self.stale_s:
                silent[r] = age
        return silent

    def _run(self):
        while not self._stop.is_set():
            try:
                self.beat()
                silent = self.silent_ranks()
            except OSError:
                silent = {}
            for r, age in silent.items():
                if r not in self._warned:
                    logger.warning(
                        f"DDP rank {r} has not answered for {age:.0f} s (stopped, killed, "
                        "swapping or hung?): the other ranks wait for it up to "
                        "ddp_timeout_minutes"
                    )
            self._warned = set(silent)
            self._stop.wait(self.interval_s)

    def start(self):
        """Starts the heartbeat thread (a daemon); returns self."""
        self.beat()
        self._thread = threading.Thread(target=self._run, name="ddp-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stops the heartbeat thread."""
        self._stop.set()

    def timeout_message(self, err):
        """The error text that replaces a collective timeout ``err``."""
        silent = self.silent_ranks()
        if silent:
            who = ", ".join(f"rank {r} (silent for {a:.0f} s)" for r, a in sorted(silent.items()))
            cause = f"{who} stopped answering: it was stopped, killed, or hung"
        else:
            cause = ("every rank's heartbeat is fresh: the ranks are alive but did not "
                     "reach the same collective (one took another code path?)")
        return (
            f"DDP collective timed out on rank {self.rank} of {self.world_size}: {cause} "
            f"(heartbeats in {self.folder}; ddp_timeout_minutes sets the wait). "
            f"{type(err).__name__}: {str(err).strip()[:300]}"
        )


def watch_timing(timeout_minutes=None):
    """``(interval_s, stale_s)`` for a collective timeout: a rank is called
    silent after a quarter of the timeout (at most 2 minutes), and heartbeats
    come four times as often.

    Example
    -------
    >>> watch_timing(60), watch_timing(0.5)
    ((10.0, 120.0), (1.875, 7.5))
    """
    minutes = DEFAULT_TIMEOUT_MINUTES if timeout_minutes is None else float(timeout_minutes)
    stale_s = min(120.0, minutes * 60.0 / 4)
    return min(10.0, stale_s / 4), stale_s


def start_rank_watch(output_folder, timeout_minutes=None):
    """A started :class:`RankWatch` under DDP (timing: :func:`watch_timing`), else None."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    interval_s, stale_s = watch_timing(timeout_minutes)
    return RankWatch(
        os.path.join(output_folder, ".ddp_heartbeat"),
        torch.distributed.get_rank(),
        torch.distributed.get_world_size(),
        interval_s,
        stale_s,
    ).start()


def explained(err, watch):
    """``err`` itself, or, for a collective timeout under a watch, a
    RuntimeError naming the ranks that stopped answering."""
    if watch is None or not is_collective_timeout(err):
        return err
    return RuntimeError(watch.timeout_message(err))

