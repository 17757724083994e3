"""Mini-scale reproduction of the paper's Table 1 / Fig. 3: one resumable command.

For every seed it runs, each in its own output folder under ``OUT/seed<k>/``:

* ``best_rq``: BEST-RQ (stage 0) to S steps;
* ``schedule``: the paper's schedule scaled to S (transitions at 0.2S, 0.5S and
  0.8S), branched from ``best_rq``'s 0.2S checkpoint (the same transition code
  as a one-run schedule);
* ``branch``: one Latent-RQ stage branched where the layer targets' phone PNMI
  first beats Mel's (``--branch-step``, or found from ``best_rq``'s evaluations),
  when that is not 0.2S;
* for the first seed only, the layer-set comparison (Table 2): ``schedule`` with
  the shallow and deep layer sets of the scale's YAML (:func:`layer_sets`);
* with ``--variants``, ``variant_<name>``: the schedule with the latent-target
  variant ``<name>`` of :data:`VARIANTS` (settings of the training YAML);
* with ``--regularizers``, for each layer regulariser ``<name>`` of
  :data:`REGULARIZERS`: ``best_rq_<name>`` (BEST-RQ with the regulariser from
  step 0), ``schedule_<name>`` and ``ema_anchor2_<name>`` (the schedule and the
  EMA + anchors variant with the regulariser, branched from ``best_rq_<name>``);
* with ``--encoders``, for each encoder ``<name>`` of :data:`ENCODERS`:
  ``best_rq_<name>``, BEST-RQ on that encoder (its own target layers).

Training goes in segments of S/10 steps (``--optimizer_step_limit``); after
each segment its checkpoint is evaluated once (:mod:`recipes.probes.quick` and
the phone PNMI / code usage of Mel and of every layer's targets) into
``eval/step<k>.json``. Rerunning the command skips what is done and resumes a
killed training segment from its last checkpoint (at most one segment is lost).
``--report`` writes ``results/reproduction.md`` and its figures
(:mod:`recipes.reproduce.report`).

Usage::

    python -m recipes.reproduce.reproduce --out results/reproduce --seeds 1 2 3
    python -m recipes.reproduce.reproduce --scale gpu --out results/reproduce_gpu --seeds 1

Authors
 * latent-rq developers 2026
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

from recipes.reproduce.plan import (  # noqa: F401 (the plan, read by report, bench and tests)
    ENCODERS,
    HERE,
    REGULARIZERS,
    ROOT,
    SCALES,
    VARIANTS,
    _override_args,
    checkpoint_at,
    layer_sets,
    scaled_steps,
)

def _known(names, table, what):
    """``names`` as a list, each a key of ``table`` (else a ValueError naming them)."""
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(table)}")
    return list(names)


class Reproduction:
    """Plans and runs the arms of one scale; every step is skipped when done."""

    def __init__(self, out, scale="cpu", corpus="data/pretrain", shared="../shared/data",
                 python=sys.executable, threads=2, evaluate=True, train=True, longer=None,
                 until=None, variants=(), regularizers=(), eval_steps=None, encoders=()):
        self.out = os.path.abspath(out)
        self.scale = scale
        self.corpus = os.path.abspath(corpus)
        self.shared = os.path.abspath(shared)
        self.python = python
        self.threads = threads
        self.evaluate = evaluate
        self.train = train
        self.steps = scaled_steps(scale)
        #: optional step past S that BEST-RQ is continued to (arm ``best_rq_longer``)
        self.longer = longer
        #: train no arm past this step in this invocation (a partial budget; rerun
        #: without it to continue)
        self.until = until
        #: the arms ``variant_<name>`` to run for every seed
        self.variants = _known(variants, VARIANTS, "variants")
        #: the arms ``best_rq_<name>``, ``schedule_<name>``, ``ema_anchor2_<name>``
        self.regularizers = _known(regularizers, REGULARIZERS, "regularizers")
        #: the arms ``best_rq_<name>`` on another encoder
        self.encoders = _known(encoders, ENCODERS, "encoders")
        #: evaluate only the checkpoints of these steps (None: every one)
        self.eval_steps = None if eval_steps is None else set(eval_steps)
        os.makedirs(self.out, exist_ok=True)

    # ------------------------------------------------------------ commands
    def train_args(self, seed, folder, limit, layers, extra=()):
        cfg = SCALES[self.scale]
        args = [
            self.python, os.path.join(ROOT, "train.py"), os.path.join(ROOT, cfg["hparams"]),
            "--data_prep=null", f"--data_folder={self.corpus}",
            f"--train_csv={self.corpus}/train.csv", f"--valid_csv={self.corpus}/valid.csv",
            f"--seed={seed}", f"--output_folder={folder}", "--ckpt_to_keep=1000",
            f"--optimizer_step_limit={limit}",
        ]
        args += _override_args({"target_layers": layers})
        return args + list(extra)

    def arms(self, seed, first_seed, branch_step):
        """``[(name, layers, extra_args_fn or None, start_step)]`` in run order."""
        st = self.steps
        sets = layer_sets(self.scale)
        best = os.path.join(self.out, f"seed{seed}", "best_rq")

        def branch(at, transitions, settings=None, source=best):
            def extra():
                ckpt = checkpoint_at(source, at)
                if ckpt is None:
                    raise RuntimeError(f"{source} has no checkpoint at step {at}")
                return [f"--init_from={ckpt}", "--initial_stage=1",
                        "--stage_transitions=[" + ",".join(map(str, transitions)) + "]",
                        *_override_args(settings or {})]
            return extra

        arms = [("best_rq", sets["middle"], lambda: ["--stage_transitions=[]"], 0)]
        t0 = st["transitions"][0]
        arms.append(("schedule", sets["middle"], branch(t0, st["transitions"]), t0))
        if branch_step is not None and branch_step != t0:
            arms.append((f"branch{branch_step}", sets["middle"], branch(branch_step, [branch_step]),
                         branch_step))
        if seed == first_seed:
            for name in ("shallow", "deep"):
                arms.append((f"schedule_{name}", sets[name], branch(t0, st["transitions"]), t0))
        for name in self.variants:
            arms.append((f"variant_{name}", sets["middle"],
                         branch(t0, st["transitions"], VARIANTS[name]), t0))
        for name in self.regularizers:
            reg = REGULARIZERS[name]
            source = os.path.join(self.out, f"seed{seed}", f"best_rq_{name}")
            arms.append((f"best_rq_{name}", sets["middle"],
                         lambda reg=reg: ["--stage_transitions=[]", *_override_args(reg)], 0))
            arms.append((f"schedule_{name}", sets["middle"],
                         branch(t0, st["transitions"], reg, source), t0))
            arms.append((f"ema_anchor2_{name}", sets["middle"],
                         branch(t0, st["transitions"], {**VARIANTS["ema_anchor2"], **reg},
                                source), t0))
        for name in self.encoders:
            settings = {k: v for k, v in ENCODERS[name].items() if k != "target_layers"}
            arms.append((f"best_rq_{name}", ENCODERS[name]["target_layers"],
                         lambda settings=settings: ["--stage_transitions=[]",
                                                    *_override_args(settings)], 0))
        if self.longer:
            arms.append(("best_rq_longer", sets["middle"], lambda: ["--stage_transitions=[]"],
                         st["S"]))
        return arms

    def arm_steps(self, name):
        """Checkpoint steps of an arm: every S/10 up to S, or to ``longer`` for
        ``best_rq_longer``."""
        st = self.steps
        if name != "best_rq_longer":
            return st["checkpoints"]
        every = st["S"] // 10
        return list(range(every, max(self.longer, st["S"]) + 1, every))

    def continue_from(self, seed, folder):
        """Seeds ``best_rq_longer`` with a copy of BEST-RQ's checkpoint at S, so that
        training resumes it exactly (same optimizer, LR schedule and data order)."""
        if glob.glob(os.path.join(folder, "save", "CKPT+*")):
            return
        best = os.path.join(self.out, f"seed{seed}", "best_rq")
        ckpt = checkpoint_at(best, self.steps["S"])
        if ckpt is None:
            raise RuntimeError(f"{best} has no checkpoint at S = {self.steps['S']} to continue")
        shutil.copytree(ckpt, os.path.join(folder, "save", os.path.basename(ckpt)))
        timing = os.path.join(best, "segments.json")
        if os.path.isfile(timing):
            shutil.copy(timing, os.path.join(folder, "segments.json"))

    # ------------------------------------------------------------ running
    def run_arm(self, seed, name, layers, extra, start):
        folder = os.path.join(self.out, f"seed{seed}", name)
        os.makedirs(os.path.join(folder, "eval"), exist_ok=True)
        timing_file = os.path.join(folder, "segments.json")
        if name == "best_rq_longer" and self.train:
            self.continue_from(seed, folder)
        timing = json.load(open(timing_file)) if os.path.isfile(timing_file) else {}
        for step in self.arm_steps(name):
            if step <= start or (self.until is not None and step > self.until):
                continue
            if checkpoint_at(folder, step) is None:
                if not self.train:
                    continue
                cmd = self.train_args(seed, folder, step, layers, extra())
                print(f"[reproduce] seed {seed} {name}: training to step {step}", flush=True)
                t = time.time()
                env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
                with open(os.path.join(folder, "stdout.log"), "a") as log:
                    rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         env=env)
                if rc != 0:
                    raise RuntimeError(f"training {folder} to step {step} failed (rc {rc}); "
                                       f"see {folder}/stdout.log")
                timing[str(step)] = time.time() - t
                with open(timing_file, "w") as f:
                    json.dump(timing, f, indent=1)
                if checkpoint_at(folder, step) is None:
                    raise RuntimeError(f"{folder}: no checkpoint at step {step} after training")
            if self.evaluate and (self.eval_steps is None or step in self.eval_steps):
                self.evaluate_step(folder, step, checkpoint_at(folder, step), layers)

    def evaluate_step(self, folder, step, ckpt, layers):
        out = os.path.join(folder, "eval", f"step{step}.json")
        if os.path.isfile(out):
            return
        from recipes.probes import quick

        print(f"[reproduce] evaluating {ckpt}", flush=True)
        result = quick.evaluate_checkpoint(
            ckpt, shared=self.shared, corpus=self.corpus,
            cache=os.path.join(self.out, "probe_cache"), threads=self.threads,
        )
        result["step"] = step
        result["checkpoint"] = ckpt
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, out)

    def evaluate_random(self, seed):
        """The random-init encoder of the scale's architecture (the step-0 point)."""
        out = os.path.join(self.out, f"seed{seed}", "random_init.json")
        if os.path.isfile(out) or not self.evaluate:
            return
        from recipes.probes import quick

        result = quick.evaluate_checkpoint(
            "random:" + SCALES[self.scale]["hparams"], shared=self.shared, corpus=self.corpus,
            cache=os.path.join(self.out, "probe_cache"), threads=self.threads, seed=seed,
        )
        result["step"] = 0
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(out + ".tmp", out)

    def find_branch_step(self, seed):
        """First checkpoint of ``best_rq`` whose best layer target beats Mel in phone PNMI."""
        from recipes.reproduce.report import best_layer_pnmi

        folder = os.path.join(self.out, f"seed{seed}", "best_rq", "eval")
        for step in self.steps["checkpoints"]:
            path = os.path.join(folder, f"step{step}.json")
            if not os.path.isfile(path):
                return None
            r = json.load(open(path))
            tq = r.get("targets", {})
            if "mel" in tq and len(tq) > 1 and best_layer_pnmi(r) > tq["mel"]["pnmi"]:
                return step
        return None

    def run(self, seeds, branch_step=None, arms=None):
        for seed in seeds:
            self.evaluate_random(seed)
            best = self.arms(seed, seeds[0], None)[0]
            if arms is None or "best_rq" in arms:
                self.run_arm(seed, *best)
            step = branch_step or self.find_branch_step(seed)
            for name, layers, extra, start in self.arms(seed, seeds[0], step)[1:]:
                if (arms is None or name in arms or name.rstrip("0123456789") in arms
                        or (name.startswith("variant_") and "variants" in arms)):
                    if self.train or os.path.isdir(os.path.join(self.out, f"seed{seed}", name)):
                        self.run_arm(seed, name, layers, extra, start)


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/reproduce")
    p.add_argument("--scale", default="cpu", choices=sorted(SCALES))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--corpus", default="data/pretrain")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--branch-step", type=int, default=None,
                   help="branch point of the extra arm (default: where layer targets first beat Mel)")
    p.add_argument("--arms", nargs="+", default=None,
                   help="only these arms (best_rq schedule branch schedule_shallow schedule_deep "
                        "variants variant_<name>)")
    p.add_argument("--variants", nargs="+", default=[], choices=sorted(VARIANTS),
                   help="also run these latent-target variants (arms variant_<name>)")
    p.add_argument("--regularizers", nargs="+", default=[], choices=sorted(REGULARIZERS),
                   help="also run these layer regularisers (arms best_rq_<name>, "
                        "schedule_<name>, ema_anchor2_<name>; pick with --arms)")
    p.add_argument("--encoders", nargs="+", default=[], choices=sorted(ENCODERS),
                   help="also run BEST-RQ on these encoders (arms best_rq_<name>)")
    p.add_argument("--eval-steps", type=int, nargs="+", default=None,
                   help="evaluate only the checkpoints of these steps (default: every one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--longer", type=int, default=None,
                   help="also continue BEST-RQ past S to this step (arm best_rq_longer)")
    p.add_argument("--until", type=int, default=None,
                   help="stop every arm at this step for now (rerun without it to continue)")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate the checkpoints that exist, train nothing (beside a training run)")
    p.add_argument("--report", default=None, help="write the report (markdown path) and stop")
    args = p.parse_args(argv)
    if args.report:
        from recipes.reproduce.report import write_report

        write_report(args.out, args.report, args.scale)
        return 0
    Reproduction(args.out, args.scale, args.corpus, args.shared, threads=args.threads,
                 evaluate=not args.no_eval, train=not args.eval_only,
                 longer=args.longer, until=args.until,
                 variants=args.variants, regularizers=args.regularizers, encoders=args.encoders,
                 eval_steps=args.eval_steps).run(args.seeds, args.branch_step, args.arms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
