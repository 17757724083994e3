"""The demo's report without ../shared: Asterisk quick-probe tasks, the leading
indicator on a tiny random encoder, and recipes.demo.summary (one folder, two
folders merged). Fast: generated audio, hand-written logs and probe results, no
network.
"""

import csv
import json
import os
import subprocess

import numpy as np
import pytest
import soundfile
import torch

from latent_rq_brain.training.synthetic import synth_utterance
from recipes.demo import summary
from recipes.probes import quick

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------ Asterisk tasks


def write_asterisk(folder, languages=("en", "fr"), prompts=12, seconds=0.6):
    """A prepare_asterisk-like corpus: train.csv + valid.csv, IDs <lang>-<prompt>."""
    rng = np.random.default_rng(0)
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    rows = []
    for lang in languages:
        for p in range(prompts):
            wav = os.path.join(folder, "wav", lang, f"p{p}.wav")
            os.makedirs(os.path.dirname(wav), exist_ok=True)
            soundfile.write(wav, synth_utterance(rng, seconds + 0.1 * (p % 3)), 16000)
            wrd = words[p % len(words)].capitalize() + "." if p != 0 else ""
            rows.append([f"{lang}-prompt.{p}", seconds, wav, f"asterisk-{lang}", wrd])
    for name, part in (("train.csv", rows[::2]), ("valid.csv", rows[1::2])):
        with open(os.path.join(folder, name), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ID", "duration", "wav", "spk_id", "wrd"])
            w.writerows(part)
    return folder


def test_asterisk_items_tasks_and_groups(tmp_path, monkeypatch):
    folder = write_asterisk(str(tmp_path), languages=("en", "fr", "it"))
    monkeypatch.setattr(quick, "MIN_LANGUAGE_ITEMS", 10)
    items = quick.asterisk_items(folder)
    assert set(items) == {"language", "phones"}
    lang = items["language"]
    assert len(lang) == 36 and {i[2] for i in lang} == {"en", "fr", "it"}
    # prompt-disjoint folds: the group is the prompt name, shared across languages
    assert {i[3] for i in lang} == {f"prompt.{p}" for p in range(12)}
    phones = items["phones"]
    # English prompts with a transcript only (prompt 0 has none); label = the words
    assert len(phones) == 11 and all(i[0].startswith("en-") and i[2] for i in phones)
    # a corpus prepared with valid_fraction 0 has a header-only valid.csv
    with open(os.path.join(folder, "valid.csv"), "w") as f:
        f.write("ID,duration,wav,spk_id,wrd\n")
    monkeypatch.setattr(quick, "MIN_LANGUAGE_ITEMS", 6)
    assert len(quick.asterisk_items(folder)["language"]) == 18  # 6 prompts per language
    monkeypatch.setattr(quick, "MIN_LANGUAGE_ITEMS", 7)  # no language has enough
    with pytest.raises(ValueError, match="no item for the language task"):
        quick.asterisk_items(folder)


# ------------------------------------------------------------ the indicator


def fake_phones(items, wavs, enc_lens, cache, log=print, downsampling=4):
    """Alternating phone labels (PocketSphinx finds no phones in generated buzz)."""
    return [[("S", "AH", "T", "SIL")[(t // 2 + k) % 4] for t in range(n)]
            for k, n in enumerate(enc_lens)]


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    """recipes.probes.quick on a random tiny encoder and a generated Asterisk corpus."""
    folder = write_asterisk(str(tmp_path_factory.mktemp("asterisk")))
    mp = pytest.MonkeyPatch()
    mp.setattr(quick, "MIN_LANGUAGE_ITEMS", 10)
    mp.setattr(quick, "label_phone_items", fake_phones)
    try:
        items = quick.asterisk_items(folder)
        cache = str(tmp_path_factory.mktemp("quick_cache"))
        r = quick.evaluate_checkpoint("random:tiny", None, None, cache, threads=1,
                                      items=items, log=lambda *a: None)
    finally:
        mp.undo()
    return r


def test_phone_labels_of_asterisk_items_fit_the_encoder_frames(tmp_path, monkeypatch):
    """PocketSphinx labels (aligned to the transcript or recognised) cover every
    encoder frame of each English prompt."""
    pytest.importorskip("pocketsphinx")
    from recipes.analysis.labels import n_enc_frames

    monkeypatch.setattr(quick, "MIN_LANGUAGE_ITEMS", 10)
    items = quick.asterisk_items(write_asterisk(str(tmp_path), prompts=10))["phones"][:2]
    wavs = quick.load_audio(items, str(tmp_path / "cache" / "audio.npz"))
    lens = [n_enc_frames(len(w)) for w in wavs]
    frames = quick.label_phone_items(items, wavs, lens, str(tmp_path / "cache"),
                                     log=lambda *a: None, downsampling=4)
    assert [len(f) for f in frames] == lens
    assert (tmp_path / "cache" / "phones_aligned.json").is_file()


def test_indicator_on_a_tiny_model(tiny_result):
    r = tiny_result
    targets = r["targets"]
    assert list(targets)[:3] == ["mel", "layer-1", "layer0"]
    for name, t in targets.items():
        assert 0 <= t["pnmi"] <= 1, name
        assert t["pnmi_codebook_std"] >= 0
        assert 1 <= t["perplexity"] <= 512 and 1 <= t["distinct"] <= 512
    assert set(r["probes"]) == {"language", "phones"}
    for task, p in r["probes"].items():
        assert 0 <= p["all"] <= 1 and p["all_std"] >= 0 and p["folds"] >= 2, task
        assert len(p["layers"]) == len(targets) - 1  # front-end + every layer
    assert r["threads"] == 1


def test_mel_indicator_does_not_depend_on_the_encoder(tmp_path, monkeypatch):
    """Same audio and quantizer seed: the Mel row is the same for any encoder, the
    layers' rows are the encoder's (fixed fake phone labels, no PocketSphinx)."""
    from latent_rq_brain.sharing.pretrained import PretrainedEncoder

    monkeypatch.setattr(quick, "MIN_LANGUAGE_ITEMS", 10)
    items = quick.asterisk_items(write_asterisk(str(tmp_path)))["phones"]
    wavs = quick.load_audio(items, str(tmp_path / "cache" / "audio.npz"))
    encs = [PretrainedEncoder.load("random:tiny", seed=s) for s in (1, 2)]
    fake = [["AH" if t % 2 else "S" for t in range(len(s[0]))]
            for s in quick.encode(encs[0], wavs)]
    a, b = (quick.target_quality(e, None, wavs, fake) for e in encs)
    assert a["mel"] == b["mel"]
    assert a["layer0"] != b["layer0"]


# ------------------------------------------------------------ the summary

LOG_BEST = [
    "step: 10, stage: 0, lr: 4.0e-04 - train loss: 6.29, train acc: 1.0e-02",
    "step: 300, stage: 0, lr: 2.0e-03 - train loss: 4.912, train acc: 1.0e-01",
    "epoch: 1, step: 300, stage: 0 - train loss: 4.95 - valid loss: 4.89, valid acc: 0.1",
    "step: 550, stage: 0, lr: 1.0e-03 - train loss: 4.64, train acc: 1.1e-01",
    "epoch: 2, step: 550, stage: 0 - train loss: 4.70 - valid loss: 4.72, valid acc: 0.11",
]
LOG_LATENT = [
    "transition_to_stage: 1, step: 300",
    "step: 310, stage: 1, lr: 4.0e-04 - train loss: 6.37, train acc: 1.0e-02",
    "step: 550, stage: 1, lr: 1.0e-03 - train loss: 3.55, train acc: 2.0e-01",
    "epoch: 2, step: 550, stage: 1 - train loss: 3.60 - valid loss: 3.57, valid acc: 0.2",
]


def quick_json(step, lang, lang_std, phones, pnmi_layers, shift=0.0):
    """A recipes.probes.quick result, as written by --out."""
    def probe(acc, std):
        return {"layers": [{"acc": acc - 0.05, "std": std}, {"acc": acc - 0.02, "std": std}],
                "best_layer": 0, "best": acc - 0.02, "best_std": std,
                "all": acc, "all_std": std, "folds": 5, "n": 100}

    targets = {"mel": {"pnmi": 0.2712, "pnmi_codebook_std": 0.01, "codebooks": 6,
                       "purity": 0.1, "perplexity": 140.2, "distinct": 300}}
    for i, p in enumerate(pnmi_layers):
        targets[f"layer{i - 1}"] = {"pnmi": p + shift, "pnmi_codebook_std": 0.01, "codebooks": 6,
                                    "purity": 0.1, "perplexity": 40.0 + i, "distinct": 90}
    return {"encoder": {"checkpoint": "x", "stage": 0, "step": step},
            "probes": {"language": probe(lang, lang_std), "phones": probe(phones, 0.004)},
            "Avg": (lang + phones) / 2, "Avg_best": (lang + phones) / 2 - 0.02,
            "targets": targets, "threads": 1,
            "command": ["python", "-m", "recipes.probes.quick", "x"]}


def write_demo(folder, shift=0.0, threads=1):
    for run, log in (("best_rq", LOG_BEST), ("latent_rq", LOG_LATENT)):
        os.makedirs(os.path.join(folder, run), exist_ok=True)
        with open(os.path.join(folder, run, "train_log.txt"), "w") as f:
            f.write("\n".join(log) + "\n")
    q = os.path.join(folder, "quick")
    os.makedirs(q, exist_ok=True)
    results = {
        "random": quick_json(0, 0.80, 0.03, 0.20, [0.15, 0.14, 0.13]),
        "branch": quick_json(300, 0.713 + shift, 0.021, 0.31 + shift, [0.18, 0.21, 0.20], shift),
        "best_rq": quick_json(550, 0.72, 0.02, 0.33, [0.19, 0.23, 0.22]),
        "latent_rq": quick_json(550, 0.70, 0.02, 0.32, [0.17, 0.20, 0.19]),
    }
    for key, r in results.items():
        r["threads"] = threads
        with open(os.path.join(q, f"{key}.json"), "w") as f:
            json.dump(r, f)
    with open(os.path.join(folder, "commands.txt"), "w") as f:
        f.write("# make demo DEMO_OUT=old: an earlier run\nold command\n"
                f"# make demo DEMO_OUT={folder}: OMP_NUM_THREADS={threads}\n"
                ".venv/bin/python train.py hparams/small/latent_rq.yaml\n")
    return folder


def test_summary_of_one_demo_folder(tmp_path, capsys):
    folder = write_demo(str(tmp_path / "demo"))
    out = tmp_path / "demo.md"
    assert summary.main([folder, "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out.split("wrote ")[0].rstrip("\n") + "\n"
    # losses at the branch and at the end
    assert "| BEST-RQ | 4.91 (step 300) | 4.64 (step 550) | 4.72 (step 550) |" in text
    assert "| Latent-RQ | 6.37 (step 310) | 3.55 (step 550) | 3.57 (step 550) |" in text
    assert "branches from BEST-RQ at step 300: its first loss" in text
    # the indicator: Mel vs every layer, PNMI and perplexity, at the branch step
    assert "stage-0 encoder at the branch (step 300): PNMI | perplexity" in text
    assert "| Mel (stage 0) | 0.27 | 140 | 0.27 | 140 | 0.27 | 140 |" in text
    assert "| layer0 | 0.21 | 41 | 0.23 | 41 | 0.14 | 41 |" in text
    assert ("the best layer's targets (layer0) hold less phone information than the Mel "
            "targets (PNMI difference -0.061, standard error over the codebooks 0.006)") in text
    # probes: every row with its fold std, rounded to what the noise leaves
    assert "| random-init (step 0) | 80 ± 3 | 20.0 ± 0.4 |" in text
    assert "| BEST-RQ at the branch (step 300) | 71 ± 2 | 31.0 ± 0.4 |" in text
    assert "mean ± std over 5 prompt-disjoint cross-validation folds" in text
    assert "(layer 0)" in text  # the best-layer table names the layer
    # commands: the last make demo block only
    assert "OMP_NUM_THREADS=1\n.venv/bin/python train.py" in text and "old command" not in text


def test_indicator_verdict_within_the_noise_is_about_equal():
    def run(mel, layer, sd):
        t = {"mel": {"pnmi": mel, "pnmi_codebook_std": sd, "codebooks": 6},
             "layer0": {"pnmi": layer, "pnmi_codebook_std": sd, "codebooks": 6}}
        return {"quick": {"branch": {"targets": t}}}

    # +0.006 with a standard error of 0.012: within the noise
    assert "about as much phone information as" in summary.indicator_verdict(
        [run(0.293, 0.299, 0.02)])
    assert "more phone information than" in summary.indicator_verdict([run(0.293, 0.299, 0.001)])
    assert summary.indicator_verdict([{"quick": {}}]) is None


def test_summary_merges_two_runs_with_their_spread(tmp_path):
    a = write_demo(str(tmp_path / "demo_t1"), threads=1)
    b = write_demo(str(tmp_path / "demo_t2"), shift=0.02, threads=2)
    out = tmp_path / "demo.md"
    summary.main([a, b, "--out", str(out)])
    text = out.read_text()
    assert f"Merged from `{a}`" in text and "`[x]` after it is the spread" in text
    assert "probes with 1 torch thread(s)" in text and "probes with 2 torch thread(s)" in text
    # 71.3 and 73.3 -> mean 72.3, fold std 2.1, spread 2.0: whole points
    assert "| BEST-RQ at the branch (step 300) | 72 ± 2 [2.0] | 32 ± 0 [2.0] |" in text
    # identical in both runs: spread 0
    assert "| random-init (step 0) | 80 ± 3 [0.0] | 20.0 ± 0.4 [0.00] |" in text
    assert "| Mel (stage 0) | 0.27 [0.000] | 140 [0.0] |" in text
    assert "spread between runs 0.020" in text
    assert text.count("```bash") == 2


def test_summary_refuses_an_empty_folder(tmp_path):
    with pytest.raises(SystemExit, match="holds no demo output"):
        summary.main([str(tmp_path)])


def test_make_demo_runs_the_indicator_and_quick_probes_without_shared():
    out = subprocess.run(["make", "-n", "demo", "SHARED=/nonexistent", "DEMO_OUT=results/x"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "shared" not in out.replace("SHARED", "")
    assert "recipes.probes.quick --asterisk demo_data/asterisk" in out
    assert "results/x/latent_rq@stage1" in out and "random:small" in out
    assert "recipes.demo.summary results/x" in out
