"""Finding, resuming and branching from checkpoints of ``train.py``.

Every way to name a checkpoint goes through :func:`find_checkpoint`: a run's
output folder, its ``save`` folder (newest checkpoint), one ``CKPT+*`` folder,
or ``<run folder>@stage<k>`` (the checkpoint written at the transition to
stage k). Random encoders (``random:<config>``) are the other half of the
resolver, :meth:`latent_rq_brain.pretrained.PretrainedEncoder.load`.

The files of a checkpoint are read by the class that writes them
(``quantizer.ckpt``: the quantizer, ``stage_schedule.ckpt``: the schedule,
``encoder_spec.ckpt``: :class:`~latent_rq_brain.architectures.EncoderSpec`);
``brain.ckpt`` is SpeechBrain's ``Brain._save``, read here by
:func:`read_optimizer_step`.

Authors
 * latent-rq developers 2026
"""

import copy
import errno
import logging
import os
import pathlib
import pickle
import shutil
import zipfile

import torch
import yaml

from latent_rq_brain.architectures import EncoderSpec, arch_differences
from latent_rq_brain.safe_load import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_weights,
)
from latent_rq_brain.stages import StageSchedule
from latent_rq_brain.target_encoder import unwrap
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

logger = logging.getLogger(__name__)

#: Files a checkpoint must hold to branch a new stage from it (``--init_from``).
BRANCH_FILES = ("encoder", "mask_embedding", "quantizer", "brain", "stage_schedule")
#: Files a checkpoint must hold to rebuild its encoder (PretrainedEncoder, export, s3prl).
ENCODER_FILES = ("encoder", "encoder_spec")


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


