"""``results/reproduction.md`` and its figures from a reproduction folder.

Reads ``OUT/seed<k>/<arm>/eval/step<s>.json`` (quick probes + target quality of
each checkpoint), ``segments.json`` (training seconds per segment) and
``random_init.json``, and writes:

* ``reproduction_fig3.png``: quick-probe Avg vs step and vs training wall-clock,
  mean +- std over seeds, transitions marked (the paper's Fig. 3);
* ``reproduction_pnmi.png``: phone PNMI of the targets of Mel and of every layer of
  the BEST-RQ encoder vs step (the leading indicator);
* a markdown report: Table 1 (per task and Avg at the last common step, mean +- std),
  each arm minus BEST-RQ paired by seed (a t interval over seeds),
  Table 2 (layer sets), the step at which Latent-RQ reaches BEST-RQ's final Avg.

Usage::

    python -m recipes.reproduce.reproduce --out results/reproduce --report results/reproduction.md

Authors
 * latent-rq developers 2026
"""

import glob
import json
import os
import re

import numpy as np

ARM_LABELS = {"best_rq": "BEST-RQ", "schedule": "Latent-RQ (schedule)"}


def arm_label(arm):
    """Human name of an arm (``branch2400`` -> one transition at step 2400)."""
    if arm.startswith("branch"):
        return f"Latent-RQ (branch at {arm[6:]})"
    if arm == "best_rq_longer":
        return "BEST-RQ continued past S"
    if arm.startswith("schedule_"):
        return f"Latent-RQ (schedule, {arm[9:]} layers)"
    if arm.startswith("variant_"):
        return f"Latent-RQ + {arm[8:].replace('_', ' + ')}"
    from recipes.reproduce.plan import ENCODERS

    if arm.startswith("best_rq_") and arm[8:] in ENCODERS:
        return f"BEST-RQ ({arm[8:].capitalize()}-like encoder)"
    reg = regularized_arm(arm)
    if reg is not None:
        base, name = reg
        return {"best_rq": "BEST-RQ", "schedule": "Latent-RQ (schedule)",
                "ema_anchor2": "Latent-RQ + ema + anchor2"}[base] + f" + {name}"
    return ARM_LABELS.get(arm, arm)


def regularized_arm(arm):
    """``(base arm, regulariser)`` of a regulariser arm, else None.

    Example
    -------
    >>> regularized_arm("schedule_sigreg005"), regularized_arm("schedule_deep")
    (('schedule', 'sigreg005'), None)
    """
    from recipes.reproduce.plan import REGULARIZERS

    for base in ("best_rq", "schedule", "ema_anchor2"):
        name = arm[len(base) + 1:]
        if arm.startswith(base + "_") and name in REGULARIZERS:
            return base, name
    return None


def load_runs(out):
    """``{arm: {seed: {step: eval dict}}}``, plus ``{seed: random-init eval}``."""
    runs, random = {}, {}
    for seed_dir in sorted(glob.glob(os.path.join(out, "seed*"))):
        seed = int(re.sub(r"\D", "", os.path.basename(seed_dir)))
        rnd = os.path.join(seed_dir, "random_init.json")
        if os.path.isfile(rnd):
            random[seed] = json.load(open(rnd))
        for arm_dir in sorted(glob.glob(os.path.join(seed_dir, "*", "eval"))):
            arm = os.path.basename(os.path.dirname(arm_dir))
            for f in glob.glob(os.path.join(arm_dir, "step*.json")):
                r = json.load(open(f))
                runs.setdefault(arm, {}).setdefault(seed, {})[int(r["step"])] = r
    return runs, random


def wall_clock(out, seed, arm, branch_from=None):
    """``{step: cumulative training seconds}``; a branched arm adds BEST-RQ's time."""
    def segs(a):
        f = os.path.join(out, f"seed{seed}", a, "segments.json")
        return {int(k): v for k, v in json.load(open(f)).items()} if os.path.isfile(f) else {}

    base = 0.0
    if branch_from is not None:
        best = segs("best_rq")
        base = sum(v for k, v in best.items() if k <= branch_from)
    out_, total = {}, base
    for step, sec in sorted(segs(arm).items()):
        total += sec
        out_[step] = total
    return out_


