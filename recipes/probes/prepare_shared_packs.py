"""Probe tasks from the real-speech packs of ``../shared/data`` (read in place, never copied).

Each task writes ``<save_folder>/<task>/{train,valid,test}.csv`` whose ``wav``
column points into the pack:

============================  ==========  ==========================================
task                          label       split
============================  ==========  ==========================================
``ks_arabic``                 keyword     the pack's ``split`` (train/val/test), speaker-disjoint
``sid_arabic``                speaker     each speaker's utterances 80/10/10 (speaker-shared)
``digits_fsdd``               digit       by speaker (4 train / 1 valid / 1 test), speaker-disjoint
``sid_fsdd``                  speaker     each speaker's utterances 80/10/10 (speaker-shared)
``ic_coffee``                 coffeeDrink stratified per class: 20 % test, 10 % valid (no speaker ids)
``gender_librispeech_mini``   gender      by speaker 70/15/15, speaker-disjoint
============================  ==========  ==========================================

All hold-outs are stable SHA-1 hashes of the utterance or speaker ID.

Usage::

    python -m recipes.probes.prepare_shared_packs ../shared/data results/probe_data/shared
    python -m recipes.probes.train_probe recipes/probes/hparams/classification.yaml \
        --checkpoint=results/demo --data_folder=results/probe_data/shared/ks_arabic \
        --task=KS --label_column=keyword --speaker_column=speaker

Authors
 * latent-rq developers 2026
"""

import argparse
import os

from latent_rq_brain.training.data import DataError, read_manifest, stable_hash
from recipes.probes.manifests import write_task, exit_on_data_error

ALL_PAIRS = [("train", "valid"), ("train", "test"), ("valid", "test")]
#: task -> (pack, label column, how to split)
TASKS = {
    "ks_arabic": ("arabic-commands", "keyword", "pack_split"),
    "sid_arabic": ("arabic-commands", "speaker", "per_speaker"),
    "digits_fsdd": ("fsdd", "digit", "by_speaker_6"),
    "sid_fsdd": ("fsdd", "speaker", "per_speaker"),
    "ic_coffee": ("coffee-intents", "coffeeDrink", "stratified"),
    "gender_librispeech_mini": ("librispeech-mini", "gender", "by_speaker"),
}
PACK_SPLITS = {"train": "train", "val": "valid", "valid": "valid", "dev": "valid", "test": "test"}


def _rows(pack_folder, label, need=()):
    path = os.path.join(pack_folder, "manifest.csv")
    rows = read_manifest(path)
    first = next(iter(rows.values()))
    for column in (label,) + tuple(need):
        if column not in first:
            raise DataError(f"manifest {path} lacks column {column!r}")
    out = []
    for uid, row in rows.items():
        if not (row[label] or "").strip():
            raise DataError(f"manifest {path}, line {row['line']} (ID {uid}): empty {label!r}")
        out.append(dict(row, ID=uid))
    return path, out


def split_rows(rows, label, how, path):
    """``{split: rows}`` for one of the split strategies of :data:`TASKS`."""
    splits = {"train": [], "valid": [], "test": []}
    if how == "pack_split":
        for r in rows:
            split = PACK_SPLITS.get(r["split"].strip().lower())
            if split is None:
                raise DataError(
                    f"manifest {path}, line {r['line']} (ID {r['ID']}): split "
                    f"{r['split']!r} is not one of {sorted(PACK_SPLITS)}"
                )
            splits[split].append(r)
    elif how in ("per_speaker", "stratified"):
        # per label (= per speaker for speaker ID): test / valid fractions of
        # its utterances, at least one each
        test_fraction = 0.1 if how == "per_speaker" else 0.2
        for lab in sorted({r[label] for r in rows}):
            of_label = sorted((r for r in rows if r[label] == lab), key=lambda r: stable_hash(r["ID"]))
            n_test = max(1, round(test_fraction * len(of_label)))
            n_valid = max(1, round(0.1 * len(of_label)))
            if len(of_label) < n_test + n_valid + 1:
                raise DataError(
                    f"manifest {path}: label {lab!r} has {len(of_label)} utterances, "
                    "too few for a stratified train/valid/test split"
                )
            splits["test"] += of_label[:n_test]
            splits["valid"] += of_label[n_test : n_test + n_valid]
            splits["train"] += of_label[n_test + n_valid :]
    elif how in ("by_speaker", "by_speaker_6"):
        speakers = sorted({r["speaker"] for r in rows}, key=lambda s: stable_hash("spk|" + s))
        if len(speakers) < 3:
            raise DataError(f"manifest {path}: {len(speakers)} speakers, need >= 3 for a speaker-disjoint split")
        n_hold = 1 if how == "by_speaker_6" else max(1, round(0.15 * len(speakers)))
        where = {s: "test" for s in speakers[:n_hold]}
        where.update({s: "valid" for s in speakers[n_hold : 2 * n_hold]})
        for r in rows:
            splits[where.get(r["speaker"], "train")].append(r)
    else:
        raise ValueError(f"unknown split strategy {how!r}")
    return splits


def prepare_shared_packs(data_folder, save_folder, tasks=None):
    """Writes the manifests of the given tasks (default all); returns ``{task: {split: n}}``."""
    tasks = list(TASKS) if tasks is None else list(tasks)
    stats = {}
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: choose from {sorted(TASKS)}")
        pack, label, how = TASKS[task]
        folder = os.path.join(data_folder, pack)
        need = ("speaker",) if how != "stratified" else ()
        need += ("split",) if how == "pack_split" else ()
        path, rows = _rows(folder, label, need)
        disjoint = ALL_PAIRS if how in ("pack_split", "by_speaker", "by_speaker_6") else ()
        columns = ["ID", "duration", "wav", label] + (["speaker"] if "speaker" in need else [])
        stats[task] = write_task(
            os.path.join(save_folder, task),
            split_rows(rows, label, how, path),
            columns,
            label_column=label,
            speaker_column="speaker" if disjoint else None,
            disjoint=disjoint,
        )
    return stats


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_folder", help="the shared packs folder, e.g. ../shared/data")
    parser.add_argument("save_folder")
    parser.add_argument("--tasks", nargs="+", default=None, choices=sorted(TASKS))
    args = parser.parse_args(argv)
    with exit_on_data_error():
        for task, n in prepare_shared_packs(args.data_folder, args.save_folder, args.tasks).items():
            print(task, n)


if __name__ == "__main__":
    main()
