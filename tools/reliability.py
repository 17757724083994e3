"""The slow reliability cases, as real processes: ``make reliability``.

Each case runs ``train.py`` (or a loader) on the tiny configuration and a
synthetic corpus, in its own folder, and is judged by what a user would see:

* ``OK``: it did what README's reliability section promises (trained to the
  end, or stopped with the promised message);
* ``SILENT``: exit status 0 where an error was promised, or a promised
  property does not hold;
* ``CRASH``: a non-zero exit without the promised message (the last line of
  its output is shown);
* ``HANG``: it did not end within the case's limit.

The fast cases are in ``tests/``; these need kills, several processes or
the environment of a real run. Usage::

    python -m tools.reliability [--out results/reliability] [--only NAME ...]

Prints one line per case and exits with status 1 if any case is not ``OK``.

Authors
 * latent-rq developers 2026
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--data_prep=null", "--max_batch_len=null",
    "--train_dataloader_opts={batch_size: 4, shuffle: True, num_workers: 0}",
    "--d_model=32", "--nhead=2", "--num_encoder_layers=3", "--d_ffn=64", "--n_codebooks=4",
    "--codebook_size=64", "--target_layers=[0, 2]", "--mask_length=2", "--warmup_steps=5",
    "--log_interval=1", "--ckpt_interval_minutes=0", "--device=cpu", "--noprogressbar",
]


class Case:
    """One run's outcome: exit status and output (stdout + stderr)."""

    def __init__(self, rc, output, seconds):
        self.rc, self.output, self.seconds = rc, output, seconds

    def last_line(self):
        lines = [ln for ln in self.output.strip().splitlines() if ln.strip()]
        return lines[-1][:200] if lines else "(no output)"


