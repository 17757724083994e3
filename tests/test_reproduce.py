"""The mini reproduction: corpus builder (fake .deb files), quick probes (known answers),
the resumable driver's plan and checkpoint lookup."""

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from recipes.probes import quick
from recipes.reproduce import prepare_corpus as pc
from recipes.reproduce import reproduce as rp


def _fake_deb(tmp_path, package, files):
    """A .deb named ``package`` holding ``{relative path: (samples, rate, format)}``."""
    root = tmp_path / f"{package}_root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: test <t@t>\nDescription: fake\n"
    )
    for rel, (samples, rate, fmt) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), samples, rate, format=fmt)
    deb = tmp_path / f"{package}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
                   check=True, capture_output=True)
    return str(deb)


def _tone(seconds, rate, freq=220.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_corpus_from_fake_debs_resamples_splits_and_resumes(tmp_path):
    base = "usr/share/games/fillets-ng/sound"
    files = {f"{base}/level{i}/cs/fish{i}-line{j}.ogg": (_tone(1.5 + 0.1 * j, 22050), 22050, "OGG")
             for i in range(3) for j in range(8)}
    files[f"{base}/level0/cs/too-short.ogg"] = (_tone(0.2, 22050), 22050, "OGG")
    files[f"{base}/level0/cs/silent.ogg"] = (np.zeros(44100, np.float32), 22050, "OGG")
    deb = _fake_deb(tmp_path, "fillets-ng-data-cs", files)
    out = tmp_path / "corpus"
    summary = pc.prepare_corpus(str(out), sources=["fillets-cs"], deb_files=[deb], num_workers=1)
    s = summary["fillets-cs"]
    assert s["utterances"] + s["holdout_utterances"] == 24  # short and silent dropped
    assert s["holdout_utterances"] >= 1 and s["utterances"] >= 1
    with open(out / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["lang"] for r in rows} == {"cs"} and {r["source"] for r in rows} == {"fillets-cs"}
    info = sf.info(rows[0]["wav"])
    assert info.samplerate == 16000 and info.channels == 1
    assert abs(info.frames / 16000 - float(rows[0]["duration"])) < 1e-3
    with open(out / "lid_holdout.csv", newline="") as f:
        held = {r["ID"] for r in csv.DictReader(f)}
    assert held.isdisjoint(r["ID"] for r in rows)
    # resumable: a second call reads the marker and decodes nothing
    os.remove(rows[0]["wav"])
    again = pc.prepare_corpus(str(out), sources=["fillets-cs"], deb_files=[deb], num_workers=1)
    assert again["fillets-cs"] == s and not os.path.exists(rows[0]["wav"])
    assert json.load(open(out / "sources.json"))["total"]["utterances"] == s["utterances"]


def test_holdout_is_stable_and_about_ten_percent():
    keys = [f"prompt{i}" for i in range(4000)]
    share = np.mean([pc.is_holdout(k) for k in keys])
    assert 0.08 < share < 0.12
    assert [pc.is_holdout(k) for k in keys[:50]] == [pc.is_holdout(k) for k in keys[:50]]


def test_probe_held_ids_cover_superb_eval_splits(tmp_path):
    from recipes.probes.prepare_shared_packs import TASKS
    from recipes.reproduce.probe_sets import PACK_TASKS, probe_held_ids

    # a miniature of every pack the probes read, with the packs' columns
    rng = np.random.default_rng(0)
    specs = {
        "arabic-commands": ("keyword,speaker,split", lambda i: f"k{i % 3},s{i % 6},"
                            + ["train", "val", "test"][(i % 6) // 2]),
        "fsdd": ("digit,speaker,split", lambda i: f"{i % 3},s{i % 6},train"),
        "coffee-intents": ("coffeeDrink", lambda i: f"c{i % 3}"),
        "librispeech-mini": ("speaker,gender,split", lambda i: f"s{i % 6},{'MF'[i % 2]},"
                             + ("test-other" if i < 30 else "train-clean-100")),
    }
    for pack, (cols, make) in specs.items():
        (tmp_path / pack).mkdir()
        lines = [f"id,wav,duration,{cols}"] + [f"u{i},a{i}.ogg,1.0,{make(i)}" for i in range(60)]
        (tmp_path / pack / "manifest.csv").write_text("\n".join(lines) + "\n")
    del rng
    held = probe_held_ids(str(tmp_path))
    assert len(held["fsdd"]) == 60  # the digits probe evaluates on all of fsdd
    ac = held["arabic-commands"]
    assert {f"u{i}" for i in range(60) if (i % 6) // 2 > 0} <= ac  # val + test speakers
    assert "intents" in PACK_TASKS and len(TASKS) >= 1
    assert {f"u{i}" for i in range(30)} <= held["librispeech-mini"]


def test_quick_probe_separable_features_score_near_100():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    groups = np.tile(np.arange(6), 20)
    x = rng.normal(size=(120, 8)) + 4.0 * np.eye(8)[y]
    acc, std = quick.cv_accuracy(x, y, quick.make_folds(y, groups))
    assert acc > 0.97 and std < 0.05


def test_quick_probe_shuffled_labels_score_chance():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 60)
    x = rng.normal(size=(240, 8)) + 4.0 * np.eye(8)[y]
    shuffled = rng.permutation(y)
    acc, _ = quick.cv_accuracy(x, shuffled, quick.make_folds(shuffled))
    assert abs(acc - 0.25) < 0.1


def test_speaker_disjoint_folds_share_no_speaker():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 300)
    spk = rng.integers(0, 12, 300).astype(str)
    folds = quick.make_folds(y, spk)
    assert len(folds) == 5
    covered = np.concatenate([te for _, te in folds])
    assert sorted(covered.tolist()) == list(range(300))
    for tr, te in folds:
        assert set(spk[tr]).isdisjoint(spk[te])


def test_pooled_ignores_padding():
    import torch

    h = torch.randn(2, 7, 3)
    lens = torch.tensor([7, 4])
    padded = h.clone()
    padded[1, 4:] = 1e6
    a = quick.pooled([h], lens)
    b = quick.pooled([padded], lens)
    assert np.allclose(a, b)
    assert np.allclose(a[1, 0, :3], h[1, :4].mean(0).numpy(), atol=1e-6)


def test_schedule_scaled_to_s_and_arms():
    st = rp.scaled_steps("cpu")
    S = st["S"]
    assert st["checkpoints"][-1] == S and len(st["checkpoints"]) == 10
    assert st["transitions"] == [S // 5, S // 2, 4 * S // 5]
    r = rp.Reproduction("/tmp/unused_repro", evaluate=False)
    names = [a[0] for a in r.arms(1, 1, branch_step=st["checkpoints"][3])]
    assert names == ["best_rq", "schedule", f"branch{st['checkpoints'][3]}",
                     "schedule_shallow", "schedule_deep"]
    names2 = [a[0] for a in r.arms(2, 1, branch_step=st["transitions"][0])]
    assert names2 == ["best_rq", "schedule"]  # no duplicate branch, layer sets on seed 1 only


def test_checkpoint_at_skips_transition_and_intra_epoch(tmp_path):
    save = tmp_path / "run" / "save"
    for name, step, meta in [("CKPT+a", 300, "stage: 0\n"),
                             ("CKPT+b", 600, "transition_to_stage: 1\n"),
                             ("CKPT+d", 600, "stage: 1\n"),
                             # SpeechBrain's mid-epoch checkpoint of a killed run, newest
                             ("CKPT+e", 600, "brain_intra_epoch_ckpt: true\n")]:
        (save / name).mkdir(parents=True)
        (save / name / "CKPT.yaml").write_text(meta)
        (save / name / "brain.ckpt").write_text(f"optimizer_step: {step}\n")
    assert rp.checkpoint_at(str(tmp_path / "run"), 300).endswith("CKPT+a")
    assert rp.checkpoint_at(str(tmp_path / "run"), 600).endswith("CKPT+d")
    assert rp.checkpoint_at(str(tmp_path / "run"), 900) is None


def test_pack_corpus_opus_relative_paths_and_size_limit(tmp_path):
    from latent_rq_brain.training.data import read_manifest
    from recipes.reproduce.pack_corpus import pack

    corpus = tmp_path / "c"
    corpus.mkdir()
    for split in ("train", "valid"):
        rows = []
        for k in range(2):
            wav = corpus / f"{split}{k}.wav"
            sf.write(str(wav), _tone(2.0, 16000, 200 + 50 * k), 16000)
            rows.append(f"{split}{k},2.0,{wav},spk")
        (corpus / f"{split}.csv").write_text("ID,duration,wav,spk_id\n" + "\n".join(rows) + "\n")
    mib = pack(str(corpus), str(tmp_path / "p"))
    assert 0 < mib < 0.1
    rows = read_manifest(str(tmp_path / "p" / "train.csv"))
    x, sr = sf.read(rows["train0"]["wav"])
    assert sr == 16000 and abs(len(x) / sr - 2.0) < 0.05
    with pytest.raises(SystemExit, match="MiB"):
        pack(str(corpus), str(tmp_path / "p2"), max_mib=1e-6)


def _fake_eval(avg, pnmi_mel, pnmi_layer):
    probes = {t: {"all": avg, "best": avg, "all_std": 0.02, "layers": [], "best_layer": 0}
              for t in ("keywords", "phones")}
    return {"Avg": avg, "Avg_best": avg, "probes": probes,
            "targets": {"mel": {"pnmi": pnmi_mel}, "layer2": {"pnmi": pnmi_layer}}}


def test_report_from_partial_runs(tmp_path):
    from recipes.reproduce.report import write_report

    out = tmp_path / "repro"
    S = rp.scaled_steps("cpu")["S"]
    for seed in (1, 2):
        sd = out / f"seed{seed}"
        (sd / "best_rq" / "eval").mkdir(parents=True)
        (sd / "schedule" / "eval").mkdir(parents=True)
        json.dump(dict(_fake_eval(0.5, 0.3, 0.2), step=0), open(sd / "random_init.json", "w"))
        for k, step in enumerate(rp.scaled_steps("cpu")["checkpoints"]):
            json.dump(dict(_fake_eval(0.5 + 0.01 * k, 0.31, 0.2 + 0.02 * k), step=step),
                      open(sd / "best_rq" / "eval" / f"step{step}.json", "w"))
            if step > S // 5:
                json.dump(dict(_fake_eval(0.52 + 0.012 * k, 0.3, 0.25), step=step),
                          open(sd / "schedule" / "eval" / f"step{step}.json", "w"))
        json.dump({str(s): 60.0 for s in rp.scaled_steps("cpu")["checkpoints"]},
                  open(sd / "best_rq" / "segments.json", "w"))
    # a layer set run to 0.5 S only (--until): Table 2 compares at its last step
    (out / "seed1" / "schedule_shallow" / "eval").mkdir(parents=True)
    for step in (900, 1500):
        json.dump(dict(_fake_eval(0.7, 0.3, 0.27), step=step),
                  open(out / "seed1" / "schedule_shallow" / "eval" / f"step{step}.json", "w"))
    md = tmp_path / "reproduction.md"
    write_report(str(out), str(md))
    text = md.read_text()
    assert "| random init | 0 | 2 |" in text
    assert "reaches it at step" in text  # 0.52 + 0.012 k passes 0.59 before S
    assert (tmp_path / "reproduction_fig3.png").stat().st_size > 1000
    assert (tmp_path / "reproduction_pnmi.png").stat().st_size > 1000
    # layer2 PNMI 0.2 + 0.02 k first exceeds Mel's 0.31 at k = 6
    steps = rp.scaled_steps("cpu")["checkpoints"]
    assert f"first beat Mel's at step {steps[6]}" in text
    # Avg by step, with the difference from BEST-RQ at the same step (k = 9: 0.628 - 0.59)
    assert f"| {S} | 59.0 [2] | 62.8 [2] (+3.8) |" in text
    assert "BEST-RQ trained with 2 seeds: std of the Avg over seeds at a step 0.0 points" in text
    assert "Noise: standard error of one evaluation's Avg from its folds" in text
    assert "random-init encoders of 2 seeds: Avg 50.0 ± 0.0" in text
    assert "SUPERB-style" not in text  # not run
    assert "## Table 2: layer sets (schedule, seed 1, step 1500)" in text
    assert "| shallow | [0, 1] | 70.0 | 70.0 | 70.0 | 0.270 |" in text
    assert "| BEST-RQ (Mel) | - | 54.0 |" in text


def test_report_branch_rule_reads_the_longer_arm_and_the_superb_check(tmp_path):
    from recipes.reproduce.report import write_report

    out = tmp_path / "repro"
    sd = out / "seed1"
    (sd / "best_rq" / "eval").mkdir(parents=True)
    (sd / "best_rq_longer" / "eval").mkdir(parents=True)
    json.dump(dict(_fake_eval(0.5, 0.3, 0.2), step=3000),
              open(sd / "best_rq" / "eval" / "step3000.json", "w"))
    json.dump(dict(_fake_eval(0.55, 0.3, 0.35), step=3600),
              open(sd / "best_rq_longer" / "eval" / "step3600.json", "w"))
    (out / "superb").mkdir()
    json.dump({"scores": {"A": {"ks": 90.0, "ic": 50.0}, "B": {"ks": 80.0, "ic": 40.0}},
               "mean": {"A": 70.0, "B": 60.0}, "ranking": ["A", "B"],
               "quick_avg": {"A": 0.62, "B": 0.64}, "quick_ranking": ["B", "A"]},
              open(out / "superb" / "summary.json", "w"))
    (out / "superb_variants").mkdir()
    json.dump({"scores": {"C": {"ks": 85.0, "ic": 45.0}}, "mean": {"C": 65.0}, "ranking": ["C"],
               "quick_avg": {}, "quick_ranking": None},
              open(out / "superb_variants" / "summary.json", "w"))
    md = tmp_path / "r.md"
    write_report(str(out), str(md))
    text = md.read_text()
    assert "## SUPERB-style check of the ranking (variants)" in text
    assert "| C | 85.0 | 45.0 | 65.0 |  |" in text
    assert "first beat Mel's at step 3600 (best layer minus Mel PNMI by step: 3000: -0.100, " \
        "3600: +0.050)" in text
    assert "| A | 90.0 | 50.0 | 70.0 | 62.0 |" in text
    assert "A > B (SUPERB-style); B > A (quick probes): a different order." in text
    assert "one training seed" in text


def test_report_says_when_no_layer_beats_mel_and_shows_diagnosis(tmp_path):
    from recipes.reproduce.report import write_report
    from recipes.reproduce.target_diagnosis import NORMS

    sd = tmp_path / "repro" / "seed1"
    (sd / "best_rq" / "eval").mkdir(parents=True)
    for step in (300, 600):
        json.dump(dict(_fake_eval(0.5, 0.3, 0.1 if step == 300 else 0.2), step=step),
                  open(sd / "best_rq" / "eval" / f"step{step}.json", "w"))
    (sd / "diagnosis").mkdir()
    srcs = ("mel", "layer2")
    diag = {"checkpoint": "run@600", "frames": 123,
            "effective_dimension": {s: 4.0 for s in srcs}, "input_dim": {s: 8 for s in srcs},
            "kmeans_pnmi": {"mel": 0.41, "layer2": 0.37},
            "norms": {n: {s: {"pnmi": 0.25, "perplexity": 99.0} for s in srcs} for n in NORMS}}
    json.dump(diag, open(sd / "diagnosis" / "step600.json", "w"))
    md = tmp_path / "r.md"
    write_report(str(tmp_path / "repro"), str(md))
    text = md.read_text()
    assert "no layer's targets beat Mel's at any evaluated step up to 600" in text
    assert "(best layer minus Mel PNMI by step: 300: -0.200, 600: -0.100)" in text
    assert "| layer2 | 4.0 / 8 | 0.370 | 0.250 | 0.250 | 0.250 | 99 |" in text


def test_target_diagnosis_resolves_run_at_step(tmp_path):
    from recipes.reproduce.target_diagnosis import resolve

    ck = tmp_path / "run" / "save" / "CKPT+a"
    ck.mkdir(parents=True)
    (ck / "CKPT.yaml").write_text("end-of-epoch: true\n")
    (ck / "brain.ckpt").write_text("optimizer_step: 600\n")
    assert resolve(f"{tmp_path}/run@600") == str(ck)
    assert resolve("random:tiny") == "random:tiny"
    with pytest.raises(FileNotFoundError, match="no checkpoint at optimizer step 900"):
        resolve(f"{tmp_path}/run@900")


def test_superb_check_ranks_and_reuses_results(tmp_path, monkeypatch, capsys):
    from recipes.reproduce import superb_check
    from tests.test_probes import fake_packs

    monkeypatch.setattr(superb_check, "TASKS", {k: superb_check.TASKS[k]
                                                for k in ("ks_arabic", "ic_coffee")})
    monkeypatch.setattr(superb_check, "OVERRIDES", dict(superb_check.OVERRIDES,
                                                        number_of_epochs=1, batch_size=8))
    packs = fake_packs(str(tmp_path / "packs"))
    quick_json = tmp_path / "q.json"
    json.dump({"Avg": 0.4}, open(quick_json, "w"))
    out = tmp_path / "superb"
    argv = ["a=random:tiny", "b=random:tiny", "--out", str(out), "--shared", packs,
            "--quick", f"a={quick_json}"]
    superb_check.main(argv)
    summary = json.load(open(out / "summary.json"))
    assert sorted(summary["ranking"]) == ["a", "b"]
    assert set(summary["scores"]["a"]) == {"ks_arabic", "ic_coffee"}
    assert all(0 <= v <= 100 for s in summary["scores"].values() for v in s.values())
    assert summary["quick_ranking"] == ["a"]
    result = out / "a" / "ks_arabic" / "results.json"
    before = result.stat().st_mtime
    superb_check.main(argv)  # rerun: results reused, nothing retrained
    assert result.stat().st_mtime == before
    assert "SUPERB-style ranking" in capsys.readouterr().out


def test_longer_arm_continues_from_a_copy_of_the_s_checkpoint(tmp_path):
    r = rp.Reproduction(str(tmp_path / "out"), longer=4500)
    assert r.arm_steps("best_rq_longer") == list(range(300, 4501, 300))
    assert r.arm_steps("best_rq") == rp.scaled_steps("cpu")["checkpoints"]
    assert [a[0] for a in r.arms(1, 1, None)][-1] == "best_rq_longer"
    best = tmp_path / "out" / "seed1" / "best_rq"
    ck = best / "save" / "CKPT+s"
    ck.mkdir(parents=True)
    (ck / "CKPT.yaml").write_text("end-of-epoch: true\n")
    (ck / "brain.ckpt").write_text("optimizer_step: 3000\n")
    (best / "segments.json").write_text('{"3000": 60.0}')
    folder = tmp_path / "out" / "seed1" / "best_rq_longer"
    r.continue_from(1, str(folder))
    assert rp.checkpoint_at(str(folder), 3000).endswith("CKPT+s")
    assert json.load(open(folder / "segments.json")) == {"3000": 60.0}
    with pytest.raises(RuntimeError, match="no checkpoint at S = 3000"):
        r.continue_from(2, str(tmp_path / "out" / "seed2" / "best_rq_longer"))


def test_until_stops_every_arm_at_that_step_for_now(tmp_path, monkeypatch):
    """--until trains segments up to that step only; the checkpoints are the ones
    a full run makes, so rerunning without it continues."""
    calls = []

    def fake_train(cmd, cwd, stdout, stderr, env):
        limit = int(next(a for a in cmd if a.startswith("--optimizer_step_limit="))
                    .split("=")[1])
        folder = next(a for a in cmd if a.startswith("--output_folder=")).split("=", 1)[1]
        calls.append(limit)
        ck = os.path.join(folder, "save", f"CKPT+{limit:05d}")
        os.makedirs(ck)
        open(os.path.join(ck, "CKPT.yaml"), "w").write("end-of-epoch: true\n")
        open(os.path.join(ck, "brain.ckpt"), "w").write(f"optimizer_step: {limit}\n")
        return 0

    monkeypatch.setattr(rp.subprocess, "call", fake_train)
    r = rp.Reproduction(str(tmp_path / "out"), evaluate=False, until=900)
    r.run([1], arms=["best_rq"])
    assert calls == [300, 600, 900]
    rp.Reproduction(str(tmp_path / "out"), evaluate=False).run([1], arms=["best_rq"])
    assert calls == rp.scaled_steps("cpu")["checkpoints"]


def test_report_paired_gap_per_seed_with_a_t_interval_over_seeds(tmp_path):
    from recipes.reproduce.report import write_report

    out = tmp_path / "repro"
    S = rp.scaled_steps("cpu")["S"]
    for seed, gap in ((1, -0.02), (2, -0.03), (3, -0.01)):
        sd = out / f"seed{seed}"
        (sd / "best_rq" / "eval").mkdir(parents=True)
        (sd / "schedule" / "eval").mkdir(parents=True)
        for step in (1500, S):
            json.dump(dict(_fake_eval(0.6, 0.3, 0.2), step=step),
                      open(sd / "best_rq" / "eval" / f"step{step}.json", "w"))
            json.dump(dict(_fake_eval(0.6 + gap, 0.3, 0.2), step=step),
                      open(sd / "schedule" / "eval" / f"step{step}.json", "w"))
    md = tmp_path / "r.md"
    write_report(str(out), str(md))
    text = md.read_text()
    # per-seed means -2, -3, -1: mean -2, sample std 1, t(0.975, 2) = 4.303 -> +-2.5
    assert ("| Latent-RQ (schedule) | 1: -2.0 (2), 2: -3.0 (2), 3: -1.0 (2) | -2.0 ± 1.0 | "
            "-4.5 to +0.5 | -2.0, -3.0, -1.0 | 6 of 6 |") in text
    assert "## Each arm minus BEST-RQ (quick-probe all-layer Avg, points," in text
    assert "## Each arm minus BEST-RQ (quick-probe Avg of each task's best single layer" in text


def test_find_branch_step_is_the_first_step_a_layer_beats_mel(tmp_path):
    steps = rp.scaled_steps("cpu")["checkpoints"]
    ev = tmp_path / "seed1" / "best_rq" / "eval"
    ev.mkdir(parents=True)
    r = rp.Reproduction(str(tmp_path), evaluate=False)

    def write(step, layer_pnmi):  # Mel's targets: 0.3
        json.dump(dict(_fake_eval(0.6, 0.3, layer_pnmi), step=step),
                  open(ev / f"step{step}.json", "w"))

    for step in steps[:4]:
        write(step, 0.25)
    assert r.find_branch_step(1) is None  # below Mel at every evaluated step
    write(steps[2], 0.31)
    write(steps[3], 0.35)
    assert r.find_branch_step(1) == steps[2]  # the first, not the best
    (ev / f"step{steps[1]}.json").unlink()
    assert r.find_branch_step(1) is None  # an unevaluated earlier step stops the scan
    assert r.find_branch_step(2) is None  # no evaluations at all


def test_variant_arms_branch_at_the_schedule_with_their_settings(tmp_path, monkeypatch):
    r = rp.Reproduction(str(tmp_path / "repro"), evaluate=False, variants=["pca_kmeans_anchor2"])
    arms = r.arms(2, 1, None)
    assert [a[0] for a in arms] == ["best_rq", "schedule", "variant_pca_kmeans_anchor2"]
    name, layers, extra, start = arms[-1]
    assert start == rp.scaled_steps("cpu")["transitions"][0]
    monkeypatch.setattr(rp, "checkpoint_at", lambda folder, step: f"{folder}@{step}")
    args = extra()
    assert "--target_projection=pca" in args and "--target_codebooks=kmeans" in args
    assert "--anchor_codebooks=2" in args and "--initial_stage=1" in args
    with pytest.raises(ValueError, match="unknown variants"):
        rp.Reproduction(str(tmp_path / "repro"), variants=["nope"])


def test_encoder_arm_is_best_rq_on_the_other_encoder_at_its_target_layers(tmp_path):
    """``--encoders zipformer``: BEST-RQ from step 0 with the encoder's settings,
    its own target layers, a label of its own; the encoder builds at the
    Conformer's parameter count (within 1 %)."""
    from latent_rq_brain.model.architectures import build_architecture
    from recipes.reproduce.report import arm_label

    r = rp.Reproduction(str(tmp_path / "repro"), evaluate=False, encoders=["zipformer"])
    name, layers, extra, start = r.arms(1, 1, None)[-1]
    assert (name, layers, start) == ("best_rq_zipformer", [5, 7], 0)
    args = r.train_args(1, str(tmp_path / "z"), 300, layers, extra())
    assert "--encoder_architecture=zipformer" in args and "--stage_transitions=[]" in args
    assert "--target_layers=[5,7]" in args and "--num_encoder_layers=12" in args
    assert arm_label(name) == "BEST-RQ (Zipformer-like encoder)"
    common = dict(sample_rate=16000, n_fft=400, n_mels=80, win_length=25, hop_length=10,
                  downsampling=4, cnn_channels=[32, 16], d_model=96, nhead=4)
    sizes = {}
    for arch, settings in (("conformer", {"num_encoder_layers": 6, "d_ffn": 384}),
                           ("zipformer", {"num_encoder_layers": 12, "d_ffn": 232})):
        enc = build_architecture(arch, **common, **settings)["encoder"]
        sizes[arch] = sum(p.numel() for p in enc.parameters())
    assert abs(sizes["zipformer"] / sizes["conformer"] - 1) < 0.01
    with pytest.raises(ValueError, match="unknown encoders"):
        rp.Reproduction(str(tmp_path / "repro"), encoders=["mamba"])


def test_report_lists_the_variants_leading_indicator(tmp_path):
    from recipes.reproduce.report import arm_label, variant_target_lines

    for seed, pn in ((1, 0.27), (2, 0.25)):
        folder = tmp_path / f"seed{seed}" / "variant_targets"
        folder.mkdir(parents=True)
        json.dump({"targets": {"mel": {"pnmi": 0.27, "perplexity": 115.0},
                               "pca+kmeans": {"pnmi": pn, "perplexity": 300.0}}},
                  open(folder / "step600.json", "w"))
    text = "\n".join(variant_target_lines(str(tmp_path)))
    assert "| 600 | 2 | mel | 0.270 ± 0.000 | 115 ± 0 |" in text
    assert "| 600 | 2 | pca+kmeans | 0.260 ± 0.010 | 300 ± 0 |" in text
    assert arm_label("variant_pca_kmeans") == "Latent-RQ + pca + kmeans"
