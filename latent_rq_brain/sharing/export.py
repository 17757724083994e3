"""Export a checkpoint as a shareable SpeechBrain model folder.

``python -m latent_rq_brain.sharing.export RUN --out DIR`` (``RUN``: a run's output
folder, its ``save`` folder or one ``CKPT+`` folder) writes what SpeechBrain
users publish on a model hub:

* ``hyperparams.yaml``: the encoder (:class:`~latent_rq_brain.sharing.pretrained.PretrainedEncoder`
  with its architecture), ``modules`` and a ``pretrainer``;
* ``encoder.ckpt``: its weights;
* ``README.md``: a model card (method, stage, step, data, layers, downsample
  rate, how to load, probe / fine-tuning numbers given with ``--results``);
* ``SHA256SUMS``: the SHA-256 of each file, written last.

The folder is written into a temporary sibling and renamed into place, so a
killed export leaves the previous one whole; ``--out`` may not be the run
folder or inside it, and an encoder with NaN or Inf weights is refused.

A folder someone sent you: load it with :func:`load_model_folder`, which
checks every file against ``SHA256SUMS``, reads ``hyperparams.yaml`` as plain
data (any tag but the three the exporter writes is refused, nothing is built
from the file; sizes are bounded before anything is allocated) and
``encoder.ckpt`` weights-only (finite values only), and builds the encoder
from this project's own architecture::

    from latent_rq_brain.sharing.export import load_model_folder
    enc = load_model_folder("DIR")  # a PretrainedEncoder
    hidden_states, enc_lens = enc(wavs, wav_lens)

SpeechBrain's ``from_hparams`` is for trusted folders only: HyperPyYAML
executes what ``hyperparams.yaml`` says (``!apply:``, ``!new:``,
``!!python/object/apply``), so a folder you did not write can run any code.
It loads back offline and returns the hidden states of
:class:`PretrainedEncoder` (latent-rq must be importable, e.g.
``pip install /path/to/latent-rq``, or ``pip install -e`` of a clone)::

    from latent_rq_brain.sharing.export import EncoderInterface
    enc = EncoderInterface.from_hparams(source="DIR", savedir="/tmp/DIR")
    hidden_states, enc_lens = enc.encode_batch(wavs, wav_lens)
    # or SpeechBrain's class: same (hidden_states, enc_lens)
    from speechbrain.inference.encoders import WaveformEncoder
    hidden_states, enc_lens = WaveformEncoder.from_hparams(source="DIR", savedir="/tmp/DIR").encode_batch(wavs, wav_lens)

Authors
 * latent-rq developers 2026
"""

import argparse
import ctypes
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile

import ruamel.yaml
import torch
import yaml

from speechbrain.inference.interfaces import Pretrained

from latent_rq_brain.model.architectures import ARCHITECTURE_KEY, DEFAULT_ARCHITECTURE
from latent_rq_brain.sharing.pretrained import PretrainedEncoder, find_checkpoint
from latent_rq_brain.sharing.safe_load import check_finite, load_weights
from latent_rq_brain.training.checkpoint_files import ENCODER_FILES

#: Files of an exported folder, and its manifest (``sha256sum -c`` format), written last.
EXPORT_FILES = ("encoder.ckpt", "hyperparams.yaml", "README.md")
MANIFEST = "SHA256SUMS"

#: The only tags :func:`load_model_folder` accepts: those :func:`hyperparams_text` writes,
#: and the encoder's tag of folders written before the package had sub-packages
#: (its old module path is an alias of the new one: see ``latent_rq_brain.MOVED``).
ENCODER_TAG = "!new:latent_rq_brain.sharing.pretrained.PretrainedEncoder"
ENCODER_TAGS = (ENCODER_TAG, "!new:latent_rq_brain.pretrained.PretrainedEncoder")
SAFE_TAGS = ENCODER_TAGS + ("!new:speechbrain.utils.parameter_transfer.Pretrainer", "!ref")