def branch_step(arm, st):
    """The BEST-RQ step an arm starts from (None for BEST-RQ itself).

    Example
    -------
    >>> st = {"S": 3000, "transitions": [600, 1500, 2400]}
    >>> [branch_step(a, st) for a in ("best_rq", "schedule_deep", "branch2400", "best_rq_longer",
    ...                               "variant_kmeans")]
    [None, 600, 2400, 3000, 600]
    """
    reg = regularized_arm(arm)
    if reg is not None:
        return None if reg[0] == "best_rq" else st["transitions"][0]
    if arm.startswith("schedule") or arm.startswith("variant_"):
        return st["transitions"][0]
    if arm.startswith("branch"):
        return int(arm[6:])
    if arm == "best_rq_longer":
        return st["S"]
    return None


def best_layer_pnmi(r):
    """Phone PNMI of the best layer's targets in one evaluation (Mel excluded).

    Example
    -------
    >>> best_layer_pnmi({"targets": {"mel": {"pnmi": 0.3}, "layer0": {"pnmi": 0.2},
    ...                              "layer1": {"pnmi": 0.25}}})
    0.25
    """
    return max(v["pnmi"] for k, v in r["targets"].items() if k != "mel")


def curve(runs, arm, key=lambda r: r["Avg"]):
    """``(steps, mean, std, n_seeds)`` over the seeds that have each step."""
    steps = sorted({s for per in runs.get(arm, {}).values() for s in per})
    mean, std, n = [], [], []
    for s in steps:
        vals = [key(per[s]) for per in runs[arm].values() if s in per]
        mean.append(np.mean(vals))
        std.append(np.std(vals))
        n.append(len(vals))
    return np.array(steps), np.array(mean), np.array(std), n


def reach_step(steps, values, target):
    """First step (linearly interpolated) at which ``values`` reach ``target``, or None.

    Example
    -------
    >>> reach_step([100, 200, 300], [0.1, 0.3, 0.5], 0.4)
    250.0
    >>> reach_step([100, 200], [0.1, 0.2], 0.4) is None
    True
    """
    prev = None
    for s, v in zip(steps, values):
        if v >= target:
            if prev is None:
                return float(s)
            (s0, v0) = prev
            return float(s0 + (target - v0) / (v - v0) * (s - s0))
        prev = (s, v)
    return None


def _fmt(vals, scale=100.0, digits=1):
    vals = [scale * v for v in vals]
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals):.{digits}f}"


