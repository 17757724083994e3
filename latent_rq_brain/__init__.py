"""latent-rq: BEST-RQ and Latent-RQ speech pre-training on SpeechBrain.

The method and its loaders (tools live in ``tools/``; ARCHITECTURE.md has the
data flow and one line per module). Sub-packages, one part each:

* :mod:`latent_rq_brain.model`: the encoders and their contract, the
  architectures, features, masking, heads, layer indices, SpeechBrain patches,
  the autoencoder's bottleneck and decoder;
* :mod:`latent_rq_brain.targets`: target sources, quantizers, the target
  encoder, the offline cache and ``TargetMaker`` (:mod:`latent_rq_brain.targets.maker`);
* :mod:`latent_rq_brain.objectives`: named loss terms and regularisers;
* :mod:`latent_rq_brain.training`: the Brains, the stage schedule, statistics,
  guards, data, hparams and command-line checks, checkpoints;
* :mod:`latent_rq_brain.sharing`: exported model folders, pre-trained
  encoders, weights-only loading, the s3prl upstream.

Modules of the earlier flat layout (``latent_rq_brain.encoder``,
``latent_rq_brain.pretrained``, ...) still import: :data:`MOVED` maps each to
its new home, and importing the old name gives the same module object, so
exported folders and s3prl upstreams that name old paths keep loading.
Nothing heavy is imported here.
"""

import importlib
import importlib.abc
import importlib.util
import sys

#: ``{old module name: new module name}`` of the flat layout, relative to
#: this package. ``targets`` (now a sub-package) is absent: its names are
#: forwarded by :mod:`latent_rq_brain.targets` itself.
MOVED = {
    **{name: f"model.{name}" for name in (
        "architectures", "autoencoder", "encoder", "features", "heads", "layers",
        "masking", "sb_patches", "transformer_encoder", "zipformer_encoder")},
    **{name: f"targets.{name}" for name in (
        "quantizer", "target_cache", "target_encoder", "target_quality", "target_sources")},
    **{name: f"objectives.{name}" for name in ("loss_terms", "sigreg")},
    **{name: f"training.{name}" for name in (
        "arguments", "autoencoder_brain", "brain", "branching", "checkpoint_files",
        "checkpointer", "checkpoints", "data", "ddp_watch", "disk", "errors",
        "finetune", "guards", "hparams", "output_lock", "resume", "stages", "stats",
        "synthetic", "train_log")},
    **{name: f"sharing.{name}" for name in ("export", "pretrained", "safe_load", "s3prl_upstream")},
}


def moved_name(fullname):
    """The new name of a module of the flat layout (or of a module inside a
    moved package), None for any other name.

    Example
    -------
    >>> moved_name("latent_rq_brain.pretrained")
    'latent_rq_brain.sharing.pretrained'
    >>> moved_name("latent_rq_brain.s3prl_upstream.expert")
    'latent_rq_brain.sharing.s3prl_upstream.expert'
    >>> moved_name("latent_rq_brain.sharing.pretrained") is None
    True
    """
    package, dot, rest = fullname.partition(".")
    if package != __name__ or not dot:
        return None
    head, dot, tail = rest.partition(".")
    if head not in MOVED:
        return None
    return f"{__name__}.{MOVED[head]}{dot}{tail}"


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as an alias of its new module: the same
    object lands in ``sys.modules`` under both names (classes stay identical)."""

    def __init__(self):
        self._specs = {}

    def find_spec(self, fullname, path=None, target=None):
        new = moved_name(fullname)
        if new is None:
            return None
        real = importlib.util.find_spec(new)
        if real is None:
            return None
        return importlib.util.spec_from_loader(  # origin: sys.argv[0] of python -m
            fullname, self, origin=real.origin,
            is_package=real.submodule_search_locations is not None,
        )

    def create_module(self, spec):
        module = importlib.import_module(moved_name(spec.name))
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # the import system has set the alias spec on the shared module: put its own back
        module.__spec__ = self._specs.pop(module.__spec__.name)

    def get_code(self, fullname):
        """The new module's code (``python -m`` with an old name)."""
        new = moved_name(fullname)
        return importlib.util.find_spec(new).loader.get_code(new)

    def is_package(self, fullname):
        return importlib.util.find_spec(moved_name(fullname)).submodule_search_locations is not None


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())
