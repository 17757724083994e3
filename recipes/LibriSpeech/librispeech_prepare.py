"""
Data preparation for LibriSpeech self-supervised pre-training.

Walks the standard LibriSpeech folder layout::

    <data_folder>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    <data_folder>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac

and writes one CSV manifest per split (``<save_folder>/<split>.csv``) with the
columns ``ID,duration,wav,spk_id,wrd``, plus a merged manifest of all the
training splits (``<save_folder>/<merge_name>``).

The LibriSpeech corpus can be downloaded from https://www.openslr.org/12

Usage from the command line::

    python recipes/LibriSpeech/librispeech_prepare.py DATA_FOLDER SAVE_FOLDER \
        [--splits train-clean-100 ...] [--dev-splits dev-clean ...]

Authors
 * latent-rq contributors 2024
"""

import argparse
import json
import logging
import multiprocessing
import os
import sys
from pathlib import Path

import soundfile

if not __package__:  # run as a script: the repository root makes the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from latent_rq_brain.training.data import write_manifest  # noqa: E402

logger = logging.getLogger(__name__)

SAMPLERATE = 16000
OPT_FILE = "librispeech_prepare.json"
DEFAULT_TR_SPLITS = ("train-clean-100", "train-clean-360", "train-other-500")
DEFAULT_DEV_SPLITS = ("dev-clean",)


def prepare_librispeech(
    data_folder,
    save_folder,
    tr_splits=DEFAULT_TR_SPLITS,
    dev_splits=DEFAULT_DEV_SPLITS,
    merge_name="train.csv",
    skip_prep=False,
    num_workers=2,
):
    """Prepares the CSV manifests for the LibriSpeech dataset.

    One CSV file is written per split (``<save_folder>/<split>.csv``), with
    the header ``ID,duration,wav,spk_id,wrd`` and rows sorted by ID. The CSV
    files of all the training splits are then concatenated into
    ``<save_folder>/<merge_name>``. Development splits are not merged.

    The preparation is skipped when all the output files already exist and
    were produced with the same options (recorded in
    ``<save_folder>/librispeech_prepare.json``).

    Arguments
    ---------
    data_folder : str or os.PathLike
        Path to the folder where the original LibriSpeech dataset is stored
        (the folder that contains e.g. ``train-clean-100/``).
    save_folder : str or os.PathLike
        Folder where the CSV files (and the option marker) are written.
        It is created if it does not exist.
    tr_splits : sequence of str
        Training splits to prepare and merge into ``merge_name``.
    dev_splits : sequence of str
        Development splits to prepare (written individually, not merged).
    merge_name : str
        File name (inside ``save_folder``) of the merged training CSV.
        Nothing is merged if ``tr_splits`` is empty.
    skip_prep : bool
        If True, return immediately without doing anything.
    num_workers : int
        Number of worker processes used to read the audio metadata.
        Values <= 1 read everything in the current process.

    Raises
    ------
    FileNotFoundError
        If ``data_folder`` or a requested split folder is missing, if a split
        contains no flac file, or if a transcript line has no matching flac.
    ValueError
        If a flac file has no transcript line, if a flac file is not sampled
        at 16 kHz, or if the options are inconsistent.

    Example
    -------
    >>> data_folder = "datasets/LibriSpeech"
    >>> save_folder = "results/prepare"
    >>> prepare_librispeech(
    ...     data_folder,
    ...     save_folder,
    ...     tr_splits=["train-clean-100"],
    ...     dev_splits=["dev-clean"],
    ... )  # doctest: +SKIP
    >>> prepare_librispeech(data_folder, save_folder, skip_prep=True)
    """
    if skip_prep:
        return

    tr_splits = _as_split_list(tr_splits, "tr_splits")
    dev_splits = _as_split_list(dev_splits, "dev_splits")
    all_splits = tr_splits + [s for s in dev_splits if s not in tr_splits]
    if not all_splits:
        raise ValueError(
            "No split requested: tr_splits and dev_splits are empty."
        )
    if tr_splits and merge_name in [split + ".csv" for split in all_splits]:
        raise ValueError(
            f"merge_name '{merge_name}' collides with the CSV of a split."
        )

    data_folder = _abspath(data_folder)
    save_folder = _abspath(save_folder)

    if not data_folder.is_dir():
        raise FileNotFoundError(
            f"LibriSpeech data folder not found: {data_folder}"
        )

    conf = {
        "data_folder": str(data_folder),
        "tr_splits": tr_splits,
        "dev_splits": dev_splits,
        "merge_name": merge_name,
    }
    split_csvs = [save_folder / f"{split}.csv" for split in all_splits]
    outputs = list(split_csvs)
    if tr_splits:
        outputs.append(save_folder / merge_name)
    opt_file = save_folder / OPT_FILE

    if skip(outputs, opt_file, conf):
        logger.info(
            "LibriSpeech preparation already done in %s, skipping.",
            save_folder,
        )
        return

    # Check every requested split before doing any (possibly long) work.
    missing = [s for s in all_splits if not (data_folder / s).is_dir()]
    if missing:
        found = sorted(p.name for p in data_folder.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"Split folder(s) not found: "
            f"{', '.join(str(data_folder / s) for s in missing)}. "
            f"Splits found in {data_folder}: {found or 'none'}."
        )

    save_folder.mkdir(parents=True, exist_ok=True)
    # A stale marker must never validate a partially rewritten output.
    if opt_file.exists():
        opt_file.unlink()

    logger.info("Preparing LibriSpeech CSV files in %s", save_folder)
    rows_per_split = {}
    for split, csv_file in zip(all_splits, split_csvs):
        rows = collect_split(data_folder / split, num_workers=num_workers)
        write_manifest(rows, csv_file, lineterminator="\r\n")
        rows_per_split[split] = rows
        logger.info("Wrote %s (%d utterances)", csv_file, len(rows))

    if tr_splits:
        merged = [row for split in tr_splits for row in rows_per_split[split]]
        write_manifest(merged, save_folder / merge_name, lineterminator="\r\n")
        logger.info(
            "Wrote %s (%d utterances from %s)",
            save_folder / merge_name,
            len(merged),
            ", ".join(tr_splits),
        )

    with open(opt_file, "w", encoding="utf-8") as f:
        json.dump(conf, f, indent=2)
    logger.info("LibriSpeech data preparation completed.")