def _save(fig, axes, folder, png, title):
    """Legends, saves and closes ``fig``; returns its markdown lines."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, png), dpi=110)
    plt.close(fig)
    return [f"![{title}]({png})", ""]


def write_report(out, md_path, scale="cpu"):
    """Writes the markdown report and its PNGs next to ``md_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recipes.reproduce.plan import layer_sets, scaled_steps

    st = scaled_steps(scale)
    runs, random = load_runs(out)
    folder = os.path.dirname(os.path.abspath(md_path))
    stem = os.path.splitext(os.path.basename(md_path))[0]
    lines = [f"# Mini-scale reproduction ({scale} scale, S = {st['S']} steps)", ""]
    lines += [f"Generated by `python -m recipes.reproduce.reproduce --out {out} --report "
              f"{md_path}` from the evaluations in `{out}`.", ""]
    if not runs:
        lines.append("No evaluated checkpoint yet.")
        open(md_path, "w").write("\n".join(lines) + "\n")
        return

    # ---- Fig. 3
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm in sorted(runs):
        steps, mean, std, n = curve(runs, arm)
        count = str(max(n)) if min(n) == max(n) else f"{min(n)}-{max(n)}"
        label = arm_label(arm) + f" ({count} seed{'s' if max(n) > 1 else ''})"
        seeds = sorted(runs[arm])
        branch = branch_step(arm, st)
        # wall-clock panel: the first seed alone (segment times of a shared machine do not
        # average meaningfully across seeds run under different loads)
        s0 = seeds[0]
        w0 = wall_clock(out, s0, arm, None if arm == "best_rq_longer" else branch)
        per0 = runs[arm][s0]
        wsteps = [s for s in sorted(per0) if s in w0]
        xs = [w0[s] / 60 for s in wsteps]
        ys = [per0[s]["Avg"] for s in wsteps]
        start = [runs["best_rq"][sd][branch]["Avg"] for sd in seeds
                 if branch in runs.get("best_rq", {}).get(sd, {})]
        if start:
            # the arm starts from BEST-RQ's checkpoint at its branch point (its own seeds)
            steps = np.r_[branch, steps]
            mean, std = np.r_[np.mean(start), mean], np.r_[np.std(start), std]
            b0 = runs.get("best_rq", {}).get(s0, {}).get(branch)
            bw = wall_clock(out, s0, "best_rq").get(branch)
            if b0 is not None and bw is not None:
                xs, ys = [bw / 60] + xs, [b0["Avg"]] + ys
        axes[0].errorbar(steps, 100 * mean, yerr=100 * std, label=label, capsize=2, marker="o",
                         ms=3)
        axes[1].plot(xs, 100 * np.array(ys), marker="o", ms=3, label=f"{arm_label(arm)}, seed {s0}")
    if random:
        r = [v["Avg"] for v in random.values()]
        for ax in axes:
            ax.axhline(100 * np.mean(r), color="grey", ls=":", label="random init")
    for t in st["transitions"]:
        axes[0].axvline(t, color="k", lw=0.5, ls="--")
    axes[0].set_xlabel("optimizer step")
    axes[1].set_xlabel("training wall-clock (min, first seed, shared 2-core CPU)")
    for ax in axes:
        ax.set_ylabel("quick-probe Avg (%)")
    lines += _save(fig, axes, folder, f"{stem}_fig3.png", "Fig. 3")

    # ---- Table 1 at the last step every arm reached
    tasks = list(next(iter(next(iter(runs["best_rq"].values())).values()))["probes"]) \
        if "best_rq" in runs else []
    lines += ["## Table 1: quick probes (all-layer accuracy %, mean ± std over seeds)", ""]
    lines.append("| model | step | seeds | " + " | ".join(tasks) + " | **Avg** | Avg (best layer) |")
    lines.append("|---|---:|---:|" + "---:|" * (len(tasks) + 2))
    if random:
        vals = list(random.values())
        lines.append("| random init | 0 | %d | " % len(vals) + " | ".join(
            _fmt([v["probes"][t]["all"] for v in vals]) for t in tasks)
            + f" | {_fmt([v['Avg'] for v in vals])} | {_fmt([v['Avg_best'] for v in vals])} |")
    for arm in sorted(runs):
        last = max(s for per in runs[arm].values() for s in per)
        vals = [per[last] for per in runs[arm].values() if last in per]
        lines.append(f"| {arm_label(arm)} | {last} | {len(vals)} | " + " | ".join(
            _fmt([v["probes"][t]["all"] for v in vals]) for t in tasks)
            + f" | {_fmt([v['Avg'] for v in vals])} | {_fmt([v['Avg_best'] for v in vals])} |")
    lines.append("")
    fold = [v["probes"][t]["all_std"] for per in runs.get("best_rq", {}).values()
            for v in per.values() for t in tasks]
    if fold:
        lines += [f"Fold std of a single task's accuracy (median over BEST-RQ evaluations): "
                  f"{100 * np.median(fold):.1f} points.", ""]

    lines += avg_by_step_lines(runs, random)
    lines += paired_gap_lines(runs, st)
    lines += paired_gap_lines(runs, st, key="Avg_best")

    # ---- reach step
    if "best_rq" in runs and "schedule" in runs:
        reach = []
        for seed in sorted(runs["schedule"]):
            best = runs["best_rq"].get(seed, {})
            if st["S"] not in best:
                continue
            target = best[st["S"]]["Avg"]
            sch = runs["schedule"][seed]
            steps = sorted(sch)
            r = reach_step(steps, [sch[s]["Avg"] for s in steps], target)
            reach.append(f"- seed {seed}: BEST-RQ Avg at S = {100 * target:.1f}; Latent-RQ "
                         + (f"reaches it at step {r:.0f} ({r / st['S']:.2f} S)" if r else
                            "does not reach it by its last evaluated step "
                            f"({steps[-1]}, Avg {100 * sch[steps[-1]]['Avg']:.1f})"))
        if reach:
            lines += ["## When does Latent-RQ reach BEST-RQ's final Avg?", ""] + reach + [""]

    # ---- Table 2 (at the last step every layer set reached)
    sets = layer_sets(scale)
    arms2 = [a for a in ("schedule_shallow", "schedule", "schedule_deep") if a in runs]
    if len(arms2) > 1:
        seed2 = min(runs[arms2[0]])
        common = set.intersection(*[set(runs[a].get(seed2, {})) for a in arms2])
        if common:
            step = max(common)
            lines += [f"## Table 2: layer sets (schedule, seed {seed2}, step {step})", "",
                      "| layer set | layers | Avg | Avg (best layer) | phones | best layer's "
                      "target PNMI |", "|---|---|---:|---:|---:|---:|"]
            rows = [(a.replace("schedule_", "") if a != "schedule" else "middle", a)
                    for a in arms2]
            if step in runs.get("best_rq", {}).get(seed2, {}):
                rows.append(("BEST-RQ (Mel)", "best_rq"))
            for name, arm in rows:
                r = runs[arm][seed2][step]
                pn = best_layer_pnmi(r)
                lines.append(f"| {name} | {sets.get(name, '-')} | {100 * r['Avg']:.1f} | "
                             f"{100 * r['Avg_best']:.1f} | {100 * r['probes']['phones']['all']:.1f}"
                             f" | {pn:.3f} |")
            lines.append("")

    # ---- target PNMI
    if "best_rq" in runs:
        fig, ax = plt.subplots(figsize=(6, 4))
        sources = list(next(iter(next(iter(runs["best_rq"].values())).values()))["targets"])
        lines += ["## Target quality of the BEST-RQ encoder (phone PNMI, mean over seeds)", "",
                  "| step | " + " | ".join(sources) + " |", "|---:|" + "---:|" * len(sources)]
        steps = sorted({s for per in runs["best_rq"].values() for s in per})
        for src in sources:
            steps_, mean, std, _ = curve(runs, "best_rq", key=lambda r: r["targets"][src]["pnmi"])
            ax.errorbar(steps_, mean, yerr=std, label=src, lw=2.5 if src == "mel" else 1,
                        color="k" if src == "mel" else None)
        for s in steps:
            vals = [np.mean([per[s]["targets"][src]["pnmi"] for per in runs["best_rq"].values()
                             if s in per]) for src in sources]
            lines.append(f"| {s} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
        lines.append("")

        others = [a for a in sorted(runs) if a != "best_rq"
                  and any(s in steps for per in runs[a].values() for s in per)]
        if others:
            lines += ["Best layer's target PNMI of the encoders of the other arms (their own "
                      "next targets), mean over seeds:", "",
                      "| arm | " + " | ".join(f"step {s}" for s in steps) + " |",
                      "|---|" + "---:|" * len(steps)]
        for arm in others:
            steps_, mean, std, _ = curve(runs, arm, key=best_layer_pnmi)
            ax.errorbar(steps_, mean, yerr=std, label=f"{arm_label(arm)}: best layer", ls="--")
            got = dict(zip(steps_.tolist(), mean))
            lines.append(f"| {arm_label(arm)} | " + " | ".join(
                f"{got[s]:.3f}" if s in got else "" for s in steps) + " |")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("phone PNMI of the targets")
        lines += [""] + _save(fig, [ax], folder, f"{stem}_pnmi.png", "target PNMI")
    lines += branch_rule_lines(runs, st)
    lines += variant_target_lines(out)
    lines += regularizer_indicator_lines(out, runs)
    lines += diagnosis_lines(out)
    lines += superb_lines(out)
    open(md_path, "w").write("\n".join(lines) + "\n")


def avg_by_step_lines(runs, random):
    """Quick-probe Avg of every arm at every evaluated step (seed means), its
    difference from BEST-RQ at the same step, and what is known of the noise."""
    arms = sorted(runs, key=lambda a: (a != "best_rq", a))
    curves = {a: dict(zip(*curve(runs, a)[:2])) for a in arms}
    steps = sorted({s for c in curves.values() for s in c})
    if not steps:
        return []
    lines = ["## Quick-probe Avg by step (%, mean over seeds; in brackets: minus BEST-RQ, "
             "paired by seed)", "",
             "| step | " + " | ".join(arm_label(a) for a in arms) + " |",
             "|---:|" + "---:|" * len(arms)]
    n_all = {a: len(runs[a]) for a in arms}
    for step in steps:
        cells = []
        for a in arms:
            have = [seed for seed, per in runs[a].items() if step in per]
            if not have:
                cells.append("")
                continue
            cell = f"{100 * curves[a][step]:.1f}"
            if n_all[a] > 1:
                cell += f" [{len(have)}]"
            paired = [runs[a][seed][step]["Avg"] - runs["best_rq"][seed][step]["Avg"]
                      for seed in have if step in runs.get("best_rq", {}).get(seed, {})]
            if a != "best_rq" and paired:
                cell += f" ({100 * np.mean(paired):+.1f})"
            cells.append(cell)
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append("")
    if any(n > 1 for n in n_all.values()):
        lines += ["[n]: the number of seeds in the mean.", ""]
    # noise: fold variation of the Avg of one evaluation, and random encoders of different seeds
    se = []
    for per in runs.get("best_rq", {}).values():
        for r in per.values():
            t = r["probes"].values()
            se.append(np.sqrt(sum(p["all_std"] ** 2 / p.get("folds", 5) for p in t)) / len(t))
    notes = []
    if se:
        notes.append(f"standard error of one evaluation's Avg from its folds: "
                     f"{100 * np.median(se):.1f} points (median over BEST-RQ evaluations)")
    if len(random) > 1:
        r = [v["Avg"] for v in random.values()]
        notes.append(f"random-init encoders of {len(r)} seeds: Avg {100 * np.mean(r):.1f} ± "
                     f"{100 * np.std(r):.1f} (range {100 * min(r):.1f}-{100 * max(r):.1f})")
    best = runs.get("best_rq", {})
    spread = [np.std([per[s]["Avg"] for per in best.values() if s in per]) for s in steps
              if sum(s in per for per in best.values()) > 1]
    if spread:
        notes.append(f"BEST-RQ trained with {len(best)} seeds: std of the Avg over seeds at a "
                     f"step {100 * np.median(spread):.1f} points (median over {len(spread)} "
                     f"steps, max {100 * max(spread):.1f})")
    n_seeds = max(len(per) for per in runs.values())
    if n_seeds == 1:
        notes.append("one training seed: the seed-to-seed spread of trained encoders is not "
                     "measured here")
    if notes:
        lines += ["Noise: " + "; ".join(notes) + ".", ""]
    return lines


def paired_gap_lines(runs, st, key="Avg"):
    """Each arm minus BEST-RQ in ``key`` (``Avg``: all-layer probes; ``Avg_best``: each
    task's best single layer), paired by seed and step: per seed the mean gap over the
    steps both evaluated, then mean, std and a 95 % t interval over seeds (seeds are the
    independent units; steps of one seed are not), and the gap at S."""
    from scipy import stats

    best = runs.get("best_rq", {})
    rows = []
    for arm in sorted(a for a in runs if a not in ("best_rq", "best_rq_longer")):
        per_seed, at_s, below, total = {}, [], 0, 0
        for seed, per in sorted(runs[arm].items()):
            gaps = {s: per[s][key] - best[seed][s][key] for s in per if s in best.get(seed, {})}
            if not gaps:
                continue
            per_seed[seed] = (np.mean(list(gaps.values())), len(gaps))
            below += sum(g < 0 for g in gaps.values())
            total += len(gaps)
            if st["S"] in gaps:
                at_s.append(gaps[st["S"]])
        if not per_seed:
            continue
        means = [m for m, _ in per_seed.values()]
        ci = ""
        if len(means) > 1:
            sd = np.std(means, ddof=1)
            h = stats.t.ppf(0.975, len(means) - 1) * sd / np.sqrt(len(means))
            spread = f"{100 * np.mean(means):+.1f} ± {100 * sd:.1f}"
            ci = f"{100 * (np.mean(means) - h):+.1f} to {100 * (np.mean(means) + h):+.1f}"
        else:
            spread = f"{100 * means[0]:+.1f}"
        rows.append(f"| {arm_label(arm)} | " + ", ".join(
            f"{seed}: {100 * m:+.1f} ({n})" for seed, (m, n) in per_seed.items())
            + f" | {spread} | {ci} | " + ", ".join(f"{100 * g:+.1f}" for g in at_s)
            + f" | {below} of {total} |")
    if not rows:
        return []
    what = "all-layer Avg" if key == "Avg" else "Avg of each task's best single layer"
    return [f"## Each arm minus BEST-RQ (quick-probe {what}, points, paired by seed and step)",
            "",
            "| arm | seed: mean gap over its evaluated steps (steps) | mean ± std over seeds "
            "| 95 % interval (t, seeds) | at S, per seed | below BEST-RQ at |",
            "|---|---|---:|---:|---:|---:|"] + rows + [""] + (
            ["Seeds are the independent units: the steps of one seed share a run, so the "
             "interval uses one mean per seed.", ""] if key == "Avg" else [])


def superb_lines(out):
    """The SUPERB-style checks (``superb_check.py``'s ``summary.json`` in
    ``out/superb`` and in any ``out/superb_<name>``, e.g. the variants'), if run."""
    lines = []
    for path in sorted(glob.glob(os.path.join(out, "superb*", "summary.json"))):
        name = os.path.basename(os.path.dirname(path))
        summary = json.load(open(path))
        scores, mean, quick = summary["scores"], summary["mean"], summary.get("quick_avg") or {}
        tasks = list(next(iter(scores.values())))
        title = "" if name == "superb" else f" ({name[len('superb_'):].replace('_', ' ')})"
        lines += [f"## SUPERB-style check of the ranking{title} (recipes/probes, test accuracy %)",
                  "", "Learned layer weights, mean pooling, linear head, train / valid / test "
                  f"splits (`python -m recipes.reproduce.superb_check --out OUT/{name}`); one "
                  "run each.", "",
                  "| checkpoint | " + " | ".join(tasks) + " | mean | quick-probe Avg |",
                  "|---|" + "---:|" * (len(tasks) + 2)]
        for k in summary["ranking"]:
            q = f"{100 * quick[k]:.1f}" if k in quick else ""
            lines.append(f"| {k} | " + " | ".join(f"{scores[k][t]:.1f}" for t in tasks)
                         + f" | {mean[k]:.1f} | {q} |")
        same = summary.get("quick_ranking") == [k for k in summary["ranking"] if k in quick]
        lines += ["", f"Ranking: {' > '.join(summary['ranking'])} (SUPERB-style); "
                  + (f"{' > '.join(summary['quick_ranking'])} (quick probes): "
                     + ("the same order." if same else "a different order.")
                     if summary.get("quick_ranking") else "no quick-probe ranking given."), ""]
    return lines


def branch_rule_lines(runs, st):
    """Where (if anywhere) the best layer's targets first beat Mel's, per seed
    (BEST-RQ's evaluations, and those of ``best_rq_longer`` past S)."""
    lines = []
    for seed, per in sorted(runs.get("best_rq", {}).items()):
        per = {**per, **runs.get("best_rq_longer", {}).get(seed, {})}
        gap = {step: best_layer_pnmi(r) - r["targets"]["mel"]["pnmi"] for step, r in per.items()}
        first = next((step for step in sorted(gap) if gap[step] > 0), None)
        gaps = ", ".join(f"{step}: {g:+.3f}" for step, g in sorted(gap.items()))
        lines.append(f"- seed {seed}: " + (
            f"the best layer's targets first beat Mel's at step {first}" if first else
            f"no layer's targets beat Mel's at any evaluated step up to {max(per)}, so the "
            "branch arm of the rule has no branch point there") +
            f" (best layer minus Mel PNMI by step: {gaps})")
    if lines:
        lines = ["## The branch point rule (phone PNMI of a layer's targets > Mel's)", ""] + lines
        lines.append("")
    return lines


def variant_target_lines(out):
    """The leading indicator of the latent-target variants
    (:mod:`recipes.reproduce.variant_targets` JSON files under ``out``): phone
    PNMI and perplexity of each variant's targets beside Mel's, per seed and step."""
    files = sorted(glob.glob(os.path.join(out, "seed*", "variant_targets", "step*.json")))
    if not files:
        return []
    table = {}  # (step, variant) -> [(pnmi, perplexity)] over seeds
    seeds = {}
    for f in files:
        r = json.load(open(f))
        step = int(re.sub(r"\D", "", os.path.basename(f)))
        seeds.setdefault(step, set()).add(f.split(os.sep)[-3])
        for name, v in r["targets"].items():
            table.setdefault((step, name), []).append((v["pnmi"], v["perplexity"]))
    lines = ["## Latent-target variants: the leading indicator", "",
             "`python -m recipes.reproduce.variant_targets RUN@STEP --out "
             "OUT/seed<k>/variant_targets/step<STEP>.json`: each variant's quantizer on the "
             "target layers of BEST-RQ's encoder at the branch step (data-fitted ones fitted "
             "on a seeded sample of the pre-training corpus), scored on the quick-probe "
             "phone frames (mean over codebooks; `mel` = BEST-RQ's own targets; `+anchor2` = "
             "the first 2 of the 6 codebooks on Mel).", "",
             "| step | seeds | targets | phone PNMI | perplexity (of 512) |",
             "|---:|---:|---|---:|---:|"]
    for (step, name), vals in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1] != "mel")):
        pn, pp = np.array(vals).T
        lines.append(f"| {step} | {len(seeds[step])} | {name} | {_fmt(pn, scale=1, digits=3)} | "
                     f"{_fmt(pp, scale=1, digits=0)} |")
    return lines + [""]


