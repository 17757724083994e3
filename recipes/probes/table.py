"""Table 1-style markdown of probe results: one row per pre-trained checkpoint.

Reads every ``results.json`` written by ``recipes.probes.train_probe`` under
the given folders. Columns: ASR (WER), SID, IC, ER, then any other task
(alphabetical); **Avg** is the mean over the row's tasks of ``100 - WER`` for
error rates and of the accuracy (in %) otherwise. Several results of one task
for one checkpoint (e.g. the 5 IEMOCAP folds) are averaged first.

Usage::

    python -m recipes.probes.table results/probes/bestrq results/probes/latent_rq
    python -m recipes.probes.table BEST-RQ=results/probes/bestrq Latent-RQ=results/probes/lrq
    python -m recipes.probes.table spec.json     # {"BEST-RQ": ["dir", ...], ...}

Without ``NAME=``, rows are named by the ``checkpoint`` field of the results.

Authors
 * latent-rq developers 2026
"""

import argparse
import json
import os
import sys

#: Column order of the SUPERB-style table; other tasks follow alphabetically.
TASK_ORDER = ("ASR", "SID", "IC", "ER")
ERROR_METRICS = ("WER", "CER", "PER", "DER", "EER")


def find_results(folder):
    """Paths of every ``results.json`` under ``folder`` (or ``folder`` itself if a file).

    Example
    -------
    >>> find_results("/nonexistent")
    Traceback (most recent call last):
    ...
    ValueError: no results.json under /nonexistent
    """
    if os.path.isfile(folder):
        return [folder]
    found = []
    for root, _, files in os.walk(folder):
        if "results.json" in files:
            found.append(os.path.join(root, "results.json"))
    if not found:
        raise ValueError(f"no results.json under {folder}")
    return sorted(found)


def load_result(path):
    """Reads and checks one ``results.json``."""
    try:
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    for key in ("task", "metric", "value", "checkpoint"):
        if key not in res:
            raise ValueError(f"{path} lacks the key {key!r}")
    if not isinstance(res["value"], (int, float)):
        raise ValueError(f"{path}: value {res['value']!r} is not a number")
    return res


def score(res):
    """The Avg contribution: 100 - error rate, or the accuracy (both in %).

    Example
    -------
    >>> score({"metric": "WER", "value": 20.0}), score({"metric": "acc", "value": 90.0})
    (80.0, 90.0)
    """
    if res["metric"] in ERROR_METRICS or res.get("higher_is_better") is False:
        return 100.0 - float(res["value"])
    return float(res["value"])


def collect(sources):
    """``[(row name or None, folder)]`` -> ``{row: {task: [results]}}`` (insertion-ordered)."""
    rows = {}
    for name, folder in sources:
        for path in find_results(folder):
            res = load_result(path)
            row = name or str(res["checkpoint"])
            rows.setdefault(row, {}).setdefault(res["task"], []).append(res)
    return rows


def make_table(rows, digits=2):
    """Markdown table of ``{row: {task: [results]}}``.

    Example
    -------
    >>> rows = {"A": {"ASR": [{"task": "ASR", "metric": "WER", "value": 20.0}],
    ...               "IC": [{"task": "IC", "metric": "acc", "value": 90.0}]}}
    >>> print(make_table(rows))
    | checkpoint | ASR WER ↓ | IC acc ↑ | Avg ↑ |
    |---|---|---|---|
    | A | 20.00 | 90.00 | 85.00 |
    """
    tasks = set(t for r in rows.values() for t in r)
    order = [t for t in TASK_ORDER if t in tasks] + sorted(tasks - set(TASK_ORDER))
    metrics = {}
    for task in order:
        names = {res["metric"] for r in rows.values() for res in r.get(task, [])}
        if len(names) > 1:
            raise ValueError(f"task {task} has results with different metrics: {sorted(names)}")
        metrics[task] = names.pop()
    header = ["checkpoint"] + [
        f"{t} {metrics[t]} {'↓' if metrics[t] in ERROR_METRICS else '↑'}" for t in order
    ] + ["Avg ↑"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, tasks_of in rows.items():
        cells, scores = [name], []
        for task in order:
            results = tasks_of.get(task, [])
            if not results:
                cells.append("-")
                continue
            value = sum(float(r["value"]) for r in results) / len(results)
            scores.append(sum(score(r) for r in results) / len(results))
            cell = f"{value:.{digits}f}"
            if len(results) > 1:
                cell += f" (mean of {len(results)})"
            cells.append(cell)
        cells.append(f"{sum(scores) / len(scores):.{digits}f}" if scores else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_sources(args):
    """Command-line arguments -> ``[(row name or None, folder)]``."""
    sources = []
    for arg in args:
        if arg.endswith(".json") and os.path.isfile(arg) and os.path.basename(arg) != "results.json":
            with open(arg, encoding="utf-8") as f:
                spec = json.load(f)
            if not isinstance(spec, dict):
                raise ValueError(f"{arg}: expected {{row name: [result folders]}}")
            base = os.path.dirname(os.path.abspath(arg))
            for name, folders in spec.items():
                for folder in [folders] if isinstance(folders, str) else folders:
                    sources.append((name, os.path.join(base, folder)))
        elif "=" in arg and not os.path.exists(arg):
            name, folder = arg.split("=", 1)
            sources.append((name, folder))
        else:
            sources.append((None, arg))
    return sources


def main(argv=None):
    """Prints (and optionally writes) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="result folders, NAME=folder, or a JSON spec")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        table = make_table(collect(parse_sources(args.sources)))
    except ValueError as err:
        sys.exit(f"error: {err}")
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    return table


if __name__ == "__main__":
    main()
