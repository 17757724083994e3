"""Export -> SpeechBrain from_hparams round trip (latent_rq_brain.sharing.export).

Authors
 * latent-rq developers 2026
"""

import json
import os
import re

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from latent_rq_brain.sharing.export import EncoderInterface, export, main
from latent_rq_brain.sharing.pretrained import EncoderSpec, PretrainedEncoder


def fake_run(folder, seed=3):
    """A run folder whose save/ holds one checkpoint as train.py writes it."""
    src = PretrainedEncoder.from_config(PretrainedEncoder.tiny_config(), seed=seed)
    spec = EncoderSpec.from_hparams(PretrainedEncoder.tiny_config())
    Checkpointer(os.path.join(folder, "save"), {"encoder": src.encoder, "encoder_spec": spec}).save_checkpoint()
    with open(os.path.join(folder, "hyperparams.yaml"), "w") as f:
        f.write("data_folder: /data/asterisk\ntrain_csv: /data/asterisk/train.csv\n")
    return folder


def test_export_loads_back_offline_with_speechbrain(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = fake_run(str(tmp_path / "run"))
    probes = tmp_path / "probes" / "ASR"
    probes.mkdir(parents=True)
    (probes / "results.json").write_text(json.dumps({"task": "ASR", "metric": "WER", "value": 42.5}))
    out = str(tmp_path / "model")
    assert main([run, "--out", out, "--results", str(tmp_path / "probes")]) == 0
    assert sorted(os.listdir(out)) == ["README.md", "SHA256SUMS", "encoder.ckpt", "hyperparams.yaml"]
    card = open(os.path.join(out, "README.md")).read()
    assert "BEST-RQ" in card and "| downsample rate | 640 samples" in card
    assert "| probe ASR (ASR) | WER | 42.5 |" in card and "/data/asterisk/train.csv" in card

    ref = PretrainedEncoder.from_checkpoint(run)
    wavs = torch.randn(2, 16000)
    lens = torch.tensor([1.0, 0.6])
    want, want_lens = ref(wavs, lens)

    ours = EncoderInterface.from_hparams(source=out, savedir=str(tmp_path / "s1"))
    got, got_lens = ours.encode_batch(wavs, lens)
    assert len(got) == len(want) and torch.equal(got_lens, want_lens)
    assert all(torch.equal(a, b) for a, b in zip(got, want))

    from speechbrain.inference.encoders import WaveformEncoder

    theirs = WaveformEncoder.from_hparams(source=out, savedir=str(tmp_path / "s2"))
    got, _ = theirs.encode_batch(wavs, lens)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_export_of_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint found"):
        export(str(tmp_path / "nope"), str(tmp_path / "out"))
    with pytest.raises(SystemExit, match="error: no checkpoint found"):
        main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")])


def test_model_card_has_no_yaml_anchors(tmp_path):
    """SpeechBrain's hyperparams.yaml writes shared lists as anchors and aliases."""
    run = fake_run(str(tmp_path / "run"))
    with open(os.path.join(run, "hyperparams.yaml"), "w") as f:
        f.write("data_folder: demo_data/asterisk\n"
                "languages: &id001 [en, fr, es, it, ru]\n"
                "train_csv: demo_data/asterisk/train.csv\n"
                "data_prep: !name:recipes.demo.prepare_asterisk.prepare_asterisk\n"
                "    languages: *id001\n"
                "optimizer_step_limit: 550\n")
    files = export(run, str(tmp_path / "model"))
    card = open(files["README.md"]).read()
    assert "| data | demo_data/asterisk/train.csv (languages en, fr, es, it, ru) |" in card
    assert "&id" not in card and "*id" not in card


# ---------------------------------------------------------------- a folder someone sent you
from latent_rq_brain.sharing.export import UnsafeModelFolderError, load_model_folder, write_manifest  # noqa: E402


@pytest.fixture
def exported(tmp_path):
    run = fake_run(str(tmp_path / "run"))
    out = str(tmp_path / "model")
    export(run, out)
    return run, out


def test_safe_loader_gives_the_exported_encoders_outputs(exported):
    run, out = exported
    wavs, lens = torch.randn(2, 16000), torch.tensor([1.0, 0.6])
    want, want_lens = PretrainedEncoder.from_checkpoint(run)(wavs, lens)
    enc = load_model_folder(out)
    got, got_lens = enc(wavs, lens)
    assert isinstance(enc, PretrainedEncoder) and not enc.training
    assert len(got) == len(want) and torch.equal(got_lens, want_lens)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_a_folder_naming_the_flat_layouts_paths_still_loads(exported, tmp_path, monkeypatch):
    """A folder exported before the package had sub-packages names
    ``latent_rq_brain.pretrained``: the safe loader and from_hparams read it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run, out = exported
    path = os.path.join(out, "hyperparams.yaml")
    text = open(path).read()
    assert "!new:latent_rq_brain.sharing.pretrained.PretrainedEncoder" in text
    old = text.replace("latent_rq_brain.sharing.pretrained.", "latent_rq_brain.pretrained.")
    old = old.replace("latent_rq_brain.sharing.export", "latent_rq_brain.export")
    assert "sharing" not in old
    open(path, "w").write(old)
    write_manifest(out)
    wavs, lens = torch.randn(2, 16000), torch.tensor([1.0, 0.6])
    want, _ = PretrainedEncoder.from_checkpoint(run)(wavs, lens)
    enc = load_model_folder(out)
    assert type(enc) is PretrainedEncoder
    assert all(torch.equal(a, b) for a, b in zip(enc(wavs, lens)[0], want))
    trusted = EncoderInterface.from_hparams(source=out, savedir=str(tmp_path / "s1"))
    assert type(trusted.mods.encoder) is PretrainedEncoder
    assert all(torch.equal(a, b) for a, b in zip(trusted.encode_batch(wavs, lens)[0], want))


def test_safe_loader_refuses_other_package_classes_under_old_paths(exported):
    _, out = exported
    path = os.path.join(out, "hyperparams.yaml")
    with open(path, "a") as f:
        f.write("extra: !new:latent_rq_brain.encoder.ConformerEncoder\n")
    write_manifest(out)
    with pytest.raises(UnsafeModelFolderError, match="tag !new:latent_rq_brain.encoder.ConformerEncoder is refused"):
        load_model_folder(out)


@pytest.mark.parametrize("line", [
    "pwn: !apply:os.system ['touch {mark}']",
    "pwn: !!python/object/apply:os.system ['touch {mark}']",
    "pwn: !new:subprocess.Popen [['touch', '{mark}']]",
])
def test_safe_loader_refuses_a_folder_that_runs_code(exported, tmp_path, line):
    _, out = exported
    mark = tmp_path / "pwned"
    with open(os.path.join(out, "hyperparams.yaml"), "a") as f:
        f.write(line.format(mark=mark) + "\n")
    with pytest.raises(UnsafeModelFolderError, match=r"hyperparams.yaml, line \d+: tag .* is "
                                                     r"refused.*from_hparams would run this"):
        load_model_folder(out)
    assert not mark.exists()


def test_safe_loader_refuses_code_hidden_in_a_setting(exported, tmp_path):
    """Settings are written into HyperPyYAML overrides of the architecture:
    only plain numbers get there."""
    _, out = exported
    mark = tmp_path / "pwned"
    path = os.path.join(out, "hyperparams.yaml")
    text = open(path).read().replace("n_fft: 400", f"n_fft: \"!apply:os.system ['touch {mark}']\"")
    open(path, "w").write(text)
    write_manifest(out)  # a sender writes a matching SHA256SUMS
    with pytest.raises(ValueError, match=r"hyperparams.yaml: encoder setting n_fft: .* must be a number"):
        load_model_folder(out)
    assert not mark.exists()


# ---------------------------------------------------------------- atomic export, manifest
def first_ckpt(run):
    save = os.path.join(run, "save")
    return os.path.join(save, next(d for d in os.listdir(save) if d.startswith("CKPT+")))


def test_export_writes_a_manifest_and_names_the_run_without_local_paths(exported, tmp_path):
    run, out = exported
    assert sorted(os.listdir(out)) == ["README.md", "SHA256SUMS", "encoder.ckpt", "hyperparams.yaml"]
    sums = open(os.path.join(out, "SHA256SUMS")).read()
    assert all(f"  {n}\n" in sums for n in ("README.md", "encoder.ckpt", "hyperparams.yaml"))
    card = open(os.path.join(out, "README.md")).read()
    row = next(ln for ln in card.splitlines() if ln.startswith("| exported from |"))
    assert row == f"| exported from | `run/save/{os.path.basename(first_ckpt(run))}` |"
    assert str(tmp_path) not in card and str(tmp_path) not in open(os.path.join(out, "hyperparams.yaml")).read()
    assert not [d for d in os.listdir(tmp_path) if ".partial-" in d]


def test_safe_loader_refuses_files_mixed_from_another_export(exported, tmp_path):
    """Metadata of one export, weights of another: refused naming the file."""
    _, out = exported
    other = str(tmp_path / "other")
    export(fake_run(str(tmp_path / "run2"), seed=7), other)
    os.replace(os.path.join(other, "encoder.ckpt"), os.path.join(out, "encoder.ckpt"))
    with pytest.raises(ValueError, match=r"model/encoder.ckpt does not match its SHA-256 in .*SHA256SUMS"):
        load_model_folder(out)


def test_safe_loader_refuses_a_folder_without_manifest(exported):
    _, out = exported
    os.remove(os.path.join(out, "SHA256SUMS"))
    with pytest.raises(ValueError, match=r"has no SHA256SUMS: not a complete folder"):
        load_model_folder(out)


KILL_DURING_EXPORT = """
import os, signal, sys
import latent_rq_brain.sharing.export as ex
real = ex.model_card
def card_then_kill(*args, **kwargs):  # encoder.ckpt and hyperparams.yaml are written
    os.kill(os.getpid(), signal.SIGKILL)
ex.model_card = card_then_kill
ex.export(sys.argv[1], sys.argv[2])
"""


def test_killed_re_export_leaves_the_previous_export_whole(exported, tmp_path):
    import subprocess
    import sys

    run, out = exported
    before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
    other = fake_run(str(tmp_path / "run2"), seed=7)
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_EXPORT, other, out],
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == -9
    assert {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)} == before
    wavs = torch.randn(1, 16000)
    want, _ = PretrainedEncoder.from_checkpoint(run)(wavs)
    got, _ = load_model_folder(out)(wavs)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    # the next export removes the debris of the killed one and replaces the folder
    assert [d for d in os.listdir(tmp_path) if ".partial-" in d]
    export(other, out)
    assert not [d for d in os.listdir(tmp_path) if ".partial-" in d]
    got, _ = load_model_folder(out)(wavs)
    want, _ = PretrainedEncoder.from_checkpoint(other)(wavs)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("where", ["run", "run/model", "run/save"])
def test_export_into_the_run_folder_is_refused(tmp_path, where):
    run = fake_run(str(tmp_path / "run"))
    hp = open(os.path.join(run, "hyperparams.yaml")).read()
    with pytest.raises(ValueError, match=r"--out .* is the run folder .* or inside it"):
        export(run, str(tmp_path / where))
    with pytest.raises(SystemExit, match=r"error: --out .* is the run folder"):
        main([run, "--out", str(tmp_path / where)])
    assert open(os.path.join(run, "hyperparams.yaml")).read() == hp


def test_export_over_a_folder_of_other_files_is_refused(tmp_path):
    run = fake_run(str(tmp_path / "run"))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"holds files that an export did not write \(notes.txt\)"):
        export(run, str(out))
    assert (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match=r"holds the run folder"):
        export(run, str(tmp_path))


# ---------------------------------------------------------------- non-finite weights
def nan_run(folder):
    run = fake_run(folder)
    path = os.path.join(first_ckpt(run), "encoder.ckpt")
    state = torch.load(path)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name].view(-1)[1] = float("nan")
    torch.save(state, path)
    return run, path, name


def test_export_and_checkpoint_loader_refuse_non_finite_weights(tmp_path):
    from latent_rq_brain.sharing.safe_load import NonFiniteWeightsError

    run, path, name = nan_run(str(tmp_path / "run"))
    msg = rf"{re.escape(path)}: tensor {re.escape(name)} holds 1 non-finite value"
    with pytest.raises(NonFiniteWeightsError, match=msg):
        export(run, str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()
    with pytest.raises(SystemExit, match=r"error: .*encoder.ckpt: tensor .* non-finite"):
        main([run, "--out", str(tmp_path / "model")])
    with pytest.raises(NonFiniteWeightsError, match=msg):
        PretrainedEncoder.load(run)


def test_safe_loader_refuses_non_finite_weights(exported):
    from latent_rq_brain.sharing.safe_load import NonFiniteWeightsError

    _, out = exported
    path = os.path.join(out, "encoder.ckpt")
    state = torch.load(path)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] = float("inf")
    torch.save(state, path)
    write_manifest(out)  # a consistent folder, with Inf weights
    with pytest.raises(NonFiniteWeightsError, match=rf"encoder.ckpt: tensor {re.escape(name)} holds 1"):
        load_model_folder(out)


# ---------------------------------------------------------------- bounded sizes
@pytest.mark.parametrize("setting,value,bound", [
    ("d_ffn", 100000000, 65536), ("d_model", 10**6, 8192), ("num_encoder_layers", 10**5, 256),
    ("nhead", 4096, 256), ("n_mels", 10**6, 1024),
])
def test_safe_loader_bounds_sizes_before_allocating(exported, monkeypatch, setting, value, bound):
    from latent_rq_brain.model import architectures

    _, out = exported
    path = os.path.join(out, "hyperparams.yaml")
    text = re.sub(rf"(\n\s+{setting}: )\d+", rf"\g<1>{value}", open(path).read())
    open(path, "w").write(text)
    write_manifest(out)

    def never(*a, **k):
        raise AssertionError("the architecture was built")

    monkeypatch.setattr(architectures, "build_architecture", never)
    monkeypatch.setattr("latent_rq_brain.sharing.pretrained.build_architecture", never)
    with pytest.raises(ValueError, match=rf"hyperparams.yaml: encoder setting {setting}: {value} "
                                         rf"is above its bound {bound}"):
        load_model_folder(out)


def test_checkpoint_loader_bounds_the_spec_before_allocating(tmp_path):
    import yaml

    run = fake_run(str(tmp_path / "run"))
    spec = os.path.join(first_ckpt(run), "encoder_spec.ckpt")
    config = yaml.safe_load(open(spec))
    config.update(d_model=4096, d_ffn=65536, num_encoder_layers=200)
    yaml.safe_dump(config, open(spec, "w"))
    with pytest.raises(ValueError, match=r"give about .* parameters, above the bound"):
        PretrainedEncoder.load(run)


def test_quantizer_sizes_are_bounded_before_allocating(tmp_path):
    from latent_rq_brain.sharing.pretrained import load_quantizer

    run = fake_run(str(tmp_path / "run"))
    path = os.path.join(first_ckpt(run), "quantizer.ckpt")
    torch.save({"config": {"sources": {"mel": [320, 16]}, "codebook_size": 10**9,
                           "codebook_dim": 16, "seed": 1}, "state": {}}, path)
    with open(os.path.join(first_ckpt(run), "CKPT.yaml"), "a") as f:
        f.write("")
    with pytest.raises(ValueError, match=r"quantizer.ckpt: quantizer setting codebook_size: "
                                         r"1000000000 must be an integer in \[1, 1048576\]"):
        load_quantizer(first_ckpt(run))


def test_downstream_docs_lead_with_the_safe_loader():
    """docs/downstream.md shows load_model_folder before from_hparams, and
    every from_hparams example is labelled trusted folders only."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "docs", "downstream.md")
    text = open(path, encoding="utf-8").read()
    assert 0 <= text.find("load_model_folder(") < text.find("from_hparams(")
    blocks = text.split("```")[1::2]
    for block in (b for b in blocks if "from_hparams(" in b):
        before = text[: text.index(block)][-600:]
        assert "trusted folders only" in before + block, block
