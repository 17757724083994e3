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
  reads its committed evaluations instead of training it again;
* ``<arm>_<data>`` for ``sigreg``, ``kl`` and ``best_rq`` and each data variant
  of :data:`DATA_VARIANTS`: the same arm pre-trained on a manifest derived from
  the corpus' ``train.csv`` (:func:`derived_manifest`): ``frac25``, a quarter
  of the utterances (data efficiency), and ``noar``, every Arabic utterance
  removed (a language held out of pre-training, then met in the keyword
  probe, which is Arabic speech commands). Valid set and probes are unchanged.

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

``--report`` writes a table per step (default S; ``--report-step 600 3000``)
(:func:`write_report`): quick-probe Avg (mean over seeds, 95 % t interval),
each arm minus BEST-RQ and SIGReg minus KL paired by seed, ``z``'s probes and
effective dimension, reconstruction, step time and stability (skipped steps,
non-finite losses, loss spikes per seed); then the one-seed weight sweep and
its pick (:func:`sweep_pick`).

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
#: training-data variants: name -> how the training manifest is derived from the
#: corpus' train.csv (:func:`derived_manifest`)
DATA_VARIANTS = {
    "frac25": {"fraction": 0.25},  # data efficiency: a quarter of the utterances
    "noar": {"drop_lang": "ar"},  # low resource: Arabic never heard in pre-training
}
#: the arms run on each data variant (``<base>_<variant>``)
DATA_BASES = ("sigreg", "kl", "best_rq")
DATA_ARMS = tuple(f"{base}_{variant}" for variant in DATA_VARIANTS for base in DATA_BASES)
#: every arm, in report order
ALL_ARMS = VERDICT_ARMS + ("sigreg002", "kl1e-4") + DATA_ARMS


def split_arm(arm):
    """``(base arm, data variant or None)``.

    Example
    -------
    >>> split_arm("kl_noar"), split_arm("kl1e-4"), split_arm("best_rq_frac25")
    (('kl', 'noar'), ('kl1e-4', None), ('best_rq', 'frac25'))
    """
    for variant in DATA_VARIANTS:
        if arm.endswith("_" + variant) and arm[: -len(variant) - 1] in DATA_BASES:
            return arm[: -len(variant) - 1], variant
    return arm, None


