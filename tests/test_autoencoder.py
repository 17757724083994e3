"""The autoencoder: bottleneck, decoder, its loss terms, training with each
latent regulariser (sigreg, kl, none), resume, export, load, probes, and its
evaluation command. Tiny configuration, synthetic audio.
"""

import csv
import json
import math
import os
import re
import shutil

import pytest
import torch
import yaml

import speechbrain as sb
from latent_rq_brain.model.autoencoder import (Bottleneck, LatentRegularizer, MelDecoder,
                                         Reconstruction, kl_standard_normal, mel_l1)
from latent_rq_brain.sharing.export import export, load_model_folder
from latent_rq_brain.sharing.pretrained import PretrainedEncoder
from latent_rq_brain.training.hparams import expand_hparams_file
from test_training import REPO, latest_ckpt, state_copy, tiny_args, train, write_corpus

SMALL = os.path.join(REPO, "hparams", "small", "autoencoder.yaml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def ae_args(out, corpus, *extra):
    """A tiny autoencoder run (hparams/small/autoencoder.yaml) on the synthetic corpus."""
    args = tiny_args(out, corpus, "--latent_dim=8", "--decoder_channels=16",
                     "--decoder_layers=2", *extra)
    return [SMALL, *args[1:]]


def ae_built(out, corpus, *extra):
    """A tiny autoencoder Brain ready to train (on_fit_start done) and its loader."""
    brain, train_data, _, train_opts, _ = train.build(ae_args(out, corpus, *extra))
    loader = brain.make_dataloader(train_data, stage=sb.Stage.TRAIN, **train_opts)
    brain.on_fit_start()
    return brain, loader


# ------------------------------------------------------------ parts and terms


def test_kl_term_on_a_known_case():
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 (mu^2 + s^2 - 1 - ln s^2) per dimension
    mean = torch.tensor([[[1.0, 0.0], [0.5, 2.0], [9.0, 9.0]]])
    logvar = torch.tensor([[[0.0, math.log(2.0)], [math.log(0.5), 0.0], [5.0, 5.0]]])
    expected = [0.5 * (1 + 0 + 1 - 1 - 0) + 0.5 * (0 + 2 - 1 - math.log(2.0)),
                0.5 * (0.25 + 0.5 - 1 - math.log(0.5)) + 0.5 * (4 + 1 - 1 - 0)]
    per_frame = kl_standard_normal(mean, logvar)[0, :2]
    assert torch.allclose(per_frame, torch.tensor(expected))
    term = LatentRegularizer("kl")
    value, _ = term({"z_mean": mean, "z_logvar": logvar, "enc_lens": torch.tensor([2])}, step=0)
    assert float(value) == pytest.approx(sum(expected) / 2)  # frame 3 (padding) left out
    assert float(kl_standard_normal(torch.zeros(4, 3), torch.zeros(4, 3)).sum()) == 0.0


def test_variational_bottleneck_samples_in_training_and_gives_the_mean_otherwise():
    b = Bottleneck(8, 4, "kl")
    h = torch.randn(2, 6, 8)
    z, mean, logvar = b(h, sample=True)
    assert not torch.equal(z, mean) and logvar.shape == mean.shape
    z_eval, mean_eval, _ = b(h, sample=False)
    assert torch.equal(z_eval, mean_eval) and torch.equal(mean_eval, mean)
    z_det, m_det, lv = Bottleneck(8, 4, "sigreg")(h, sample=True)
    assert lv is None and torch.equal(z_det, m_det)  # deterministic for sigreg and none
    with pytest.raises(ValueError, match="latent_regularizer must be one of"):
        Bottleneck(8, 4, "vae")


def test_reconstruction_loss_reads_only_valid_frames():
    feats = torch.randn(2, 12, 5)
    rec = torch.randn(2, 12, 5)
    lens = torch.tensor([12, 7])
    base = mel_l1(rec, feats, lens)
    rec2, feats2 = rec.clone(), feats.clone()
    rec2[1, 7:] = 1e6  # garbage past the end of utterance 1
    feats2[1, 7:] = -1e6
    assert torch.equal(mel_l1(rec2, feats2, lens), base)
    rec2[1, 6] += 1.0  # its last valid frame counts
    assert not torch.equal(mel_l1(rec2, feats2, lens), base)
    expected = torch.cat([(rec[0] - feats[0]).abs().flatten(),
                          (rec[1, :7] - feats[1, :7]).abs().flatten()]).mean()
    assert torch.allclose(base, expected)


def test_decoder_output_of_an_utterance_does_not_depend_on_batch_padding():
    dec = MelDecoder(4, 10, 4, channels=8, num_layers=2, kernel_size=5)
    z = torch.randn(1, 6, 4)
    alone = dec(z, torch.tensor([6]))
    padded = torch.cat([z, 100 * torch.randn(1, 5, 4)], dim=1)
    in_batch = dec(padded, torch.tensor([6]))
    assert in_batch.shape == (1, 44, 10)
    assert torch.allclose(alone, in_batch[:, :24], atol=1e-5)


def test_sigreg_on_z_ignores_padding_and_punishes_collapse():
    term = LatentRegularizer("sigreg", max_frames=4096, slices=16)
    z = torch.randn(2, 300, 6, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([300, 200])
    value, _ = term({"z": z, "enc_lens": lens}, step=1)
    z2 = z.clone()
    z2[1, 200:] = 50.0
    assert torch.equal(term({"z": z2, "enc_lens": lens}, step=1)[0], value)
    collapsed = z[..., :1].expand(-1, -1, 6).contiguous()
    assert float(term({"z": collapsed, "enc_lens": lens}, step=1)[0]) > 10 * float(value)


# ------------------------------------------------------------ configuration


def test_small_config_is_the_small_latent_rq_config_plus_the_autoencoder():
    path, text = expand_hparams_file(SMALL)
    assert os.path.basename(path) == "latent_rq_schedule.yaml"
    settings = yaml.safe_load(re.sub(r"!\S+", "", text))
    assert settings["d_model"] == 96 and settings["num_encoder_layers"] == 4  # small config
    assert settings["latent_dim"] == 16 and settings["latent_regularizer"] == "sigreg"
    assert settings["stage_transitions"] == []  # the autoencoder's, over the small file's


def test_misspelt_setting_in_a_thin_file_is_refused(tmp_path):
    thin = tmp_path / "thin.yaml"
    thin.write_text(f"base_hparams: {SMALL}\nlatnet_dim: 4\n")
    with pytest.raises(ValueError, match="setting latnet_dim is not a key of .* nothing refers"):
        expand_hparams_file(str(thin))


# ------------------------------------------------------------ training


def test_z_has_the_encoder_frame_rate_and_the_decoder_rebuilds_every_frame(tmp_path, corpus):
    brain, loader = ae_built(tmp_path, corpus)
    assert type(brain).__name__ == "AutoencoderBrain"
    batch = next(iter(loader))
    out = brain.compute_forward(batch, sb.Stage.VALID)
    feats, z = out["feats"], out["z"]
    B, T, n_mels = feats.shape
    assert z.shape == (B, T // 4, 8)  # one z per encoder frame: 4 x 10 ms = 40 ms
    assert out["reconstruction"].shape == feats.shape
    assert torch.equal(out["enc_lens"], -(-out["feat_lens"] // 4))
    assert torch.equal(z, out["z_mean"])  # sigreg: deterministic


@pytest.mark.parametrize("kind", ["sigreg", "kl", "none"])
def test_pretrains_resumes_exports_and_loads(tmp_path, corpus, kind):
    out = tmp_path / "run"
    extra = [f"--latent_regularizer={kind}", "--latent_regularizer_weight=0.01"]
    first = train.main(ae_args(out, corpus, "--optimizer_step_limit=2", *extra))
    assert first.optimizer_step == 2
    log = (out / "train_log.txt").read_text()
    assert "train reconstruction:" in log and "reconstruction.eff_dim_z" in log
    assert ("train latent_regularizer:" in log) == (kind != "none")
    ckpt = latest_ckpt(out / "save")
    assert {"bottleneck", "decoder"} <= set(ckpt.paramfiles)
    saved = {name: torch.load(ckpt.paramfiles[name], weights_only=True)
             for name in ("encoder", "bottleneck", "decoder")}
    # resume: every trained module comes back as saved, and training goes on
    brain, _ = ae_built(out, corpus, "--optimizer_step_limit=4", *extra)
    assert brain.optimizer_step == 2 and brain.resumed_from.path == ckpt.path
    for name, state in saved.items():
        live = state_copy(getattr(brain.modules, name))
        assert live.keys() == state.keys() and all(torch.equal(live[k], state[k]) for k in live)
    params = {id(p) for p in brain.modules.decoder.parameters()}
    assert any(id(p) in params for p in brain.optimizer.state)  # the decoder's Adam moments
    second = train.main(ae_args(out, corpus, "--optimizer_step_limit=4", *extra))
    assert second.optimizer_step == 4
    # export and load: hidden states and z, as from the checkpoint
    folder = tmp_path / "model"
    export(str(out), str(folder))
    enc = load_model_folder(str(folder))
    ref = PretrainedEncoder.from_checkpoint(str(out))
    assert enc.latent_dim == 8 and enc.config["latent_regularizer"] == kind
    wavs = torch.randn(2, 16000)
    states, z, lens = enc.encode_latent(wavs, torch.tensor([1.0, 0.6]))
    states_ref, z_ref, _ = ref.encode_latent(wavs, torch.tensor([1.0, 0.6]))
    assert z.shape == (2, 26, 8) and lens.tolist() == [26, 16]
    assert torch.equal(z, z_ref) and all(torch.equal(a, b) for a, b in zip(states, states_ref))
    plain, _ = enc(wavs, torch.tensor([1.0, 0.6]))  # forward: the hidden states only
    assert len(plain) == 4 and torch.equal(plain[-1], states[-1])
    assert "latent z" in (folder / "README.md").read_text()


# ------------------------------------------------------------ CI: pre-train, export, load, probe


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("ae_run")
    train.main(ae_args(out, corpus, "--optimizer_step_limit=3"))
    return out


def test_ci_pretrain_export_load_probe(tmp_path, trained, monkeypatch):
    from recipes.probes import quick
    from test_demo_summary import fake_phones, write_asterisk

    folder = tmp_path / "model"
    export(str(trained), str(folder))
    assert load_model_folder(str(folder)).latent_dim == 8
    monkeypatch.setattr(quick, "MIN_LANGUAGE_ITEMS", 10)
    monkeypatch.setattr(quick, "label_phone_items", fake_phones)
    items = quick.asterisk_items(write_asterisk(str(tmp_path / "asterisk")))
    r = quick.evaluate_checkpoint(str(trained), None, None, str(tmp_path / "cache"), threads=1,
                                  items=items, log=lambda *a: None)
    for task, s in r["probes"].items():
        assert len(s["layers"]) == 4  # front-end + 3 layers: z is not a layer of "all"
        assert 0.0 <= s["z"]["acc"] <= 1.0
    assert r["Avg_z"] == pytest.approx(sum(s["z"]["acc"] for s in r["probes"].values()) / 2)
    assert r["latent"]["dim"] == 8 and 1.0 <= r["latent"]["effective_dimension"] <= 8.0
    plain = quick.evaluate_checkpoint("random:tiny", None, None, str(tmp_path / "cache"),
                                      threads=1, items=items, log=lambda *a: None)
    assert "Avg_z" not in plain and "z" not in plain["probes"]["language"]


def test_evaluate_command_writes_reconstruction_wavs_and_latent_health(tmp_path, trained, corpus):
    from recipes.autoencoder import evaluate

    out = tmp_path / "eval"
    rc = evaluate.main([str(trained), "--csv", corpus["valid"], "--out", str(out),
                        "--prompts", "1", "--no-probes", "--threads", "1"])
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["utterances"] == 4 and r["latent_dim"] == 8
    assert 0 < r["reconstruction"]["mel_l1"] < 10 and r["reconstruction"]["mcd_db"] > 0
    assert sorted(r["resynthesis"]["wavs"]) == sorted(
        f"wavs/valid0_{k}_gl.wav" for k in ("decoder", "input"))
    assert all((out / w).stat().st_size > 1000 for w in r["resynthesis"]["wavs"])
    assert 1 <= r["latent_health"]["z"] <= 8
    assert sorted(r["latent_health"]["layers"]) == ["-1", "0", "1", "2"]
    md = (out / "report.md").read_text()
    assert "mel-cepstral distortion" in md and "Griffin-Lim" in md
    # the L1 is the training term's, on clean input
    model = evaluate.Autoencoder.from_checkpoint(str(trained))
    with pytest.raises(ValueError, match="not an autoencoder"):
        evaluate.Autoencoder.from_checkpoint(str(write_plain_run(tmp_path, corpus)))
    assert model.decoder.convs[0].in_channels == 16


def write_plain_run(tmp_path, corpus):
    out = tmp_path / "plain"
    train.main(tiny_args(out, corpus, "--optimizer_step_limit=1", "--stage_transitions=[]"))
    return out


def test_reconstruction_term_logs_masked_frames_and_z_dimension():
    term = Reconstruction()
    feats = torch.zeros(1, 8, 2)
    rec = torch.zeros(1, 8, 2)
    rec[0, :4] = 2.0  # the masked encoder frame (first 4 Mel frames) is off by 2
    p = {"reconstruction": rec, "feats": feats, "feat_lens": torch.tensor([8]),
         "mask": torch.tensor([[True, False]]), "z": torch.randn(1, 2, 3),
         "enc_lens": torch.tensor([2])}
    value, logs = term(p, step=0)
    assert float(value) == 1.0 and float(logs["masked"]) == 2.0


def test_folder_manifest_writes_speaker_disjoint_manifests(tmp_path, corpus):
    import shutil

    from recipes.autoencoder import folder_manifest

    src = tmp_path / "audio"
    wavs = sorted(p for p in os.listdir(os.path.dirname(corpus["train"])) if p.endswith(".wav"))
    for k, name in enumerate(wavs[:6]):
        (src / f"spk{k % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(os.path.dirname(corpus["train"]), name), src / f"spk{k % 3}" / name)
    assert folder_manifest.main([str(src), "--out", str(tmp_path / "m"),
                                 "--valid-fraction", "0.34"]) == 0
    import csv

    parts = {n: list(csv.DictReader(open(tmp_path / "m" / f"{n}.csv"))) for n in ("train", "valid")}
    assert len(parts["train"]) == 4 and len(parts["valid"]) == 2
    assert not {r["spk_id"] for r in parts["train"]} & {r["spk_id"] for r in parts["valid"]}
    assert all(float(r["duration"]) >= 1.0 and os.path.isfile(r["wav"]) for r in parts["train"])
    (src / "spk0" / "bad.wav").write_bytes(b"")
    import soundfile

    soundfile.write(src / "spk0" / "bad.wav", torch.zeros(800).numpy(), 8000)
    with pytest.raises(ValueError, match="bad.wav has sample rate 8000 Hz"):
        folder_manifest.audio_rows(str(src))


# ------------------------------------------------------------ the verdict driver and its report


def test_verdict_arms_are_the_reproduction_command_on_the_autoencoder_yaml(tmp_path):
    from latent_rq_brain.training.arguments import check_command_line
    from recipes.autoencoder import verdict

    v = verdict.Verdict(str(tmp_path / "v"), corpus=str(tmp_path / "corpus"))
    arms = {name: extra() for name, _, extra, _ in v.arms(1)}
    assert list(arms) == ["sigreg", "kl", "none", "best_rq"]
    for name, extra in arms.items():
        args = v.train_args(1, str(tmp_path / "v" / "seed1" / name), 300, [2, 3], extra)
        yaml_file = os.path.basename(args[2])
        assert yaml_file == ("reproduce.yaml" if name == "best_rq" else "autoencoder_reproduce.yaml")
        assert "--stage_transitions=[]" in args and "--seed=1" in args
        _, overrides = check_command_line(args[2:])  # every setting is a key of its YAML
        assert overrides.get("latent_regularizer", "none") == verdict.ARMS.get(name, {}).get(
            "latent_regularizer", "none")
    path, text = expand_hparams_file(os.path.join(REPO, verdict.AUTOENCODER_YAML))
    settings = yaml.safe_load(re.sub(r"!\S+", "", text))
    assert settings["num_encoder_layers"] == 6 and settings["latent_dim"] == 16  # reproduce's encoder
    with pytest.raises(ValueError, match="unknown arms"):
        verdict.Verdict(str(tmp_path / "v"), arms=["vae"])
    sweep = verdict.Verdict(str(tmp_path / "v"), arms=["kl1e-4"])  # the sweep's other weight
    (name, _, extra, _), = sweep.arms(1)
    assert "--latent_regularizer_weight=0.0001" in extra() and "--latent_regularizer=kl" in extra()
    assert os.path.basename(sweep.train_args(1, str(tmp_path / name), 300, [2, 3], extra())[2]) \
        == "autoencoder_reproduce.yaml"


def fake_eval(folder, step, avg, avg_z=None, l1=None, seconds=None, losses=(), keywords=None):
    os.makedirs(os.path.join(folder, "eval"), exist_ok=True)
    with open(os.path.join(folder, "train_log.txt"), "w") as f:
        f.write("".join(f"step: {k}, stage: 0 - train loss: {v}, train skipped_steps: "
                        f"{int(v != v)}\n" for k, v in enumerate(losses)))
    q = {"Avg": avg, "Avg_best": avg,
         "probes": {} if keywords is None else {"keywords": {"all": keywords}}}
    if avg_z is not None:
        q.update(Avg_z=avg_z, latent={"dim": 16, "effective_dimension": 5.0})
    with open(os.path.join(folder, "eval", f"step{step}.json"), "w") as f:
        json.dump(q, f)
    if l1 is not None:
        with open(os.path.join(folder, "eval", f"recon_step{step}.json"), "w") as f:
            json.dump({"reconstruction": {"mel_l1": l1, "mcd_db": 10 * l1},
                       "latent_health": {"z": 7.0, "layers": {"-1": 3.0, "0": 9.5, "1": 6.0}}},
                      f)
    if seconds is not None:
        with open(os.path.join(folder, "segments.json"), "w") as f:
            json.dump({str(step): seconds}, f)


def test_data_variant_arms_train_on_derived_manifests_and_report_the_held_out_language(tmp_path):
    """``<arm>_frac25`` / ``<arm>_noar``: the arm's own command on a manifest
    derived once from train.csv (a quarter; no Arabic); the report pairs each
    no-Arabic arm's keyword probe with the arm that heard Arabic."""
    from recipes.autoencoder import verdict

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [f"u{i},1.0,a{i}.wav,{'ar' if i % 4 == 0 else 'en'}" for i in range(400)]
    (corpus / "train.csv").write_text("ID,duration,wav,lang\n" + "\n".join(rows) + "\n")
    v = verdict.Verdict(str(tmp_path / "v"), arms=list(verdict.DATA_ARMS), corpus=str(corpus))
    for name, _, extra, _ in v.arms(1):
        base, variant = verdict.split_arm(name)
        args = v.train_args(1, str(tmp_path / "v" / "seed1" / name), 300, [2, 3], extra())
        (manifest,) = [a.split("=", 1)[1] for a in args if a.startswith("--train_csv=")]
        assert os.path.basename(manifest) == f"train_{variant}.csv"
        assert os.path.basename(args[2]) == ("reproduce.yaml" if base == "best_rq"
                                             else "autoencoder_reproduce.yaml")
        kept = list(csv.DictReader(open(manifest)))
        if variant == "noar":
            assert len(kept) == 300 and all(r["lang"] == "en" for r in kept)
        else:
            assert 70 < len(kept) < 130
    quarter = (tmp_path / "v" / "manifests" / "train_frac25.csv").read_text()
    shuffled = corpus / "shuffled.csv"  # the subset follows the IDs, not the row order
    shuffled.write_text("ID,duration,wav,lang\n" + "\n".join(reversed(rows)) + "\n")
    again = verdict.derived_manifest(str(shuffled), "frac25", str(tmp_path / "other"))
    assert sorted(quarter.splitlines()) == sorted(open(again).read().splitlines())
    (corpus / "nolang.csv").write_text("ID,duration,wav\nu1,1.0,a.wav\n")
    with pytest.raises(ValueError, match=r"nolang.csv: data variant 'noar' needs the column"):
        verdict.derived_manifest(str(corpus / "nolang.csv"), "noar", str(tmp_path / "x"))
    (corpus / "english.csv").write_text("ID,duration,wav,lang\nu1,1.0,a.wav,en\n")
    with pytest.raises(ValueError, match="would hold nothing out"):
        verdict.derived_manifest(str(corpus / "english.csv"), "noar", str(tmp_path / "x"))
    # the report's held-out table: keyword accuracy heard vs never heard
    out = tmp_path / "verdict"
    for seed in (1, 2):
        for arm, kw in (("sigreg", 0.80), ("sigreg_noar", 0.74), ("kl", 0.78), ("kl_noar", 0.70)):
            fake_eval(str(out / f"seed{seed}" / arm), 600, 0.6, keywords=kw + seed / 100)
    lines, data = verdict.verdict_table(str(out), 600)
    held = data["held_out_language"]
    assert held["sigreg"]["mean"] == pytest.approx(-0.06) and held["kl"]["mean"] == pytest.approx(-0.08)
    assert "| sigreg | 2 | 81.5 ± " in "\n".join(lines)
    # the gaps task by task: sigreg - kl on keywords is +2 points on both seeds
    assert data["task_gaps"]["sigreg-kl"]["keywords"][0] == pytest.approx(0.02)
    assert data["task_gaps"]["sigreg-kl"]["seeds"] == [1, 2]
    assert "| sigreg - kl | 2 | 2.0 ± 0.0 |" in "\n".join(lines)
    # and each arm on the variant's data paired with itself on the whole corpus
    fake_eval(str(out / "seed1" / "kl_frac25"), 600, 0.57)
    _, data = verdict.verdict_table(str(out), 600)
    assert data["gaps"]["kl_frac25-kl"]["mean"] == pytest.approx(-0.03)
    assert data["gaps"]["kl_noar-kl"]["seeds"] == [1, 2]


def test_verdict_report_from_a_fake_set_of_evaluations(tmp_path):
    from recipes.autoencoder import verdict

    out, repro = tmp_path / "verdict", tmp_path / "reproduce"
    S = 3000
    for seed, shift in ((1, 0.0), (2, 0.01), (3, -0.01)):
        fake_eval(str(out / f"seed{seed}" / "sigreg"), S, 0.60 + shift, 0.50, 0.40, 600.0)
        fake_eval(str(out / f"seed{seed}" / "kl"), S, 0.55 + shift, 0.45, 0.50,
                  losses=[5.0] * 10 + [9.0, float("nan")] if seed == 2 else [5.0] * 12)
        fake_eval(str(out / f"seed{seed}" / "none"), S, 0.58 + shift / 2, 0.40, 0.30)
        fake_eval(str(repro / f"seed{seed}" / "best_rq"), S, 0.57 + shift)
    fake_eval(str(out / "seed1" / "kl"), 300, 0.1)  # another step: not read
    md = tmp_path / "autoencoder.md"
    assert verdict.main(["--out", str(out), "--best-rq-from", str(repro),
                         "--report", str(md)]) == 0
    text = md.read_text()
    data = json.loads((tmp_path / "autoencoder.json").read_text())["steps"]["3000"]
    assert data["arms"]["sigreg"]["Avg"][0] == pytest.approx(0.60)
    assert data["arms"]["best_rq"]["seeds"] == [1, 2, 3]
    gap = data["gaps"]["sigreg-kl"]  # +5 points on every seed: it separates
    assert gap["mean"] == pytest.approx(0.05) and gap["half_width"] == pytest.approx(0.0, abs=1e-9)
    assert gap["separates"] == "sigreg better"
    none_gap = data["gaps"]["none-best_rq"]  # +1, +0.5, +1.5 points: a t interval
    assert none_gap["mean"] == pytest.approx(0.01)
    assert none_gap["half_width"] == pytest.approx(4.303 * 0.005 / 3 ** 0.5, rel=1e-3)
    assert "| sigreg | 3 | 60.0 ± " in text and "| 0.400 ± 0.000 |" in text
    assert "| 3.0-9.5 | 0.400 ± 0.000 |" in text  # layers' effective dimension: least-most
    # BEST-RQ has no z, no decoder and no layer health in its evaluations
    assert re.search(r"\| best_rq \| 3 \| 57\.0 ± [0-9.]+ \| - \| - \| - \| - \| - \|", text)
    assert "| 0.20 ± 0.00 |" in text  # s/step: 600 s for 3000 steps
    # stability per seed: seed 2 of kl has a spike and a non-finite (skipped) step
    assert data["arms"]["kl"]["loss_spikes"] == [0, 1, 0]
    assert data["arms"]["kl"]["non_finite_losses"] == [0, 1, 0]
    assert data["arms"]["kl"]["skipped_steps"] == [0, 1, 0]
    assert "| 0/1/0 | 0/1/0 | 0/1/0 |" in text
    assert "SIGReg against KL (quick-probe Avg, paired by seed): sigreg better" in text
    with pytest.raises(ValueError, match="no evaluation at step 3000"):
        verdict.write_report(str(tmp_path / "empty"), str(tmp_path / "x.md"))


def test_verdict_report_has_a_table_per_step_and_the_sweep_with_its_pick(tmp_path):
    """``--report-step 600 3000``: the latest step first, each with its own
    seeds; the one-seed sweep picks by held-out L1 then the probes' folds."""
    from recipes.autoencoder import verdict

    out = tmp_path / "verdict"
    for seed in (1, 2, 3):
        fake_eval(str(out / f"seed{seed}" / "sigreg"), 600, 0.65, 0.4, 0.40)
        fake_eval(str(out / f"seed{seed}" / "kl"), 600, 0.63, 0.4, 0.41)
    fake_eval(str(out / "seed1" / "sigreg"), 3000, 0.60, 0.4, 0.38)
    fake_eval(str(out / "seed1" / "kl"), 3000, 0.62, 0.4, 0.38)
    # sweep: sigreg002 probes better at matched L1 (picked); kl1e-4 probes
    # better but rebuilds 20 % worse (not eligible): kl keeps its weight
    fake_eval(str(out / "seed1" / "sigreg002"), 600, 0.66, 0.4, 0.405)
    fake_eval(str(out / "seed1" / "kl1e-4"), 600, 0.70, 0.4, 0.49)
    md = tmp_path / "autoencoder.md"
    assert verdict.main(["--out", str(out), "--report", str(md),
                         "--report-step", "600", "3000"]) == 0
    text = md.read_text()
    assert text.index("## Step 3000 (S)") < text.index("## Step 600 (0.2 S)") \
        < text.index("## The weight sweep")
    assert "--report-step 600 3000" in text
    data = json.loads((tmp_path / "autoencoder.json").read_text())
    assert data["steps"]["600"]["arms"]["sigreg"]["seeds"] == [1, 2, 3]
    assert data["steps"]["3000"]["gaps"]["sigreg-kl"]["separates"] == "-"  # one seed
    assert data["sweep"]["pick"] == {"sigreg": "sigreg002", "kl": "kl"}
    assert "| sigreg002 | sigreg | 0.02 | 66.0 |" in text and "| yes |" in text
    # without a sweep arm there is no sweep section
    for arm in ("sigreg002", "kl1e-4"):
        shutil.rmtree(out / "seed1" / arm)
    verdict.main(["--out", str(out), "--report", str(md), "--report-step", "600"])
    assert "weight sweep" not in md.read_text()
    assert json.loads((tmp_path / "autoencoder.json").read_text())["sweep"] == {}


def test_verdict_stability_comes_from_the_saved_summary_or_says_it_is_unknown(tmp_path):
    """A fresh clone keeps eval/ only: counts saved at evaluation are read back,
    and a run with neither log nor summary shows '-' rather than zeros."""
    from recipes.autoencoder import verdict

    run = tmp_path / "seed1" / "sigreg"
    fake_eval(str(run), 600, 0.6, 0.5, 0.4, losses=[5.0] * 10 + [9.0])
    summary = dict(verdict.stability(str(run), 600), step=600)
    (run / "eval" / "train_step600.json").write_text(json.dumps(summary))
    os.remove(run / "train_log.txt")
    row = verdict.read_arm(str(tmp_path), "sigreg", 1, 600)
    assert row["loss_spikes"] == 1 and row["skipped_steps"] == 0
    os.remove(run / "eval" / "train_step600.json")
    row = verdict.read_arm(str(tmp_path), "sigreg", 1, 600)
    assert row["loss_spikes"] is None and row["s_per_step"] is None
    lines, _ = verdict.verdict_table(str(tmp_path), 600)
    assert lines[2].endswith("| - | - | - | - |")


def test_any_encoder_of_the_contract_by_a_setting(tmp_path, corpus):
    """The transformer encoder: one setting; z, export and load as with the Conformer."""
    out = tmp_path / "run"
    brain = train.main(ae_args(out, corpus, "--encoder_architecture=transformer",
                               "--optimizer_step_limit=1", "--latent_regularizer=kl"))
    assert type(brain.modules.encoder).__name__ != "LatentRQEncoder"
    export(str(out), str(tmp_path / "model"))
    enc = load_model_folder(str(tmp_path / "model"))
    assert enc.config["encoder_architecture"] == "transformer"
    _, z, lens = enc.encode_latent(torch.randn(1, 16000))
    assert z.shape == (1, 26, 8) and lens.tolist() == [26]
