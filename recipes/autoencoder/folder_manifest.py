"""CSV manifests (``ID,duration,wav,spk_id``) of a folder of 16 kHz audio
files, for pre-training on any corpus (e.g. a Bengali one) with
``--data_prep=null --train_csv=... --valid_csv=...``.

Every ``.wav`` / ``.flac`` / ``.ogg`` / ``.opus`` file under the folder
(recursively, sorted) is one utterance; its speaker is the name of its parent
folder. A seeded ``--valid-fraction`` of the *speakers* goes to ``valid.csv``
(speaker-disjoint), the rest to ``train.csv``. Files that are not 16 kHz are
refused by name (convert them first, e.g. ``ffmpeg -i x.mp3 -ar 16000 -ac 1 x.wav``).

Usage::

    python -m recipes.autoencoder.folder_manifest /data/bn_wav --out /data/bn

Authors
 * latent-rq developers 2026
"""

import argparse
import csv
import os
import random
import sys

import soundfile

#: audio file endings read (soundfile reads them)
AUDIO_ENDINGS = (".wav", ".flac", ".ogg", ".opus")


def audio_rows(folder, sample_rate=16000):
    """``[(ID, duration, wav, spk_id)]`` of every audio file under ``folder``."""
    rows = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.lower().endswith(AUDIO_ENDINGS):
                continue
            path = os.path.abspath(os.path.join(root, name))
            info = soundfile.info(path)
            if info.samplerate != sample_rate:
                raise ValueError(f"{path} has sample rate {info.samplerate} Hz, expected "
                                 f"{sample_rate} Hz: convert it first")
            rel = os.path.relpath(path, folder)
            uid = os.path.splitext(rel)[0].replace(os.sep, "/")
            speaker = os.path.basename(os.path.dirname(path))
            rows.append((uid, round(info.frames / info.samplerate, 3), path, speaker))
    if not rows:
        raise ValueError(f"{folder} holds no audio file ({', '.join(AUDIO_ENDINGS)})")
    return rows


def split_by_speaker(rows, valid_fraction=0.02, seed=0):
    """``(train, valid)``: a seeded ``valid_fraction`` of the speakers (at least
    one, and never all when there are two or more) in ``valid``.

    Example
    -------
    >>> rows = [(f"s{k % 4}/u{k}", 1.0, f"/a/{k}.wav", f"s{k % 4}") for k in range(8)]
    >>> train, valid = split_by_speaker(rows, 0.25)
    >>> len(train), len(valid), {r[3] for r in valid} & {r[3] for r in train}
    (6, 2, set())
    """
    speakers = sorted({r[3] for r in rows})
    n = max(1, round(valid_fraction * len(speakers)))
    if len(speakers) > 1:
        n = min(n, len(speakers) - 1)
    held = set(random.Random(seed).sample(speakers, n))
    return [r for r in rows if r[3] not in held], [r for r in rows if r[3] in held]


def write_manifest(rows, path):
    """Writes ``rows`` as a CSV manifest ``ID,duration,wav,spk_id``."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "wav", "spk_id"])
        w.writerows(rows)


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="folder of 16 kHz audio files (speaker = parent folder)")
    p.add_argument("--out", required=True, help="folder for train.csv and valid.csv")
    p.add_argument("--valid-fraction", type=float, default=0.02,
                   help="share of the speakers held out in valid.csv")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        rows = audio_rows(args.folder)
    except ValueError as err:
        sys.exit(f"error: {err}")
    train, valid = split_by_speaker(rows, args.valid_fraction, args.seed)
    os.makedirs(args.out, exist_ok=True)
    for name, part in (("train.csv", train), ("valid.csv", valid)):
        write_manifest(part, os.path.join(args.out, name))
        print(f"{os.path.join(args.out, name)}: {len(part)} utterances, "
              f"{sum(r[1] for r in part) / 3600:.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
