"""The demo's report: losses, the leading indicator and probes with their noise.

Reads a ``make demo`` output folder:

* ``best_rq/train_log.txt`` and ``latent_rq/train_log.txt``: the losses at the
  branch step and at the end;
* ``quick/branch.json``: :mod:`recipes.probes.quick` of the stage-0 (BEST-RQ)
  encoder at the branch step (``latent_rq@stage1``, the checkpoint the branch
  wrote before training: its target encoder), whose ``targets`` give the
  leading indicator, phone PNMI and code perplexity of the Mel targets against
  each layer's;
* ``quick/{random,branch,best_rq,latent_rq}.json``: the quick probes (all-layer
  and best-layer accuracy, mean and std over the cross-validation folds);
* ``commands.txt``: the commands ``make demo`` ran (the last block).

and prints (and with ``--out`` writes) a markdown report. Several folders (the
same demo run twice, e.g. with 1 and 2 threads) are merged into one table:
each number is the mean over the runs, followed by the spread between them in
brackets (max - min).

Every accuracy is printed to the digit its noise leaves meaningful: whole
points when its noise (the fold std, or the spread between runs when larger)
is 1 point or more, else one decimal.

Usage::

    python -m recipes.demo.summary results/demo
    python -m recipes.demo.summary results/demo_t1 results/demo_t2 --out results/demo.md

Authors
 * latent-rq developers 2026
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from latent_rq_brain.training.train_log import read_log

#: quick-probe files of a demo folder (under quick/) and their row names
ROWS = (
    ("random", "random-init"),
    ("branch", "BEST-RQ at the branch"),
    ("best_rq", "BEST-RQ"),
    ("latent_rq", "Latent-RQ"),
)
RUNS = (("best_rq", "BEST-RQ"), ("latent_rq", "Latent-RQ"))
COMMANDS_FILE = "commands.txt"
COMMANDS_HEADER = "# make demo"


# ------------------------------------------------------------------ reading
def read_demo(folder):
    """Everything the report uses from one demo output folder.

    Returns ``{"folder", "losses": {run: {...}}, "quick": {row: quick JSON},
    "commands": [str]}``; missing parts are left out (or empty).
    """
    out = {"folder": folder, "losses": {}, "quick": {}, "commands": read_commands(folder)}
    logs = {}
    for run, _ in RUNS:
        path = os.path.join(folder, run, "train_log.txt")
        if os.path.isfile(path):
            logs[run] = read_log(path)
    branch = branch_step(logs.get("latent_rq", []))
    for run, entries in logs.items():
        out["losses"][run] = losses(entries, branch)
    for key, _ in ROWS:
        path = os.path.join(folder, "quick", f"{key}.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                out["quick"][key] = json.load(f)
    if not out["losses"] and not out["quick"]:
        raise FileNotFoundError(
            f"{folder} holds no demo output (best_rq/train_log.txt, latent_rq/train_log.txt "
            "or quick/*.json): run make demo first")
    return out


def read_commands(folder):
    """The last block of ``commands.txt`` (from its last ``# make demo`` header)."""
    path = os.path.join(folder, COMMANDS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = [x.rstrip("\n") for x in f if x.strip()]
    starts = [i for i, x in enumerate(lines) if x.startswith(COMMANDS_HEADER)]
    return lines[starts[-1]:] if starts else lines


def branch_step(entries):
    """The step of the branched run's transition (None without one).

    Example
    -------
    >>> branch_step([{"step": 300, "transition_to_stage": 1}, {"step": 310, "stage": 1}])
    300
    """
    for e in entries:
        if "transition_to_stage" in e:
            return int(e["step"])
    return None


def losses(entries, branch=None):
    """Train and valid loss of one run at the branch step and at its end.

    Logged steps are de-duplicated (a resumed run's log repeats some; the last
    entry of a step wins). ``at_branch``: the last train loss logged at or before
    ``branch``, or the first one after it where the run starts there (the
    branched run, whose loss restarts with its new targets and heads).

    Example
    -------
    >>> es = [{"step": s, "stage": 0, "train loss": 7 - s / 100} for s in (10, 20, 30)]
    >>> es.append({"epoch": 1, "step": 30, "stage": 0, "valid loss": 6.5})
    >>> r = losses(es, branch=20)
    >>> r["at_branch"], r["end"], r["valid_end"]
    ((20, 6.8), (30, 6.7), (30, 6.5))
    """
    train, valid = {}, {}
    for e in entries:
        if "train loss" in e and "step" in e and "epoch" not in e:
            train[int(e["step"])] = float(e["train loss"])
        if "valid loss" in e:
            valid[int(e["step"])] = float(e["valid loss"])
    out = {}
    if train:
        steps = sorted(train)
        out["end"] = (steps[-1], train[steps[-1]])
        if branch is not None:
            before = [s for s in steps if s <= branch]
            s = before[-1] if before else steps[0]
            out["at_branch"] = (s, train[s])
    if valid:
        steps = sorted(valid)
        out["valid_end"] = (steps[-1], valid[steps[-1]])
        if branch is not None and any(s <= branch for s in steps):
            s = max(s for s in steps if s <= branch)
            out["valid_at_branch"] = (s, valid[s])
    out["branch"] = branch
    return out


# ------------------------------------------------------------------ formatting
def decimals(noise, finest=1):
    """Decimals worth printing for a value with this noise (same unit).

    Example
    -------
    >>> decimals(2.3), decimals(0.4), decimals(None)
    (0, 1, 1)
    """
    if noise is None or not math.isfinite(noise) or noise < 1:
        return finest
    return 0


def cell(values, std=None, scale=1.0, fixed=None):
    """One table cell from a number's values over the runs (None: missing).

    ``std``: its noise within a run (e.g. the fold std), per run; ``fixed``:
    decimals to use instead of the noise rule. Printed: mean, ``± std`` (mean over
    runs) and, for several runs, ``[spread]``.

    Example
    -------
    >>> cell([0.713], [0.008], scale=100)
    '71.3 ± 0.8'
    >>> cell([0.713, 0.721], [0.02, 0.03], scale=100)
    '72 ± 2 [0.8]'
    >>> cell([0.2712, 0.2731], fixed=2)
    '0.27 [0.002]'
    >>> cell([None, 0.5])
    '–'
    """
    if not values or any(v is None for v in values):
        return "–"
    vals = np.asarray(values, dtype=float) * scale
    mean = float(vals.mean())
    spread = float(vals.max() - vals.min()) if len(vals) > 1 else None
    s = None
    if std is not None and all(x is not None for x in std):
        s = float(np.mean(std)) * scale
    if fixed is None:
        d = decimals(max(x for x in (s, spread, 0.0) if x is not None))
    else:
        d = fixed
    text = f"{mean:.{d}f}"
    if s is not None:
        text += f" ± {s:.{d}f}"
    if spread is not None:
        text += f" [{spread:.{d + 1}f}]"
    return text


def _names(runs, keys, field):
    """Names under ``field`` of the quick-probe results ``keys`` of every run,
    in order of first appearance (``field``: "targets" or "probes")."""
    names = []
    for r in runs:
        for key in keys:
            for name in _get(r["quick"], key, field) or {}:
                if name not in names:
                    names.append(name)
    return names


def _get(data, *keys):
    for k in keys:
        if not isinstance(data, (dict, list)):
            return None
        try:
            data = data[k]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# ------------------------------------------------------------------ sections
def loss_table(runs):
    """Markdown: each run's train loss at the branch and at the end, valid loss at the end."""
    lines = ["| run | train loss at the branch | train loss at the end | valid loss at the end |",
             "|---|---:|---:|---:|"]
    for run, label in RUNS:
        per = [r["losses"].get(run) for r in runs]
        if all(p is None for p in per):
            continue
        cols = []
        for key in ("at_branch", "end", "valid_end"):
            vals = [None if p is None or key not in p else p[key] for p in per]
            steps = sorted({v[0] for v in vals if v is not None})
            text = cell([None if v is None else v[1] for v in vals], fixed=2)
            if steps:
                text += f" (step {'/'.join(map(str, steps))})"
            cols.append(text)
        lines.append(f"| {label} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def indicator_table(runs):
    """Markdown: phone PNMI and code perplexity of every target source.

    Columns: the stage-0 encoder at the branch step (what a Latent-RQ stage 1
    trains on), BEST-RQ at the end, and a random-init encoder.
    """
    cols = [(key, label) for key, label in (("branch", "stage-0 encoder at the branch"),
                                            ("best_rq", "BEST-RQ at the end"),
                                            ("random", "random-init"))
            if any(key in r["quick"] for r in runs)]
    sources = _names(runs, [key for key, _ in cols], "targets")
    if not cols or not sources:
        return None
    head = "| targets | " + " | ".join(
        f"{label} ({_steps(runs, key)}): PNMI | perplexity" for key, label in cols) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(cols)]
    for name in sources:
        row = [f"{'Mel (stage 0)' if name == 'mel' else name}"]
        for key, _ in cols:
            t = [_get(r["quick"], key, "targets", name) for r in runs]
            row.append(cell([None if x is None else x["pnmi"] for x in t], fixed=2))
            row.append(cell([None if x is None else x["perplexity"] for x in t], fixed=0))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _steps(runs, key):
    steps = sorted({str(_get(r["quick"], key, "encoder", "step")) for r in runs
                    if key in r["quick"]})
    return "step " + "/".join(steps) if steps else "step ?"


def indicator_verdict(runs):
    """One sentence: the best layer's PNMI at the branch against Mel's, with its noise.

    The noise of a PNMI difference: the standard error over the codebooks (each a
    different random projection) of the two sources, ``sqrt(sd_mel^2 + sd_layer^2
    / n)``, and the spread between runs; a gap within twice the larger is "about as
    much".
    """
    best, noise = {}, {}
    for r in runs:
        t = _get(r["quick"], "branch", "targets")
        if not t or "mel" not in t:
            return None
        for name, v in t.items():
            if name == "mel":
                continue
            best.setdefault(name, []).append(v["pnmi"] - t["mel"]["pnmi"])
            sds = [x.get("pnmi_codebook_std") for x in (v, t["mel"])]
            n = min(x.get("codebooks") or 0 for x in (v, t["mel"]))
            if n > 1 and None not in sds:
                noise.setdefault(name, []).append(math.sqrt((sds[0] ** 2 + sds[1] ** 2) / n))
    if not best:
        return None
    name = max(best, key=lambda n: np.mean(best[n]))
    diffs = np.asarray(best[name])
    spread = float(diffs.max() - diffs.min()) if len(diffs) > 1 else 0.0
    se = float(np.mean(noise[name])) if noise.get(name) else 0.0
    gap = float(diffs.mean())
    if abs(gap) <= 2 * max(spread, se, 0.0025):
        how = "about as much phone information as"
    else:
        how = "more phone information than" if gap > 0 else "less phone information than"
    detail = [f"PNMI difference {gap:+.3f}"]
    if se:
        detail.append(f"standard error over the codebooks {se:.3f}")
    if len(diffs) > 1:
        detail.append(f"spread between runs {spread:.3f}")
    return (f"At the branch step the best layer's targets ({name}) hold {how} the Mel "
            f"targets ({', '.join(detail)}).")


def probe_tables(runs):
    """Markdown: all-layer and best-layer accuracy (%) of every task, ± fold std."""
    tasks = _names(runs, [key for key, _ in ROWS], "probes")
    rows = [(key, label) for key, label in ROWS if any(key in r["quick"] for r in runs)]
    if not tasks or not rows:
        return None
    out = []
    for which, std_key, title in (("all", "all_std", "all layers"),
                                  ("best", "best_std", "each task's best single layer")):
        lines = [f"Accuracy (%), {title}:", "",
                 "| encoder | " + " | ".join(tasks) + " | Avg |",
                 "|---|" + "---:|" * (len(tasks) + 1)]
        for key, label in rows:
            cols = []
            for task in tasks:
                p = [_get(r["quick"], key, "probes", task) for r in runs]
                text = cell([None if x is None else x[which] for x in p],
                            [None if x is None else x[std_key] for x in p], scale=100)
                if which == "best" and all(x is not None for x in p):
                    text += f" (layer {'/'.join(sorted({str(x['best_layer']) for x in p}))})"
                cols.append(text)
            avg, avg_std = [], []
            for r in runs:
                p = _get(r["quick"], key, "probes") or {}
                if any(t not in p for t in tasks):
                    avg.append(None)
                    avg_std.append(None)
                    continue
                avg.append(float(np.mean([p[t][which] for t in tasks])))
                avg_std.append(float(np.sqrt(sum(p[t][std_key] ** 2 for t in tasks))) / len(tasks))
            cols.append(cell(avg, avg_std, scale=100))
            lines.append(f"| {label} ({_steps(runs, key)}) | " + " | ".join(cols) + " |")
        out.append("\n".join(lines))
    folds = sorted({str(x["folds"]) for r in runs for q in r["quick"].values()
                    for x in (q.get("probes") or {}).values()})
    return "\n\n".join(out), folds


HOW_TO_READ_INDICATOR = (
    "How to read it: a Latent-RQ stage predicts codes of the stage-0 encoder's layers "
    "instead of codes of the Mel frames; its premise is that those layers carry more "
    "phone information. PNMI (0 to 1) is the share of a frame's phone uncertainty that "
    "its code removes (mean over the codebooks; phones forced-aligned by PocketSphinx on "
    "the English prompts); perplexity is how many of the 512 codes a codebook effectively "
    "uses. A layer above Mel at the branch step would be a better target; below Mel, the "
    "branch trains on worse targets than BEST-RQ (what the mini reproduction found at "
    "every branch point, docs/reproduction.md). The Mel row does not depend on the "
    "encoder's weights: for encoders of one architecture, as here, it is the same in every "
    "column.")

HOW_TO_READ_PROBES = (
    "How to read it: each cell is the accuracy of a linear (ridge) probe on the frozen "
    "encoder's hidden states, mean ± std over {folds} prompt-disjoint cross-validation "
    "folds (Avg: the mean over tasks, its ± the tasks' fold stds combined). Two rows "
    "differ only where they differ by more than their ±; the random-init row is the "
    "floor, what the untrained architecture already gives (language ID on these prompts "
    "is largely voice ID: one voice per language). Numbers are rounded to the digit the "
    "noise leaves: whole points when it is 1 point or more. At demo size (minutes of "
    "training on 1.4 h) the rows say whether pre-training moved the encoder above the "
    "floor, not which method is better.")


def report(runs, title="Demo results"):
    """The whole markdown report of one or several demo folders."""
    lines = [f"# {title}", ""]
    if len(runs) == 1:
        lines.append(f"From `{runs[0]['folder']}`"
                     + _threads_note(runs[0]) + ".")
    else:
        lines.append("Merged from " + ", ".join(
            f"`{r['folder']}`{_threads_note(r)}" for r in runs)
            + ": each number is the mean over these runs; `[x]` after it is the spread "
            "between them (max - min), the part of the number that depends on the machine "
            "and its thread count.")
    lines += ["", "Generated by `python -m recipes.demo.summary "
              + " ".join(r["folder"] for r in runs) + "`.", ""]
    lines += ["## Losses", "", loss_table(runs), ""]
    branch = sorted({str(p.get("branch")) for r in runs for p in r["losses"].values()
                     if p.get("branch") is not None})
    if branch:
        lines += [f"Latent-RQ branches from BEST-RQ at step {'/'.join(branch)}: its first loss "
                  "is that of fresh heads on new targets (ln(512) = 6.24 for a uniform guess), "
                  "and the two runs predict different targets, so their losses do not compare "
                  "with each other; each should fall.", ""]
    ind = indicator_table(runs)
    lines += ["## Leading indicator: are the layers better targets than Mel?", ""]
    if ind is None:
        lines += ["(no quick/branch.json: run the demo's indicator step)", ""]
    else:
        lines += [ind, ""]
        verdict = indicator_verdict(runs)
        if verdict:
            lines += [verdict, ""]
        lines += [HOW_TO_READ_INDICATOR, ""]
    probes = probe_tables(runs)
    lines += ["## Probes of the frozen encoders, with their noise", ""]
    if probes is None:
        lines += ["(no quick/*.json)", ""]
    else:
        tables, folds = probes
        lines += [tables, "", HOW_TO_READ_PROBES.format(folds="/".join(folds) or "k"), ""]
    lines += ["## Commands", ""]
    for r in runs:
        cmds = r["commands"] or [" ".join(q["command"]) for q in r["quick"].values()
                                 if q.get("command")]
        lines += [f"`{r['folder']}`:", "", "```bash", *(cmds or ["(no commands.txt)"]), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _threads_note(run):
    threads = sorted({str(q["threads"]) for q in run["quick"].values() if "threads" in q})
    header = [c for c in run["commands"] if c.startswith(COMMANDS_HEADER)]
    note = []
    if header:
        note.append(header[-1].lstrip("# ").strip())
    if threads:
        note.append(f"probes with {'/'.join(threads)} torch thread(s)")
    return f" ({'; '.join(note)})" if note else ""


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="make demo output folder(s), e.g. results/demo")
    p.add_argument("--out", default=None, help="markdown file to write (e.g. results/demo.md)")
    p.add_argument("--title", default="Demo results")
    args = p.parse_args(argv)
    try:
        runs = [read_demo(f) for f in args.folders]
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    text = report(runs, args.title)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
