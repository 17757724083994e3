"""Documentation that cannot drift: every command README.md and docs/*.md show
exists and takes the arguments they give it.

Each ``python -m <module> ...`` (fenced blocks and inline code) must name a
module that exists; for this repository's modules, their own argument parser
must accept the arguments shown (the module runs as ``__main__`` until it
parses its command line, then stops: nothing trains, nothing is written).
SpeechBrain-style scripts (an hparams file and ``--key=value`` settings) and
``python train.py ...`` / ``torchrun ... train.py ...`` are checked with
:func:`latent_rq_brain.training.arguments.check_command_line`: the hparams file exists
and every setting is a key of it or a run option. Each ``make <target>`` must
exist (``make -n``). Run folders (``--output_folder``) given as relative
paths must be ignored by git, so that following the docs leaves the
clone clean.
"""

import argparse
import contextlib
import glob
import importlib.util
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from latent_rq_brain.training.arguments import UsageError, check_command_line  # noqa: E402

DOCS = ["README.md"] + sorted(
    os.path.relpath(p, REPO)
    for pattern in ("docs/*.md", "recipes/*/README.md")
    for p in glob.glob(os.path.join(REPO, pattern))
)
OUR_PACKAGES = ("latent_rq_brain", "recipes", "tools")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
SHELL_WORDS = {"do", "then", "else", "done", "fi", "time", "nice", "exec"}


def shell_commands(text):
    """Commands (lists of words) of a shell snippet: continuations joined,
    comments dropped, split at ``;``, ``&&``, ``|``; ``NAME="..."`` assignments
    expanded where ``$NAME`` is used later in the snippet.

    Example
    -------
    >>> shell_commands('R="python -m a.b --x 1"\\n$R --y 2  # note\\nmake test; make demo N=1')
    [['python', '-m', 'a.b', '--x', '1', '--y', '2'], ['make', 'test'], ['make', 'demo', 'N=1']]
    """
    variables, found = {}, []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            words = list(lexer)
        except ValueError:  # unbalanced quotes: not a shell line
            continue
        command = []
        for word in words + [";"]:
            if word not in SEPARATORS:
                command.append(word)
                continue
            if command and all(ASSIGNMENT.match(w) for w in command):
                for w in command:
                    name, _, value = w.partition("=")
                    variables[name] = value
            elif command:
                expanded = []
                for w in command:
                    if w.startswith("$") and w[1:] in variables:
                        expanded += shlex.split(variables[w[1:]])
                        continue
                    for name, value in variables.items():
                        w = w.replace("${" + name + "}", value).replace("$" + name, value)
                    expanded.append(w)
                while expanded and (expanded[0] in SHELL_WORDS or ASSIGNMENT.match(expanded[0])):
                    expanded.pop(0)
                if expanded:
                    found.append(expanded)
            command = []
    return found


def doc_snippets(path):
    """Shell snippets of a Markdown file: each fenced block, each inline code span."""
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        text = f.read()
    snippets = [m.group(1) for m in FENCE.finditer(text)]
    outside = FENCE.sub("", text)
    snippets += [m.group(1).replace("\n", " ") for m in INLINE.finditer(outside)]
    return snippets


def documented():
    """``(doc, kind, words)`` with kind ``module``, ``train`` or ``make``."""
    out = []
    for doc in DOCS:
        for snippet in doc_snippets(doc):
            for words in shell_commands(snippet):
                for i, w in enumerate(words):
                    if os.path.basename(w).startswith("python") and words[i + 1:i + 2] == ["-m"]:
                        if i + 2 < len(words):
                            out.append((doc, "module", words[i + 2:]))
                        break
                    if w == "train.py":
                        if i > 0 and (os.path.basename(words[0]).startswith(("python", "torchrun"))):
                            out.append((doc, "train", words[i + 1:]))
                        break
                else:
                    if words[0] == "make" and len(words) > 1:
                        out.append((doc, "make", words[1:]))
    return out


COMMANDS = documented()


def ids(commands):
    return [f"{doc}: {' '.join(words)[:70]}" for doc, _, words in commands]


def test_the_docs_show_commands():
    kinds = {kind for _, kind, _ in COMMANDS}
    assert kinds == {"module", "train", "make"}
    assert len(COMMANDS) > 20


class _Parsed(Exception):
    """Raised by the patched parser once a module has parsed its arguments."""

    def __init__(self, parser):
        super().__init__()
        self.parser = parser


