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

``base_hparams`` may also be a list ``[base, overlay, ...]``: the settings of
each overlay (its own, not those of its base) come on top of ``base``, in
order, then the file's own: ``hparams/small/autoencoder.yaml`` is the small
configuration plus the autoencoder's settings of ``hparams/autoencoder.yaml``.
A thin file may add settings its base lacks (an autoencoder's ``latent_dim``);
such a setting must be referred to (``<name>``) somewhere, so that a misspelt
override is an error, not a new, unused setting.
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
import yaml

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
        text = f.read()
    thin = _load(text)
    if not isinstance(thin, dict) or BASE_KEY not in thin:
        _check_added_settings(hparams_file, text, overrides)
        return hparams_file, overrides
    names = thin.pop(BASE_KEY)
    folder = os.path.dirname(os.path.abspath(hparams_file))
    paths = [os.path.normpath(os.path.join(folder, name))
             for name in (names if isinstance(names, list) else [names])]
    if isinstance(overrides, str):
        overrides = _load(overrides)
    with open(paths[0], encoding="utf-8") as f:
        base = _load(f)
    merged = {}
    for path in paths[1:]:  # overlays: their own settings, without their base
        with open(path, encoding="utf-8") as f:
            own = _load(f)
        own.pop(BASE_KEY, None)
        _check_no_merged_objects(path, own, base)
        merged.update(own)
    _check_no_merged_objects(hparams_file, thin, base)
    merged.update(thin)
    merged.update(overrides or {})
    out = io.StringIO()
    ruamel.yaml.YAML().dump(merged, out)
    return expand_hparams_file(paths[0], out.getvalue())


def _check_added_settings(full_file, text, overrides):
    """Refuses an override that is not a setting of ``full_file`` and that
    nothing refers to (``<name>``): a misspelt setting, not a new one.

    Example
    -------
    >>> _check_added_settings("f.yaml", "a: 1\\nb: !ref <c>\\n", "c: 2\\n")
    >>> _check_added_settings("f.yaml", "a: 1\\n", "aa: 2\\n")
    Traceback (most recent call last):
    ...
    ValueError: setting aa is not a key of f.yaml and nothing refers to it (<aa>): misspelt?
    """
    if not overrides:
        return
    if isinstance(overrides, str):
        overrides = _load(overrides)
    out = io.StringIO()
    ruamel.yaml.YAML().dump(overrides, out)
    every = text + out.getvalue()
    keys = _load(text)
    for key in overrides:
        if key not in keys and f"<{key}>" not in every and f"<{key}[" not in every:
            raise ValueError(f"setting {key} is not a key of {full_file} and nothing refers "
                             f"to it (<{key}>): misspelt?")


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


#: Counts that must be >= 1, and what a smaller value would do (``None``
#: allowed for the run options that mean "no limit").
POSITIVE_SETTINGS = {
    "log_interval": "optimizer steps between train-log lines (0 divides by zero)",
    "warmup_steps": "steps of LR warm-up (the Noam schedule divides by it)",
    "grad_accumulation_factor": "batches per optimizer step (0 divides by zero)",
    "ckpt_to_keep": "end-of-epoch checkpoints kept (0 would delete every one: nothing to resume)",
    "number_of_epochs": "epochs (0 trains nothing and ends as if it had)",
    "optimizer_step_limit": "optimizer steps (0 trains nothing; null: no limit)",
}
#: Those of :data:`POSITIVE_SETTINGS` that may be None (no limit).
OPTIONAL_LIMITS = ("optimizer_step_limit",)


def effective_setting(hparams, run_opts, key):
    """The value SpeechBrain's Brain uses: a command-line run option wins
    over the YAML (``--optimizer_step_limit=N`` is a run option)."""
    if run_opts is not None and key in getattr(run_opts, "overridden_args", ()):
        return getattr(run_opts, key)
    return hparams.get(key)


class _PlainLoader(yaml.SafeLoader):
    """YAML as data; any tag (``!ref``, ``!new:``...) reads as None."""


_PlainLoader.add_multi_constructor("", lambda loader, suffix, node: None)


def plain_yaml(text):
    """YAML text (or a stream) as plain data, tags read as None; {} if not a mapping.

    Example
    -------
    >>> plain_yaml("a: 5\\nb: !ref <a>\\n")
    {'a': 5, 'b': None}
    """
    data = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 (tags read as None)
    return data if isinstance(data, dict) else {}


def plain_setting(hparams_file, overrides, key):
    """A top-level setting, read before the YAML is loaded (nothing built):
    from ``overrides`` (YAML text or dict) if there, else from the file;
    None if absent or not plain data (a ``!ref``).

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "h.yaml")
    >>> with open(path, "w") as f:
    ...     _ = f.write("a: 5\\nb: !ref <a>\\nc: !new:os.getcwd\\n")
    >>> plain_setting(path, None, "a"), plain_setting(path, "a: 7", "a"), plain_setting(path, None, "b")
    (5, 7, None)
    """
    if isinstance(overrides, str):
        overrides = yaml.load(overrides, Loader=_PlainLoader)  # noqa: S506 (tags read as None)
    if isinstance(overrides, dict) and key in overrides:
        return overrides[key]
    with open(hparams_file, encoding="utf-8") as f:
        data = yaml.load(f, Loader=_PlainLoader)  # noqa: S506
    return data.get(key) if isinstance(data, dict) else None


def check_counts(hparams, run_opts=None):
    """Refuses, naming it, a count of :data:`POSITIVE_SETTINGS` below 1.

    Example
    -------
    >>> check_counts({"log_interval": 10, "warmup_steps": 0})
    Traceback (most recent call last):
    ...
    ValueError: warmup_steps: 0 must be an integer >= 1 (steps of LR warm-up (the Noam schedule divides by it))
    """
    for key, meaning in POSITIVE_SETTINGS.items():
        value = effective_setting(hparams, run_opts, key)
        if value is None and (key in OPTIONAL_LIMITS or key not in hparams):
            continue
        try:
            ok = int(value) == float(value) and int(value) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{key}: {value} must be an integer >= 1 ({meaning})")


def check_batch_length(hparams, run_opts=None):
    """Refuses a ``max_batch_len`` (seconds of audio per batch; None: batches
    of ``batch_size``) that is not a number > 0, or, with dynamic batches
    (``fixed_shapes`` off), one shorter than ``avoid_if_longer_than``: every
    utterance the run keeps must fit in a batch, or SpeechBrain's dynamic
    sampler puts each longer one alone (with ``fixed_shapes`` the buckets
    refuse an utterance that fits no batch).

    Example
    -------
    >>> check_batch_length({"max_batch_len": 60, "avoid_if_longer_than": 20.0})
    >>> check_batch_length({"max_batch_len": -5})
    Traceback (most recent call last):
    ...
    ValueError: max_batch_len: -5 must be a number of seconds > 0 (audio per batch; null: batches of batch_size)
    >>> check_batch_length({"max_batch_len": 0.5, "avoid_if_longer_than": 20.0})
    Traceback (most recent call last):
    ...
    ValueError: max_batch_len: 0.5 s cannot hold the longest utterance kept (avoid_if_longer_than: 20.0 s): raise max_batch_len to at least 20.0, or lower avoid_if_longer_than
    """
    value = effective_setting(hparams, run_opts, "max_batch_len")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"max_batch_len: {value} must be a number of seconds > 0 (audio per batch; "
            "null: batches of batch_size)"
        )
    longest = hparams.get("avoid_if_longer_than")
    if (not hparams.get("fixed_shapes") and isinstance(longest, (int, float))
            and not isinstance(longest, bool) and value < longest):
        raise ValueError(
            f"max_batch_len: {value} s cannot hold the longest utterance kept "
            f"(avoid_if_longer_than: {longest} s): raise max_batch_len to at least "
            f"{longest}, or lower avoid_if_longer_than"
        )


