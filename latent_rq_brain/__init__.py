"""latent-rq: BEST-RQ and Latent-RQ speech pre-training on SpeechBrain.

The method and its loaders (tools live in ``tools/``; ARCHITECTURE.md has the
data flow). Modules, one concept each:

* :mod:`latent_rq_brain.targets`: ``TargetMaker``, the one place targets are made;
* :mod:`latent_rq_brain.target_sources`: the target-source contract (where frames come from);
* :mod:`latent_rq_brain.quantizer`: frozen random-projection codebooks and their kinds;
* :mod:`latent_rq_brain.target_encoder`: the frozen snapshot feeding them;
* :mod:`latent_rq_brain.layers`: paper layer indices and quantizer source names;
* :mod:`latent_rq_brain.stages`: when snapshots are taken and what resets;
* :mod:`latent_rq_brain.masking`: span masks and the learned mask embedding;
* :mod:`latent_rq_brain.encoder`: the encoder contract; CNN + Conformer with per-layer states;
* :mod:`latent_rq_brain.architectures`: one YAML per architecture, the spec a checkpoint records;
* :mod:`latent_rq_brain.features`: padding-exact log-Mel features;
* :mod:`latent_rq_brain.heads`: the N softmax heads;
* :mod:`latent_rq_brain.sb_patches`: SpeechBrain patches (one bug fix, three speed-ups);
* :mod:`latent_rq_brain.brain`: ``LatentRQBrain``;
* :mod:`latent_rq_brain.stats`: interval statistics and cross-rank checksums;
* :mod:`latent_rq_brain.checkpoint_files`, :mod:`latent_rq_brain.resume`,
  :mod:`latent_rq_brain.branching`, :mod:`latent_rq_brain.checkpointer`:
  finding, resuming, branching and saving checkpoints
  (:mod:`latent_rq_brain.checkpoints` names them all);
* :mod:`latent_rq_brain.safe_load`: weights-only reading of every checkpoint file;
* :mod:`latent_rq_brain.output_lock`: one run per output folder;
* :mod:`latent_rq_brain.ddp_watch`: the DDP timeout and the rank that stopped answering;
* :mod:`latent_rq_brain.hparams`: thin hparams files;
* :mod:`latent_rq_brain.target_cache`: offline targets of one stage;
* :mod:`latent_rq_brain.pretrained`: encoders from checkpoints or ``random:<config>``;
* :mod:`latent_rq_brain.data`: CSV manifests and audio checks.
"""
