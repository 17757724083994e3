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

import contextlib
import dataclasses
import difflib
import importlib.util
import io
import os
import re
import sys
import typing

import ruamel.yaml

from latent_rq_brain.training.errors import UsageError  # noqa: F401 (its home: latent_rq_brain.training.errors)
from latent_rq_brain.training.hparams import BASE_KEY, check_plain_settings, expand_hparams_file, plain_yaml


_RUN_OPTIONS = None

#: A setting whose name ends so, or is one of PATH_KEYS, names a file or folder.
PATH_SUFFIXES = ("_folder", "_dir", "_csv", "_file", "_path", "_from")
PATH_KEYS = ("checkpoint",)
#: The values of a path setting that mean None.
NULL_WORDS = ("null", "~", "")


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
    tree = _load_yaml(hparams_file)
    if not isinstance(tree, dict):
        raise UsageError(f"{hparams_file} is not a YAML mapping of settings")
    keys = {k for k in tree if k != BASE_KEY}
    names = tree.get(BASE_KEY) or []
    for name in names if isinstance(names, list) else [names]:  # a base and overlays
        keys |= yaml_keys(os.path.join(os.path.dirname(os.path.abspath(hparams_file)), name))
    return keys


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


def is_path_setting(key):
    """Whether a setting names a file or folder: its command-line value is
    then kept exactly as written (``=``, ``#``, spaces, digits), ``null``
    alone meaning None.

    Example
    -------
    >>> [is_path_setting(k) for k in ("output_folder", "train_csv", "init_from", "seed")]
    [True, True, True, False]
    """
    return key.endswith(PATH_SUFFIXES) or key in PATH_KEYS


def read_value(key, text):
    """The value of ``--key=text``: a path setting (:func:`is_path_setting`)
    keeps its text as written; any other reads as YAML (numbers, lists,
    mappings, ``null``), a plain string again as written (so ``#`` and ``=``
    inside it survive).

    Example
    -------
    >>> read_value("output_folder", "out/c #1"), read_value("output_folder", "1000")
    ('out/c #1', '1000')
    >>> read_value("target_layers", "[0, 2]"), read_value("data_prep", "null")
    ([0, 2], None)
    >>> read_value("task", "a #b")
    'a #b'
    """
    if text is None:
        return None
    if is_path_setting(key):
        return None if text.strip() in NULL_WORDS else text
    try:
        value = ruamel.yaml.YAML(typ="safe", pure=True).load(text)
    except ruamel.yaml.YAMLError as err:
        raise UsageError(
            f"--{key}={text}: cannot read the value as YAML ({str(err).splitlines()[0]})"
        ) from None
    return text if isinstance(value, str) and text[:1] not in "'\"" else value


def split_settings(extra, prog="train.py"):
    """``[(key, text), ...]`` of the ``--key=value`` / ``--key value``
    arguments SpeechBrain's parser left over (``text`` None for a bare ``--key``).

    Example
    -------
    >>> split_settings(["--a=x=y", "--b", "2", "--c"])
    [('a', 'x=y'), ('b', '2'), ('c', None)]
    """
    settings, i = [], 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UsageError(
                f"unexpected argument {arg!r}: {prog} takes one hparams file "
                "and --key=value settings"
            )
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            key, text = arg[2:], extra[i + 1]
            i += 2
        else:
            key, text = arg[2:], None
            i += 1
        settings.append((key, text))
    return settings


def check_given_once(argv):
    """Refuses an option given twice (``--seed=3 --seed=4``), naming it.

    Example
    -------
    >>> check_given_once(["h.yaml", "--seed=3", "--device", "cpu", "--seed", "4"])
    Traceback (most recent call last):
    ...
    latent_rq_brain.training.errors.UsageError: --seed is given twice (3 and 4): give each setting once
    """
    seen = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("--") or len(arg) == 2:
            continue
        key, _, text = arg[2:].partition("=")
        if "=" not in arg:
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            text = "" if nxt.startswith("--") else nxt
        if key in seen:
            raise UsageError(
                f"--{key} is given twice ({seen[key]} and {text}): give each setting once"
            )
        seen[key] = text


def parse_overrides(extra, prog="train.py"):
    """The overrides (a dict) of the arguments SpeechBrain's parser left over,
    each value read by :func:`read_value`."""
    return {key: read_value(key, text) for key, text in split_settings(extra, prog)}


def run_option_kinds():
    """``{run option: (int,) or (float,) ...}``: the numeric types SpeechBrain
    declares for its run options (its parser leaves some of them strings).

    Example
    -------
    >>> run_option_kinds()["optimizer_step_limit"]
    (<class 'int'>,)
    """
    kinds = {}
    for name, field in run_options_class().__dataclass_fields__.items():
        declared = typing.get_args(field.type) or (field.type,)
        numeric = tuple(k for k in (int, float) if k in declared)
        if numeric:
            kinds[name] = numeric[:1]
    return kinds