class UnsafeModelFolderError(ValueError):
    """A model folder whose ``hyperparams.yaml`` asks to run code: refused."""


class _PlainDataLoader(yaml.SafeLoader):
    """YAML as plain data: the exporter's own tags become ``{"__tag__": tag, ...}``
    markers (nothing is imported or built), any other tag is refused."""


def _construct_tagged(loader, suffix, node):
    del suffix
    tag = node.tag
    if tag not in SAFE_TAGS:
        raise UnsafeModelFolderError(
            f"{loader.name}, line {node.start_mark.line + 1}: tag {tag} is refused: "
            "an exported latent-rq folder holds only "
            f"{', '.join(SAFE_TAGS)}, and SpeechBrain's from_hparams would run this one "
            "(it can execute any code). Do not load this folder with from_hparams"
        )
    if isinstance(node, yaml.MappingNode):
        return {"__tag__": tag, **loader.construct_mapping(node, deep=True)}
    return {"__tag__": tag, "value": loader.construct_scalar(node)}


_PlainDataLoader.add_multi_constructor("", _construct_tagged)


def read_model_settings(path):
    """``(config, info)`` of an exported folder's ``hyperparams.yaml``, read
    as plain data (:class:`UnsafeModelFolderError` for any other tag).

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "hyperparams.yaml")
    >>> with open(path, "w") as f:
    ...     _ = f.write("x: !apply:os.system ['touch /tmp/pwned']\\n")
    >>> read_model_settings(path)
    Traceback (most recent call last):
    ...
    latent_rq_brain.sharing.export.UnsafeModelFolderError: .../hyperparams.yaml, line 1: tag !apply:os.system is refused: ...
    """
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=_PlainDataLoader)  # noqa: S506 (safe: see the class)
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from None
    encoder = data.get("encoder") if isinstance(data, dict) else None
    if not isinstance(encoder, dict) or encoder.get("__tag__") not in ENCODER_TAGS:
        raise ValueError(
            f"{path} defines no `encoder: {ENCODER_TAG}`: not a folder written by "
            "python -m latent_rq_brain.sharing.export"
        )
    config, info = encoder.get("config"), encoder.get("info") or {}
    if not isinstance(config, dict) or not isinstance(info, dict):
        raise ValueError(f"{path}: the encoder's config and info must be mappings")
    return config, info


