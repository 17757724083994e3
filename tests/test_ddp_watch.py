"""DDP: the collective timeout from the YAML and the rank that stopped answering
(latent_rq_brain.training.ddp_watch). Two gloo processes on this host; one suspends
itself (SIGSTOP), as a stopped or hung rank would.

Authors
 * latent-rq developers 2026
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RANK = r"""
import logging, os, signal, sys, time
sys.path.insert(0, {repo!r})
import torch
from speechbrain.utils.run_opts import RunOptions
from latent_rq_brain.training import ddp_watch
logging.basicConfig(level=logging.WARNING, format="%(message)s")
ddp_watch.init_ddp(RunOptions(distributed_backend="gloo"), timeout_minutes=0.1)  # 6 s
print("timeout", torch.distributed.distributed_c10d._get_default_group()._get_backend(
    torch.device("cpu")).options._timeout.total_seconds(), flush=True)
watch = ddp_watch.RankWatch({folder!r}, torch.distributed.get_rank(), 2, interval_s=0.2, stale_s=1.5)
watch.start()
if torch.distributed.get_rank() == 1:
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGSTOP)  # stops answering, heartbeat included
time.sleep(0.5)
try:
    torch.distributed.barrier()
except RuntimeError as err:
    print("ERROR", ddp_watch.explained(err, watch), flush=True)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stopped_rank_is_named_after_the_yaml_timeout(tmp_path):
    script = RANK.format(repo=REPO, folder=str(tmp_path / ".ddp_heartbeat"))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", script], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    try:
        start = time.time()
        out, err = procs[0].communicate(timeout=120)
        waited = time.time() - start
    finally:
        procs[1].send_signal(signal.SIGKILL)
        procs[1].communicate()
    assert "timeout 6.0" in out, (out, err)
    assert waited < 60  # not SpeechBrain's 2 hours
    assert "ERROR DDP collective timed out on rank 0 of 2: rank 1 (silent for" in out, (out, err)
    assert "stopped answering" in out
    assert "DDP rank 1 has not answered for" in err  # the heartbeat warning, before the timeout