def check_plain_settings(values):
    """The checks of :func:`check_settings` that need nothing built: run on
    the plain values of the YAML and the command line (``values``, run
    options included; None: not plain data, checked once loaded) before
    anything is loaded or written. Keys absent from ``values`` are not checked.

    Example
    -------
    >>> check_plain_settings({"mask_prob": 0.4, "mask_length": 0})
    Traceback (most recent call last):
    ...
    ValueError: mask_length: 0 must be >= 1 (encoder frames)
    """
    given = {k: v for k, v in values.items() if v is not None}
    check_counts(given)
    check_batch_length(given)
    check_codes_and_masks(given)


def check_codes_and_masks(hparams):
    """``codebook_size >= 2``, ``mask_prob`` in (0, 1], ``mask_length >= 1``
    (those present in ``hparams``)."""
    if "codebook_size" in hparams and not _int_at_least(hparams["codebook_size"], 2):
        raise ValueError(
            f"codebook_size: {hparams['codebook_size']} must be >= 2 (with one code "
            "every target is the same: loss 0, nothing learned)"
        )
    if "mask_prob" in hparams:
        p = hparams["mask_prob"]
        try:
            ok = 0.0 < float(p) <= 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"mask_prob: {p} must be in (0, 1]")
    if "mask_length" in hparams and not _int_at_least(hparams["mask_length"], 1):
        raise ValueError(f"mask_length: {hparams['mask_length']} must be >= 1 (encoder frames)")


