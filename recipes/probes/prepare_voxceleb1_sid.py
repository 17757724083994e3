"""SUPERB speaker ID (SID) manifests from a local VoxCeleb1 copy (no download).

Reads the official ``iden_split.txt`` (lines ``<1|2|3> idXXXXX/<video>/<NNNNN>.wav``;
1 = train, 2 = valid, 3 = test) and the audio under ``<wav_folder>``, and
writes ``<save_folder>/{train,valid,test}.csv`` with ``ID,duration,wav,spk_id``
(1,251 speakers shared by the splits: every valid/test speaker must be in
train). IDs are ``<speaker>-<video>-<NNNNN>``.

Usage::

    python -m recipes.probes.prepare_voxceleb1_sid /data/VoxCeleb1/wav \
        /data/VoxCeleb1/iden_split.txt results/probe_data/voxceleb1

Authors
 * latent-rq developers 2026
"""

import argparse
import os

from latent_rq_brain.training.data import DataError
from recipes.probes.manifests import audio_duration, write_task, exit_on_data_error

COLUMNS = ["ID", "duration", "wav", "spk_id"]
SPLIT_CODES = {"1": "train", "2": "valid", "3": "test"}


def prepare_voxceleb1_sid(wav_folder, split_file, save_folder, max_per_split=None):
    """Writes the SID manifests; returns ``{split: utterances}``.

    Arguments
    ---------
    wav_folder : str
        VoxCeleb1 ``wav`` folder (``<speaker>/<video>/<NNNNN>.wav``, dev and
        test parts merged, as iden_split.txt expects).
    split_file : str
        The official ``iden_split.txt``.
    save_folder : str
        Output folder.
    max_per_split : int, optional
        Keep the first N lines of each split (quick experiments).
    """
    if not os.path.isfile(split_file):
        raise DataError(f"VoxCeleb1 split file {split_file} does not exist")
    rows = {s: [] for s in SPLIT_CODES.values()}
    with open(split_file, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[0] not in SPLIT_CODES or parts[1].count("/") != 2:
                raise DataError(
                    f"{split_file}, line {line_no}: expected '<1|2|3> "
                    f"idXXXXX/<video>/<NNNNN>.wav', got {line.strip()!r}"
                )
            split = SPLIT_CODES[parts[0]]
            if max_per_split and len(rows[split]) >= max_per_split:
                continue
            rel = parts[1]
            wav = os.path.join(wav_folder, rel)
            if not os.path.isfile(wav):
                raise DataError(
                    f"{split_file}, line {line_no}: audio file {wav} does not exist"
                )
            spk, video, name = rel.split("/")
            rows[split].append(
                {
                    "ID": f"{spk}-{video}-{os.path.splitext(name)[0]}",
                    "duration": audio_duration(wav),
                    "wav": os.path.abspath(wav),
                    "spk_id": spk,
                }
            )
    return write_task(save_folder, rows, COLUMNS, label_column="spk_id")


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav_folder")
    parser.add_argument("split_file")
    parser.add_argument("save_folder")
    args = parser.parse_args(argv)
    with exit_on_data_error():
        print(prepare_voxceleb1_sid(args.wav_folder, args.split_file, args.save_folder))


if __name__ == "__main__":
    main()