def derived_manifest(train_csv, variant, folder):
    """The training manifest of data variant ``variant``, written once to
    ``folder/train_<variant>.csv`` (atomically; left alone when its content is
    already right) and returned.

    ``fraction``: the utterances whose stable hash of variant and ``ID``
    (:func:`latent_rq_brain.training.data.stable_hash`) is below ``fraction``
    (the same subset for every seed and arm, whatever the row order). ``drop_lang``: every row whose ``lang`` column is
    that language removed. A manifest without the column needed, or a variant
    that would keep nothing or drop nothing, is refused with the file named.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> src = os.path.join(d, "train.csv")
    >>> rows = [f"u{i},1.0,a{i}.wav,{'ar' if i % 5 == 0 else 'en'}" for i in range(200)]
    >>> _ = open(src, "w").write("ID,duration,wav,lang\\n" + "\\n".join(rows) + "\\n")
    >>> quarter = derived_manifest(src, "frac25", d)
    >>> 35 < sum(1 for _ in open(quarter)) - 1 < 65
    True
    >>> sum(1 for _ in open(derived_manifest(src, "noar", d))) - 1
    160
    """
    import csv
    import io

    from latent_rq_brain.training.data import stable_hash

    spec = DATA_VARIANTS[variant]
    with open(train_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    need = ["ID"] + (["lang"] if "drop_lang" in spec else [])
    missing = [c for c in need if c not in fields]
    if missing:
        raise ValueError(f"{train_csv}: data variant {variant!r} needs the column(s) {missing}")
    kept = rows
    if "fraction" in spec:
        kept = [r for r in kept if stable_hash(f"{variant}|{r['ID']}") < spec["fraction"]]
    if "drop_lang" in spec:
        kept = [r for r in kept if r["lang"] != spec["drop_lang"]]
        if len(kept) == len(rows):
            raise ValueError(f"{train_csv}: no row has lang {spec['drop_lang']!r}: "
                             f"data variant {variant!r} would hold nothing out")
    if not kept:
        raise ValueError(f"{train_csv}: data variant {variant!r} keeps no utterance")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"train_{variant}.csv")
    if os.path.isfile(path):
        with open(path, encoding="utf-8", newline="") as f:
            if f.read() == buf.getvalue():
                return path
    with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    os.replace(path + ".tmp", path)
    return path
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
            settings = ARMS.get(split_arm(name)[0], {})
            extra = ["--stage_transitions=[]"] + [f"--{k}={v}" for k, v in settings.items()]
            out.append((name, layers, lambda extra=extra: extra, 0))
        return out

    def train_args(self, seed, folder, limit, layers, extra=()):
        """The reproduction's command, on the autoencoder's YAML for its arms
        and on the derived training manifest for the data variants."""
        args = super().train_args(seed, folder, limit, layers, extra)
        base, variant = split_arm(os.path.basename(folder))
        if base in ARMS:
            args[2] = os.path.join(ROOT, AUTOENCODER_YAML)
        if variant is not None:
            manifest = derived_manifest(os.path.join(self.corpus, "train.csv"), variant,
                                        os.path.join(self.out, "manifests"))
            args = [f"--train_csv={manifest}" if a.startswith("--train_csv=") else a
                    for a in args]
        return args

    def evaluate_step(self, folder, step, ckpt, layers):
        """Quick probes (every arm) and reconstruction (autoencoder arms)."""
        super().evaluate_step(folder, step, ckpt, layers)
        summary = os.path.join(folder, "eval", f"train_step{step}.json")
        if not os.path.isfile(summary):  # every arm's: train_log.txt is not committed
            with open(summary + ".tmp", "w") as f:
                json.dump(dict(stability(folder, step), step=step), f, indent=1)
            os.replace(summary + ".tmp", summary)
        out = os.path.join(folder, "eval", f"recon_step{step}.json")
        if split_arm(os.path.basename(folder))[0] not in ARMS or os.path.isfile(out):
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
           "keywords": (q.get("probes", {}).get("keywords") or {}).get("all"),
           "tasks": {t: p["all"] for t, p in q.get("probes", {}).items() if "all" in p},
           "z_eff_dim": (q.get("latent") or {}).get("effective_dimension")}
    recon = os.path.join(folder, "eval", f"recon_step{step}.json")
    if os.path.isfile(recon):
        with open(recon, encoding="utf-8") as f:
            r = json.load(f)
        row.update(mel_l1=r["reconstruction"]["mel_l1"], mcd_db=r["reconstruction"]["mcd_db"],
                   z_eff_dim=r["latent_health"]["z"])
        layers = list((r["latent_health"].get("layers") or {}).values())
        if layers:  # the encoder's layers' effective dimension: least and most collapsed
            row.update(layers_eff_min=min(layers), layers_eff_max=max(layers))
    row["s_per_step"] = seconds_per_step(folder, step)
    summary = os.path.join(folder, "eval", f"train_step{step}.json")
    if os.path.isfile(summary):  # written at evaluation (train_log.txt is not committed)
        with open(summary, encoding="utf-8") as f:
            row.update({k: v for k, v in json.load(f).items() if k in STABILITY_KEYS})
    else:
        row.update(stability(folder, step))
    return row


def seconds_per_step(folder, step):
    """Wall seconds per step of a run up to ``step``: the median over its
    training segments (``segments.json``: segment end step -> seconds) of each
    segment's seconds per step, so that one segment slowed by a neighbour's
    start-up (probe caches, corpus checks) does not set the figure; None
    without timings.

    Example
    -------
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> _ = open(os.path.join(run, "segments.json"), "w").write(
    ...     '{"300": 2400, "600": 450, "900": 480}')
    >>> seconds_per_step(run, 900), seconds_per_step(run, 600)
    (1.6, 4.75)
    """
    timing = os.path.join(folder, "segments.json")
    if not os.path.isfile(timing):
        return None
    with open(timing, encoding="utf-8") as f:
        ends = sorted((int(k), float(v)) for k, v in json.load(f).items())
    rates, start = [], 0
    for end, seconds in ends:
        if end > step:
            break
        rates.append(seconds / (end - start))
        start = end
    return float(np.median(rates)) if rates else None


#: a logged training loss this many times the median of the 10 before it is a spike
SPIKE_FACTOR = 1.5


