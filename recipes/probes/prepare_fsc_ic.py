"""SUPERB intent classification (IC) manifests from Fluent Speech Commands (no download).

Reads ``<fsc_folder>/data/{train,valid,test}_data.csv`` (columns
``path,speakerId,transcription,action,object,location``; ``path`` relative to
``fsc_folder``) and writes ``<save_folder>/{train,valid,test}.csv`` with
``ID,duration,wav,spk_id,intent`` where ``intent = action_object_location``
(31 intents). FSC's splits are speaker-disjoint; this is checked, as is that
every valid/test intent occurs in train.

Usage::

    python -m recipes.probes.prepare_fsc_ic /data/fluent_speech_commands_dataset results/probe_data/fsc

Authors
 * latent-rq developers 2026
"""

import argparse
import csv
import os

from latent_rq_brain.training.data import DataError
from recipes.probes.manifests import audio_duration, write_task, exit_on_data_error

COLUMNS = ["ID", "duration", "wav", "spk_id", "intent"]
NEEDED = ("path", "speakerId", "action", "object", "location")


def prepare_fsc_ic(fsc_folder, save_folder):
    """Writes the IC manifests; returns ``{split: utterances}``."""
    rows = {}
    for split in ("train", "valid", "test"):
        path = os.path.join(fsc_folder, "data", f"{split}_data.csv")
        if not os.path.isfile(path):
            raise DataError(f"Fluent Speech Commands file {path} does not exist")
        rows[split] = []
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in NEEDED if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"{path} lacks column(s) {missing}; its header is {reader.fieldnames}"
                )
            for line, row in enumerate(reader, start=2):
                wav = os.path.join(fsc_folder, row["path"])
                if not os.path.isfile(wav):
                    raise DataError(f"{path}, line {line}: audio file {wav} does not exist")
                parts = [row[c].strip() for c in ("action", "object", "location")]
                if not all(parts[:2]):
                    raise DataError(f"{path}, line {line}: empty action or object")
                rows[split].append(
                    {
                        "ID": os.path.splitext(os.path.basename(row["path"]))[0],
                        "duration": audio_duration(wav),
                        "wav": os.path.abspath(wav),
                        "spk_id": row["speakerId"].strip(),
                        "intent": "_".join(parts),
                    }
                )
    return write_task(
        save_folder,
        rows,
        COLUMNS,
        label_column="intent",
        speaker_column="spk_id",
        disjoint=[("train", "valid"), ("train", "test"), ("valid", "test")],
    )


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fsc_folder")
    parser.add_argument("save_folder")
    args = parser.parse_args(argv)
    with exit_on_data_error():
        print(prepare_fsc_ic(args.fsc_folder, args.save_folder))


if __name__ == "__main__":
    main()
