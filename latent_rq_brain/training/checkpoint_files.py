"""Finding checkpoints of ``train.py`` and telling whether they are whole.

Every way to name a checkpoint goes through :func:`find_checkpoint`: a run's
output folder, its ``save`` folder (newest complete checkpoint), one
``CKPT+*`` folder, or ``<run folder>@stage<k>`` (the checkpoint written at the
transition to stage k). Random encoders (``random:<config>``) are the other
half of the resolver, :meth:`latent_rq_brain.sharing.pretrained.PretrainedEncoder.load`.

A checkpoint is complete when it holds every file it needs and none of them
is missing, empty, cut short or unreadable (:func:`checkpoint_problem`); the
loaders, the resume (:mod:`latent_rq_brain.training.resume`) and the removal of debris
(:mod:`latent_rq_brain.training.checkpointer`) all decide with it.

The files of a checkpoint are read by the class that writes them
(``quantizer.ckpt``: the quantizer, ``stage_schedule.ckpt``: the schedule,
``encoder_spec.ckpt``: :class:`~latent_rq_brain.model.architectures.EncoderSpec`);
``brain.ckpt`` is SpeechBrain's ``Brain._save``, read here by
:func:`read_optimizer_step`.

Authors
 * latent-rq developers 2026
"""

import logging
import os
import pathlib
import zipfile

import yaml

from latent_rq_brain.training.stages import StageSchedule
from speechbrain.utils.checkpoints import Checkpointer

logger = logging.getLogger(__name__)

#: Files a checkpoint must hold to branch a new stage from it (``--init_from``).
BRANCH_FILES = ("encoder", "mask_embedding", "quantizer", "brain", "stage_schedule")
#: Files a checkpoint must hold to rebuild its encoder (PretrainedEncoder, export, s3prl).
ENCODER_FILES = ("encoder", "encoder_spec")
#: Files written as YAML text (SpeechBrain's ``Brain._save`` and epoch counter,
#: the stage schedule, the encoder spec); the others are PyTorch files.
TEXT_FILES = ("brain", "counter", "encoder_spec", "stage_schedule")


def read_optimizer_step(path):
    """Optimizer step stored in a ``brain.ckpt`` (SpeechBrain's ``Brain._save``)."""
    with open(path, encoding="utf-8") as f:
        return int(yaml.safe_load(f)["optimizer_step"])


def transition_checkpoint(run_folder, stage, needed=None):
    """The checkpoint a run wrote when it entered ``stage`` (the last weights of stage - 1).

    Pre-training keeps these checkpoints forever (``transition_to_stage: k`` in
    their ``CKPT.yaml``), so ``results/demo@stage1`` names the BEST-RQ encoder
    at the end of stage 0 of the demo run.

    Example
    -------
    >>> transition_checkpoint("/nonexistent", 1)
    Traceback (most recent call last):
    ...
    ValueError: no checkpoint of /nonexistent was written at the transition to stage 1 (found: [])
    """
    save = os.path.join(run_folder, "save")
    folder = save if os.path.isdir(save) else run_folder
    found = {}
    ckpts = list_checkpoints_checked(Checkpointer(folder))[0] if os.path.isdir(folder) else []
    for ckpt in sorted(ckpts, key=lambda c: c.meta.get("unixtime", 0)):
        k = ckpt.meta.get("transition_to_stage")
        if k is not None and checkpoint_problem(ckpt, needed) is None:
            found[int(k)] = str(ckpt.path)  # the newest complete one
    if int(stage) not in found:
        raise ValueError(
            f"no checkpoint of {run_folder} was written at the transition to stage "
            f"{stage} (found: {sorted(found)})"
        )
    return found[int(stage)]


