"""Branching from another run's checkpoint (``--init_from``): the early check
that it fits this configuration (:func:`check_branch_fits`, before anything
is written) and the load itself (:func:`load_pretrained`).

Authors
 * latent-rq developers 2026
"""

import copy
import logging

import torch  # noqa: F401 (the doctests)

from latent_rq_brain.model.architectures import EncoderSpec, arch_differences
from latent_rq_brain.sharing.safe_load import load_weights
from latent_rq_brain.targets.target_encoder import unwrap
from latent_rq_brain.training.checkpoint_files import (
    BRANCH_FILES,
    find_checkpoint,
    read_optimizer_step,
    require_files,
)
from latent_rq_brain.training.errors import UsageError
from latent_rq_brain.training.stages import StageSchedule

logger = logging.getLogger(__name__)


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
    :func:`~latent_rq_brain.model.architectures.arch_differences`) and the
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
    quantizer : latent_rq_brain.targets.quantizer.RandomProjectionQuantizer
        Checked equal to the checkpoint's.
    target_encoder : latent_rq_brain.targets.target_encoder.TargetEncoder
        Attached to the encoder (loaded when the stage trains on).
    schedule : latent_rq_brain.training.stages.StageSchedule
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
