"""Resuming a run: the newest complete checkpoint is loaded, a damaged one is
skipped (named in a warning), one that does not fit the configuration is
refused by name (:func:`recover_newest_complete`); :func:`check_resume_fits`
raises the same error before anything is written; :func:`resume_or_branch`
is the start of a run (resume, else branch).

Authors
 * latent-rq developers 2026
"""

import copy
import logging
import os
import pickle

import torch
import yaml

from latent_rq_brain.sharing.safe_load import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_weights,
)
from latent_rq_brain.training.branching import load_pretrained
from latent_rq_brain.training.checkpoint_files import (
    checkpoint_problem,
    list_checkpoints_checked,
    needed_recoverables,
)
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

logger = logging.getLogger(__name__)


def check_start(schedule, target_encoder, optimizer_step, source, resumed, checkpoints_dir):
    """Refuses a start that has no weights for its stage.

    Arguments
    ---------
    schedule : latent_rq_brain.training.stages.StageSchedule
        After resuming or branching.
    target_encoder : latent_rq_brain.targets.target_encoder.TargetEncoder
        Must hold a snapshot in a stage >= 1.
    optimizer_step : int
        The brain's step after resuming or branching.
    source : str or None
        The checkpoint resumed, else ``init_from`` (None: a fresh start).
    resumed : bool
        Whether the run resumed its own checkpoint.
    checkpoints_dir : str
        Where a checkpoint to resume was looked for (named in the error).

    Example
    -------
    >>> from latent_rq_brain.training.stages import StageSchedule
    >>> from latent_rq_brain.targets.target_encoder import TargetEncoder
    >>> check_start(StageSchedule([10]), TargetEncoder([0]), 0, None, False, "save")
    >>> check_start(StageSchedule([10], initial_stage=1), TargetEncoder([0]), 0, None,
    ...             False, "save")
    Traceback (most recent call last):
    ...
    ValueError: this config starts in stage 1 (initial_stage > 0) but no --init_from=<checkpoint dir> was given and there is no checkpoint to resume in save
    """
    if not resumed and not source and schedule.stage_for_step(optimizer_step) > 0:
        raise ValueError(
            f"this config starts in stage {schedule.initial_stage} "
            "(initial_stage > 0) but no --init_from=<checkpoint dir> was given "
            f"and there is no checkpoint to resume in {checkpoints_dir}"
        )
    if schedule.stage > 0 and not target_encoder.active:
        raise ValueError(
            f"checkpoint {source} is in stage {schedule.stage} but its "
            "target_encoder.ckpt holds no target encoder snapshot"
        )


def resume_or_branch(checkpointer, init_from, optimizer_step, modules, quantizer,
                     target_encoder, schedule, device):
    """The start of a run: resumes its newest complete checkpoint
    (:func:`recover_newest_complete`), else branches from ``init_from``
    (:func:`load_pretrained`), then refuses a start without weights for its
    stage (:func:`check_start`).

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer or None
        The run's (restores the brain's recoverables, the optimizer step too).
    init_from : str or None
        ``--init_from``; used only when there is nothing to resume.
    optimizer_step : int
        The brain's step before resuming (the step of a fresh start).
    modules, quantizer, target_encoder, schedule, device
        As in :func:`load_pretrained`.

    Returns
    -------
    resumed_from : speechbrain.utils.checkpoints.Checkpoint or None
        The checkpoint resumed.
    branched_step : int or None
        The optimizer step of the checkpoint branched from (None: no branch).
    """
    resumed_from = None
    if checkpointer is not None:
        resumed_from = recover_newest_complete(checkpointer)
    branched_step = None
    if resumed_from is None and init_from:
        branched_step = load_pretrained(
            init_from, modules, quantizer, target_encoder, schedule, device
        )
        optimizer_step = branched_step
    check_start(
        schedule, target_encoder, optimizer_step,
        resumed_from.path if resumed_from else init_from, resumed_from is not None,
        getattr(checkpointer, "checkpoints_dir", None),
    )
    return resumed_from, branched_step


def _is_truncated(err):
    """Whether a load error means a file cut short (a save killed half-way)."""
    if isinstance(err, UnsafeCheckpointError):
        return False  # refused, never skipped: someone planted code there
    if isinstance(err, CorruptCheckpointError):
        return True
    if not isinstance(err, (RuntimeError, ValueError)):
        return True
    return "PytorchStreamReader" in str(err) or "zip archive" in str(err)


def set_aside(unreadable):
    """Renames checkpoint folders with unreadable metadata to ``incomplete-CKPT+*``
    (SpeechBrain's own listing would crash on them), with a warning each."""
    ddp_barrier()  # every rank has listed them
    if if_main_process():
        for path, reason in unreadable:
            target = path.with_name("incomplete-" + path.name)
            os.replace(path, target)
            logger.warning(
                f"checkpoint {path} is incomplete ({reason}; a save killed "
                f"half-way?): moved to {target}"
            )
    ddp_barrier()