def load_model_folder(folder, map_location="cpu"):
    """The encoder of a model folder written by :func:`export`, loaded safely.

    The settings are read as data (:func:`read_model_settings`), checked to
    be plain numbers (:func:`latent_rq_brain.model.architectures.check_arch_values`),
    the encoder is built from this project's architecture and ``encoder.ckpt``
    is read weights-only. Nothing in the folder can run code, unlike
    SpeechBrain's ``from_hparams`` (trusted folders only).

    The folder's files are checked against its :data:`MANIFEST`
    (:func:`check_manifest`: a folder whose files were changed, mixed with
    another export's or cut short is refused, naming the file), the
    architecture settings against their bounds
    (:data:`latent_rq_brain.sharing.pretrained.ARCH_BOUNDS`) before anything is
    allocated, and the weights must be finite.

    Returns
    -------
    PretrainedEncoder
        Frozen, in eval mode; same outputs as the exported encoder.
    """
    config, info = read_model_settings(os.path.join(folder, "hyperparams.yaml"))  # data only
    check_manifest(folder)
    try:
        encoder = PretrainedEncoder(config, info)
    except ValueError as err:
        raise ValueError(f"{os.path.join(folder, 'hyperparams.yaml')}: {err}") from None
    path = os.path.join(folder, "encoder.ckpt")
    state = load_weights(path, map_location=map_location)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    check_finite(state, path)
    try:
        encoder.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{path} does not fit the encoder described in its hyperparams.yaml: {err}"
        ) from None
    return encoder.to(map_location)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(folder, names=EXPORT_FILES):
    """Writes ``folder/SHA256SUMS`` (``<sha256>  <file>`` lines; ``sha256sum -c``
    checks it) over ``names``."""
    lines = "".join(f"{_sha256(os.path.join(folder, n))}  {n}\n" for n in names)
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def check_manifest(folder):
    """Raises ``ValueError`` naming the file unless every file listed in the
    folder's :data:`MANIFEST` (which must list :data:`EXPORT_FILES`) has its hash.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name in EXPORT_FILES:
    ...     _ = open(os.path.join(d, name), "w").write(name)
    >>> write_manifest(d)
    >>> check_manifest(d)
    >>> _ = open(os.path.join(d, "encoder.ckpt"), "a").write("changed")
    >>> check_manifest(d)
    Traceback (most recent call last):
    ...
    ValueError: .../encoder.ckpt does not match its SHA-256 in .../SHA256SUMS: the folder was changed, mixed with another export or cut short (an export killed half-way?); export it again
    """
    manifest = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise ValueError(f"model folder {folder} does not exist")
    try:
        with open(manifest, encoding="utf-8") as f:
            listed = dict(reversed(ln.strip().split(None, 1)) for ln in f if ln.strip())
    except FileNotFoundError:
        raise ValueError(
            f"{folder} has no {MANIFEST}: not a complete folder written by python -m "
            "latent_rq_brain.sharing.export (an export killed half-way, or an older export); "
            "export it again"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"cannot read {manifest}: {err}; export the folder again") from None
    missing = [n for n in EXPORT_FILES if n not in listed]
    if missing:
        raise ValueError(f"{manifest} does not list {missing}; export the folder again")
    for name, digest in listed.items():
        path = os.path.join(folder, name)
        if os.path.basename(name) != name:
            raise ValueError(f"{manifest} lists {name!r}, not a file of the folder")
        try:
            actual = _sha256(path)
        except OSError as err:
            raise ValueError(f"cannot read {path} ({err}), listed in {manifest}") from None
        if actual != digest:
            raise ValueError(
                f"{path} does not match its SHA-256 in {manifest}: the folder was changed, "
                "mixed with another export or cut short (an export killed half-way?); "
                "export it again"
            )


