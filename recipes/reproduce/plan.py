"""The plan of the mini-scale reproduction: scales, layer sets, variants,
checkpoint steps, and where a segment's checkpoint is.

Read by the runner (:mod:`recipes.reproduce.reproduce`), the report
(:mod:`recipes.reproduce.report`), the target diagnosis and ``tools/bench.py``;
it imports none of them.

Authors
 * latent-rq developers 2026
"""

import glob
import os

import yaml
from speechbrain.core import INTRA_EPOCH_CKPT_FLAG

from latent_rq_brain.training.hparams import plain_setting

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
#: scale -> the configuration (a thin YAML over hparams/small/latent_rq.yaml: the
#: architecture has one home; the layer sets of Table 2 are its ``target_layers``
#: and ``layer_sets``, :func:`layer_sets`) and steps S
SCALES = {
    "cpu": {"hparams": "hparams/small/reproduce.yaml", "steps": 3000},
    "gpu": {"hparams": "hparams/small/reproduce_gpu.yaml", "steps": 20000},
}


def layer_sets(scale):
    """The layer sets of Table 2, read from the scale's YAML: ``middle`` is its
    ``target_layers``, the others (``shallow``, ``deep``) its ``layer_sets``.

    Example
    -------
    >>> layer_sets("cpu")
    {'middle': [2, 3], 'shallow': [0, 1], 'deep': [4, 5]}
    """
    path = os.path.join(ROOT, SCALES[scale]["hparams"])
    sets = {"middle": plain_setting(path, None, "target_layers")}
    sets.update(plain_setting(path, None, "layer_sets") or {})
    return sets


#: latent-target variants beyond the paper: name -> the YAML settings that make it
#: (README, "Latent-target variants"); each runs the scaled schedule from BEST-RQ's
#: checkpoint at 0.2 S, like the ``schedule`` arm
VARIANTS = {
    "anchor2": {"anchor_codebooks": 2},
    "pca": {"target_projection": "pca"},
    "kmeans": {"target_codebooks": "kmeans"},
    "pca_kmeans": {"target_projection": "pca", "target_codebooks": "kmeans"},
    "kmeans_anchor2": {"target_codebooks": "kmeans", "anchor_codebooks": 2},
    "pca_kmeans_anchor2": {"target_projection": "pca", "target_codebooks": "kmeans",
                           "anchor_codebooks": 2},
    "ema_anchor2": {"target_encoder_ema": True, "target_cache": False, "anchor_codebooks": 2,
                    "ema_decay": 0.995, "ema_end_decay": 0.999, "ema_anneal_steps": 1000},
}


#: layer regularisers against collapse (README, "SIGReg against collapse"): name ->
#: the YAML settings; each acts from step 0 (arm ``best_rq_<name>``) and in the
#: stages branched from it
REGULARIZERS = {
    "sigreg002": {"layer_regularizer": "sigreg", "layer_regularizer_weight": 0.02},
    "sigreg005": {"layer_regularizer": "sigreg", "layer_regularizer_weight": 0.05},
    "sigreg005clean": {"layer_regularizer": "sigreg", "layer_regularizer_weight": 0.05,
                       "layer_regularizer_pass": "clean"},
    "sigreg001clean": {"layer_regularizer": "sigreg", "layer_regularizer_weight": 0.01,
                       "layer_regularizer_pass": "clean"},
    "whiten005": {"layer_regularizer": "whitening", "layer_regularizer_weight": 0.05,
                  "layer_regularizer_whitening_limit": 3.0},
}


#: other encoders for BEST-RQ at the reproduction's scale (arm ``best_rq_<name>``):
#: name -> the YAML settings that make it. The Zipformer-like encoder at the
#: Conformer's parameter count (12 layers, d_ffn 232: 1.38M encoder parameters
#: against the 6-layer Conformer's 1.38M, front-end included); its target
#: layers sit at the Conformer's relative depths ((l + 1) / L = 3/6, 4/6).
ENCODERS = {
    "zipformer": {"encoder_architecture": "zipformer", "num_encoder_layers": 12, "d_ffn": 232,
                  "target_layers": [5, 7]},
}


def scaled_steps(scale):
    """Checkpoint steps (every S/10) and the schedule's transitions (0.2/0.5/0.8 S).

    Example
    -------
    >>> scaled_steps("cpu")["transitions"]
    [600, 1500, 2400]
    """
    S = SCALES[scale]["steps"]
    return {
        "S": S,
        "checkpoints": [S * k // 10 for k in range(1, 11)],
        "transitions": [S * 2 // 10, S * 5 // 10, S * 8 // 10],
    }


def _override_args(values):
    out = []
    for k, v in values.items():
        if isinstance(v, (list, tuple)):
            v = "[" + ",".join(str(x) for x in v) + "]"
        out.append(f"--{k}={v}")
    return out


def checkpoint_at(run_folder, step):
    """The ``CKPT+`` folder of ``run_folder/save`` written at optimizer step ``step``.

    The end-of-segment checkpoint (not a transition checkpoint of the same step);
    ``None`` if there is none.
    """
    found = None
    for ckpt in sorted(glob.glob(os.path.join(run_folder, "save", "CKPT+*"))):
        brain = os.path.join(ckpt, "brain.ckpt")
        meta = os.path.join(ckpt, "CKPT.yaml")
        if not (os.path.isfile(brain) and os.path.isfile(meta)):
            continue
        with open(meta, encoding="utf-8") as f:
            m = yaml.safe_load(f) or {}
        if "transition_to_stage" in m or m.get(INTRA_EPOCH_CKPT_FLAG):
            continue
        with open(brain, encoding="utf-8") as f:
            b = yaml.safe_load(f) or {}
        if int(b.get("optimizer_step", -1)) == step:
            found = ckpt
    return found
