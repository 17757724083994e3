"""The SUPERB-style check of the quick probes: do both rank the checkpoints alike?

Runs the probes of :mod:`recipes.probes` (``train_probe``: learned layer weights,
mean pooling + linear head, train / valid / test splits, best epoch on valid) on
the shared-pack tasks of :mod:`recipes.probes.prepare_shared_packs` whose valid
and test items the reproduction corpus leaves out (``probe_sets.probe_held_ids``),
for a few checkpoints (the final ones of each arm, and a random-init encoder),
then prints each checkpoint's test accuracies, their mean, and the ranking next
to the quick-probe ranking of the same checkpoints.

Usage::

    python -m recipes.reproduce.superb_check --out results/reproduce/superb \\
        BEST-RQ=results/reproduce/seed1/best_rq@3000 \\
        Latent-RQ=results/reproduce/seed1/schedule@3000 \\
        random=random:hparams/small/reproduce.yaml

(``RUN@STEP``: that run's checkpoint at the optimizer step.) Results per label
and task go to ``OUT/<label>/<task>/results.json`` and are reused on a rerun;
``OUT/summary.json`` holds the table.

Authors
 * latent-rq developers 2026
"""

import argparse
import json
import os
import sys
import time

#: task -> (train_probe task name, label column, speaker column or None)
TASKS = {
    "ks_arabic": ("KS", "keyword", "speaker"),
    "digits_fsdd": ("DIGITS", "digit", "speaker"),
    "ic_coffee": ("IC", "coffeeDrink", None),
    "gender_librispeech_mini": ("GENDER", "gender", "speaker"),
}
#: CPU-sized settings (as the demo's language-ID probe, recipes/probes/run_demo_probes.py)
OVERRIDES = {"number_of_epochs": 15, "patience": 5, "batch_size": 32, "lr": 0.02,
             "layer_weights_lr": 0.2}


def ranking(scores):
    """Labels sorted by score, best first.

    Example
    -------
    >>> ranking({"a": 0.5, "b": 0.7, "c": 0.6})
    ['b', 'c', 'a']
    """
    return sorted(scores, key=lambda k: -scores[k])


def run(checkpoints, out, shared, tasks=None):
    """``{label: {task: test accuracy}}``, running what is not yet in ``out``
    (``tasks``: default all of :data:`TASKS`)."""
    tasks = list(TASKS) if tasks is None else list(tasks)
    from recipes.probes import train_probe
    from recipes.probes.prepare_shared_packs import prepare_shared_packs
    from recipes.probes.table import load_result, score
    from recipes.reproduce.target_diagnosis import resolve

    data = os.path.join(out, "data")
    prepare_shared_packs(shared, data, list(tasks))
    hparams = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "probes", "hparams", "classification.yaml")
    scores = {}
    for label, spec in checkpoints.items():
        scores[label] = {}
        for task in tasks:
            name, column, speaker = TASKS[task]
            folder = os.path.join(out, label, task)
            result = os.path.join(folder, "results.json")
            if not os.path.isfile(result):
                args = dict(OVERRIDES, checkpoint=resolve(spec), checkpoint_label=label,
                            task=name, label_column=column,
                            data_folder=os.path.join(data, task), output_folder=folder,
                            hidden_state_cache="disk",
                            cache_folder=os.path.join(out, "hidden_cache"), device="cpu")
                if speaker:
                    args["speaker_column"] = speaker
                t0 = time.time()
                train_probe.main([hparams] + [f"--{k}={v}" for k, v in args.items()])
                print(f"{label} {task}: {time.time() - t0:.0f} s", flush=True)
            scores[label][task] = score(load_result(result))
    return scores


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="LABEL=RUN@STEP or LABEL=<encoder name>")
    p.add_argument("--out", default="results/reproduce/superb")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--quick", nargs="*", default=None,
                   help="LABEL=quick-probe JSON (the reproduction's eval/step<S>.json) to rank beside")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    checkpoints = dict(a.split("=", 1) for a in args.checkpoints)
    scores = run(checkpoints, os.path.abspath(args.out), args.shared)
    mean = {k: sum(v.values()) / len(v) for k, v in scores.items()}
    quick = {}
    for a in args.quick or []:
        label, path = a.split("=", 1)
        quick[label] = json.load(open(path))["Avg"]
    tasks = list(next(iter(scores.values())))
    print("| checkpoint | " + " | ".join(tasks) + " | mean | quick-probe Avg |")
    print("|---|" + "---:|" * (len(tasks) + 2))
    for k in ranking(mean):
        q = f"{100 * quick[k]:.1f}" if k in quick else ""
        print(f"| {k} | " + " | ".join(f"{scores[k][t]:.2f}" for t in tasks)
              + f" | {mean[k]:.2f} | {q} |")
    summary = {"scores": scores, "mean": mean, "ranking": ranking(mean),
               "quick_avg": quick, "quick_ranking": ranking(quick) if quick else None}
    print(f"SUPERB-style ranking: {summary['ranking']}; quick-probe ranking: "
          f"{summary['quick_ranking']}")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
