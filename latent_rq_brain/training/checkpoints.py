"""Checkpoints of ``train.py``: the names of the modules that handle them.

* :mod:`latent_rq_brain.training.checkpoint_files`: finding a checkpoint
  (:func:`find_checkpoint`: a run, its ``save`` folder, one ``CKPT+*`` folder,
  ``<run>@stage<k>``) and telling whether it is whole;
* :mod:`latent_rq_brain.training.resume`: resuming the newest complete checkpoint;
* :mod:`latent_rq_brain.training.branching`: branching from another run (``--init_from``);
* :mod:`latent_rq_brain.training.checkpointer`: the guarded checkpointer (disk full
  named, debris of killed saves removed);
* :mod:`latent_rq_brain.training.disk`: the disk-full error.

This module re-exports their public names, so that older imports
(``from latent_rq_brain.training.checkpoints import find_checkpoint``) keep working;
the package's own modules import from the modules above.

Authors
 * latent-rq developers 2026
"""

from latent_rq_brain.training.branching import (  # noqa: F401
    branch_differences,
    check_branch_fits,
    load_pretrained,
    load_state,
    state_mismatch,
)
from latent_rq_brain.training.checkpoint_files import (  # noqa: F401
    BRANCH_FILES,
    ENCODER_FILES,
    TEXT_FILES,
    checkpoint_info,
    checkpoint_problem,
    file_problem,
    find_checkpoint,
    list_checkpoints_checked,
    needed_recoverables,
    newest_complete,
    read_optimizer_step,
    require_files,
    transition_checkpoint,
)
from latent_rq_brain.training.checkpointer import (  # noqa: F401
    GuardedCheckpointer,
    check_guarded,
    remove_debris,
)
from latent_rq_brain.training.disk import DiskFullError, free_space, save_error  # noqa: F401
from latent_rq_brain.training.resume import (  # noqa: F401
    check_resume_fits,
    check_start,
    recover_newest_complete,
    refuse_unsafe_files,
    resume_or_branch,
    set_aside,
)
