"""A small task in the Fluent Speech Commands layout, for s3prl's ``fluent_commands``.

Reads ``fsdd`` (spoken digits, 6 speakers) from ``../shared/data`` and writes
``<out>/data/{train,valid,test}_data.csv`` (``path,speakerId,transcription,
action,object,location``: ``action`` = the digit, ``object`` = ``location`` =
``none``) and 16 kHz WAV files under ``<out>/wavs/``. Splits follow the pack's
``split`` column (recording index 0-4 = test); valid is one train speaker.
``s3prl run_downstream.py -d fluent_commands`` trains on it unchanged, which
is what ``make s3prl-check`` runs.

Usage::

    python -m recipes.s3prl.prepare_fsc_layout ../shared/data/fsdd results/s3prl_task --per-split 40

Authors
 * latent-rq developers 2026
"""

import argparse
import csv
import os

import soundfile

from latent_rq_brain.training.data import read_audio_checked, read_manifest


def prepare(pack, out, per_split=40):
    """Writes the task; returns ``{split: utterances}``."""
    rows = sorted(read_manifest(os.path.join(pack, "manifest.csv")).items())
    speakers = sorted({r["speaker"] for _, r in rows})
    splits = {"train": [], "valid": [], "test": []}
    for uid, r in rows:
        split = "test" if r["split"] == "test" else "valid" if r["speaker"] == speakers[0] else "train"
        splits[split].append((uid, r))
    for split, items in splits.items():  # every digit in every split
        splits[split] = items[:: max(1, len(items) // per_split)][:per_split]
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    for split, items in splits.items():
        with open(os.path.join(out, "data", f"{split}_data.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["", "path", "speakerId", "transcription", "action", "object", "location"])
            for i, (uid, r) in enumerate(items):
                wav = os.path.join("wavs", f"{uid}.wav")
                os.makedirs(os.path.join(out, "wavs"), exist_ok=True)
                soundfile.write(os.path.join(out, wav), read_audio_checked(r["wav"], 16000).numpy(), 16000)
                writer.writerow([i, wav, r["speaker"], r["digit"], r["digit"], "none", "none"])
    return {split: len(items) for split, items in splits.items()}


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pack", help="the fsdd pack folder (../shared/data/fsdd)")
    parser.add_argument("out")
    parser.add_argument("--per-split", type=int, default=40)
    args = parser.parse_args(argv)
    print(prepare(args.pack, args.out, args.per_split))


if __name__ == "__main__":
    main()