def _int_at_least(value, low):
    try:
        return int(value) == float(value) and int(value) >= low
    except (TypeError, ValueError):
        return False


def check_settings(hparams, run_opts=None):
    """Refuses or warns about degenerate training settings, naming each one.

    Refused: counts below 1 (:func:`check_counts`: ``log_interval``,
    ``warmup_steps``, ``grad_accumulation_factor``, ``ckpt_to_keep``,
    ``number_of_epochs``, ``optimizer_step_limit``; ``run_opts``: the
    command-line run options, which win over the YAML), ``codebook_size < 2``
    (one code is always right: loss 0), ``target_cache`` with a target
    source that changes within a stage (``target_encoder_ema``), ``mask_prob`` outside
    (0, 1], ``mask_length < 1``, a ``max_batch_len`` that is not > 0 or
    holds no longest utterance (:func:`check_batch_length`), and a ``mask_length`` that masks every frame
    of the shortest utterance allowed (``avoid_if_shorter_than``). Warned: a
    masked fraction above ``MASK_FRACTION_WARN`` there (measured with the
    training mask sampler).
    """
    import torch  # here, not at the top: train.py checks its arguments before torch loads

    from latent_rq_brain.model.masking import sample_span_mask

    check_counts(hparams, run_opts)
    check_batch_length(hparams, run_opts)
    check_codes_and_masks(hparams)
    p, length = hparams["mask_prob"], hparams["mask_length"]
    if not 0.0 < float(p) <= 1.0:
        raise ValueError(f"mask_prob: {p} must be in (0, 1]")
    if int(length) < 1:
        raise ValueError(f"mask_length: {length} must be >= 1 (encoder frames)")
    if hparams.get("target_cache") and hparams.get("target_sources") is not None:
        hparams["target_sources"].check_cacheable()  # e.g. the EMA target encoder
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
        lower = "mask_length" if int(length) > 1 else "mask_prob (mask_length is 1 already)"
        raise ValueError(
            f"{where} masks every frame: nothing is left to predict from. Lower "
            f"{lower} or raise avoid_if_shorter_than"
        )
    if fraction > MASK_FRACTION_WARN:
        logger.warning(f"{where} masks {fraction:.0%} of the frames")
