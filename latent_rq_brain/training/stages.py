"""The stage schedule: when the target encoder is replaced, and what that resets.

Stage 0 is BEST-RQ (targets from Mel frames). Each transition ``k`` (at
optimizer step ``stage_transitions[k - 1]``) starts stage ``k`` (Latent-RQ):

1. the target encoder becomes a frozen snapshot of the current encoder (and the
   data-fitted target sources, if any, are fitted on it: PCA, k-means);
2. the softmax heads are re-initialised (seeded, identically on every rank);
3. the optimizer and the LR scheduler are reset;
4. a checkpoint is written, tagged with the stage.

The paper's random projections and codebooks never change. The schedule itself only decides *when*;
:meth:`latent_rq_brain.training.brain.LatentRQBrain.transition` does the work, the same
code for a scheduled run and for ``--init_from`` branching.

Authors
 * latent-rq developers 2026
"""

import yaml

from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)


@register_checkpoint_hooks
class StageSchedule:
    """Current stage and the optimizer steps at which the next ones start.

    Arguments
    ---------
    stage_transitions : list of int
        Increasing optimizer steps; transition k starts stage k (1-based).
    initial_stage : int
        The lowest stage this run trains in. 0 for BEST-RQ. A branched run
        (``--init_from``) starts from the stage of the weights it loads and
        transitions to ``initial_stage`` before its first step.

    Example
    -------
    >>> s = StageSchedule([100, 250, 400])
    >>> [s.stage_for_step(x) for x in (0, 99, 100, 399, 400, 10**6)]
    [0, 0, 1, 2, 3, 3]
    >>> s.due(100), s.due(99)
    (1, None)
    >>> StageSchedule([], initial_stage=2).due(0)
    2
    """

    def __init__(self, stage_transitions=(), initial_stage=0):
        steps = [int(x) for x in (stage_transitions or [])]
        if any(b <= a for a, b in zip(steps, steps[1:])) or any(x <= 0 for x in steps):
            raise ValueError(
                f"stage_transitions must be positive and increasing, got {steps}"
            )
        if int(initial_stage) < 0:
            raise ValueError(f"initial_stage must be >= 0, got {initial_stage}")
        self.transitions = steps
        self.initial_stage = int(initial_stage)
        self.stage = 0  # the stage of the weights; moved on by transitions

    def stage_for_step(self, step):
        """The stage the schedule asks for at optimizer step ``step``."""
        passed = sum(1 for s in self.transitions if step >= s)
        return max(self.initial_stage, passed)

    def due(self, step):
        """The stage to move to now, or None if the current one is right."""
        target = self.stage_for_step(step)
        return target if target > self.stage else None

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump({"stage": self.stage, "transitions": self.transitions}, f)

    @staticmethod
    def read(path):
        """``{"stage": int, "transitions": [int]}`` of a ``stage_schedule.ckpt``."""
        with open(path, encoding="utf-8") as f:
            saved = yaml.safe_load(f)
        return {"stage": int(saved["stage"]), "transitions": saved.get("transitions", [])}

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        del end_of_epoch
        self.stage = self.read(path)["stage"]