#: the counts of :func:`stability`
STABILITY_KEYS = ("skipped_steps", "non_finite_losses", "loss_spikes")


def stability(folder, step=None):
    """Steps skipped (non-finite loss or gradients), non-finite logged losses and
    loss spikes (:data:`SPIKE_FACTOR`) in a run's ``train_log.txt`` (its lines up
    to ``step``); None for each when the run has no log (a fresh clone keeps
    only ``eval/``: :meth:`Verdict.evaluate_step` saves these counts there).

    Example
    -------
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> lines = [f"step: {k}, stage: 0 - train loss: {v}, train skipped_steps: {s}"
    ...          for k, (v, s) in enumerate([(5, 0)] * 10 + [(9, 1), (4, 0), ("nan", 2)])]
    >>> _ = open(os.path.join(run, "train_log.txt"), "w").write("\\n".join(lines))
    >>> stability(run)
    {'skipped_steps': 3, 'non_finite_losses': 1, 'loss_spikes': 1}
    >>> stability(run, step=10)["skipped_steps"], stability(tempfile.mkdtemp())["loss_spikes"]
    (1, None)
    """
    import re

    path = os.path.join(folder, "train_log.txt")
    if not os.path.isfile(path):
        return dict.fromkeys(STABILITY_KEYS)
    out = dict.fromkeys(STABILITY_KEYS, 0)
    losses = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("step: "):
                continue
            if step is not None and int(line[6:].split(",")[0]) > step:
                break
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


def _range(low, high):
    """``"low-high"`` to one decimal, or ``-`` when unknown."""
    return "-" if low is None else f"{low:.1f}-{high:.1f}"


