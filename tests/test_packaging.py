"""``pip install .`` / ``pip install -e .``: the package and its data files.

The fast test reads ``pyproject.toml`` the way setuptools does and checks it
installs every sub-package and every data file of ``latent_rq_brain``. The
slow one (``LATENT_RQ_SLOW=1``; it fetches setuptools from the package index
for the isolated build) installs the clone into a throw-away virtual
environment and loads an exported model folder from a process outside the
repository.
"""

import ast
import fnmatch
import os
import subprocess
import sys
import tomllib

import pytest
import setuptools

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "latent_rq_brain"



def parse_source(text, filename="<unknown>"):
    """``ast.parse`` with the garbage collector paused: CPython 3.11.7 can raise
    "AST constructor recursion depth mismatch" when a finaliser runs during the
    parse (gh-106905, fixed in 3.11.8)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text, filename)
    finally:
        if enabled:
            gc.enable()

def pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_pyproject_installs_every_subpackage_and_data_file():
    conf = pyproject()
    assert conf["project"]["name"] == "latent-rq"
    find = conf["tool"]["setuptools"]["packages"]["find"]
    installed = set(setuptools.find_packages(REPO, include=find["include"]))
    on_disk, data = set(), []
    for folder, dirs, files in os.walk(os.path.join(REPO, PACKAGE)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(folder, REPO)
        if "__init__.py" in files:
            on_disk.add(rel.replace(os.sep, "."))
        data += [os.path.relpath(os.path.join(folder, f), os.path.join(REPO, PACKAGE))
                 for f in files if not f.endswith((".py", ".pyc"))]
    assert installed == on_disk and {PACKAGE, f"{PACKAGE}.model", f"{PACKAGE}.sharing.s3prl_upstream"} <= installed
    patterns = conf["tool"]["setuptools"]["package-data"][PACKAGE]
    assert "model/architecture.yaml" in data
    missing = [f for f in data if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not missing, f"pyproject.toml package-data lacks {missing}"


def test_runtime_dependencies_cover_the_package_imports():
    """Every third-party module the package imports is a declared dependency."""
    names = {"torch", "torchaudio", "speechbrain", "ruamel.yaml", "soundfile", "numpy", "PyYAML"}
    declared = {d.split(">")[0].split("<")[0].split("=")[0].strip()
                for d in pyproject()["project"]["dependencies"]}
    assert names <= declared
    module_of = {"ruamel.yaml": "ruamel", "PyYAML": "yaml", "scikit-learn": "sklearn"}
    provided = {module_of.get(n, n) for n in declared} | {"hyperpyyaml", "s3prl"}
    imported = set()
    for folder, _, files in os.walk(os.path.join(REPO, PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    tree = parse_source(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        imported.update(a.name.split(".")[0] for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        imported.add(node.module.split(".")[0])
    third_party = {m for m in imported - set(sys.stdlib_module_names) if m != PACKAGE}
    assert third_party <= provided, third_party - provided


@pytest.mark.skipif(not os.environ.get("LATENT_RQ_SLOW"), reason="LATENT_RQ_SLOW=1 runs it")
def test_pip_install_then_load_an_export_outside_the_repository(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_export import fake_run

    from latent_rq_brain.sharing.export import export

    run = fake_run(str(tmp_path / "run"))
    export(run, str(tmp_path / "model"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = subprocess.run([sys.executable, "-c", "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write(ours + "\n")  # torch, SpeechBrain: this environment's, nothing downloaded
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q",
                    "--no-deps", REPO], check=True)
    code = ("import torch, latent_rq_brain\n"
            "from latent_rq_brain.sharing.export import EncoderInterface\n"
            f"enc = EncoderInterface.from_hparams(source={str(tmp_path / 'model')!r}, "
            f"savedir={str(tmp_path / 'sd')!r})\n"
            "states, _ = enc.encode_batch(torch.randn(1, 16000))\n"
            "print(latent_rq_brain.__file__, len(states))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([python, "-c", code], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, check=True).stdout
    assert str(venv) in out and out.strip().endswith(" 3")