@contextlib.contextmanager
def stop_at_parse():
    """Patches argparse so that a module's first (outermost) parse of its
    command line parses for real, then raises :class:`_Parsed`."""
    originals = {n: getattr(argparse.ArgumentParser, n) for n in ("parse_args", "parse_known_args")}
    depth = [0]

    def wrap(original):
        def patched(self, args=None, namespace=None):
            if depth[0]:
                return original(self, args, namespace)
            depth[0] += 1
            try:
                original(self, args, namespace)
            finally:
                depth[0] -= 1
            raise _Parsed(self)
        return patched

    for name, original in originals.items():
        setattr(argparse.ArgumentParser, name, wrap(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(argparse.ArgumentParser, name, original)


def check_module(module, args):
    """Runs ``python -m module args`` until it has parsed ``args``; returns an
    error message, or None."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return f"no module {module}"
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return f"no module {module}"
    if not module.startswith(OUR_PACKAGES):
        return None  # another project's module (venv, pip): it exists
    argv0, stderr = sys.argv, io.StringIO()
    sys.argv = [spec.origin, *args]
    try:
        with stop_at_parse(), contextlib.redirect_stderr(stderr), \
                contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # runpy warns when the module was imported before (by another one): harmless here
            warnings.simplefilter("ignore", RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except _Parsed as parsed:
        if any(a.dest == "param_file" for a in parsed.parser._actions):
            try:
                check_command_line(args, prog=module)
            except UsageError as err:
                return str(err)
        return None
    except SystemExit as err:
        return f"exit {err.code}: {stderr.getvalue().strip()[-600:]}"
    finally:
        sys.argv = argv0
    return "the module ran without parsing a command line"


MODULES = [c for c in COMMANDS if c[1] == "module"]


@pytest.mark.parametrize("doc, kind, words", MODULES, ids=ids(MODULES))
def test_documented_module_takes_its_arguments(doc, kind, words, monkeypatch):
    monkeypatch.chdir(REPO)
    module, args = words[0], [w for w in words[1:] if w != "..."]
    error = check_module(module, args)
    assert error is None, f"{doc}: python -m {' '.join(words)}: {error}"


# "torchrun ... train.py ..." in prose names no hparams file: nothing to check
TRAIN = [c for c in COMMANDS if c[1] == "train" and any(w != "..." for w in c[2])]


@pytest.mark.parametrize("doc, kind, words", TRAIN, ids=ids(TRAIN))
def test_documented_train_command_takes_its_settings(doc, kind, words, monkeypatch):
    monkeypatch.chdir(REPO)
    args = [w for w in words if w != "..."]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            check_command_line(args)
    except UsageError as err:
        pytest.fail(f"{doc}: train.py {' '.join(words)}: {err}")
    except SystemExit:
        pytest.fail(f"{doc}: train.py {' '.join(words)}: {stderr.getvalue().strip()}")


MAKE = [c for c in COMMANDS if c[1] == "make"]


@pytest.mark.parametrize("doc, kind, words", MAKE, ids=ids(MAKE))
def test_documented_make_target_exists(doc, kind, words):
    proc = subprocess.run(["make", "-n", *words], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"{doc}: make {' '.join(words)}: {proc.stderr.strip()}"


def output_folders():
    """Relative output folders the documented commands write."""
    found = set()
    for doc, kind, words in COMMANDS:
        for w in words:
            value = None
            if w.startswith("--output_folder="):
                value = w.split("=", 1)[1]
            if value and not value.startswith(("/", "$", "~", ".")) and "<" not in value:
                found.add((doc, value))
    return sorted(found)


def test_documented_output_folders_are_ignored_by_git():
    folders = output_folders()
    assert folders
    probes = [os.path.join(folder, "train_log.txt") for _, folder in folders]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *probes], cwd=REPO,
                          capture_output=True, text=True)
    ignored = set(proc.stdout.split())
    kept = [(doc, folder) for (doc, folder), probe in zip(folders, probes) if probe not in ignored]
    assert not kept, f"outputs that git would show as new files: {kept}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(path):
    """GitHub's anchors of a Markdown file's headings."""
    with open(path, encoding="utf-8") as f:
        text = FENCE.sub("", f.read())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_documented_links_resolve():
    """Every relative link of the docs names a file that exists (and a heading, with #)."""
    broken = []
    for doc in DOCS:
        with open(os.path.join(REPO, doc), encoding="utf-8") as f:
            text = FENCE.sub("", f.read())
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(REPO, os.path.dirname(doc), path)) if path \
                else os.path.join(REPO, doc)
            if not os.path.exists(full):
                broken.append((doc, target))
            elif anchor and full.endswith(".md") and anchor not in heading_anchors(full):
                broken.append((doc, target))
    assert not broken, broken