class EncoderInterface(Pretrained):
    """SpeechBrain inference interface of an exported encoder.

    ``from_hparams(source=DIR, savedir=...)`` on a folder written by
    :func:`export`; the hyperparams must define ``encoder`` (a
    :class:`PretrainedEncoder`).
    """

    MODULES_NEEDED = ["encoder"]

    def encode_batch(self, wavs, wav_lens=None):
        """``(hidden_states, enc_lens)`` of (B, S) 16 kHz waveforms and (B,)
        relative lengths: the output of :meth:`PretrainedEncoder.forward`."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        return self.mods.encoder(wavs.float().to(self.device), wav_lens.to(self.device))

    def encode_file(self, path, **kwargs):
        """Hidden states (list of (1, T, d)) of one audio file (resampled to 16 kHz)."""
        wav = self.load_audio(path, **kwargs)
        states, _ = self.encode_batch(wav.unsqueeze(0), torch.tensor([1.0]))
        return states

    def forward(self, wavs, wav_lens=None):
        """Same as :meth:`encode_batch`."""
        return self.encode_batch(wavs, wav_lens)


def method_name(info):
    """``BEST-RQ`` for stage 0 (or unknown), ``Latent-RQ stage k`` after.

    Example
    -------
    >>> method_name({"stage": 0}), method_name({"stage": 2})
    ('BEST-RQ (stage 0)', 'Latent-RQ stage 2')
    >>> method_name({"stage": 1, "transition_to_stage": 1})
    'BEST-RQ (stage 0, written at the transition to stage 1)'
    """
    stage = info.get("stage")
    if "transition_to_stage" in info:  # the encoder is the end of the previous stage
        prev = int(info["transition_to_stage"]) - 1
        name = "BEST-RQ (stage 0" if prev == 0 else f"Latent-RQ stage {prev} ("
        sep = ", " if prev == 0 else ""
        return f"{name}{sep}written at the transition to stage {info['transition_to_stage']})"
    if not stage:
        return "BEST-RQ (stage 0)"
    return f"Latent-RQ stage {stage}"


#: Settings of a run's ``hyperparams.yaml`` that the model card shows.
CARD_KEYS = ("data_folder", "train_csv", "languages", "optimizer_step_limit")


def run_data(checkpoint_path):
    """What the run trained on, from the ``hyperparams.yaml`` next to its
    ``save`` folder (``{}`` when there is none): :data:`CARD_KEYS`, as text.

    The file is read as YAML with its tags ignored, so anchors and aliases
    that SpeechBrain's dump writes (``&id001``, ``*id001``) are resolved, and
    lists are written plainly.

    Example
    -------
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> with open(os.path.join(run, "hyperparams.yaml"), "w") as f:
    ...     _ = f.write("languages: &id001 [en, fr]\\nall: !new:x.Y\\n  a: *id001\\n")
    >>> run_data(os.path.join(run, "save", "CKPT+1"))
    {'languages': 'en, fr'}
    """
    from latent_rq_brain.sharing.pretrained import _ArchConstructor

    run = os.path.dirname(os.path.dirname(os.path.abspath(checkpoint_path)))
    path = os.path.join(run, "hyperparams.yaml")
    if not os.path.isfile(path):
        return {}
    tree = ruamel.yaml.YAML(typ="safe", pure=True)
    tree.Constructor = _ArchConstructor  # tags (!new:, !ref, ...) read as None
    with open(path, encoding="utf-8") as f:
        settings = tree.load(f) or {}
    found = {}
    for key in CARD_KEYS:
        value = settings.get(key)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        found[key] = str(value)
    return found


def collect_results(folders):
    """Rows (name, metric, value) from ``results.json`` files of probes
    (``{"task", "metric", "value"}``) and fine-tuning runs (``{"WER", ...}``)."""
    rows = []
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "**", "results.json"), recursive=True)):
            with open(path, encoding="utf-8") as f:
                res = json.load(f)
            name = os.path.relpath(os.path.dirname(path), folder)
            if name == ".":
                name = os.path.basename(os.path.abspath(folder))
            if "task" in res and "metric" in res:
                rows.append((f"probe {res['task']} ({name})", res["metric"], res["value"]))
            elif "WER" in res:
                for key in ("WER", "WER_beam", "CER"):
                    if key in res:
                        rows.append((f"CTC fine-tuning ({name})", key, res[key]))
    return rows


def model_card(encoder, data, results, name):
    """The ``README.md`` text of an exported folder."""
    info, c = encoder.info, encoder.config
    lines = [
        "---",
        "library_name: speechbrain",
        "tags: [self-supervised-learning, speech, latent-rq, best-rq]",
        "---",
        f"# {name}",
        "",
        f"Speech encoder pre-trained with **{method_name(info)}** "
        "(latent-rq, SpeechBrain 1.1 recipe).",
        "",
        "| | |",
        "|---|---|",
        f"| method | {method_name(info)} |",
        f"| stage | {info.get('stage')} |",
        f"| optimizer step | {info.get('step')} |",
        f"| data | {data.get('train_csv') or data.get('data_folder') or 'unknown'}"
        + (f" (languages {data['languages']})" if data.get("languages") else "") + " |",
        f"| encoder | {c.get(ARCHITECTURE_KEY, DEFAULT_ARCHITECTURE)}: front-end "
        f"({encoder.encoder.downsampling}x) + {encoder.encoder.num_layers} layers, "
        f"d={encoder.hidden_size}, {c.get('nhead')} heads, FFN {c.get('d_ffn')} |",
        f"| hidden states | {encoder.num_hidden_states}: front-end output (paper layer -1), "
        f"then layers 0..{encoder.encoder.num_layers - 1} |",
        f"| downsample rate | {encoder.downsample_rate} samples ({encoder.downsample_rate * 1000 // encoder.sample_rate} ms frames at {encoder.sample_rate} Hz) |",
        f"| target layers | {c.get('target_layers')} (normalisation {c.get('target_norm')}) |",
    ] + ([
        f"| latent z | autoencoder bottleneck: {encoder.latent_dim} dims per encoder frame, "
        f"regulariser {c.get('latent_regularizer')}; `enc.encode_latent(wavs, wav_lens)` "
        "gives (hidden_states, z, enc_lens) |",
    ] if encoder.latent_dim else []) + [

        f"| parameters | {sum(p.numel() for p in encoder.parameters()):,} |",
        f"| exported from | `{info.get('checkpoint')}` |",
        "",
        "## Load it (offline; `pip install` latent-rq first)",
        "",
        "A folder you received: `load_model_folder` reads the settings as data and the "
        "weights weights-only (nothing in the folder can run code):",
        "",
        "```python",
        "from latent_rq_brain.sharing.export import load_model_folder",
        'enc = load_model_folder("<this folder>")',
        "hidden_states, enc_lens = enc(wavs, wav_lens)  # (B, S) 16 kHz, relative lengths",
        "```",
        "",
        "SpeechBrain's `from_hparams` executes `hyperparams.yaml` (trusted folders only):",
        "",
        "```python",
        "from latent_rq_brain.sharing.export import EncoderInterface",
        'enc = EncoderInterface.from_hparams(source="<this folder>", savedir="/tmp/latent_rq_model")',
        "hidden_states, enc_lens = enc.encode_batch(wavs, wav_lens)  # (B, S) 16 kHz, relative lengths",
        "# or SpeechBrain's own class, same output:",
        "from speechbrain.inference.encoders import WaveformEncoder",
        'enc = WaveformEncoder.from_hparams(source="<this folder>", savedir="/tmp/latent_rq_model")',
        "```",
        "",
    ]
    if results:
        lines += ["## Results", "", "| task | metric | value |", "|---|---|---|"]
        lines += [f"| {n} | {m} | {v} |" for n, m, v in results]
        lines.append("")
    return "\n".join(lines)


def hyperparams_text(encoder):
    """``hyperparams.yaml`` of an exported folder."""
    plain = json.loads(json.dumps({"config": encoder.config, "info": encoder.info}))
    spec = yaml.safe_dump(plain, sort_keys=True)  # no anchors: shared lists are copies
    body = "".join("    " + line + "\n" for line in spec.splitlines())
    return (
        "# latent-rq encoder, written by python -m latent_rq_brain.sharing.export\n"
        "# Load: EncoderInterface.from_hparams(source=<folder>, savedir=...)\n"
        "# (latent_rq_brain.sharing.export) or speechbrain.inference.encoders.WaveformEncoder:\n"
        "# they execute this file (trusted folders only). A folder you received:\n"
        "# latent_rq_brain.sharing.export.load_model_folder(<folder>) reads it as data.\n"
        f"sample_rate: {encoder.sample_rate}\n"
        f"downsample_rate: {encoder.downsample_rate}\n"
        "encoder: !new:latent_rq_brain.sharing.pretrained.PretrainedEncoder\n"
        f"{body}"
        "modules:\n"
        "    encoder: !ref <encoder>\n"
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
        "    loadables:\n"
        "        encoder: !ref <encoder>\n"
    )


def run_name(checkpoint_path):
    """How the model card and the exported settings name the checkpoint: the
    run folder's name and the path inside it (no local absolute path).

    Example
    -------
    >>> run_name("/home/me/results/best_rq/1000/save/CKPT+2026-01-01+00-00-00+00")
    '1000/save/CKPT+2026-01-01+00-00-00+00'
    """
    path = os.path.abspath(checkpoint_path)
    run = os.path.dirname(os.path.dirname(path))
    return os.path.join(os.path.basename(run), os.path.relpath(path, run))


def check_out_folder(out, run):
    """Refuses (``ValueError``) an output folder that is the run folder, inside
    it, holds it, or holds files other than an export's: replacing it would
    destroy them."""
    out_real, run_real = os.path.realpath(out), os.path.realpath(run)
    if out_real == run_real or out_real.startswith(run_real + os.sep):
        raise ValueError(
            f"--out {out} is the run folder {run} or inside it: the export would "
            "overwrite the run's own files (hyperparams.yaml); give a folder outside it"
        )
    if run_real.startswith(out_real + os.sep):
        raise ValueError(f"--out {out} holds the run folder {run}: give a folder outside it")
    if os.path.isdir(out):
        others = sorted(set(os.listdir(out)) - set(EXPORT_FILES) - {MANIFEST})
        if others:
            raise ValueError(
                f"--out {out} holds files that an export did not write ({', '.join(others[:5])}): "
                "an export replaces the whole folder; give a new or empty folder"
            )
    elif os.path.exists(out):
        raise ValueError(f"--out {out} exists and is not a folder")


_RENAME_EXCHANGE = 2


def _swap(new, out):
    """Puts folder ``new`` in the place of ``out``: one atomic exchange on
    Linux (``renameat2(RENAME_EXCHANGE)``), so ``out`` is at every moment
    the old or the new folder; elsewhere two renames."""
    if not os.path.exists(out):
        os.rename(new, out)
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd = -100
        if libc.renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(out),
                          _RENAME_EXCHANGE) == 0:
            return new  # now holds the previous export
    except (AttributeError, OSError):
        pass
    old = new + ".old"
    os.rename(out, old)
    os.rename(new, out)
    return old


def export(checkpoint, out, name=None, results=()):
    """Writes the model folder (see the module docstring); returns its files.

    The folder is written whole into a temporary sibling, its
    :data:`MANIFEST` last, then put in place of ``out`` in one rename: an
    export killed at any moment leaves ``out`` as it was (the previous
    export, or nothing). The weights must be finite.

    Arguments
    ---------
    checkpoint : str
        Run folder, save folder or ``CKPT+`` folder (resolved once, here).
    out : str
        Output folder: new, empty or a previous export (replaced); not the run
        folder nor inside it.
    name : str, optional
        Title of the model card.
    results : sequence of str
        Folders searched for probe / fine-tuning ``results.json``.
    """
    ckpt = find_checkpoint(checkpoint, needed=ENCODER_FILES)
    run = os.path.dirname(os.path.dirname(os.path.abspath(ckpt.path)))
    out = os.path.abspath(out)
    check_out_folder(out, run)
    encoder = PretrainedEncoder.from_checkpoint(ckpt.path)  # finite weights checked
    encoder.info["checkpoint"] = run_name(ckpt.path)
    parent, base = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    for debris in glob.glob(os.path.join(parent, glob.escape(f".{base}.partial-") + "*")):
        shutil.rmtree(debris, ignore_errors=True)  # left by a killed export
    tmp = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=parent)
    try:
        torch.save(encoder.state_dict(), os.path.join(tmp, "encoder.ckpt"))
        with open(os.path.join(tmp, "hyperparams.yaml"), "w", encoding="utf-8") as f:
            f.write(hyperparams_text(encoder))
        card = model_card(
            encoder, run_data(ckpt.path), collect_results(results),
            name or f"latent-rq {method_name(encoder.info)}, step {encoder.info.get('step')}",
        )
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)
        write_manifest(tmp)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0o700 is for the time of writing only
        old = _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return {n: os.path.join(out, n) for n in EXPORT_FILES + (MANIFEST,)}


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run folder, save/ folder or CKPT+ folder")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--name", default=None, help="model card title")
    parser.add_argument(
        "--results", nargs="*", default=[],
        help="folders with probe or fine-tuning results.json files for the model card",
    )
    args = parser.parse_args(argv)
    try:
        files = export(args.checkpoint, args.out, args.name, args.results)
    except ValueError as err:
        sys.exit(f"error: {err}")
    for path in files.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
