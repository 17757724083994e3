"""Packs the pre-training corpus into Ogg/Opus small enough to travel to a lent GPU.

The device tool carries at most 64 MiB of working tree; the ~7.5 h corpus as
16-bit WAV is ~860 MB. At ~17 kbit/s Opus (``soundfile``, libsndfile's
``compression_level``) it fits under ``--max-mib`` (default 60). Writes
``OUT/audio/<k>.opus`` and ``OUT/{train,valid}.csv`` whose ``wav`` column is
relative to ``OUT`` (``read_manifest`` resolves it), so ``--corpus OUT`` works
as is on the other machine. Refuses (exit 1) when the pack is too large.

Usage::

    python -m recipes.reproduce.pack_corpus data/pretrain data/pretrain_opus

Authors
 * latent-rq developers 2026
"""

import argparse
import csv
import os
import sys

import soundfile as sf


def pack(corpus, out, compression_level=0.96, max_mib=60.0):
    """Encodes ``corpus/{train,valid}.csv`` into ``out``; returns the size in MiB.

    Arguments
    ---------
    corpus : str
        Folder with ``train.csv`` and ``valid.csv`` (absolute ``wav`` paths).
    out : str
        Output folder.
    compression_level : float
        libsndfile's Opus compression level (1.0 = lowest bit rate).
    max_mib : float
        Size limit of the whole pack.
    """
    os.makedirs(os.path.join(out, "audio"), exist_ok=True)
    total = 0
    for split in ("train", "valid"):
        with open(os.path.join(corpus, f"{split}.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for k, row in enumerate(rows):
            rel = os.path.join("audio", f"{split}{k:05d}.opus")
            path = os.path.join(out, rel)
            if not os.path.isfile(path):
                x, sr = sf.read(row["wav"], dtype="float32")
                tmp = path + ".tmp"
                sf.write(tmp, x, sr, format="OGG", subtype="OPUS",
                         compression_level=compression_level)
                os.replace(tmp, path)
            total += os.path.getsize(path)
            row["wav"] = rel
        with open(os.path.join(out, f"{split}.csv"), "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    mib = total / 2**20
    if mib > max_mib:
        raise SystemExit(f"pack {out} is {mib:.1f} MiB > {max_mib} MiB: raise "
                         f"--compression-level (now {compression_level})")
    return mib


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus")
    p.add_argument("out")
    p.add_argument("--compression-level", type=float, default=0.96)
    p.add_argument("--max-mib", type=float, default=60.0)
    args = p.parse_args(argv)
    print(f"{pack(args.corpus, args.out, args.compression_level, args.max_mib):.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
