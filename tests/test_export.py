"""Export -> SpeechBrain from_hparams round trip (latent_rq_brain.export).

Authors
 * latent-rq developers 2026
"""

import json
import os

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from latent_rq_brain.export import EncoderInterface, export, main
from latent_rq_brain.pretrained import EncoderSpec, PretrainedEncoder


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
    assert sorted(os.listdir(out)) == ["README.md", "encoder.ckpt", "hyperparams.yaml"]
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
from latent_rq_brain.export import UnsafeModelFolderError, load_model_folder  # noqa: E402


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
    with pytest.raises(ValueError, match=r"hyperparams.yaml: encoder setting n_fft: .* must be a number"):
        load_model_folder(out)
    assert not mark.exists()
