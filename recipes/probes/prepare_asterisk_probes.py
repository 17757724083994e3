"""Probe tasks from the Asterisk demo corpus: language ID and English ASR.

Reads the manifests of ``recipes/demo/prepare_asterisk.py`` (``train.csv`` and
``valid.csv`` in ``asterisk_folder``, IDs ``<lang>-<prompt>``, e.g.
``fr-digits.1``) and writes

* ``<save_folder>/lid/{train,valid,test}.csv``: ``ID,duration,wav,language,prompt``
  (5-way utterance classification);
* ``<save_folder>/asr_en/{train,valid,test}.csv``: ``ID,duration,wav,wrd,prompt``
  (English prompts with a transcript; ``wrd`` upper-cased, only letters,
  digits, apostrophes and single spaces kept).

Each language has a single voice, and the prompt names are shared across
languages (``digits/1`` is recorded in all five). Both tasks are therefore
split **by prompt**: a prompt goes to test or valid by a stable hash of its
name, in every language at once, so that no test prompt (words, or the same
sentence in another language) is seen in training. The splits are checked
to be prompt-disjoint.

Usage::

    python -m recipes.probes.prepare_asterisk_probes demo_data/asterisk results/probe_data/asterisk

Authors
 * latent-rq developers 2026
"""

import argparse
import logging
import os
import re
import sys

from latent_rq_brain.training.data import DataError, read_manifest, stable_hash
from recipes.probes.manifests import hash_split, write_task, exit_on_data_error

logger = logging.getLogger(__name__)

LID_COLUMNS = ["ID", "duration", "wav", "language", "prompt"]
ASR_COLUMNS = ["ID", "duration", "wav", "wrd", "prompt"]


def prompt_rows(path):
    """Rows of one demo-corpus manifest (``prepare_asterisk.py``), each with
    ``ID``, ``language``, ``prompt`` (from the ``<language>-<prompt>`` ID) and
    ``source``; a header-only manifest (``valid_fraction: 0``) has none.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "valid.csv")
    >>> _ = open(path, "w").write("ID,duration,wav,wrd\\n")
    >>> prompt_rows(path)
    []
    """
    with open(path, encoding="utf-8") as f:
        if sum(1 for line in f if line.strip()) < 2:
            return []
    rows = []
    for uid, row in read_manifest(path).items():
        lang, sep, prompt = uid.partition("-")
        if not sep or not prompt:
            raise DataError(
                f"manifest {path}, line {row['line']}: ID {uid!r} is not <language>-<prompt>"
            )
        rows.append(dict(row, ID=uid, language=lang, prompt=prompt, source=path))
    return rows


def normalize_text(text):
    """Upper case; letters, digits and apostrophes; single spaces.

    Example
    -------
    >>> normalize_text('Call-Forward on No Answer... "press 1"')
    'CALL FORWARD ON NO ANSWER PRESS 1'
    """
    text = re.sub(r"[^A-Z0-9']+", " ", text.upper())
    return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


def prompt_split(prompt, valid_fraction, test_fraction, salt="probes"):
    """``test``, ``valid`` or ``train`` by a stable hash of the prompt name.

    Example
    -------
    >>> prompt_split("digits.1", 0.0, 0.0)
    'train'
    >>> prompt_split("digits.1", 0.0, 0.999999)
    'test'
    """
    return hash_split(prompt, valid_fraction, test_fraction, salt)


def prepare_asterisk_probes(
    asterisk_folder,
    save_folder,
    languages=("en", "fr", "es", "it", "ru"),
    asr_language="en",
    valid_fraction=0.1,
    test_fraction=0.15,
    max_per_language=None,
):
    """Writes the LID and ASR probe manifests (see the module docstring).

    Arguments
    ---------
    asterisk_folder : str
        Folder with ``train.csv`` and ``valid.csv`` of prepare_asterisk.
    save_folder : str
        Output folder (``lid/`` and ``asr_<lang>/`` are created in it).
    languages : sequence of str
        Languages of the LID task; each must be present.
    asr_language : str
        Language of the ASR task.
    valid_fraction, test_fraction : float
        Approximate fractions of the prompts held out.
    max_per_language : int, optional
        Keep at most this many utterances per language and split (LID only;
        chosen by a stable hash), to bound the probing time.

    Returns
    -------
    dict
        ``{"lid": {split: n}, "asr_<lang>": {split: n}}``.
    """
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(
            f"need 0 < valid_fraction, test_fraction and a sum < 1, got "
            f"{valid_fraction} and {test_fraction}"
        )
    rows = []
    for name in ("train.csv", "valid.csv"):
        path = os.path.join(asterisk_folder, name)
        if not os.path.isfile(path):
            raise DataError(
                f"{path} does not exist: run `python recipes/demo/prepare_asterisk.py "
                f"{asterisk_folder} --languages {' '.join(languages)}` first"
            )
        for row in prompt_rows(path):
            if not os.path.isfile(row["wav"]):
                raise DataError(
                    f"manifest {path}, line {row['line']} (ID {row['ID']}): audio file "
                    f"{row['wav']} does not exist"
                )
            rows.append(row)
    found = sorted({r["language"] for r in rows})
    missing = [lang for lang in list(languages) + [asr_language] if lang not in found]
    if missing:
        raise DataError(
            f"language(s) {missing} not in the manifests of {asterisk_folder} "
            f"(it has {found}): prepare them with prepare_asterisk --languages"
        )

    lid = {"train": [], "valid": [], "test": []}
    asr = {"train": [], "valid": [], "test": []}
    n_no_text = 0
    for row in rows:
        split = prompt_split(row["prompt"], valid_fraction, test_fraction)
        if row["language"] in languages:
            lid[split].append(row)
        if row["language"] == asr_language:
            text = normalize_text(row.get("wrd") or "")
            if text:
                asr[split].append(dict(row, wrd=text))
            else:
                n_no_text += 1
    if max_per_language:
        for split, split_rows in lid.items():
            kept = []
            for lang in languages:
                of_lang = sorted(
                    (r for r in split_rows if r["language"] == lang),
                    key=lambda r: stable_hash(r["ID"]),
                )
                kept += of_lang[:max_per_language]
            lid[split] = kept
    if n_no_text:
        logger.info("%d %s prompts without transcript left out of ASR", n_no_text, asr_language)

    stats = {}
    stats["lid"] = write_task(
        os.path.join(save_folder, "lid"),
        lid,
        LID_COLUMNS,
        label_column="language",
        speaker_column="prompt",
        disjoint=[("train", "valid"), ("train", "test"), ("valid", "test")],
    )
    stats[f"asr_{asr_language}"] = write_task(
        os.path.join(save_folder, f"asr_{asr_language}"),
        asr,
        ASR_COLUMNS,
        label_column="wrd",
        speaker_column="prompt",
        disjoint=[("train", "valid"), ("train", "test"), ("valid", "test")],
        closed_set=False,
    )
    return stats


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("asterisk_folder", help="output folder of prepare_asterisk")
    parser.add_argument("save_folder")
    parser.add_argument("--languages", nargs="+", default=["en", "fr", "es", "it", "ru"])
    parser.add_argument("--asr-language", default="en")
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--max-per-language", type=int, default=None)
    args = parser.parse_args(argv)
    with exit_on_data_error():
        stats = prepare_asterisk_probes(
            args.asterisk_folder,
            args.save_folder,
            languages=args.languages,
            asr_language=args.asr_language,
            valid_fraction=args.valid_fraction,
            test_fraction=args.test_fraction,
            max_per_language=args.max_per_language,
        )
    print(stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
