"""The package's sub-packages, and the module paths of the flat layout before
them: each old path imports as the same module object as its new one.

Authors
 * latent-rq developers 2026
"""

import importlib
import os
import subprocess
import sys

import pytest

import latent_rq_brain
from latent_rq_brain import MOVED, moved_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_new_module(old):
    new = importlib.import_module(f"latent_rq_brain.{MOVED[old]}")
    alias = importlib.import_module(f"latent_rq_brain.{old}")
    assert alias is new and sys.modules[f"latent_rq_brain.{old}"] is new
    assert new.__name__ == new.__spec__.name == f"latent_rq_brain.{MOVED[old]}"
    assert getattr(latent_rq_brain, old) is new


def test_old_class_paths_give_the_same_classes():
    import pydoc

    from latent_rq_brain.model.encoder import ConformerEncoder, LatentRQEncoder
    from latent_rq_brain.pretrained import PretrainedEncoder as Old
    from latent_rq_brain.sharing.pretrained import PretrainedEncoder
    from latent_rq_brain.targets import TargetMaker
    from latent_rq_brain.targets.maker import TargetMaker as NewMaker

    assert Old is PretrainedEncoder and TargetMaker is NewMaker
    assert pydoc.locate("latent_rq_brain.encoder.ConformerEncoder") is ConformerEncoder
    assert pydoc.locate("latent_rq_brain.encoder.LatentRQEncoder") is LatentRQEncoder
    assert pydoc.locate("latent_rq_brain.pretrained.PretrainedEncoder") is PretrainedEncoder
    import latent_rq_brain.s3prl_upstream.expert as old_expert
    import latent_rq_brain.sharing.s3prl_upstream.expert as expert

    assert old_expert is expert


def test_unknown_names_stay_unknown():
    assert moved_name("latent_rq_brain.nope") is None and moved_name("torch.encoder") is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("latent_rq_brain.nope")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("latent_rq_brain.encoder_nope")
    from latent_rq_brain import targets

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        targets.nope  # noqa: B018


def test_the_package_imports_nothing_heavy_and_old_paths_run_with_python_m():
    code = ("import sys, latent_rq_brain, latent_rq_brain.targets\n"
            "assert 'torch' not in sys.modules and 'speechbrain' not in sys.modules, 'heavy'\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    done = subprocess.run([sys.executable, "-m", "latent_rq_brain.export", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "--out" in done.stdout, done.stderr
