"""Training: the Brains, the stage schedule, statistics and guards, data and
manifests, thin hparams files and command-line checks, and checkpoints
(finding, resuming, branching, saving)."""
