"""SUPERB ASR manifests from a local LibriSpeech copy (no download).

train-clean-100 / dev-clean / test-clean -> ``<save_folder>/{train,valid,test}.csv``
with ``ID,duration,wav,spk_id,wrd`` (upper-case transcripts as distributed).
Reuses the reader of the pre-training recipe
(``recipes/LibriSpeech/librispeech_prepare.py``: every flac needs a transcript
line and vice versa, 16 kHz checked) and checks the three splits are
speaker-disjoint.

Usage::

    python -m recipes.probes.prepare_librispeech_asr /data/LibriSpeech results/probe_data/librispeech

Authors
 * latent-rq developers 2026
"""

import argparse
import os

from latent_rq_brain.training.data import CSV_HEADER, DataError
from recipes.LibriSpeech.librispeech_prepare import collect_split
from recipes.probes.manifests import write_task, exit_on_data_error

SPLITS = {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"}


def prepare_librispeech_asr(data_folder, save_folder, splits=None, num_workers=2):
    """Writes the ASR manifests; returns ``{split: utterances}``.

    Arguments
    ---------
    data_folder : str
        Folder holding the LibriSpeech split folders.
    save_folder : str
        Output folder.
    splits : dict, optional
        ``{"train": folder name, "valid": ..., "test": ...}`` (default SUPERB's).
    num_workers : int
        Processes reading the audio headers.
    """
    splits = dict(SPLITS, **(splits or {}))
    rows = {}
    for split, name in splits.items():
        folder = os.path.join(data_folder, name)
        if not os.path.isdir(folder):
            raise DataError(
                f"LibriSpeech split folder {folder} does not exist (the {split} "
                f"split needs {name}/ under {data_folder})"
            )
        try:
            rows[split] = collect_split(folder, num_workers=num_workers)
        except (FileNotFoundError, ValueError) as err:
            raise DataError(str(err)) from err
    return write_task(
        save_folder,
        rows,
        CSV_HEADER,
        label_column="wrd",
        speaker_column="spk_id",
        disjoint=[("train", "valid"), ("train", "test"), ("valid", "test")],
        closed_set=False,
    )


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_folder")
    parser.add_argument("save_folder")
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    with exit_on_data_error():
        print(prepare_librispeech_asr(args.data_folder, args.save_folder, num_workers=args.num_workers))


if __name__ == "__main__":
    main()