def file_problem(path):
    """None if a checkpoint file looks whole, else what is wrong with it.

    Cheap and conservative (it decides what loaders skip and what is deleted
    as debris): a file must exist and not be empty, a PyTorch file (a zip
    archive) must have its central directory, which is written last, and any
    other file (``brain.ckpt``, ``stage_schedule.ckpt``, ``encoder_spec.ckpt``:
    YAML text) must read as UTF-8 YAML.

    Example
    -------
    >>> file_problem("/nonexistent/encoder.ckpt")
    'it is missing'
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "brain.ckpt")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"optimizer_step: \\xff\\xfe")
    >>> file_problem(path)  # doctest: +ELLIPSIS
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
    elif head[:1] != b"\x80":  # not a (legacy) pickle either: YAML text
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
        problem = None if name.startswith("dataloader-") else file_problem(path)
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
                damaged = checkpoint_problem(ckpt)  # missing files: the caller's require_files
                if damaged:
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


def state_mismatch(module, state, examples=2):
    """One line on how a state dict differs from ``module``'s, or None if it fits.

    Counts missing and unexpected keys and tensors of another shape, with a
    few examples each (PyTorch's own message lists every key).

    Example
    -------
    >>> small, big = torch.nn.Linear(2, 3), torch.nn.Linear(2, 4)
    >>> state_mismatch(big, small.state_dict())
    '2 tensor(s) of another shape (weight: (3, 2) in the file, (4, 2) here; bias: (3,) in the file, (4,) here)'
    >>> state_mismatch(small, small.state_dict()) is None
    True
    """
    mine = module.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the file, {tuple(mine[k].shape)} here"
        for k in mine
        if k in state and tuple(state[k].shape) != tuple(mine[k].shape)
    ]
    parts = []
    for what, items in (("missing key(s)", missing), ("unexpected key(s)", unexpected),
                        ("tensor(s) of another shape", shapes)):
        if items:
            more = ", ..." if len(items) > examples else ""
            parts.append(f"{len(items)} {what} ({'; '.join(items[:examples])}{more})")
    return ", ".join(parts) or None


def load_state(module, path, device, what):
    """Loads a state dict file into ``module`` (strict), naming the file on error."""
    state = load_weights(path, map_location=device)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = state_mismatch(module, state) or str(err).splitlines()[0]
        raise ValueError(f"{what}: {path} does not fit the configured model: {detail}") from None


def branch_differences(ckpt, hparams):
    """Settings in which a checkpoint's model differs from the configured one.

    Compares the architecture recorded in ``encoder_spec.ckpt`` (when the
    checkpoint has one: every setting its architecture's YAML declares,
    :func:`~latent_rq_brain.architectures.arch_differences`) and the
    quantizer's settings (``quantizer.ckpt``).

    Returns
    -------
    list of str
        ``"<setting>: <value> in the checkpoint, <value> here"``, one per setting.
    """
    lines = []
    files = ckpt.paramfiles
    if "encoder_spec" in files:
        theirs = EncoderSpec.read(files["encoder_spec"])
        mine = EncoderSpec.from_hparams(hparams).config
        lines += [
            f"{key}: {a} in the checkpoint, {b} here"
            for key, a, b in arch_differences(theirs, mine)
        ]
    quantizer = hparams.get("quantizer")
    if "quantizer" in files and quantizer is not None:
        theirs = load_weights(files["quantizer"])["config"]
        mine = quantizer.config()
        for key in ("codebook_size", "codebook_dim", "seed"):
            if theirs.get(key) != mine[key]:
                lines.append(f"{key}: {theirs.get(key)} in the checkpoint, {mine[key]} here")
        # A source's input dim is the model's; its codebook count may change in
        # a branch (another layer set or anchor_codebooks: the branch's new
        # stage draws those sources afresh, check_same skips them).
        for source, value in mine["sources"].items():
            saved = theirs.get("sources", {}).get(source)
            if saved is not None and saved[0] != value[0]:
                lines.append(
                    f"quantizer source {source} input dim: {saved[0]} in the "
                    f"checkpoint, {value[0]} here (model size or feature settings)"
                )
    return lines


def check_branch_fits(hparams):
    """Raises the error a branch (``init_from``) would raise, changing nothing.

    ``train.py`` calls it before it writes anything to the output folder:
    the checkpoint must exist and hold :data:`BRANCH_FILES`, its architecture
    and quantizer settings must be the configured ones (each setting that
    differs is named, in a few lines), and its encoder and mask embedding
    must load (strictly, into copies) with the same quantizer buffers.

    Returns the checkpoint.
    """
    from latent_rq_brain.arguments import UsageError

    init_from = hparams["init_from"]
    what = f"--init_from={init_from}"
    try:
        ckpt = find_checkpoint(init_from, needed=BRANCH_FILES)
        files = require_files(ckpt, BRANCH_FILES, what)
        differences = branch_differences(ckpt, hparams)
    except ValueError as err:  # names the file (safe_load's errors are ValueErrors)
        raise UsageError(f"{what}: {err}") from None
    if differences:
        raise UsageError(
            f"{what}: checkpoint {ckpt.path} was trained with other model settings "
            "than this config:\n  " + "\n  ".join(differences)
            + "\nBranch with the settings it was trained with (the same hparams file "
            "and overrides), or start a new run without --init_from."
        )
    try:
        modules = hparams["modules"]
        for name in ("encoder", "mask_embedding"):
            load_state(copy.deepcopy(modules[name]).cpu(), files[name], "cpu", name)
        hparams["quantizer"].check_same(files["quantizer"])
    except ValueError as err:
        raise UsageError(f"{what}: checkpoint {ckpt.path} does not fit this config: {err}") from None
    return ckpt


def load_pretrained(ckpt_dir, modules, quantizer, target_encoder, schedule, device):
    """Branches from another run's checkpoint (``--init_from``).

    Loads the encoder and the mask embedding, checks the quantizer is the
    same, and sets the stage of ``schedule``; not the heads nor the optimizer.
    A checkpoint in a stage that this config trains on (no transition due at
    its step) also gives its target encoder and fitted target sources.

    Arguments
    ---------
    ckpt_dir : str
        Anything :func:`find_checkpoint` resolves (the newest complete one).
    modules : torch.nn.ModuleDict
        The brain's modules (``encoder``, ``mask_embedding``).
    quantizer : latent_rq_brain.quantizer.RandomProjectionQuantizer
        Checked equal to the checkpoint's.
    target_encoder : latent_rq_brain.target_encoder.TargetEncoder
        Attached to the encoder (loaded when the stage trains on).
    schedule : latent_rq_brain.stages.StageSchedule
        Its ``stage`` becomes the checkpoint's.
    device : str or torch.device
        Where the weights are loaded.

    Returns
    -------
    int
        The checkpoint's optimizer step (the brain's from now on).
    """
    what = f"--init_from={ckpt_dir}"
    try:
        found = find_checkpoint(ckpt_dir, needed=BRANCH_FILES)  # newest complete
        files = require_files(found, BRANCH_FILES, what)
        for name in ("encoder", "mask_embedding"):
            load_state(unwrap(getattr(modules, name)), files[name], device, what)
        quantizer.check_same(files["quantizer"])
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from err
    optimizer_step = read_optimizer_step(files["brain"])
    schedule.stage = StageSchedule.read(files["stage_schedule"])["stage"]
    if schedule.stage > 0 and schedule.due(optimizer_step) is None:
        # trains on in the checkpoint's stage: its targets are needed as they were
        if "target_encoder" not in files:
            raise ValueError(
                f"{what}: {found.path} is in stage {schedule.stage}, which "
                "this config trains on, but it lacks target_encoder.ckpt; set "
                f"initial_stage above {schedule.stage} to branch a new stage"
            )
        target_encoder._load(files["target_encoder"])
        quantizer._load(files["quantizer"])  # its fitted sources too
    logger.info(
        f"initialised from {found.path}: stage {schedule.stage}, "
        f"optimizer step {optimizer_step}"
    )
    return optimizer_step


def check_start(schedule, target_encoder, optimizer_step, source, resumed, checkpoints_dir):
    """Refuses a start that has no weights for its stage.

    Arguments
    ---------
    schedule : latent_rq_brain.stages.StageSchedule
        After resuming or branching.
    target_encoder : latent_rq_brain.target_encoder.TargetEncoder
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
    >>> from latent_rq_brain.target_encoder import TargetEncoder
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
    (:class:`~latent_rq_brain.safe_load.UnsafeCheckpointError`). A corrupt file
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


