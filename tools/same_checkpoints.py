"""Do two checkouts train bit for bit the same? Same-seed checkpoints compared.

Runs, in each checkout (a folder holding ``train.py``, e.g. a ``git worktree``
of another commit), the same short schedule on the same manifest: BEST-RQ to
``--branch`` steps, then a Latent-RQ stage branched from it (``--init_from``,
one transition) to ``--steps``; then compares every file of every checkpoint
(in step order; folder names hold times and are not compared) byte for byte.
Prints one line per checkpoint file and exits non-zero if any differs.

Usage::

    git worktree add /tmp/base <commit>
    python -m tools.same_checkpoints /tmp/base . --csv data/pretrain/train.csv \\
        --utterances 200 --config hparams/small/reproduce.yaml

Authors
 * latent-rq developers 2026
"""

import argparse
import csv
import filecmp
import glob
import os
import subprocess
import sys
import tempfile


def slice_manifest(csv_path, n, out):
    """The first ``n`` rows of a manifest (the same slice for both checkouts)."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:n])
    return out


def train(checkout, config, manifest, out, branch, steps, extra):
    """BEST-RQ to ``branch``, then a branched stage 1 to ``steps``, in ``checkout``."""
    common = [sys.executable, os.path.join(checkout, "train.py"),
              os.path.join(checkout, config), "--data_prep=null",
              f"--data_folder={os.path.dirname(manifest)}", f"--train_csv={manifest}",
              f"--valid_csv={manifest}", "--ckpt_to_keep=1000", "--ckpt_interval_minutes=0",
              "--noprogressbar", "--device=cpu", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    best = os.path.join(out, "best_rq")
    subprocess.run([*common, f"--output_folder={best}", "--stage_transitions=[]",
                    f"--optimizer_step_limit={branch}"], check=True, cwd=checkout, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*common, f"--output_folder={os.path.join(out, 'latent_rq')}",
                    f"--init_from={best}", "--initial_stage=1", f"--stage_transitions=[{branch}]",
                    f"--optimizer_step_limit={steps}"], check=True, cwd=checkout, env=env,
                   stdout=subprocess.DEVNULL)


def checkpoint_files(run):
    """``[(checkpoint index, file name, path)]`` of a run, in save order."""
    out = []
    for k, ckpt in enumerate(sorted(glob.glob(os.path.join(run, "save", "CKPT+*")))):
        for path in sorted(glob.glob(os.path.join(ckpt, "*.ckpt"))):
            out.append((k, os.path.basename(path), path))
    return out


def compare(a_out, b_out):
    """``(same, different)`` lists of checkpoint files of both runs."""
    same, different = [], []
    for run in ("best_rq", "latent_rq"):
        a = checkpoint_files(os.path.join(a_out, run))
        b = checkpoint_files(os.path.join(b_out, run))
        if [x[:2] for x in a] != [x[:2] for x in b]:
            different.append(f"{run}: checkpoint files differ: {[x[:2] for x in a]} vs "
                             f"{[x[:2] for x in b]}")
            continue
        for (k, name, pa), (_, _, pb) in zip(a, b):
            label = f"{run} checkpoint {k} {name}"
            (same if filecmp.cmp(pa, pb, shallow=False) else different).append(label)
    return same, different


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="first checkout (folder with train.py)")
    p.add_argument("b", help="second checkout")
    p.add_argument("--csv", required=True, help="training manifest")
    p.add_argument("--utterances", type=int, default=200)
    p.add_argument("--config", default="hparams/small/reproduce.yaml")
    p.add_argument("--branch", type=int, default=20)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--work", default=None, help="folder for both runs (default: a temp one)")
    args, extra = p.parse_known_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="same_ckpt_")
    os.makedirs(work, exist_ok=True)
    manifest = slice_manifest(args.csv, args.utterances, os.path.join(work, "train.csv"))
    outs = []
    for name, checkout in (("a", args.a), ("b", args.b)):
        out = os.path.join(work, name)
        train(os.path.abspath(checkout), args.config, manifest, out, args.branch, args.steps,
              [f"--seed={args.seed}", *extra])
        outs.append(out)
    same, different = compare(*outs)
    for label in same:
        print(f"identical  {label}")
    for label in different:
        print(f"DIFFERENT  {label}")
    print(f"{len(same)} identical, {len(different)} different checkpoint files")
    return 1 if different or not same else 0


if __name__ == "__main__":
    sys.exit(main())
