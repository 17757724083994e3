"""Reading a run's ``train_log.txt`` (SpeechBrain's ``FileTrainLogger``
lines, as :mod:`latent_rq_brain.training.stats` writes them) back into dicts: the one
reader, used by ``tools/report.py`` and the demo summary.

Authors
 * latent-rq developers 2026
"""

import ast
import os
import re

_PAIR = re.compile(r"([A-Za-z_][\w ]*?): (\[[^\]]*\]|[^,\[\]]+?)(?=, |$)")


def _value(text):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_line(line):
    """Parses one FileTrainLogger line into a flat dict.

    Example
    -------
    >>> d = parse_line("step: 10, stage: 0, lr: 4.000e-04 - train loss: 6.20, "
    ...                "train codes_used: [277, 268]")
    >>> d["step"], d["stage"], d["train loss"], d["train codes_used"]
    (10, 0, 6.2, [277, 268])
    """
    out = {}
    for part in line.strip().split(" - "):
        for key, value in _PAIR.findall(part):
            out[key.strip()] = _value(value)
    return out


def read_log(path):
    """All entries of a train log, in order."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no train log at {path}")
    with open(path, encoding="utf-8") as f:
        return [parse_line(x) for x in f if x.strip()]
