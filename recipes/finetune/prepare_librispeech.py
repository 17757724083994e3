"""Fine-tuning manifests from a local LibriSpeech copy (no download).

``--train 100h``: train-clean-100; ``10h`` / ``1h``: the Libri-light limited
supervision sets (``librispeech_finetuning/``: ``1h/<fold 0-5>/{clean,other}``
and, for 10 h, ``9h/{clean,other}``), found under ``data_folder`` or given
with ``--librilight``. Valid is dev-clean, test test-clean (``--valid``,
``--test`` change them). Writes ``<save_folder>/{train,valid,test}.csv`` with
``ID,duration,wav,spk_id,wrd``, read with the pre-training recipe's reader
(every flac has a transcript line and vice versa, 16 kHz checked). Any other
corpus needs only these three CSV files (``ID,duration,wav,wrd``).

Usage::

    python -m recipes.finetune.prepare_librispeech /data/LibriSpeech results/ft_data/ls100 --train 100h
    python -m recipes.finetune.prepare_librispeech /data/LibriSpeech results/ft_data/ll10 --train 10h

Authors
 * latent-rq developers 2026
"""

import argparse
import glob
import os

from latent_rq_brain.training.data import CSV_HEADER, DataError
from recipes.LibriSpeech.librispeech_prepare import collect_split
from recipes.probes.manifests import exit_on_data_error, write_task

TRAIN_SETS = ("100h", "10h", "1h")


def train_folders(data_folder, train, librilight=None):
    """The split folders of a training set (see the module docstring).

    Example
    -------
    >>> train_folders("/data/LibriSpeech", "100h")
    ['/data/LibriSpeech/train-clean-100']
    """
    if train not in TRAIN_SETS:
        raise DataError(f"--train must be one of {TRAIN_SETS}, got {train!r}")
    if train == "100h":
        return [os.path.join(data_folder, "train-clean-100")]
    root = librilight or os.path.join(data_folder, "librispeech_finetuning")
    folders = sorted(glob.glob(os.path.join(root, "1h", "*", "clean")))
    folders += sorted(glob.glob(os.path.join(root, "1h", "*", "other")))
    if not folders:
        raise DataError(f"no Libri-light 1h/<fold>/<clean|other> folders under {root}")
    if train == "10h":
        folders += [os.path.join(root, "9h", "clean"), os.path.join(root, "9h", "other")]
    return folders


def read_folders(folders, num_workers=2):
    """Rows of several LibriSpeech-layout folders, IDs unique across them."""
    rows, seen = [], {}
    for folder in folders:
        if not os.path.isdir(folder):
            raise DataError(f"split folder {folder} does not exist")
        try:
            found = collect_split(folder, num_workers=num_workers)
        except (FileNotFoundError, ValueError) as err:
            raise DataError(str(err)) from err
        for row in found:
            if row["ID"] in seen:
                raise DataError(f"utterance {row['ID']} is in both {seen[row['ID']]} and {folder}")
            seen[row["ID"]] = folder
        rows += found
    return rows


def prepare_librispeech_finetune(
    data_folder, save_folder, train="100h", valid="dev-clean", test="test-clean",
    librilight=None, num_workers=2,
):
    """Writes the manifests; returns ``{split: utterances}``."""
    splits = {
        "train": read_folders(train_folders(data_folder, train, librilight), num_workers),
        "valid": read_folders([os.path.join(data_folder, valid)], num_workers),
        "test": read_folders([os.path.join(data_folder, test)], num_workers),
    }
    return write_task(
        save_folder, splits, CSV_HEADER, label_column="wrd", speaker_column="spk_id",
        disjoint=[("train", "valid"), ("train", "test"), ("valid", "test")],
        closed_set=False,
    )


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_folder", help="folder holding the LibriSpeech split folders")
    parser.add_argument("save_folder")
    parser.add_argument("--train", default="100h", choices=TRAIN_SETS)
    parser.add_argument("--valid", default="dev-clean")
    parser.add_argument("--test", default="test-clean")
    parser.add_argument("--librilight", default=None, help="librispeech_finetuning folder")
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    with exit_on_data_error():
        print(prepare_librispeech_finetune(
            args.data_folder, args.save_folder, args.train, args.valid, args.test,
            args.librilight, args.num_workers,
        ))


if __name__ == "__main__":
    main()
