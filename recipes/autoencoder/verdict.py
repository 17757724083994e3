"""The autoencoder's verdict at the mini reproduction's scale: arms, runs, report.

Arms (each for every seed, under ``OUT/seed<k>/<arm>/``), all on the
reproduction's encoder and corpus for S = 3000 steps
(:data:`recipes.reproduce.reproduce.SCALES`, ``cpu``):

* ``sigreg``, ``kl``, ``none``: ``hparams/small/autoencoder_reproduce.yaml``
  with the latent regulariser and weight of :data:`ARMS`;
* ``sigreg002``, ``kl1e-4``: the sweep's other weights (``--arms``, one seed
  first; choose by held-out reconstruction and the probes' folds, never by a
  test figure);
* ``best_rq``: ``hparams/small/reproduce.yaml`` with ``stage_transitions: []``,
  the reproduction's own BEST-RQ arm: ``--best-rq-from results/reproduce``
  reads its committed evaluations instead of training it again.

Training goes in segments of S/10 steps and every run resumes
(:class:`recipes.reproduce.reproduce.Reproduction`); rerunning the command
skips what is done. Each evaluated checkpoint gets ``eval/step<k>.json``
(:mod:`recipes.probes.quick`) and, for the autoencoder arms,
``eval/recon_step<k>.json`` (:mod:`recipes.autoencoder.evaluate` on the
corpus' ``valid.csv``, no probes). Arms run in parallel as separate commands,
one thread each::

    for arm in sigreg kl none; do
        python -m recipes.autoencoder.verdict --out results/autoencoder_verdict \\
            --arms $arm --seeds 1 2 3 --threads 1 --best-rq-from results/reproduce &
    done; wait
    python -m recipes.autoencoder.verdict --out results/autoencoder_verdict \\
        --best-rq-from results/reproduce --report results/autoencoder.md

``--report`` writes the table at S (:func:`write_report`): quick-probe Avg
(mean over seeds, 95 % t interval), each arm minus BEST-RQ and SIGReg minus KL
paired by seed, ``z``'s probes and effective dimension, reconstruction, step
time and stability (skipped steps, non-finite losses, loss spikes per seed).

Authors
 * latent-rq developers 2026
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

from recipes.reproduce.reproduce import ROOT, Reproduction, layer_sets, scaled_steps

#: autoencoder arms: name -> the YAML settings that make it
ARMS = {
    "sigreg": {"latent_regularizer": "sigreg", "latent_regularizer_weight": 0.05},
    "kl": {"latent_regularizer": "kl", "latent_regularizer_weight": 0.001},
    "none": {"latent_regularizer": "none"},
    # the one-seed sweep before the verdict: the other weight of each
    "sigreg002": {"latent_regularizer": "sigreg", "latent_regularizer_weight": 0.02},
    "kl1e-4": {"latent_regularizer": "kl", "latent_regularizer_weight": 0.0001},
}
#: the verdict's arms (the default), in report order
VERDICT_ARMS = ("sigreg", "kl", "none", "best_rq")
#: every arm, in report order
ALL_ARMS = VERDICT_ARMS + ("sigreg002", "kl1e-4")
AUTOENCODER_YAML = "hparams/small/autoencoder_reproduce.yaml"


class Verdict(Reproduction):
    """Plans and runs the verdict's arms (module docstring); resumable."""

    def __init__(self, out, arms=VERDICT_ARMS, corpus="data/pretrain", shared="../shared/data",
                 threads=1, evaluate=True, train=True, until=None, eval_steps=None,
                 best_rq_from=None):
        super().__init__(out, "cpu", corpus, shared, threads=threads, evaluate=evaluate,
                         train=train, until=until, eval_steps=eval_steps)
        unknown = sorted(set(arms) - set(ALL_ARMS))
        if unknown:
            raise ValueError(f"unknown arms {unknown}; known: {list(ALL_ARMS)}")
        self.arm_names = list(arms)
        self.best_rq_from = best_rq_from

    def arms(self, seed, first_seed=None, branch_step=None):
        """``[(name, layers, extra_args_fn, start_step)]`` of the chosen arms."""
        layers = layer_sets(self.scale)["middle"]
        out = []
        for name in self.arm_names:
            settings = ARMS.get(name, {})
            extra = ["--stage_transitions=[]"] + [f"--{k}={v}" for k, v in settings.items()]
            out.append((name, layers, lambda extra=extra: extra, 0))
        return out

    def train_args(self, seed, folder, limit, layers, extra=()):
        """The reproduction's command, on the autoencoder's YAML for its arms."""
        args = super().train_args(seed, folder, limit, layers, extra)
        if os.path.basename(folder) in ARMS:
            args[2] = os.path.join(ROOT, AUTOENCODER_YAML)
        return args

    def evaluate_step(self, folder, step, ckpt, layers):
        """Quick probes (every arm) and reconstruction (autoencoder arms)."""
        super().evaluate_step(folder, step, ckpt, layers)
        out = os.path.join(folder, "eval", f"recon_step{step}.json")
        if os.path.basename(folder) not in ARMS or os.path.isfile(out):
            return
        from recipes.autoencoder import evaluate

        r = evaluate.evaluate(ckpt, os.path.join(self.corpus, "valid.csv"),
                              os.path.join(folder, "eval", f"recon_step{step}"), prompts=2)
        r["step"] = step
        with open(out + ".tmp", "w") as f:
            json.dump(r, f, indent=1)
        os.replace(out + ".tmp", out)

    def run(self, seeds, branch_step=None, arms=None):
        """Every chosen arm of every seed (BEST-RQ skipped when its evaluations
        come from ``best_rq_from``)."""
        for seed in seeds:
            for arm in self.arms(seed):
                if arm[0] == "best_rq" and self.best_rq_from:
                    continue
                self.run_arm(seed, *arm)