def _effective_dimensions(out, seed, arm, step, r):
    """``{source: effective dimension}`` of one evaluation: from the evaluation
    itself, else from that seed's target diagnosis of the same checkpoint."""
    dims = {k: v["effective_dimension"] for k, v in r["targets"].items()
            if "effective_dimension" in v}
    if dims:
        return dims
    f = os.path.join(out, f"seed{seed}", "diagnosis", f"step{step}.json")
    if arm == "best_rq" and os.path.isfile(f):
        return json.load(open(f))["effective_dimension"]
    return {}


def regularizer_indicator_lines(out, runs):
    """The leading indicator of the layer regularisers: BEST-RQ with and without
    each one at the same steps (per seed): phone PNMI of Mel's targets and of the
    best layer's, the target layers' PNMI, perplexity and effective dimension, and
    the quick-probe Avg."""
    from recipes.reproduce.plan import layer_sets

    arms = [a for a in sorted(runs) if (regularized_arm(a) or ("", ""))[0] == "best_rq"]
    if not arms or "best_rq" not in runs:
        return []
    layers = [f"layer{k}" for k in layer_sets("cpu")["middle"]]
    lines = ["## SIGReg against collapse: the leading indicator", "",
             "BEST-RQ with a layer regulariser on the target layers "
             f"({', '.join(layers)}) from step 0, beside BEST-RQ, by seed and step "
             "(`python -m recipes.reproduce.reproduce --regularizers NAME --arms best_rq_NAME`). "
             "PNMI: phone PNMI of the random-projection targets (6 x 512) read from that "
             "source; eff. dim: participation ratio of what the quantizer reads (of 96; Mel "
             "of 320). A pass: target layers' eff. dim >= 30, perplexity near Mel's, best "
             "layer's PNMI above Mel's, Avg not below BEST-RQ's.", "",
             "| arm | seed | step | Avg % | Mel PNMI | best layer (PNMI) | PNMI of every layer "
             "(-1, 0, ...; target layers in bold) | target layers' perplexity (Mel) "
             "| eff. dim of every layer (Mel) |",
             "|---|---:|---:|---:|---:|---|---|---|---|"]
    steps = sorted({s for a in arms for per in runs[a].values() for s in per})
    for seed in sorted({sd for a in arms for sd in runs[a]}):
        for step in steps:
            for arm in ["best_rq"] + arms:
                r = runs.get(arm, {}).get(seed, {}).get(step)
                if r is None:
                    continue
                t = r["targets"]
                best = max((k for k in t if k != "mel"), key=lambda k: t[k]["pnmi"])
                dims = _effective_dimensions(out, seed, arm, step, r)
                every = [k for k in t if k != "mel"]
                dim = (", ".join(f"{dims[k]:.1f}" for k in every if k in dims)
                       + (f" ({dims['mel']:.1f})" if "mel" in dims else "")) or "not measured"
                lines.append(
                    f"| {arm_label(arm)} | {seed} | {step} | {100 * r['Avg']:.1f} | "
                    f"{t['mel']['pnmi']:.3f} | {best} ({t[best]['pnmi']:.3f}) | "
                    + ", ".join(f"**{t[k]['pnmi']:.3f}**" if k in layers else f"{t[k]['pnmi']:.3f}"
                                for k in every) + " | "
                    + ", ".join(f"{t[k]['perplexity']:.0f}" for k in layers)
                    + f" ({t['mel']['perplexity']:.0f}) | {dim} |")
    return lines + [""]