def typed_value(name, value):
    """A run option's command-line value cast to its declared type; a
    :class:`UsageError` naming it if it is not one.

    Example
    -------
    >>> typed_value("optimizer_step_limit", "7"), typed_value("device", "cpu")
    (7, 'cpu')
    >>> typed_value("optimizer_step_limit", "abc")
    Traceback (most recent call last):
    ...
    latent_rq_brain.training.errors.UsageError: --optimizer_step_limit=abc is not a valid int
    """
    kind = run_option_kinds().get(name)
    if not isinstance(value, str) or kind is None:
        return value
    try:
        return kind[0](value)
    except ValueError:
        raise UsageError(f"--{name}={value} is not a valid {kind[0].__name__}") from None


def typed_run_opts(run_opts):
    """SpeechBrain's run options with the given ones cast to their declared
    types (SpeechBrain 1.1 leaves ``--optimizer_step_limit=N`` a string, and
    Brain then compares a str with an int)."""
    changes = {}
    for name in run_opts.overridden_args:
        value = getattr(run_opts, name, None)
        typed = typed_value(name, value)
        if typed is not value:
            changes[name] = typed
    return dataclasses.replace(run_opts, **changes) if changes else run_opts


def given_run_options(args, argv):
    """``{run option: typed value}`` of the run options given in ``argv``."""
    names = set(run_option_names())
    given = {}
    for arg in argv:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if name in names:
            given[name] = typed_value(name, getattr(args, name, None))
    return given


def plain_values(hparams_file, overrides):
    """Top-level settings as plain data before anything is built: the full
    YAML (thin files expanded) with ``overrides`` on top; a value that is not
    plain data (``!ref``, ``!new:``...) reads as None."""
    try:
        full, text = expand_hparams_file(hparams_file, overrides)
    except ValueError as err:
        raise UsageError(str(err)) from None
    values = plain_yaml(open_text(full))
    if isinstance(text, dict):
        values.update(text)
    elif text:
        values.update(plain_yaml(text))
    return values


