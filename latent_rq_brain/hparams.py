"""Thin hparams files: a few settings on top of a full recipe YAML.

A thin file names its full YAML with ``base_hparams`` (relative to the thin
file) and sets only what differs, in HyperPyYAML syntax (``!ref``,
``!PLACEHOLDER``)::

    base_hparams: latent_rq_schedule.yaml
    output_folder: !ref results/latent_rq_stage1/<seed>
    initial_stage: 1
    init_from: !PLACEHOLDER

Its settings are overrides of the base file, and command-line overrides win
over both: ``python train.py hparams/latent_rq_stage1.yaml --init_from=...``
is ``python train.py hparams/latent_rq_schedule.yaml --initial_stage=1 ...``.
HyperPyYAML's ``!include`` nests a file under a key, so it cannot do this.
HyperPyYAML merges an override mapping into the base's key by key, keeping the
base's tag: a thin file gives a different object's arguments as a list
(``data_prep: !name:f [a, b]``), which replaces the base's whole.

The module imports no torch at load time (``train.py`` checks its command
line with it before the heavy imports).

Authors
 * latent-rq developers 2026
"""

import io
import logging
import os

import ruamel.yaml

logger = logging.getLogger(__name__)

#: Masked fraction of the shortest utterance above which start-up warns.
MASK_FRACTION_WARN = 0.75

BASE_KEY = "base_hparams"


def _load(text):
    return ruamel.yaml.YAML().load(text) or {}


def expand_hparams_file(hparams_file, overrides=None):
    """``(full YAML path, overrides as YAML text)`` of a thin or full file.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "base.yaml"), "w") as f:
    ...     _ = f.write("seed: 1\\nout: !ref r/<seed>\\nlimit: 10\\n")
    >>> with open(os.path.join(folder, "thin.yaml"), "w") as f:
    ...     _ = f.write("base_hparams: base.yaml\\nout: !ref s/<seed>\\nlimit: 5\\n")
    >>> path, text = expand_hparams_file(os.path.join(folder, "thin.yaml"), "limit: 7")
    >>> os.path.basename(path), text
    ('base.yaml', 'out: !ref s/<seed>\\nlimit: 7\\n')
    """
    with open(hparams_file, encoding="utf-8") as f:
        thin = _load(f)
    if not isinstance(thin, dict) or BASE_KEY not in thin:
        return hparams_file, overrides
    base = os.path.normpath(
        os.path.join(os.path.dirname(os.path.abspath(hparams_file)), thin.pop(BASE_KEY))
    )
    if isinstance(overrides, str):
        overrides = _load(overrides)
    with open(base, encoding="utf-8") as f:
        _check_no_merged_objects(hparams_file, thin, _load(f))
    thin.update(overrides or {})
    out = io.StringIO()
    ruamel.yaml.YAML().dump(thin, out)
    return expand_hparams_file(base, out.getvalue())


def _tag(node):
    return getattr(getattr(node, "tag", None), "value", None)


def _check_no_merged_objects(thin_file, thin, base):
    """Refuses a thin setting that HyperPyYAML would merge into a different
    object: an override that is a mapping updates the base's mapping key by
    key and keeps the base's tag (``!new:``, ``!name:``, ...), so a tagged
    mapping over another tag would build the base's class with mixed arguments.

    Example
    -------
    >>> base = _load("prep: !name:a.f\\n    x: 1\\nopts:\\n    n: 1\\n")
    >>> _check_no_merged_objects("t.yaml", _load("opts:\\n    n: 2\\n"), base)
    >>> _check_no_merged_objects("t.yaml", _load("prep: !name:b.g\\n    y: 2\\n"), base)
    Traceback (most recent call last):
    ...
    ValueError: t.yaml: prep: !name:b.g would be merged into the base's prep: !name:a.f (HyperPyYAML merges mappings): give the arguments as a list, or change the base
    """
    for key, value in thin.items():
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and _tag(value) != _tag(old):
            raise ValueError(
                f"{thin_file}: {key}: {_tag(value) or 'a mapping'} would be merged into "
                f"the base's {key}: {_tag(old) or 'mapping'} (HyperPyYAML merges "
                "mappings): give the arguments as a list, or change the base"
            )


def check_settings(hparams):
    """Refuses or warns about degenerate training settings, naming each one.

    Refused: ``codebook_size < 2`` (one code is always right: loss 0),
    ``target_cache`` with ``target_encoder_ema`` (targets change every step),
    ``mask_prob`` outside (0, 1], ``mask_length < 1``, and a ``mask_length``
    that masks every frame of the shortest utterance allowed
    (``avoid_if_shorter_than``). Warned: a masked fraction above
    ``MASK_FRACTION_WARN`` there (measured with the training mask sampler).
    """
    import torch  # here, not at the top: train.py checks its arguments before torch loads

    from latent_rq_brain.masking import sample_span_mask

    if int(hparams["codebook_size"]) < 2:
        raise ValueError(
            f"codebook_size: {hparams['codebook_size']} must be >= 2 (with one code "
            "every target is the same: loss 0, nothing learned)"
        )
    p, length = hparams["mask_prob"], hparams["mask_length"]
    if not 0.0 < float(p) <= 1.0:
        raise ValueError(f"mask_prob: {p} must be in (0, 1]")
    if int(length) < 1:
        raise ValueError(f"mask_length: {length} must be >= 1 (encoder frames)")
    if hparams.get("target_encoder_ema") and hparams.get("target_cache"):
        raise ValueError(
            "target_cache: True cannot be used with target_encoder_ema: True: the EMA "
            "target encoder changes every step, so its targets cannot be computed once "
            "per stage. Set target_cache: False."
        )
    features = hparams.get("features")
    shortest = hparams.get("avoid_if_shorter_than")
    if features is None or not shortest:
        return
    n_samples = torch.tensor([int(float(shortest) * hparams["sample_rate"])])
    frames = int(features.encoder_lengths(features.frame_lengths(n_samples))[0])
    gen = torch.Generator().manual_seed(0)
    fraction = float(sample_span_mask(torch.full((256,), max(frames, 1)), p, length, gen)
                     .float().mean())
    where = (f"mask_length: {length} (mask_prob: {p}) on the shortest utterances "
             f"(avoid_if_shorter_than: {shortest} s = {frames} encoder frames)")
    if fraction >= 0.999:
        raise ValueError(
            f"{where} masks every frame: nothing is left to predict from. Lower "
            "mask_length or raise avoid_if_shorter_than"
        )
    if fraction > MASK_FRACTION_WARN:
        logger.warning(f"{where} masks {fraction:.0%} of the frames")
