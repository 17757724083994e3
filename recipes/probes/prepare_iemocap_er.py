"""SUPERB emotion recognition (ER) manifests from IEMOCAP (no download).

Labels come from ``Session<k>/dialog/EmoEvaluation/*.txt`` (lines
``[start - end]\\t<utterance>\\t<emotion>\\t[v, a, d]``), audio from
``Session<k>/sentences/wav/<dialog>/<utterance>.wav``. Four classes as in
SUPERB: ``neu``, ``hap`` (with ``exc`` merged in), ``ang``, ``sad``; the other
labels are dropped. Fold ``k`` (1..5, leave-one-session-out) writes
``<save_folder>/fold<k>/{train,valid,test}.csv`` (``ID,duration,wav,spk_id,emotion``):
test = session k, valid = a stable-hash 20 % of the other sessions (as
s3prl's random 20 % dev split), train = the rest. Speakers (``Ses01F``...) of
test are checked absent from train and valid. The table writer averages the
5 folds of a checkpoint.

Usage::

    python -m recipes.probes.prepare_iemocap_er /data/IEMOCAP_full_release results/probe_data/iemocap
    # then one probe per fold: --data_folder=results/probe_data/iemocap/fold1 ...

Authors
 * latent-rq developers 2026
"""

import argparse
import os
import re

from latent_rq_brain.training.data import DataError
from recipes.probes.manifests import audio_duration, hash_split, write_task, exit_on_data_error

COLUMNS = ["ID", "duration", "wav", "spk_id", "emotion"]
EMOTIONS = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
_LINE = re.compile(r"^\[[^\]]+\]\s+(Ses\d\d[MF]_\S+)\s+(\w+)\s+\[")


def read_labels(session_folder):
    """``{utterance: emotion}`` of one session, 4 classes (exc -> hap)."""
    folder = os.path.join(session_folder, "dialog", "EmoEvaluation")
    if not os.path.isdir(folder):
        raise DataError(f"IEMOCAP label folder {folder} does not exist")
    labels = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".txt") or name.startswith("."):
            continue
        with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
            for line in f:
                m = _LINE.match(line.strip())
                if m and m.group(2) in EMOTIONS:
                    labels[m.group(1)] = EMOTIONS[m.group(2)]
    return labels


def prepare_iemocap_er(iemocap_folder, save_folder, folds=(1, 2, 3, 4, 5), valid_fraction=0.2):
    """Writes the manifests of each fold; returns ``{fold: {split: utterances}}``."""
    by_session = {}
    for k in range(1, 6):
        session = os.path.join(iemocap_folder, f"Session{k}")
        if not os.path.isdir(session):
            raise DataError(f"IEMOCAP session folder {session} does not exist")
        rows = []
        for utt, emotion in sorted(read_labels(session).items()):
            dialog = utt.rsplit("_", 1)[0]
            wav = os.path.join(session, "sentences", "wav", dialog, utt + ".wav")
            if not os.path.isfile(wav):
                raise DataError(
                    f"audio file {wav} of labelled utterance {utt} does not exist"
                )
            rows.append(
                {
                    "ID": utt,
                    "duration": audio_duration(wav),
                    "wav": os.path.abspath(wav),
                    "spk_id": utt[:6],  # Ses01F: session + gender = one speaker
                    "emotion": emotion,
                }
            )
        if not rows:
            raise DataError(f"no utterance with a neu/hap/exc/ang/sad label in {session}")
        by_session[k] = rows
    stats = {}
    for fold in folds:
        splits = {"train": [], "valid": [], "test": list(by_session[fold])}
        for k, rows in by_session.items():
            if k == fold:
                continue
            for row in rows:
                split = "valid" if hash_split(row["ID"], valid_fraction, 0) == "valid" else "train"
                splits[split].append(row)
        stats[fold] = write_task(
            os.path.join(save_folder, f"fold{fold}"),
            splits,
            COLUMNS,
            label_column="emotion",
            speaker_column="spk_id",
            disjoint=[("train", "test"), ("valid", "test")],
        )
    return stats


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("iemocap_folder")
    parser.add_argument("save_folder")
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args(argv)
    with exit_on_data_error():
        print(prepare_iemocap_er(args.iemocap_folder, args.save_folder, args.folds))


if __name__ == "__main__":
    main()
