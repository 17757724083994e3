"""latent-rq: BEST-RQ and Latent-RQ speech pre-training on SpeechBrain.

Modules, one paper concept each:

* :mod:`latent_rq_brain.quantizer`: frozen random-projection codebooks;
* :mod:`latent_rq_brain.target_encoder`: the frozen snapshot feeding them;
* :mod:`latent_rq_brain.stages`: when snapshots are taken and what resets;
* :mod:`latent_rq_brain.masking`: span masks and the learned mask embedding;
* :mod:`latent_rq_brain.encoder`: CNN + Conformer with per-layer states;
* :mod:`latent_rq_brain.features`: padding-exact log-Mel features;
* :mod:`latent_rq_brain.heads`: the N softmax heads;
* :mod:`latent_rq_brain.brain`: ``LatentRQBrain``;
* :mod:`latent_rq_brain.data`: CSV manifests and audio checks.
"""