# ------------------------------------------------------------------ report
def t_interval(values):
    """``(mean, half-width of the 95 % t interval)`` of per-seed values
    (half-width NaN for one value).

    Example
    -------
    >>> m, h = t_interval([1.0, 2.0, 3.0])
    >>> m, round(h, 3)
    (2.0, 2.484)
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def read_arm(out, arm, seed, step, best_rq_from=None):
    """The figures of one arm and seed at ``step`` (None if not evaluated)."""
    root = best_rq_from if arm == "best_rq" and best_rq_from else out
    folder = os.path.join(root, f"seed{seed}", arm)
    path = os.path.join(folder, "eval", f"step{step}.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        q = json.load(f)
    row = {"Avg": q["Avg"], "Avg_z": q.get("Avg_z"),
           "z_eff_dim": (q.get("latent") or {}).get("effective_dimension")}
    recon = os.path.join(folder, "eval", f"recon_step{step}.json")
    if os.path.isfile(recon):
        with open(recon, encoding="utf-8") as f:
            r = json.load(f)
        row.update(mel_l1=r["reconstruction"]["mel_l1"], mcd_db=r["reconstruction"]["mcd_db"],
                   z_eff_dim=r["latent_health"]["z"])
    timing = os.path.join(folder, "segments.json")
    if os.path.isfile(timing):
        with open(timing, encoding="utf-8") as f:
            seconds = sum(json.load(f).values())
        row["s_per_step"] = seconds / step
    row.update(stability(folder))
    return row


#: a logged training loss this many times the median of the 10 before it is a spike
SPIKE_FACTOR = 1.5


def stability(folder):
    """Steps skipped (non-finite loss or gradients), non-finite logged losses and
    loss spikes (:data:`SPIKE_FACTOR`) in a run's ``train_log.txt``.

    Example
    -------
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> lines = [f"step: {k}, stage: 0 - train loss: {v}, train skipped_steps: {s}"
    ...          for k, (v, s) in enumerate([(5, 0)] * 10 + [(9, 1), (4, 0), ("nan", 2)])]
    >>> _ = open(os.path.join(run, "train_log.txt"), "w").write("\\n".join(lines))
    >>> stability(run)
    {'skipped_steps': 3, 'non_finite_losses': 1, 'loss_spikes': 1}
    """
    import re

    path = os.path.join(folder, "train_log.txt")
    out = {"skipped_steps": 0, "non_finite_losses": 0, "loss_spikes": 0}
    if not os.path.isfile(path):
        return out
    losses = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("step: "):
                continue
            m = re.search(r"train skipped_steps: (\d+)", line)
            out["skipped_steps"] += int(m.group(1)) if m else 0
            m = re.search(r"train loss: ([^,\s]+)", line)
            if not m:
                continue
            value = float(m.group(1))
            if not np.isfinite(value):
                out["non_finite_losses"] += 1
                continue
            if len(losses) >= 10 and value > SPIKE_FACTOR * np.median(losses[-10:]):
                out["loss_spikes"] += 1
            losses.append(value)
    return out


def seeds_of(out, best_rq_from=None):
    """Seeds with a folder in ``out`` (or in ``best_rq_from``)."""
    found = set()
    for root in filter(None, (out, best_rq_from)):
        for path in glob.glob(os.path.join(root, "seed*")):
            name = os.path.basename(path)[4:]
            if name.isdigit():
                found.add(int(name))
    return sorted(found)


def _fmt(m, h, scale=100.0, digits=1):
    if m is None or np.isnan(m):
        return "-"
    if np.isnan(h):
        return f"{scale * m:.{digits}f}"
    return f"{scale * m:.{digits}f} ± {scale * h:.{digits}f}"


def verdict_table(out, step, best_rq_from=None):
    """``(lines, data)``: the markdown table at ``step`` and its numbers."""
    seeds = seeds_of(out, best_rq_from)
    rows = {arm: {s: read_arm(out, arm, s, step, best_rq_from) for s in seeds} for arm in ALL_ARMS}
    rows = {arm: {s: r for s, r in per.items() if r} for arm, per in rows.items()}
    data = {"step": step, "arms": {}, "gaps": {}}
    lines = [
        "| arm | seeds | quick-probe Avg | z Avg | z eff. dim | log-Mel L1 | MCD (dB) | s/step "
        "| skipped steps | non-finite losses | loss spikes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in ALL_ARMS:
        per = rows[arm]
        if not per:
            continue
        col = {}
        for key in ("Avg", "Avg_z", "z_eff_dim", "mel_l1", "mcd_db", "s_per_step"):
            vals = [r[key] for r in per.values() if r.get(key) is not None]
            col[key] = t_interval(vals) if vals else (None, float("nan"))
        counts = {k: [r[k] for r in per.values()]
                  for k in ("skipped_steps", "non_finite_losses", "loss_spikes")}
        data["arms"][arm] = {"seeds": sorted(per), **{k: list(v) for k, v in col.items()},
                             **counts}
        lines.append(
            f"| {arm} | {len(per)} | {_fmt(*col['Avg'])} | {_fmt(*col['Avg_z'])} | "
            f"{_fmt(*col['z_eff_dim'], scale=1.0)} | {_fmt(*col['mel_l1'], 1.0, 3)} | "
            f"{_fmt(*col['mcd_db'], 1.0, 2)} | {_fmt(*col['s_per_step'], 1.0, 2)} | "
            + " | ".join("/".join(map(str, v)) for v in counts.values()) + " |")
    lines += ["", "| paired gap (Avg, by seed) | seeds | mean ± 95 % t interval | separates |",
              "|---|---:|---:|---|"]
    for a, b in [(arm, "best_rq") for arm in ARMS] + [("sigreg", "kl")]:
        common = sorted(set(rows[a]) & set(rows[b]))
        if not common:
            continue
        m, h = t_interval([rows[a][s]["Avg"] - rows[b][s]["Avg"] for s in common])
        sep = ("-" if np.isnan(h) else f"{a} better" if m - h > 0
               else f"{b} better" if m + h < 0 else "no")
        data["gaps"][f"{a}-{b}"] = {"seeds": common, "mean": m, "half_width": h,
                                    "separates": sep}
        lines.append(f"| {a} - {b} | {len(common)} | {_fmt(m, h)} | {sep} |")
    return lines, data


def write_report(out, md_path, best_rq_from=None, step=None):
    """Writes ``md_path`` (and its numbers next to it, ``.json``) from the
    committed evaluations under ``out`` (and ``best_rq_from``)."""
    step = step or scaled_steps("cpu")["S"]
    lines, data = verdict_table(out, step, best_rq_from)
    if not data["arms"]:
        raise ValueError(f"{out}: no evaluation at step {step} (eval/step{step}.json)")
    gap = data["gaps"].get("sigreg-kl")
    words = ("SIGReg against KL: not evaluated yet." if not gap else
             f"SIGReg against KL (quick-probe Avg, paired by seed): {gap['separates']}"
             f" separation ({_fmt(gap['mean'], gap['half_width'])} points).")
    best = [g for k, g in data["gaps"].items() if k.endswith("-best_rq")]
    words += (" Against BEST-RQ: " + "; ".join(
        f"{k.split('-')[0]} {g['separates']} ({_fmt(g['mean'], g['half_width'])})"
        for k, g in data["gaps"].items() if k.endswith("-best_rq")) + "." if best else "")
    text = "\n".join([
        "# The autoencoder's verdict (mini reproduction scale)",
        "",
        f"Generated by `python -m recipes.autoencoder.verdict --best-rq-from results/reproduce "
        f"--report {md_path}{'' if step == scaled_steps('cpu')['S'] else f' --report-step {step}'}` "
        f"from the evaluations at step {step}. Figures are means over seeds with their 95 % t interval; quick-probe "
        "Avg and z Avg in points, z eff. dim = participation ratio of z; log-Mel L1 and MCD on "
        "the corpus' valid.csv (docs/autoencoder.md); skipped steps, non-finite losses and "
        f"loss spikes (a logged loss above {SPIKE_FACTOR}x the median of the 10 before it) per "
        "seed, from each run's train_log.txt.",
        "",
        words,
        "",
    ] + lines + [""])
    os.makedirs(os.path.dirname(os.path.abspath(md_path)), exist_ok=True)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.splitext(md_path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    return text


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/autoencoder_verdict")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--arms", nargs="+", default=list(VERDICT_ARMS), choices=list(ALL_ARMS),
                   help="arms to run; sigreg002 and kl1e-4 are the sweep's other weights "
                        "(run them on one seed first, pick by reconstruction and valid folds)")
    p.add_argument("--corpus", default="data/pretrain")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--best-rq-from", default=None,
                   help="the reproduction's folder whose best_rq evaluations are shared")
    p.add_argument("--eval-steps", type=int, nargs="+", default=None)
    p.add_argument("--until", type=int, default=None)
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--report", default=None, help="write the report (markdown path) and stop")
    p.add_argument("--report-step", type=int, default=None,
                   help="the step the report compares (default: S; e.g. 600 for a 0.2 S screen)")
    args = p.parse_args(argv)
    if args.report:
        print(write_report(args.out, args.report, args.best_rq_from, args.report_step))
        return 0
    Verdict(args.out, args.arms, args.corpus, args.shared, args.threads,
            evaluate=not args.no_eval, until=args.until, eval_steps=args.eval_steps,
            best_rq_from=args.best_rq_from).run(args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
