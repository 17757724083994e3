"""Command-line checks of ``train.py`` that need neither torch nor SpeechBrain.

``train.py`` calls :func:`check_command_line` before its heavy imports (torch
and SpeechBrain take seconds to load), so a usage error, a missing hparams
file or a mistyped setting is reported at once, in one line, naming the
closest existing setting::

    $ python train.py hparams/small/latent_rq.yaml --optimiser_step_limit=5
    train.py: error: unknown setting --optimiser_step_limit: not a key of
    hparams/small/latent_rq.yaml nor a SpeechBrain run option; did you mean
    --optimizer_step_limit?

SpeechBrain's own parser of run options (``RunOptions`` in
``speechbrain/utils/run_opts.py``, a standard-library-only file) is loaded
from its file, without importing the ``speechbrain`` package, so the run
options known here are exactly SpeechBrain's.

Authors
 * latent-rq developers 2026
"""

import difflib
import importlib.util
import io
import os

import ruamel.yaml

from latent_rq_brain.errors import UsageError  # noqa: F401 (its home: latent_rq_brain.errors)
from latent_rq_brain.hparams import BASE_KEY, expand_hparams_file


_RUN_OPTIONS = None


def run_options_class():
    """SpeechBrain's ``RunOptions``, loaded from its file without importing
    the ``speechbrain`` package (which imports torch).

    Example
    -------
    >>> opts = run_options_class()
    >>> "optimizer_step_limit" in opts.__dataclass_fields__
    True
    """
    global _RUN_OPTIONS
    if _RUN_OPTIONS is None:
        package = importlib.util.find_spec("speechbrain")
        if package is None or not package.submodule_search_locations:
            raise ImportError("speechbrain is not installed (pip install -r requirements.txt)")
        path = os.path.join(list(package.submodule_search_locations)[0], "utils", "run_opts.py")
        spec = importlib.util.spec_from_file_location("_latent_rq_sb_run_opts", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _RUN_OPTIONS = module.RunOptions
    return _RUN_OPTIONS


def run_option_names():
    """The ``--options`` SpeechBrain's parser takes (without the dashes)."""
    parser = run_options_class()._create_parser()
    return sorted(
        opt[2:] for action in parser._actions for opt in action.option_strings
        if opt.startswith("--") and opt != "--help"
    )


def _load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return ruamel.yaml.YAML().load(f) or {}


def yaml_keys(hparams_file):
    """Top-level keys of an hparams file, thin files included (their own keys
    and those of the file they build on).

    Example
    -------
    >>> keys = yaml_keys(os.path.join(REPO, "hparams", "latent_rq_stage1.yaml"))
    >>> "init_from" in keys and "target_layers" in keys and BASE_KEY not in keys
    True
    """
    keys = set()
    path = hparams_file
    while True:
        tree = _load_yaml(path)
        if not isinstance(tree, dict):
            raise UsageError(f"{path} is not a YAML mapping of settings")
        keys.update(k for k in tree if k != BASE_KEY)
        if BASE_KEY not in tree:
            return keys
        path = os.path.join(os.path.dirname(os.path.abspath(path)), tree[BASE_KEY])


def closest(name, candidates):
    """The candidate most like ``name`` (difflib), or None.

    Example
    -------
    >>> closest("optimiser_step_limit", ["optimizer_step_limit", "seed"])
    'optimizer_step_limit'
    >>> closest("zzz", ["seed"]) is None
    True
    """
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def parse_overrides(extra, prog="train.py"):
    """The YAML overrides (a dict) of the arguments SpeechBrain's parser left over."""
    text = run_options_class()._convert_to_yaml(extra)
    try:
        overrides = ruamel.yaml.YAML(typ="safe", pure=True).load(text) if text else {}
    except ruamel.yaml.YAMLError as err:
        raise UsageError(
            f"cannot read the settings {' '.join(extra)!r} as YAML ({str(err).splitlines()[0]}); "
            f"write each as --key=value"
        ) from None
    if not isinstance(overrides, dict):
        raise UsageError(
            f"unexpected argument(s) {' '.join(extra)!r}: {prog} takes one hparams file "
            "and --key=value settings"
        )
    return overrides


def check_command_line(argv, prog="train.py"):
    """Checks a ``train.py`` command line without loading torch or SpeechBrain.

    Argument errors (SpeechBrain's run options, ``--help``) end as argparse
    does (usage, exit status 2). Raises :class:`UsageError` for a missing
    hparams file or a setting that is neither a key of the hparams file nor a
    run option, naming the closest existing one.

    Returns
    -------
    hparams_file : str
    overrides : dict
        The YAML overrides given on the command line.

    Example
    -------
    >>> small = os.path.join(REPO, "hparams", "small", "latent_rq.yaml")
    >>> check_command_line([small, "--seed=3", "--optimizer_step_limit=5"])[1]
    {'seed': 3}
    >>> check_command_line([small, "--optimiser_step_limit=5"])
    Traceback (most recent call last):
    ...
    latent_rq_brain.errors.UsageError: unknown setting --optimiser_step_limit: not a key of .../latent_rq.yaml nor a SpeechBrain run option; did you mean --optimizer_step_limit?
    """
    parser = run_options_class()._create_parser()
    parser.prog = prog
    args, extra = parser.parse_known_args(argv)
    hparams_file = args.param_file
    if not os.path.isfile(hparams_file):
        raise UsageError(f"hparams file {hparams_file} not found (the first argument of {prog})")
    overrides = parse_overrides(extra, prog)
    keys = yaml_keys(hparams_file)
    for key in overrides:
        if key in keys:
            continue
        hint = closest(str(key), keys | set(run_option_names()))
        raise UsageError(
            f"unknown setting --{key}: not a key of {hparams_file} nor a SpeechBrain run "
            "option" + (f"; did you mean --{hint}?" if hint else "")
        )
    return hparams_file, overrides


def csv_overrides(hparams_file, overrides):
    """Overrides (YAML text) with ``data_folder: null`` added when the data
    come from CSV manifests (``data_prep: null``) and ``data_folder`` is a
    ``!PLACEHOLDER`` the command line left unset: it then serves nothing but
    ``$data_root`` in manifests (an error names it if a manifest uses it).

    Example
    -------
    >>> paper = os.path.join(REPO, "hparams", "latent_rq_schedule.yaml")
    >>> csv_overrides(paper, "data_prep: null\\ntrain_csv: t.csv\\n")
    'data_prep:\\ntrain_csv: t.csv\\ndata_folder:\\n'
    >>> csv_overrides(paper, "data_folder: /d\\n")
    'data_folder: /d\\n'
    """
    given = ruamel.yaml.YAML().load(overrides) if isinstance(overrides, str) else overrides
    given = given or {}
    if "data_prep" not in given or given["data_prep"] is not None or "data_folder" in given:
        return overrides
    value = _load_yaml(hparams_file).get("data_folder")
    if getattr(getattr(value, "tag", None), "value", None) != "!PLACEHOLDER":
        return overrides
    given["data_folder"] = None
    out = io.StringIO()
    ruamel.yaml.YAML().dump(given, out)
    return out.getvalue()


#: The repository root (for the doctests).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
