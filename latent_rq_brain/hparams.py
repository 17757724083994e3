"""Thin hparams files: a few settings on top of a full recipe YAML.

A thin file names its full YAML with ``base_hparams`` (relative to the thin
file) and sets only what differs, in HyperPyYAML syntax (``!ref``,
``!PLACEHOLDER``)::

    base_hparams: latent_rq_schedule.yaml
    output_folder: !ref results/latent_rq_stage1/<seed>
    initial_stage: 1
    init_from: !PLACEHOLDER

Its settings are overrides of the base file, and command-line overrides win
over both: ``python train.py hparams/latent_rq_stage1.yaml --init_from=...``
is ``python train.py hparams/latent_rq_schedule.yaml --initial_stage=1 ...``.
HyperPyYAML's ``!include`` nests a file under a key, so it cannot do this.

Authors
 * latent-rq developers 2026
"""

import io
import os

import ruamel.yaml

BASE_KEY = "base_hparams"


def _load(text):
    return ruamel.yaml.YAML().load(text) or {}


def expand_hparams_file(hparams_file, overrides=None):
    """``(full YAML path, overrides as YAML text)`` of a thin or full file.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "base.yaml"), "w") as f:
    ...     _ = f.write("seed: 1\\nout: !ref r/<seed>\\nlimit: 10\\n")
    >>> with open(os.path.join(folder, "thin.yaml"), "w") as f:
    ...     _ = f.write("base_hparams: base.yaml\\nout: !ref s/<seed>\\nlimit: 5\\n")
    >>> path, text = expand_hparams_file(os.path.join(folder, "thin.yaml"), "limit: 7")
    >>> os.path.basename(path), text
    ('base.yaml', 'out: !ref s/<seed>\\nlimit: 7\\n')
    """
    with open(hparams_file, encoding="utf-8") as f:
        thin = _load(f)
    if not isinstance(thin, dict) or BASE_KEY not in thin:
        return hparams_file, overrides
    base = os.path.join(os.path.dirname(os.path.abspath(hparams_file)), thin.pop(BASE_KEY))
    if isinstance(overrides, str):
        overrides = _load(overrides)
    thin.update(overrides or {})
    out = io.StringIO()
    ruamel.yaml.YAML().dump(thin, out)
    return expand_hparams_file(base, out.getvalue())