def open_text(path):
    """The text of a file (UTF-8)."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def help_text(hparams_file, prog="train.py"):
    """``--help``: SpeechBrain's run options, then the settings of
    ``hparams_file`` (thin files: theirs, then the base file's) with the
    comments the YAML gives them.

    Example
    -------
    >>> text = help_text(os.path.join(REPO, "hparams", "small", "latent_rq.yaml"))
    >>> "--optimizer_step_limit" in text and "--target_layers=[1, 2]" in text
    True
    >>> [line for line in text.splitlines() if line.startswith("  --target_layers=")][0]
    '  --target_layers=[1, 2]  paper layer indices: -1 = CNN front-end output, 0..3 here'
    """
    parser = run_options_class()._create_parser()
    parser.prog = prog
    lines = [parser.format_help().rstrip(), ""]
    if not hparams_file or not os.path.isfile(hparams_file):
        return "\n".join(lines + [f"(give an hparams file to list its settings: {prog} FILE --help)"])
    shown = set()
    path = hparams_file
    while path:
        lines.append(f"settings of {os.path.relpath(path)} (--key=value; a path is read as written):")
        nxt = None
        for key, value, comment in yaml_settings(path):
            if key == BASE_KEY:
                nxt = os.path.join(os.path.dirname(os.path.abspath(path)), value)
                continue
            if key in shown:
                continue
            shown.add(key)
            lines.append(f"  --{key}={value}" + (f"  {comment}" if comment else ""))
        lines.append("")
        path = nxt
    return "\n".join(lines).rstrip() + "\n"


_SETTING = re.compile(r"^([A-Za-z_][\w.]*):(.*)$")


def yaml_settings(path):
    """``[(key, value text, comment)]`` of the top-level keys of a YAML file:
    the comment is the key's own comment (after the value) or, if none, the
    comment lines right above it (section rulers left out)."""
    rows, above = [], []
    for line in open_text(path).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if text and not set(text) <= set("#-= ") and not text.startswith("-" * 4):
                above.append(text)
            continue
        match = _SETTING.match(line)
        if match:
            value, _, comment = match.group(2).partition(" #")
            rows.append((match.group(1), value.strip() or "...",
                         comment.strip() or " ".join(above)))
        if not line.startswith((" ", "\t")):
            above = []
    return rows


def check_command_line(argv, prog="train.py"):
    """Checks a command line of a SpeechBrain-style script without loading
    torch or SpeechBrain; every error is one line (:class:`UsageError`).

    ``--help`` prints SpeechBrain's run options and the hparams file's
    settings with their comments, then exits. Argument errors of the run
    options end as argparse does (usage, exit status 2). Refused, naming what
    is at fault: a missing hparams file; an option given twice; a setting that
    is neither a key of the hparams file nor a run option (with the closest
    existing one); a run option that is not of its type (``--optimizer_step_limit=abc``);
    a value that :func:`latent_rq_brain.training.hparams.check_plain_settings` refuses
    (counts below 1, ``max_batch_len``...). Values: :func:`read_value`.

    Returns
    -------
    hparams_file : str
    overrides : dict
        The settings given on the command line (run options left out).

    Example
    -------
    >>> small = os.path.join(REPO, "hparams", "small", "latent_rq.yaml")
    >>> check_command_line([small, "--seed=3", "--optimizer_step_limit=5"])[1]
    {'seed': 3}
    >>> check_command_line([small, "--optimiser_step_limit=5"])
    Traceback (most recent call last):
    ...
    latent_rq_brain.training.errors.UsageError: unknown setting --optimiser_step_limit: not a key of .../latent_rq.yaml nor a SpeechBrain run option; did you mean --optimizer_step_limit?
    """
    if "--help" in argv or "-h" in argv:
        files = [a for a in argv if not a.startswith("-") and os.path.isfile(a)]
        print(help_text(files[0] if files else None, prog), end="")
        raise SystemExit(0)
    parser = run_options_class()._create_parser()
    parser.prog = prog
    args, extra = parser.parse_known_args(argv)
    hparams_file = args.param_file
    if not os.path.isfile(hparams_file):
        raise UsageError(f"hparams file {hparams_file} not found (the first argument of {prog})")
    check_given_once(argv)
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
    values = plain_values(hparams_file, overrides)
    values.update(given_run_options(args, argv))  # run options win over the YAML
    try:
        check_plain_settings(values)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return hparams_file, overrides


def parse_arguments(argv, prog="train.py"):
    """The front door of every SpeechBrain-style script: checks the command
    line (:func:`check_command_line`, before torch loads), then returns what
    ``load_hyperpyyaml`` and ``Brain`` take.

    Returns
    -------
    hparams_file : str
        The full YAML (a thin file's base, :func:`~latent_rq_brain.training.hparams.expand_hparams_file`).
    run_opts : speechbrain.utils.run_opts.RunOptions
        Typed (:func:`typed_run_opts`).
    overrides : str
        YAML text of the settings (the thin file's, then the command line's).
    """
    hparams_file, overrides = check_command_line(argv, prog)
    from speechbrain.utils.run_opts import RunOptions

    _, run_opts, _ = RunOptions.from_command_line_args(argv)  # its overrides: ours instead
    hparams_file, overrides = expand_hparams_file(hparams_file, overrides)
    overrides = csv_overrides(hparams_file, overrides)
    if isinstance(overrides, dict):
        overrides = yaml_text(overrides)
    return hparams_file, typed_run_opts(run_opts), overrides


def yaml_text(mapping):
    """A mapping as YAML text (strings quoted where YAML needs it).

    Example
    -------
    >>> yaml_text({"output_folder": "out/c #1", "seed": 3})
    "output_folder: 'out/c #1'\\nseed: 3\\n"
    """
    out = io.StringIO()
    ruamel.yaml.YAML().dump(dict(mapping), out)
    return out.getvalue()


@contextlib.contextmanager
def exit_on_usage_error(prog):
    """For ``__main__``: a :class:`UsageError` ends the program with
    ``<prog>: error: <message>`` and exit status 2, without a traceback."""
    try:
        yield
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)


def check_or_exit(argv, prog):
    """:func:`check_command_line` for a script's first lines, before its heavy
    imports: a usage error ends the program at once."""
    with exit_on_usage_error(prog):
        check_command_line(argv, prog)


@contextlib.contextmanager
def no_folders_left_on_refusal(hparams_file, overrides):
    """Removes, if the block raises, the output and save folders (and their
    parents) that did not exist before it and are still empty: loading the
    YAML creates them (SpeechBrain's Checkpointer makes its folder), and a
    refused setting must leave nothing behind."""
    folders = []
    try:
        from hyperpyyaml import resolve_references

        with open(hparams_file, encoding="utf-8") as f:
            values = plain_yaml(resolve_references(f, overrides).getvalue())
        for key in ("save_folder", "output_folder"):
            path = values.get(key)
            while isinstance(path, str) and path and not os.path.exists(path):
                folders.append(os.path.abspath(path))
                path = os.path.dirname(os.path.abspath(path))
    except Exception:  # noqa: BLE001 (the load itself reports a bad YAML)
        folders = []
    try:
        yield
    except BaseException:
        for path in sorted(set(folders), key=len, reverse=True):
            try:
                if os.path.isdir(path) and not os.listdir(path):
                    os.rmdir(path)
            except OSError:  # another rank removed it, or wrote into it
                pass
        raise


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
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