def run(cmd, limit_s, env=None):
    """Runs ``cmd`` (a list) from the repository; None if it hangs past ``limit_s``."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, **(env or {})),
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return Case(proc.returncode, out, time.time() - start)


def train_cmd(out, corpus, *extra):
    """``train.py`` on the tiny configuration; ``extra`` replaces a base option."""
    keys = {a.split("=")[0] for a in extra}
    base = [a for a in TINY if a.split("=")[0] not in keys]
    return [sys.executable, "train.py", "hparams/small/latent_rq.yaml", f"--output_folder={out}",
            f"--train_csv={corpus['train']}", f"--valid_csv={corpus['valid']}", *base, *extra]


def expect_error(case, pattern):
    """OK if the run stopped (status != 0) with ``pattern`` in its output."""
    if case is None:
        return "HANG", "did not end"
    if case.rc == 0:
        return "SILENT", "exit status 0"
    if re.search(pattern, case.output):
        return "OK", re.search(pattern, case.output).group(0)[:160]
    return "CRASH", case.last_line()


def expect_success(case, check=None):
    """OK if the run ended with status 0 (and ``check()`` holds)."""
    if case is None:
        return "HANG", "did not end"
    if case.rc != 0:
        return "CRASH", case.last_line()
    problem = check() if check else None
    return ("SILENT", problem) if problem else ("OK", f"status 0 in {case.seconds:.0f} s")


def trained_run(base, corpus, name, *extra):
    """A finished tiny run (stage 0 then 1 at step 2, 3 steps), copied per case."""
    src = os.path.join(base, "_runs", name)
    if not os.path.isdir(src):
        case = run(train_cmd(src, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=3",
                             *extra), 600)
        if case is None or case.rc != 0:
            raise RuntimeError(f"the reference run failed: {case and case.last_line()}")
    return src


def copy_of(src, dest):
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    return dest


def newest_ckpt(run_folder):
    save = os.path.join(run_folder, "save")
    ckpts = [os.path.join(save, d) for d in os.listdir(save) if d.startswith("CKPT+")]
    return max(ckpts, key=lambda d: open(os.path.join(d, "CKPT.yaml")).read())


def step_of(run_folder):
    import yaml

    return yaml.safe_load(open(os.path.join(newest_ckpt(run_folder), "brain.ckpt")))["optimizer_step"]


# ---------------------------------------------------------------- cases
def case_sigkill_then_resume(base, corpus):
    """SIGKILL at three moments of a run crossing a transition, then the same command."""
    results = []
    for delay in (4.0, 9.0, 14.0):
        out = os.path.join(base, f"kill_{delay:.0f}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = train_cmd(out, corpus, "--stage_transitions=[3]", "--optimizer_step_limit=8",
                        "--ckpt_interval_steps=1")
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        case = run(cmd, 600)
        verdict = expect_success(
            case, lambda: None if step_of(out) == 8 else f"ended at step {step_of(out)}, not 8")
        results.append((verdict[0], f"killed after {delay:.0f} s: {verdict[1]}"))
    bad = [r for r in results if r[0] != "OK"]
    return bad[0] if bad else ("OK", "; ".join(d for _, d in results))


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EXPLOIT_MARK']}",))


def case_planted_pickle_with_env_override(base, corpus):
    """Pickled code in optimizer.ckpt, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, resume."""
    import torch

    out = copy_of(trained_run(base, corpus, "ref"), os.path.join(base, "pickle"))
    mark = os.path.join(base, "pickle.pwned")
    os.environ["EXPLOIT_MARK"] = mark
    torch.save({"state": _Exploit()}, os.path.join(newest_ckpt(out), "optimizer.ckpt"))
    case = run(train_cmd(out, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=4"), 600,
               env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    if os.path.exists(mark):
        return "SILENT", "the planted code ran"
    return expect_error(case, r"refused to load \S*optimizer.ckpt: it holds pickled code")


def case_resume_with_another_hop_length(base, corpus):
    out = copy_of(trained_run(base, corpus, "ref"), os.path.join(base, "hop"))
    case = run(train_cmd(out, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=4",
                         "--hop_length=20"), 600)
    return expect_error(case, r"hop_length: 10 \(checkpoint\) != 20 \(config\)")


def case_zero_counts(base, corpus):
    """Every count below 1, one run each: refused by name, nothing trained."""
    for setting in ("--log_interval=0", "--warmup_steps=0", "--grad_accumulation_factor=0",
                    "--ckpt_to_keep=0", "--number_of_epochs=0", "--optimizer_step_limit=0"):
        name = setting[2:].split("=")[0]
        case = run(train_cmd(os.path.join(base, "zero_" + name), corpus, setting), 300)
        verdict = expect_error(case, rf"{name}: 0 must be an integer >= 1")
        if verdict[0] != "OK":
            return verdict[0], f"{setting}: {verdict[1]}"
    return "OK", "6 settings refused by name"


def case_truncated_encoder_to_export(base, corpus):
    out = copy_of(trained_run(base, corpus, "ref"), os.path.join(base, "trunc"))
    path = os.path.join(newest_ckpt(out), "encoder.ckpt")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    named = run([sys.executable, "-m", "latent_rq_brain.sharing.export", newest_ckpt(out), "--out",
                 os.path.join(base, "trunc_model")], 300)
    verdict = expect_error(named, rf"cannot read {re.escape(path)} \(\d+ bytes\)")
    if verdict[0] != "OK" or "weights_only" in named.output:
        return verdict if verdict[0] != "OK" else ("CRASH", "suggests weights_only")
    # the run folder: the newest complete checkpoint is exported instead
    whole = run([sys.executable, "-m", "latent_rq_brain.sharing.export", out, "--out",
                 os.path.join(base, "trunc_model2")], 300)
    return expect_success(whole)


def case_received_folder_with_code(base, corpus):
    out = trained_run(base, corpus, "ref")
    model = os.path.join(base, "received")
    shutil.rmtree(model, ignore_errors=True)
    export = run([sys.executable, "-m", "latent_rq_brain.sharing.export", out, "--out", model], 300)
    if export is None or export.rc != 0:
        return "CRASH", f"export failed: {export and export.last_line()}"
    mark = os.path.join(base, "received.pwned")
    with open(os.path.join(model, "hyperparams.yaml"), "a") as f:
        f.write(f"pwn: !apply:os.system ['touch {mark}']\n")
    case = run([sys.executable, "-c", "import sys; from latent_rq_brain.sharing.export import "
                "load_model_folder; load_model_folder(sys.argv[1])", model], 300)
    if os.path.exists(mark):
        return "SILENT", "the planted code ran"
    return expect_error(case, r"tag !apply:os.system is refused")


def cache_keys(run_folder):
    folder = os.path.join(run_folder, "target_cache")
    return {f.split(".")[0] for f in os.listdir(folder) if ".rank" in f} if os.path.isdir(folder) else set()


def case_stale_cache_with_preserved_mtime(base, corpus):
    """A training wav replaced by other audio of the same size, its modification
    time restored (os.utime, as a tar extraction does), between a run and its
    resume in stage 1: the target cache must be rebuilt, not reused."""
    import soundfile

    own = write_corpus(os.path.join(base, "stale_corpus"))  # this case changes a wav
    out = os.path.join(base, "stale")
    shutil.rmtree(out, ignore_errors=True)
    first = run(train_cmd(out, own, "--stage_transitions=[2]", "--optimizer_step_limit=3"), 600)
    if first is None or first.rc != 0:
        return "CRASH", f"first run: {first and first.last_line()}"
    before = cache_keys(out)
    with open(own["train"], encoding="utf-8") as f:
        wav = f.read().splitlines()[1].split(",")[2]
    wav = wav if os.path.isabs(wav) else os.path.join(os.path.dirname(own["train"]), wav)
    st = os.stat(wav)
    x, sr = soundfile.read(wav, dtype="int16")
    info = soundfile.info(wav)
    soundfile.write(wav + ".tmp.wav", x[::-1].copy(), sr, subtype=info.subtype)  # same size
    os.replace(wav + ".tmp.wav", wav)
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns))
    if os.path.getsize(wav) != st.st_size or os.stat(wav).st_mtime_ns != st.st_mtime_ns:
        return "CRASH", "the harness could not keep size and modification time"
    case = run(train_cmd(out, own, "--stage_transitions=[2]", "--optimizer_step_limit=4"), 600)
    after = cache_keys(out)

    def check():
        if not before:
            return "the first run built no target cache"
        if after == before:
            return f"target cache {sorted(before)} reused after the audio changed"
        return None

    return expect_success(case, check)


REEXPORT = ("import sys; from latent_rq_brain.sharing.export import load_model_folder; "
            "e = load_model_folder(sys.argv[1]); print('STEP', e.info['step'], "
            "repr(sum(float(v.double().sum()) for v in e.state_dict().values())))")


def case_killed_re_export(base, corpus):
    """An export, then re-exports of another checkpoint into the same folder
    killed (SIGKILL) at several moments, among them right after encoder.ckpt
    is written: the folder always loads, as one export or the other whole."""
    src = trained_run(base, corpus, "ref")
    model = os.path.join(base, "reexport_model")
    shutil.rmtree(model, ignore_errors=True)
    export_a = [sys.executable, "-m", "latent_rq_brain.sharing.export", src, "--out", model]
    export_b = [sys.executable, "-m", "latent_rq_brain.sharing.export", f"{src}@stage1", "--out", model]
    done = run(export_a, 300)
    if done is None or done.rc != 0:
        return "CRASH", f"export failed: {done and done.last_line()}"
    steps = set()
    for cmd in (export_b, export_a):  # the steps each export holds
        case = run(cmd, 300)
        if case is None or case.rc != 0:
            return "CRASH", f"export failed: {case and case.last_line()}"
        loaded = run([sys.executable, "-c", REEXPORT, model], 300)
        steps.add(re.search(r"STEP (\S+ \S+)", loaded.output).group(1))  # step, weights
    seconds = case.seconds
    moments = ["encoder.ckpt written"] + [seconds * f for f in (0.6, 0.8, 0.9, 0.95, 0.99)]
    for moment in moments:
        proc = subprocess.Popen(export_b, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        if moment == "encoder.ckpt written":
            parent, name = os.path.split(model)
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None and not any(
                    d.startswith(f".{name}.partial-")
                    and os.path.exists(os.path.join(parent, d, "hyperparams.yaml"))
                    for d in os.listdir(parent)):
                time.sleep(0.001)
        else:
            time.sleep(moment)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had ended: the folder must load all the same
        proc.wait()
        loaded = run([sys.executable, "-c", REEXPORT, model], 300)
        when = moment if isinstance(moment, str) else f"killed after {moment:.1f} s"
        if loaded is None or loaded.rc != 0:
            return "CRASH", f"{when}: the folder does not load: {loaded and loaded.last_line()}"
        step = re.search(r"STEP (\S+ \S+)", loaded.output)
        if not step or step.group(1) not in steps:
            return "SILENT", (f"{when}: loaded (step, weight sum) {step and step.group(1)}, "
                              f"not one export's {sorted(steps)}")
    return "OK", f"{len(moments)} kills: the folder loaded each time as a whole export"


#: What the CPU allocator raises when an allocation fails (``ulimit -v``).
ALLOC_FAIL = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
              "memory: you tried to allocate 21474836480 bytes. Error code 12 (Cannot allocate "
              "memory)")


def injected(cmd, target, when="True"):
    """``cmd`` (a ``train.py`` command) run with ``target`` (``module:Class.method``)
    failing as the allocator does when ``when`` (a Python expression of the
    call's ``args``) holds: out of memory at a chosen place, as a real process."""
    module, attr = target.split(":")
    cls, method = attr.split(".")
    code = (
        "import runpy, sys\n"
        f"from {module} import {cls}\n"
        f"original = {cls}.{method}\n"
        "def failing(*args, **kwargs):\n"
        f"    if {when}:\n"
        f"        raise RuntimeError({ALLOC_FAIL!r})\n"
        "    return original(*args, **kwargs)\n"
        f"{cls}.{method} = failing\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    return [sys.executable, "-c", code, *cmd[1:]]


def case_out_of_memory_in_valid(base, corpus):
    """The allocator fails in the first validation batch: the error names its
    longest utterance and file, and the run stops (status != 0)."""
    out = os.path.join(base, "oom_valid")
    shutil.rmtree(out, ignore_errors=True)
    cmd = train_cmd(out, corpus, "--stage_transitions=[]", "--optimizer_step_limit=2")
    case = run(injected(cmd, "latent_rq_brain.training.brain:LatentRQBrain.compute_forward",
                        "str(kwargs.get('stage', args[-1])).endswith('VALID')"), 600)
    return expect_error(case, r"OutOfMemoryError: out of memory in valid on a batch of \d+ "
                              r"utterance\(s\) .*; its longest: valid\d+ \(\S*valid\d+\.wav, ")


def case_out_of_memory_building_the_target_cache(base, corpus):
    """The allocator fails while the stage-1 target cache is built at the
    transition: the error names the cache, the utterance and the setting."""
    out = os.path.join(base, "oom_cache")
    shutil.rmtree(out, ignore_errors=True)
    cmd = train_cmd(out, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=3",
                    "--target_cache=True")
    case = run(injected(cmd, "latent_rq_brain.targets.maker:TargetMaker.all_frames"), 600)
    return expect_error(case, r"OutOfMemoryError: out of memory building the target cache of "
                              r"stage 1 on a batch .*; its longest: train\d+ \(\S*train\d+\.wav, "
                              r".*Lower target_cache_batch_seconds")


def case_lock_race(base, corpus):
    """Three rounds of three runs into a folder with a stale lock at once."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    for k in range(3):
        out = os.path.join(base, f"race{k}")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        with open(os.path.join(out, ".lock"), "w") as f:
            json.dump({"pid": dead.pid, "host": socket.gethostname()}, f)
        cmd = train_cmd(out, corpus, "--stage_transitions=[]", "--optimizer_step_limit=2")
        procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(3)]
        outs = [p.communicate(timeout=1800) for p in procs]  # a loaded machine is slow
        codes = [p.returncode for p in procs]
        if codes.count(0) != 1:
            return "SILENT" if codes.count(0) > 1 else "CRASH", f"round {k}: exit statuses {codes}"
        for (text, _), code in zip(outs, codes):
            if code and "is in use by PID" not in text:
                return "CRASH", f"round {k}: " + text.strip().splitlines()[-1][:160]
    return "OK", "3 rounds: one run trained, two stopped with 'in use by PID'"


def case_ddp_rank_stopped(base, corpus):
    """Two gloo ranks; rank 1 gets SIGSTOP: rank 0 must stop naming it."""
    out = os.path.join(base, "ddp")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port", str(_free_port()), "train.py", *train_cmd(out, corpus)[2:],
           "--distributed_backend=gloo", "--stage_transitions=[]", "--optimizer_step_limit=100000",
           "--ddp_timeout_minutes=0.5"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    log = os.path.join(out, "train_log.txt")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (
            os.path.exists(log) and "step: 2" in open(log).read()):
        time.sleep(0.5)
    rank1 = [pid for pid in _children(proc.pid) if _environ(pid).get("RANK") == "1"]
    for pid in rank1:
        os.kill(pid, signal.SIGSTOP)
    try:
        output, _ = proc.communicate(timeout=300)
        case = Case(proc.returncode, output, 0.0)
        with open(out + ".log", "w") as f:  # for a look when it is not OK
            f.write(output)
    except subprocess.TimeoutExpired:
        case = None
    finally:
        for pid in rank1:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    if not rank1:
        return "CRASH", "rank 1 was not found (training did not start?)"
    return expect_error(case, r"rank 1 \(silent for \d+ s\) stopped answering")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid):
    """Every descendant process of ``pid`` (from /proc)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry))
                todo.append(int(entry))
    return found


def _environ(pid):
    try:
        raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def write_corpus(folder):
    from latent_rq_brain.training import synthetic

    rng = np.random.default_rng(0)
    return {split: synthetic.write_corpus(folder, [round(float(rng.uniform(1.0, 2.5)), 3)
                                                   for _ in range(n)], split, k)
            for k, (split, n) in enumerate((("train", 16), ("valid", 4)))}


def main(argv=None):
    """Runs the cases; exit status 1 if any is not OK."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "results", "reliability"))
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    corpus = write_corpus(os.path.join(args.out, "_corpus"))
    failed = 0
    for name in args.only or list(CASES):
        start = time.time()
        try:
            verdict, detail = CASES[name](args.out, corpus)
        except Exception as err:  # the harness itself: reported, not hidden
            verdict, detail = "CRASH", f"{type(err).__name__}: {err}"
        failed += verdict != "OK"
        print(f"{verdict:6s} {name} ({time.time() - start:.0f} s): {detail}", flush=True)
    print(f"{len(args.only or CASES) - failed} of {len(args.only or CASES)} cases OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
