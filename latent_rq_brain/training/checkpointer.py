"""The run's checkpointer: SpeechBrain's, with two guards on every save
(:class:`GuardedCheckpointer`, declared in the training YAML).

Authors
 * latent-rq developers 2026
"""

import logging
import pathlib
import shutil

from latent_rq_brain.training.checkpoint_files import (
    checkpoint_problem,
    list_checkpoints_checked,
    needed_recoverables,
)
from latent_rq_brain.training.disk import save_error
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import if_main_process

logger = logging.getLogger(__name__)


class GuardedCheckpointer(Checkpointer):
    """SpeechBrain's Checkpointer with two guards on every save; the training
    YAML declares it (``checkpointer: !new:latent_rq_brain.training.checkpointer.GuardedCheckpointer``).

    * a save that runs out of space raises :class:`~latent_rq_brain.training.disk.DiskFullError` naming the
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


def check_guarded(checkpointer, hparams_file):
    """Warns when a training YAML declares a plain SpeechBrain ``Checkpointer``
    (its saves would lose the guards of :class:`GuardedCheckpointer`)."""
    if checkpointer is not None and not isinstance(checkpointer, GuardedCheckpointer):
        logger.warning(
            f"{hparams_file}: checkpointer is a {type(checkpointer).__name__}, not a "
            "latent_rq_brain.training.checkpointer.GuardedCheckpointer: a full disk is not "
            "named and the debris of killed saves is not removed"
        )
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