def diagnosis_lines(out):
    """The tables of :mod:`recipes.reproduce.target_diagnosis` found under ``out``."""
    from recipes.reproduce.target_diagnosis import NORMS

    def order(f):  # by seed, then step (a random-init encoder, no step, first)
        m = re.search(r"step(\d+)\.json$", f)
        return (os.path.dirname(f), int(m.group(1)) if m else -1, f)

    files = sorted(glob.glob(os.path.join(out, "seed*", "diagnosis", "*.json")), key=order)
    if not files:
        return []
    lines = ["## Why: target diagnosis", "",
             "`python -m recipes.reproduce.target_diagnosis RUN@STEP ... --out OUT/seed1/diagnosis`, "
             "on the phone-probe frames. RPQ = the random-projection targets of the method "
             "(6 codebooks x 512, phone PNMI, mean over codebooks) under each `target_norm`; "
             "k-means = 512 k-means clusters of the same inputs (HuBERT's kind of target); "
             "eff. dim = participation ratio of the input covariance spectrum.", ""]
    for f in files:
        r = json.load(open(f))
        name = os.path.splitext(os.path.basename(f))[0]
        seed = os.path.basename(os.path.dirname(os.path.dirname(f)))
        lines += [f"**{seed}, {name}** (`{r.get('checkpoint', '')}`, {r['frames']} phone frames)", "",
                  "| source | eff. dim | k-means PNMI | " + " | ".join(
                      f"RPQ PNMI ({n})" for n in NORMS) + " | RPQ perplexity (utterance) |",
                  "|---|---:|---:|" + "---:|" * (len(NORMS) + 1)]
        for src in r["effective_dimension"]:
            lines.append(
                f"| {src} | {r['effective_dimension'][src]:.1f} / {r['input_dim'][src]} | "
                f"{r['kmeans_pnmi'][src]:.3f} | "
                + " | ".join(f"{r['norms'][n][src]['pnmi']:.3f}" for n in NORMS if n in r["norms"])
                + f" | {r['norms']['utterance'][src]['perplexity']:.0f} |")
        lines.append("")
    return lines