def verdict_table(out, step, best_rq_from=None):
    """``(lines, data)``: the markdown table at ``step`` and its numbers."""
    seeds = seeds_of(out, best_rq_from)
    rows = {arm: {s: read_arm(out, arm, s, step, best_rq_from) for s in seeds} for arm in ALL_ARMS}
    rows = {arm: {s: r for s, r in per.items() if r} for arm, per in rows.items()}
    rows["random_init"] = random_init_rows(best_rq_from, seeds)
    data = {"step": step, "arms": {}, "gaps": {}}
    lines = [
        "| arm | seeds | quick-probe Avg | z Avg | z eff. dim | layers' eff. dim | log-Mel L1 "
        "| MCD (dB) | s/step | skipped steps | non-finite losses | loss spikes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in ALL_ARMS:
        per = rows[arm]
        if not per:
            continue
        col = {}
        for key in ("Avg", "Avg_z", "z_eff_dim", "layers_eff_min", "layers_eff_max", "mel_l1",
                    "mcd_db", "s_per_step"):
            vals = [r[key] for r in per.values() if r.get(key) is not None]
            col[key] = t_interval(vals) if vals else (None, float("nan"))
        counts = {k: [r.get(k) for r in per.values()] for k in STABILITY_KEYS}
        data["arms"][arm] = {"seeds": sorted(per), **{k: list(v) for k, v in col.items()},
                             **counts}
        lines.append(
            f"| {arm} | {len(per)} | {_fmt(*col['Avg'])} | {_fmt(*col['Avg_z'])} | "
            f"{_fmt(*col['z_eff_dim'], scale=1.0)} | "
            f"{_range(col['layers_eff_min'][0], col['layers_eff_max'][0])} | "
            f"{_fmt(*col['mel_l1'], 1.0, 3)} | "
            f"{_fmt(*col['mcd_db'], 1.0, 2)} | {_fmt(*col['s_per_step'], 1.0, 2)} | "
            + " | ".join("/".join("-" if c is None else str(c) for c in v)
                         for v in counts.values()) + " |")
    lines += ["", "| paired gap (Avg, by seed) | seeds | mean ± 95 % t interval | separates |",
              "|---|---:|---:|---|"]
    pairs = ([(arm, "best_rq") for arm in ARMS] + [("sigreg", "kl"), ("sigreg", "none"),
                                                   ("kl", "none")]
             + [(arm, "random_init") for arm in VERDICT_ARMS])
    for v in DATA_VARIANTS:
        pairs += [(f"sigreg_{v}", f"best_rq_{v}"), (f"kl_{v}", f"best_rq_{v}"),
                  (f"sigreg_{v}", f"kl_{v}")]
        # what each arm loses on the variant's data (e.g. a quarter of it)
        pairs += [(f"{base}_{v}", base) for base in DATA_BASES]
    for a, b in pairs:
        common = sorted(set(rows[a]) & set(rows[b]))
        if not common:
            continue
        m, h = t_interval([rows[a][s]["Avg"] - rows[b][s]["Avg"] for s in common])
        sep = ("-" if np.isnan(h) else f"{a} better" if m - h > 0
               else f"{b} better" if m + h < 0 else "no")
        data["gaps"][f"{a}-{b}"] = {"a": a, "b": b, "seeds": common, "mean": m,
                                    "half_width": h, "separates": sep}
        lines.append(f"| {a} - {b} | {len(common)} | {_fmt(m, h)} | {sep} |")
    lines += task_gap_table(rows, data)
    lines += held_out_language_table(rows, data)
    return lines, data


#: the pairs whose gap the report splits by probe task
TASK_PAIRS = (("sigreg", "kl"), ("sigreg", "best_rq"), ("kl", "best_rq"), ("sigreg", "none"),
              ("kl", "none"))


def task_gap_table(rows, data):
    """Markdown lines: the paired gaps of :data:`TASK_PAIRS` task by task
    (all-layer accuracy, points, mean ± 95 % t interval over seeds), so that
    a gap in the Avg can be traced to the tasks that carry it; [] when no
    pair has a common seed."""
    tasks, out = None, []
    for a, b in TASK_PAIRS:
        common = sorted(s for s in set(rows.get(a, {})) & set(rows.get(b, {}))
                        if rows[a][s].get("tasks") and rows[b][s].get("tasks"))
        if not common:
            continue
        tasks = tasks or list(rows[a][common[0]]["tasks"])
        cells = {}
        for t in tasks:
            vals = [rows[a][s]["tasks"][t] - rows[b][s]["tasks"][t] for s in common
                    if t in rows[a][s]["tasks"] and t in rows[b][s]["tasks"]]
            cells[t] = t_interval(vals) if vals else (None, float("nan"))
        data.setdefault("task_gaps", {})[f"{a}-{b}"] = {
            "seeds": common, **{t: list(v) for t, v in cells.items()}}
        out.append(f"| {a} - {b} | {len(common)} | "
                   + " | ".join(_fmt(*cells[t]) for t in tasks) + " |")
    if not out:
        return []
    return ["", "The gaps task by task (all-layer accuracy, points; paired by seed):", "",
            "| paired gap | seeds | " + " | ".join(tasks) + " |",
            "|---|---:|" + "---:|" * len(tasks)] + out


def random_init_rows(best_rq_from, seeds):
    """``{seed: {"Avg": ...}}`` of the reproduction's random-init encoders
    (``seed<k>/random_init.json`` of ``best_rq_from``): the step-0 floor every
    arm is also paired with (BEST-RQ's Avg dips below it early on)."""
    out = {}
    for seed in seeds if best_rq_from else ():
        path = os.path.join(best_rq_from, f"seed{seed}", "random_init.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                out[seed] = {"Avg": json.load(f)["Avg"]}
    return out


def held_out_language_table(rows, data):
    """Markdown lines comparing the keyword probe (Arabic speech commands) of
    each arm pre-trained without Arabic (``<arm>_noar``) against the same arm
    that heard it, paired by seed; [] when no ``noar`` arm is evaluated."""
    out = []
    for base in DATA_BASES:
        held = rows.get(f"{base}_noar", {})
        common = sorted(s for s in set(held) & set(rows.get(base, {}))
                        if held[s].get("keywords") is not None
                        and rows[base][s].get("keywords") is not None)
        if not common:
            continue
        heard = [rows[base][s]["keywords"] for s in common]
        never = [held[s]["keywords"] for s in common]
        m, h = t_interval([b - a for a, b in zip(heard, never)])
        data.setdefault("held_out_language", {})[base] = {
            "seeds": common, "heard": heard, "never_heard": never, "mean": m, "half_width": h}
        out.append(f"| {base} | {len(common)} | {_fmt(*t_interval(heard))} | "
                   f"{_fmt(*t_interval(never))} | {_fmt(m, h)} |")
    if not out:
        return []
    return ["", "Arabic held out of pre-training (`<arm>_noar`), then probed: keyword-probe "
            "accuracy (Arabic speech commands, all layers, %), the arm that heard Arabic against "
            "the one that never did, paired by seed:", "",
            "| arm | seeds | heard Arabic | never heard | never - heard |",
            "|---|---:|---:|---:|---:|"] + out


#: the sweep: regulariser -> its weights' arms (the verdict's arm first)
SWEEP = {"sigreg": ("sigreg", "sigreg002"), "kl": ("kl", "kl1e-4")}
#: a weight is eligible when its held-out log-Mel L1 is within this fraction of
#: the best of its regulariser's weights (matched reconstruction)
SWEEP_L1_TOLERANCE = 0.05


def sweep_pick(rows):
    """The weight each regulariser's verdict should use, from one seed's
    figures: among its weights (:data:`SWEEP`) whose held-out log-Mel L1 is
    within :data:`SWEEP_L1_TOLERANCE` of the best of them, the one with the
    higher quick-probe Avg (the probes' cross-validation folds; no test
    figure enters). ``rows``: arm -> ``{"Avg", "mel_l1"}`` (missing arms are
    skipped); returns regulariser -> arm (None when no weight is evaluated).

    Example
    -------
    >>> sweep_pick({"sigreg": {"Avg": 0.65, "mel_l1": 0.41},
    ...             "sigreg002": {"Avg": 0.66, "mel_l1": 0.40},
    ...             "kl": {"Avg": 0.63, "mel_l1": 0.40},
    ...             "kl1e-4": {"Avg": 0.64, "mel_l1": 0.50}})
    {'sigreg': 'sigreg002', 'kl': 'kl'}
    """
    out = {}
    for reg, arms in SWEEP.items():
        have = {a: rows[a] for a in arms if rows.get(a) and rows[a].get("mel_l1") is not None}
        if not have:
            out[reg] = None
            continue
        best_l1 = min(r["mel_l1"] for r in have.values())
        fit = [a for a in arms if a in have
               and have[a]["mel_l1"] <= (1 + SWEEP_L1_TOLERANCE) * best_l1]
        out[reg] = max(fit, key=lambda a: have[a]["Avg"])
    return out


def sweep_table(out, step, seed=1):
    """``(lines, data)``: the one-seed weight sweep at ``step`` and its pick
    (:func:`sweep_pick`); ([], {}) until a sweep arm is evaluated."""
    rows = {a: read_arm(out, a, seed, step) for arms in SWEEP.values() for a in arms}
    if not any(rows.get(a) for arms in SWEEP.values() for a in arms[1:]):
        return [], {}
    pick = sweep_pick(rows)
    lines = ["", f"Weight sweep (seed {seed}, step {step}), chosen before the verdict: per "
             f"regulariser, the weight with the higher quick-probe Avg (the probes' "
             f"cross-validation folds) among those whose held-out log-Mel L1 is within "
             f"{100 * SWEEP_L1_TOLERANCE:.0f} % of the best (matched reconstruction):", "",
             "| arm | regulariser | weight | quick-probe Avg | z Avg | z eff. dim | log-Mel L1 "
             "| MCD (dB) | picked |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for reg, arms in SWEEP.items():
        for a in arms:
            r = rows.get(a)
            if not r:
                continue
            weight = ARMS[a].get("latent_regularizer_weight")
            lines.append(
                f"| {a} | {reg} | {weight:g} | {_fmt(r['Avg'], float('nan'))} | "
                f"{_fmt(r.get('Avg_z'), float('nan'))} | "
                f"{_fmt(r.get('z_eff_dim'), float('nan'), 1.0)} | "
                f"{_fmt(r.get('mel_l1'), float('nan'), 1.0, 3)} | "
                f"{_fmt(r.get('mcd_db'), float('nan'), 1.0, 2)} | "
                f"{'yes' if pick[reg] == a else ''} |")
    return lines, {"seed": seed, "step": step, "pick": pick,
                   "rows": {a: r for a, r in rows.items() if r}}


def _verdict_words(gap):
    """A paired gap in words: who is better, or that it does not separate.

    Example
    -------
    >>> _verdict_words({"separates": "sigreg better", "mean": 0.022, "half_width": 0.015})
    'sigreg better (+2.2 ± 1.5 points, the interval excludes 0)'
    >>> _verdict_words({"separates": "-", "mean": 0.05, "half_width": float("nan")})
    '+5.0 points (one seed: no interval)'
    """
    mean, half = 100 * gap["mean"], 100 * gap["half_width"]
    if gap["separates"] == "-":
        return f"{mean:+.1f} points (one seed: no interval)"
    if gap["separates"] == "no":
        return f"no separation ({mean:+.1f} ± {half:.1f} points)"
    return f"{gap['separates']} ({mean:+.1f} ± {half:.1f} points, the interval excludes 0)"


def _step_name(step):
    full = scaled_steps("cpu")["S"]
    return "S" if step == full else f"{step / full:.1f} S"


def _headline(data):
    """The words of one step's table: SIGReg against KL, then each arm
    against BEST-RQ."""
    gap = data["gaps"].get("sigreg-kl")
    words = ("SIGReg against KL: not evaluated yet." if not gap else
             f"SIGReg against KL (quick-probe Avg, paired by seed): {_verdict_words(gap)}.")
    best = [g for g in data["gaps"].values()
            if g.get("b") == "best_rq" and g.get("a") in VERDICT_ARMS]
    words += (" Against BEST-RQ: " + "; ".join(
        _verdict_words(g) if g["separates"] not in ("-", "no")
        else f"{g['a']}: {_verdict_words(g)}" for g in best) + "."
        if best else "")
    return words


def write_report(out, md_path, best_rq_from=None, step=None, sweep_step=600):
    """Writes ``md_path`` (and its numbers next to it, ``.json``) from the
    committed evaluations under ``out`` (and ``best_rq_from``): one table per
    step of ``step`` (an int or a list; default S), the latest first, then
    the weight sweep at ``sweep_step`` (:func:`sweep_table`)."""
    steps = sorted({step} if isinstance(step, int) else set(step or [scaled_steps("cpu")["S"]]),
                   reverse=True)
    sections, per_step = [], {}
    for k in steps:
        lines, data = verdict_table(out, k, best_rq_from)
        if not data["arms"]:
            raise ValueError(f"{out}: no evaluation at step {k} (eval/step{k}.json)")
        per_step[str(k)] = data
        sections += ([f"## Step {k} ({_step_name(k)})", "", _headline(data), ""]
                     + lines + [""])
    sweep_lines, sweep_data = sweep_table(out, sweep_step)
    if sweep_data:
        sections += ["## The weight sweep"] + sweep_lines + [""]
    flags = " ".join(str(k) for k in sorted(steps))
    text = "\n".join([
        "# The autoencoder's verdict (mini reproduction scale)",
        "",
        f"Generated by `python -m recipes.autoencoder.verdict --best-rq-from results/reproduce "
        f"--report {md_path}"
        f"{'' if steps == [scaled_steps('cpu')['S']] else f' --report-step {flags}'}` "
        "from the committed evaluations. Figures are means over seeds with their 95 % t "
        "interval; quick-probe Avg and z Avg in points, z eff. dim = participation ratio of z; "
        "layers' eff. dim: that of the encoder's most and least collapsed layers (of d_model; "
        "the front end's output included; means over seeds); "
        "log-Mel L1 and MCD on the corpus' valid.csv (docs/autoencoder.md); s/step: wall seconds "
        "per training step, median over the run's segments (a shared 2-core machine: read it "
        "to ±30 %); skipped steps, non-finite losses and "
        f"loss spikes (a logged loss above {SPIKE_FACTOR}x the median of the 10 before it) per "
        "seed, from each run's train_log.txt ('-': the log was not kept). random_init: the "
        "reproduction's random-init encoder of the same seed (step 0), a floor BEST-RQ's early "
        "checkpoints dip below. S = "
        f"{scaled_steps('cpu')['S']} steps, the reproduction's full schedule.",
        "",
    ] + sections)
    os.makedirs(os.path.dirname(os.path.abspath(md_path)), exist_ok=True)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.splitext(md_path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"steps": per_step,
                   "sweep": sweep_data}, f, indent=1)
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
    p.add_argument("--report-step", type=int, nargs="+", default=None,
                   help="the steps the report compares, a table each (default: S; "
                        "e.g. 600 3000)")
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