def check_resume_fits(checkpointer, prepare=None):
    """Raises the error a resume would raise, changing nothing.

    Loads the newest complete checkpoint into deep copies of the
    recoverables (``prepare(copies)`` may link them, e.g. attach the target
    encoder to its encoder), so that ``train.py`` can refuse an incompatible
    resume before it writes anything to the output folder. Costs one extra
    checkpoint read and a copy of the model in memory, at start-up only.
    """
    if not list_checkpoints_checked(checkpointer)[0]:
        return None  # nothing to resume: no copy needed
    copies = copy.deepcopy(checkpointer.recoverables)
    if prepare is not None:
        prepare(copies)
    probe = Checkpointer(checkpointer.checkpoints_dir, copies)
    probe.optional_recoverables = dict(checkpointer.optional_recoverables)
    found = recover_newest_complete(probe, dry_run=True)
    if found is not None:
        refuse_unsafe_files(found, loaded=probe.recoverables)
    return found


def refuse_unsafe_files(ckpt, loaded=()):
    """Reads, weights-only, the PyTorch files of ``ckpt`` not in ``loaded``
    (``optimizer.ckpt``: its optimizer only exists once the Brain is built),
    so that a file holding pickled code is refused before anything is written
    (:class:`~latent_rq_brain.sharing.safe_load.UnsafeCheckpointError`). A corrupt file
    is left to the resume, which skips that checkpoint."""
    for name, path in ckpt.paramfiles.items():
        if name in loaded or not _looks_like_torch_file(path):
            continue
        try:
            load_weights(path)
        except CorruptCheckpointError:
            pass


def _looks_like_torch_file(path):
    """A zip archive (``torch.save``) or a pickle (legacy ``torch.save``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head == b"PK" or head[:1] == b"\x80"


def recover_newest_complete(checkpointer, dry_run=False):
    """Recovers the newest complete checkpoint of a run; returns it, or None.

    A checkpoint folder missing some recoverable's file, or holding a
    truncated one (a save killed half-way), is skipped with a warning; one
    whose ``CKPT.yaml`` is empty or unreadable is moved aside
    (:func:`set_aside`); one that does not fit the configuration raises a
    clear error. With no complete checkpoint the run starts fresh, with a
    warning. ``dry_run``: nothing is moved or logged (:func:`check_resume_fits`).
    """
    ckpts, unreadable = list_checkpoints_checked(checkpointer)
    if not dry_run:
        set_aside(unreadable)
    ckpts.sort(key=lambda c: c.meta.get("unixtime", 0), reverse=True)
    needed = needed_recoverables(checkpointer)
    before = None  # the recoverables' state, to undo a half-loaded checkpoint
    for ckpt in ckpts:
        missing = sorted(needed - set(ckpt.paramfiles))
        if missing:
            if dry_run:
                continue
            logger.warning(
                f"skipping checkpoint {ckpt.path}: it lacks {missing} "
                "(interrupted save, or written by another version)"
            )
            continue
        damaged = checkpoint_problem(ckpt)  # empty, cut short, unreadable text
        if damaged:
            if not dry_run:
                logger.warning(
                    f"skipping checkpoint {ckpt.path}: {damaged} (a save killed "
                    "half-way, or a damaged file)"
                )
            continue
        if before is None:
            before = {k: _state_of(obj) for k, obj in checkpointer.recoverables.items()}
        try:
            checkpointer.load_checkpoint(ckpt)  # weights-only: see safe_load
        except UnsafeCheckpointError:
            raise
        except (EOFError, KeyError, TypeError, RuntimeError, ValueError,
                pickle.UnpicklingError, yaml.YAMLError) as err:
            if _is_truncated(err):
                if dry_run:
                    continue
                logger.warning(
                    f"skipping checkpoint {ckpt.path}: a file of it is truncated "
                    f"or corrupt ({type(err).__name__}: {err}; a save killed half-way?)"
                )
                continue
            raise ValueError(
                f"cannot resume from checkpoint {ckpt.path}: it does not fit "
                f"the current configuration ({err}). Restore the settings it "
                "was written with, or use a new output_folder (with "
                "--init_from to start from its weights)."
            ) from err
        if not dry_run:
            logger.info(f"resumed from {ckpt.path}")
        return ckpt
    if before is not None:  # a skipped checkpoint may have loaded some files
        for k, obj in checkpointer.recoverables.items():
            _restore(obj, before[k])
    if (ckpts or unreadable) and not dry_run:
        logger.warning(
            f"no complete checkpoint in {checkpointer.checkpoints_dir} (each lacks "
            f"some of {sorted(needed)} or is truncated): starting fresh; the "
            "incomplete ones are left in place"
        )
    return None


def _state_of(obj):
    """What loading a checkpoint may change in a recoverable: a copy of the
    state dict of modules and optimizers, the attributes of anything else."""
    if isinstance(obj, (torch.nn.Module, torch.optim.Optimizer)):
        return copy.deepcopy(obj.state_dict())
    return dict(vars(obj))


def _restore(obj, state):
    """Undoes a load into ``obj`` (see :func:`_state_of`)."""
    if isinstance(obj, (torch.nn.Module, torch.optim.Optimizer)):
        obj.load_state_dict(state)
    else:
        vars(obj).clear()
        vars(obj).update(state)