def file_problem(path, text=False):
    """None if a checkpoint file looks whole, else what is wrong with it.

    Cheap and conservative (it decides what loaders skip and what is deleted
    as debris): a file must exist and not be empty, a PyTorch file (a zip
    archive) must have its central directory, which is written last, and a
    ``text`` file (:data:`TEXT_FILES`) must read as UTF-8 YAML.

    Example
    -------
    >>> file_problem("/nonexistent/encoder.ckpt")
    'it is missing'
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "brain.ckpt")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"optimizer_step: \\xff\\xfe")
    >>> file_problem(path, text=True)  # doctest: +ELLIPSIS
    "it is not readable text (18 bytes; UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff ...)"
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return "it is missing"
    if size == 0:
        return "it is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"PK":
        try:
            zipfile.ZipFile(path).close()
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            return f"it is truncated or corrupt ({size} bytes; {err})"
    elif text:
        try:
            with open(path, encoding="utf-8") as f:
                yaml.safe_load(f)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            first = (str(err).strip().splitlines() or [""])[0][:80]
            return f"it is not readable text ({size} bytes; {type(err).__name__}: {first})"
    return None


def checkpoint_problem(ckpt, needed=None):
    """None if ``ckpt`` holds every file of ``needed`` (recoverable names) and
    none of its files is cut short (:func:`file_problem`), else what is wrong."""
    missing = sorted(set(needed or ()) - set(ckpt.paramfiles))
    if missing:
        return f"it lacks {', '.join(m + '.ckpt' for m in missing)}"
    for name, path in sorted(ckpt.paramfiles.items()):
        problem = None if name.startswith("dataloader-") else file_problem(path, name in TEXT_FILES)
        if problem:
            return f"{name}.ckpt: {problem}"
    return None


def newest_complete(folder, needed=None):
    """The newest checkpoint of ``folder`` without a :func:`checkpoint_problem`
    (the ones skipped are logged), or None if the folder holds none at all.

    Raises ValueError naming every checkpoint and its problem if all are
    incomplete (a save killed half-way leaves one so).
    """
    ckpts, unreadable = list_checkpoints_checked(Checkpointer(folder))
    ckpts.sort(key=lambda c: c.meta.get("unixtime", 0), reverse=True)
    problems = [f"{path.name}: {reason}" for path, reason in unreadable]
    for ckpt in ckpts:
        problem = checkpoint_problem(ckpt, needed)
        if problem is None:
            for skipped in problems:
                logger.warning(f"skipping incomplete checkpoint {folder}/{skipped}")
            return ckpt
        problems.append(f"{ckpt.path.name}: {problem}")
    if problems:
        raise ValueError(
            f"no complete checkpoint in {folder} ({'; '.join(problems)}; a save "
            "killed half-way?)"
        )
    return None


def find_checkpoint(path, needed=None):
    """The checkpoint a path names (see the module docstring).

    For a run or ``save`` folder, the newest *complete* one: holding the
    files of ``needed`` (recoverable names, e.g. :data:`BRANCH_FILES`), none
    cut short (:func:`newest_complete`), as a resume picks. A ``CKPT+*``
    folder named explicitly is returned as it is.

    Returns a :class:`speechbrain.utils.checkpoints.Checkpoint`.
    """
    path = os.fspath(path)
    if "@stage" in path:
        run, _, stage = path.rpartition("@stage")
        path = transition_checkpoint(run, int(stage), needed)
    if os.path.isfile(os.path.join(path, "CKPT.yaml")):
        for ckpt in list_checkpoints_checked(Checkpointer(os.path.dirname(os.path.abspath(path))))[0]:
            if os.path.samefile(ckpt.path, path):
                # a text file that does not read (the PyTorch files' own loaders
                # name theirs; a missing file: the caller's require_files)
                damaged = checkpoint_problem(ckpt)
                if damaged and "not readable text" in damaged:
                    raise ValueError(f"checkpoint {path} is damaged: {damaged}")
                return ckpt
        raise ValueError(f"checkpoint {path} is incomplete: its CKPT.yaml is empty or unreadable")
    elif os.path.isdir(path):
        for folder in (path, os.path.join(path, "save")):
            if os.path.isdir(folder):
                found = newest_complete(folder, needed)
                if found is not None:
                    return found
    raise ValueError(
        f"no checkpoint found at {path} (expected a run's output folder, its "
        "save folder with CKPT+* sub-folders, one CKPT+* folder, or "
        "<run folder>@stage<k>)"
    )


def require_files(ckpt, names, what="checkpoint"):
    """``ckpt.paramfiles``, checked to hold every recoverable in ``names``."""
    for name in names:
        if name not in ckpt.paramfiles:
            raise ValueError(f"{what} {ckpt.path} lacks {name}.ckpt")
    return ckpt.paramfiles


def checkpoint_info(ckpt):
    """Where a checkpoint's weights are: path, stage, optimizer step, and
    ``transition_to_stage`` for one written at a transition (its encoder is
    the end of the previous stage)."""
    files = ckpt.paramfiles
    info = {"checkpoint": str(ckpt.path), "stage": None, "step": None}
    if "transition_to_stage" in ckpt.meta:
        info["transition_to_stage"] = int(ckpt.meta["transition_to_stage"])
    if "stage_schedule" in files:
        info["stage"] = StageSchedule.read(files["stage_schedule"])["stage"]
    if "brain" in files:
        info["step"] = read_optimizer_step(files["brain"])
    return info


def list_checkpoints_checked(checkpointer):
    """The checkpoints of a checkpointer, and the folders whose ``CKPT.yaml``
    is empty or unreadable (a save killed while writing it).

    Returns
    -------
    checkpoints : list
        :class:`speechbrain.utils.checkpoints.Checkpoint` with a dict ``meta``.
    unreadable : list
        ``(folder, reason)`` pairs.
    """
    folder = pathlib.Path(checkpointer.checkpoints_dir)
    ckpts, unreadable = [], []
    if not folder.is_dir():
        return ckpts, unreadable
    for path in sorted(folder.glob("CKPT+*")):
        if not (path / "CKPT.yaml").is_file():
            continue
        try:
            (ckpt,) = Checkpointer._construct_checkpoint_objects([path])
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            unreadable.append((path, f"{type(err).__name__}: {err}"))
            continue
        if not isinstance(ckpt.meta, dict):
            unreadable.append((path, "its CKPT.yaml is empty or not a mapping"))
            continue
        ckpts.append(ckpt)
    return ckpts, unreadable


def needed_recoverables(checkpointer):
    """Names of the recoverables a checkpoint must hold to be resumed."""
    optional = checkpointer.optional_recoverables
    return {
        k
        for k in checkpointer.recoverables
        if not optional.get(k) and not k.startswith("dataloader-")
    }