def skip(outputs, opt_file, conf):
    """Checks whether the data preparation can be skipped.

    Arguments
    ---------
    outputs : list of pathlib.Path
        Files that the preparation produces.
    opt_file : pathlib.Path
        JSON marker with the options of the previous preparation.
    conf : dict
        Options of the current preparation.

    Returns
    -------
    bool
        True if all outputs exist and the marker holds the same options.

    Example
    -------
    >>> skip([Path("/nonexistent/train.csv")], Path("/nonexistent/o.json"), {})
    False
    """
    if not all(Path(p).is_file() for p in outputs):
        return False
    if not Path(opt_file).is_file():
        return False
    try:
        with open(opt_file, encoding="utf-8") as f:
            previous = json.load(f)
    except (OSError, ValueError):
        return False
    return previous == conf


def parse_transcripts(trans_file):
    """Reads a LibriSpeech ``*.trans.txt`` file.

    Arguments
    ---------
    trans_file : str or os.PathLike
        File with one ``UTTID WORDS...`` line per utterance.

    Returns
    -------
    dict
        Maps each utterance ID to its transcript.

    Raises
    ------
    ValueError
        If an utterance ID appears twice in the file.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "19-198.trans.txt"
    ...     _ = path.write_text("19-198-0000 HELLO WORLD\\n19-198-0001 BYE\\n")
    ...     parse_transcripts(path)
    {'19-198-0000': 'HELLO WORLD', '19-198-0001': 'BYE'}
    """
    transcripts = {}
    with open(trans_file, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            utt_id = parts[0]
            words = parts[1] if len(parts) > 1 else ""
            if utt_id in transcripts:
                raise ValueError(
                    f"Duplicate utterance ID '{utt_id}' at line {line_no} "
                    f"of {trans_file}"
                )
            transcripts[utt_id] = words
    return transcripts


def collect_split(split_folder, num_workers=2):
    """Builds the (sorted) CSV rows of one LibriSpeech split.

    Arguments
    ---------
    split_folder : pathlib.Path
        Folder of the split, e.g. ``<data_folder>/train-clean-100``.
    num_workers : int
        Number of processes used to read the audio metadata.

    Returns
    -------
    list of dict
        One dict per utterance with the keys of ``CSV_HEADER`` (latent_rq_brain.training.data), sorted by ID.

    Raises
    ------
    FileNotFoundError
        If the split has no flac file, or a transcript line has no flac.
    ValueError
        If a flac has no transcript line or is not sampled at 16 kHz.

    Example
    -------
    >>> rows = collect_split(Path("LibriSpeech/dev-clean"))  # doctest: +SKIP
    """
    split_folder = _abspath(split_folder)
    flacs = sorted(split_folder.glob("*/*/*.flac"))
    if not flacs:
        raise FileNotFoundError(
            f"No flac files found in split folder {split_folder} "
            f"(expected <speaker>/<chapter>/*.flac)"
        )

    entries = {}  # utt_id -> (flac path, speaker, words)
    for trans_file in sorted(split_folder.glob("*/*/*.trans.txt")):
        chapter_dir = trans_file.parent
        spk_id = chapter_dir.parent.name
        for utt_id, words in parse_transcripts(trans_file).items():
            flac = chapter_dir / f"{utt_id}.flac"
            if not flac.is_file():
                raise FileNotFoundError(
                    f"No flac file for utterance '{utt_id}' listed in "
                    f"{trans_file}: expected {flac}"
                )
            if utt_id in entries:
                raise ValueError(
                    f"Duplicate utterance ID '{utt_id}' in {trans_file} "
                    f"(already listed for {entries[utt_id][0]})"
                )
            entries[utt_id] = (flac, spk_id, words)

    transcribed = {flac for flac, _, _ in entries.values()}
    for flac in flacs:
        if flac not in transcribed:
            raise ValueError(
                f"No transcript line for {flac} (looked for '{flac.stem}' in "
                f"the *.trans.txt files of {flac.parent})"
            )

    utt_ids = sorted(entries)
    paths = [str(entries[u][0]) for u in utt_ids]
    infos = _read_infos(paths, num_workers)

    rows = []
    for utt_id, path, (frames, samplerate) in zip(utt_ids, paths, infos):
        if samplerate != SAMPLERATE:
            raise ValueError(
                f"Sample rate of {path} is {samplerate} Hz, "
                f"expected {SAMPLERATE} Hz"
            )
        _, spk_id, words = entries[utt_id]
        rows.append(
            {
                "ID": utt_id,
                "duration": frames / samplerate,
                "wav": path,
                "spk_id": spk_id,
                "wrd": words,
            }
        )
    return rows


def audio_info(path):
    """Returns the number of frames and the sample rate of an audio file.

    Arguments
    ---------
    path : str
        Path to the audio file.

    Returns
    -------
    tuple
        ``(frames, samplerate)``.

    Example
    -------
    >>> flac = "LibriSpeech/dev-clean/84/121123/84-121123-0000.flac"
    >>> audio_info(flac)  # doctest: +SKIP
    (168960, 16000)
    """
    info = soundfile.info(path)
    return info.frames, info.samplerate


def _read_infos(paths, num_workers):
    """Reads ``(frames, samplerate)`` for every path, optionally in parallel."""
    if num_workers is not None and num_workers > 1 and len(paths) > 1:
        chunksize = max(1, len(paths) // (num_workers * 8))
        with multiprocessing.Pool(min(num_workers, len(paths))) as pool:
            return pool.map(audio_info, paths, chunksize=chunksize)
    return [audio_info(p) for p in paths]


def _abspath(path):
    """Absolute, normalised path (``~`` expanded, symlinks kept)."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def _as_split_list(splits, name):
    """Normalises a split argument to a list (a bare str is one split)."""
    if splits is None:
        return []
    if isinstance(splits, str):
        splits = [splits]
    splits = list(splits)
    if len(set(splits)) != len(splits):
        raise ValueError(f"{name} contains duplicate splits: {splits}")
    return splits


def main(argv=None):
    """Command-line entry point.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (defaults to ``sys.argv[1:]``).

    Example
    -------
    >>> args = ["LibriSpeech", "results/prepare", "--splits", "dev-clean"]
    >>> main(args)  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(
        description="Prepare LibriSpeech CSV manifests."
    )
    parser.add_argument("data_folder", help="Folder containing the splits.")
    parser.add_argument("save_folder", help="Where to write the CSV files.")
    parser.add_argument(
        "--splits",
        "--tr-splits",
        dest="tr_splits",
        nargs="*",
        default=list(DEFAULT_TR_SPLITS),
        help="Training splits, merged into --merge-name.",
    )
    parser.add_argument(
        "--dev-splits",
        nargs="*",
        default=list(DEFAULT_DEV_SPLITS),
        help="Development splits (not merged).",
    )
    parser.add_argument("--merge-name", default="train.csv")
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    prepare_librispeech(
        args.data_folder,
        args.save_folder,
        tr_splits=args.tr_splits,
        dev_splits=args.dev_splits,
        merge_name=args.merge_name,
        num_workers=args.num_workers,
    )


if __name__ == "__main__":
    sys.exit(main())