def needed_recoverables(checkpointer):
    """Names of the recoverables a checkpoint must hold to be resumed."""
    optional = checkpointer.optional_recoverables
    return {
        k
        for k in checkpointer.recoverables
        if not optional.get(k) and not k.startswith("dataloader-")
    }


# ---------------------------------------------------------------- saving
class DiskFullError(OSError):
    """A checkpoint could not be written for lack of space (names the folder)."""


#: What torch and Python say when a write runs out of space.
_WRITE_FAILED = ("unexpected pos", "file write failed", "No space left", "Disk quota")


def free_space(folder):
    """Free space on the file system of ``folder``, e.g. ``'1.2 GB'``.

    Example
    -------
    >>> free_space("/").endswith("B")
    True
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if free < 1000 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1000


def save_error(err, folder):
    """A :class:`DiskFullError` naming ``folder`` and its free space if ``err``
    (from a save) says a write ran out of space, else None."""
    out_of_space = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not out_of_space and not any(s in str(err) for s in _WRITE_FAILED):
        return None
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DiskFullError(
        errno.ENOSPC,
        f"cannot write a checkpoint into {folder}: the disk is full or over quota "
        f"({free_space(folder)} free there; {type(err).__name__}: {first[:200]}). Free "
        "some space and run the same command again: it resumes from the newest "
        "complete checkpoint (the half-written one is skipped, then removed)",
    )


class GuardedCheckpointer(Checkpointer):
    """SpeechBrain's Checkpointer with two guards on every save; swapped in by
    assigning ``__class__`` (:func:`guard_checkpointer`), same state.

    * a save that runs out of space raises :class:`DiskFullError` naming the
      folder and its free space (upstream: torch's ``[enforce fail at
      inline_container.cc] unexpected pos``);
    * once a save is complete, the debris of killed saves is removed
      (:func:`remove_debris`).
    """

    def save_checkpoint(self, *args, **kwargs):
        """See :meth:`speechbrain.utils.checkpoints.Checkpointer.save_checkpoint`."""
        try:
            saved = super().save_checkpoint(*args, **kwargs)
        except (OSError, RuntimeError) as err:
            explained = save_error(err, self.checkpoints_dir)
            if explained is None:
                raise
            raise explained from err
        remove_debris(self)
        return saved


def guard_checkpointer(checkpointer):
    """Makes ``checkpointer`` a :class:`GuardedCheckpointer` (in place); returns it."""
    if type(checkpointer) is Checkpointer:
        checkpointer.__class__ = GuardedCheckpointer
    return checkpointer


def remove_debris(checkpointer):
    """Removes what killed saves left, now that a newer checkpoint is complete.

    On the main process: ``incomplete-CKPT+*`` folders (set aside by a resume),
    ``CKPT+*`` folders without a readable ``CKPT.yaml``, checkpoints older than
    the newest complete one that hold an empty or truncated file, and those
    lacking a file, except a transition checkpoint that is the only one of
    its stage (kept forever). Each removal is logged. Returns the removed paths.
    """
    if not if_main_process():
        return []
    folder = pathlib.Path(checkpointer.checkpoints_dir)
    ckpts, unreadable = list_checkpoints_checked(checkpointer)
    needed = needed_recoverables(checkpointer)
    problems = {c.path: checkpoint_problem(c, needed) for c in ckpts}
    complete = [c for c in ckpts if problems[c.path] is None]
    if not complete:
        return []
    newest = max(c.meta.get("unixtime", 0) for c in complete)
    stages_kept = {c.meta.get("transition_to_stage") for c in complete} - {None}
    debris = [(p, "set aside as incomplete") for p in folder.glob("incomplete-CKPT+*")]
    debris += [(p, reason) for p, reason in unreadable]
    debris += [(p, "no CKPT.yaml") for p in folder.glob("CKPT+*")
               if p.is_dir() and not (p / "CKPT.yaml").exists()]
    for ckpt in ckpts:
        problem = problems[ckpt.path]
        if problem is None or ckpt.meta.get("unixtime", 0) >= newest:
            continue
        stage = ckpt.meta.get("transition_to_stage")
        damaged = "lacks" not in problem
        if damaged or stage is None or stage in stages_kept:
            debris.append((ckpt.path, problem))
    for path, reason in debris:
        shutil.rmtree(path, ignore_errors=True)
        logger.warning(f"removed incomplete checkpoint {path} ({reason}): a newer one is complete")
    return [p for p, _ in debris]
