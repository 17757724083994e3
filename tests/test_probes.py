"""Tests of the frozen-encoder probes (recipes/probes): learning, metrics, table, preps.

All audio is generated here; nothing needs ../shared/data or a download.

Authors
 * latent-rq developers 2026
"""

import csv
import json
import os

import numpy as np
import pytest
import soundfile
import torch

from latent_rq_brain.training.data import DataError
from recipes.probes import table
from recipes.probes.manifests import check_task, task_manifests
from latent_rq_brain.sharing.pretrained import PretrainedEncoder
from recipes.probes.probing import HiddenStateCache, PoolingClassifier, WeightedLayerSum

load_encoder = PretrainedEncoder.load

SR = 16000
HPARAMS = os.path.join(os.path.dirname(__file__), "..", "recipes", "probes", "hparams")


def gated_tone(rng, cls, seconds):
    """Class-dependent tone switched on and off at 3 Hz, plus a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    f = [150, 600, 2400][cls] * rng.uniform(0.9, 1.1)
    x = np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    x = x + 0.05 * rng.standard_normal(t.shape)
    return (0.2 * x / np.abs(x).max()).astype("float32")


def write_wav(path, x):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, x, SR)
    return len(x) / SR


def tone_task(folder, sizes=(45, 12, 12), seed=0):
    """3-class gated-tone task with ``label`` and a 2-word ``wrd`` per class."""
    rng = np.random.default_rng(seed)
    words = ["low tone", "mid tone", "high tone"]
    for split, n in zip(("train", "valid", "test"), sizes):
        rows = []
        for i in range(n):
            cls = i % 3
            wav = os.path.join(folder, "wav", f"{split}{i}.wav")
            dur = write_wav(wav, gated_tone(rng, cls, rng.uniform(0.6, 1.2)))
            rows.append([f"{split}{i}", dur, wav, f"c{cls}", words[cls], f"s{i % 4}"])
        write_csv(os.path.join(folder, f"{split}.csv"), ["ID", "duration", "wav", "label", "wrd", "spk"], rows)
    return folder


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------
# The probe learns
# --------------------------------------------------------------------------


def test_weighted_sum_moves_to_informative_layer():
    """Layer 2 of 4 carries the class; the learned softmax weights pick it."""
    g = torch.Generator().manual_seed(0)
    n, T, L, D = 256, 6, 4, 8
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, T, L, D, generator=g)
    x[:, :, 2, 0] += 3.0 * (2 * y[:, None].float() - 1)  # informative layer
    ws, head = WeightedLayerSum(L), PoolingClassifier(D, 2)
    opt = torch.optim.Adam([{"params": head.parameters()}, {"params": ws.parameters(), "lr": 0.05}], lr=0.01)
    lens = torch.full((n,), T)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(head(ws(x), lens), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (head(ws(x), lens).argmax(-1) == y).float().mean().item()
    w = ws.weights()
    assert acc > 0.95
    assert int(w.argmax()) == 2 and w[2] > 0.5, w


def run_probe(yaml_name, data, out, *extra):
    from recipes.probes import train_probe

    argv = [
        os.path.join(HPARAMS, yaml_name),
        "--checkpoint=random:tiny",
        f"--data_folder={data}",
        f"--output_folder={out}",
        "--batch_size=8",
        *extra,
    ]
    return train_probe.main(argv)


def test_classification_probe_learns(tmp_path):
    data = tone_task(str(tmp_path / "data"))
    out = tmp_path / "cls"
    res = run_probe(
        "classification.yaml", data, out, "--task=TONE", "--label_column=label",
        "--number_of_epochs=12", "--lr=0.01", "--layer_weights_lr=0.05",
    )
    assert res["task"] == "TONE" and res["metric"] == "acc" and res["num_classes"] == 3
    assert res["value"] > 60.0, res  # chance is 33 %
    saved = json.loads((out / "results.json").read_text())
    assert saved["value"] == res["value"]
    weights = json.loads((out / "layer_weights.json").read_text())
    assert weights["task"] == "TONE" and weights["checkpoint"] == "random:tiny"
    assert len(weights["weights"]) == 3 and abs(sum(weights["weights"]) - 1) < 1e-5
    history = np.load(out / "layer_weights_history.npy")
    assert history.shape[1] == 3 and 1 <= history.shape[0] <= 12
    # the test pass used the best valid checkpoint
    hist = json.loads((out / "layer_weights_history.json").read_text())
    best = max(hist, key=lambda h: h["valid"]["acc"])["valid"]["acc"]
    ckpts = list((out / "save").glob("CKPT+*"))
    assert ckpts and res["best_epoch"] in [h["epoch"] for h in hist if h["valid"]["acc"] == best]


def test_rerun_after_early_stop_keeps_the_stop_and_the_result(tmp_path):
    """Re-running a finished probe resumes its early-stopping state: no more epochs."""
    data = tone_task(str(tmp_path / "data"), sizes=(12, 6, 6))
    args = ("classification.yaml", data, tmp_path / "es", "--task=TONE", "--label_column=label",
            "--number_of_epochs=30", "--patience=1", "--lr=0.0",
            "--layer_weights_lr=0.0")  # nothing learns: no improvement after epoch 1
    first = run_probe(*args)
    epochs = len(json.loads((tmp_path / "es" / "layer_weights_history.json").read_text()))
    assert epochs < 30  # stopped early
    again = run_probe(*args)
    history = json.loads((tmp_path / "es" / "layer_weights_history.json").read_text())
    assert len(history) == epochs
    assert again["value"] == first["value"] and again["best_epoch"] == first["best_epoch"]


def test_probe_without_cache_runs_the_encoder_online(tmp_path):
    data = tone_task(str(tmp_path / "data"), sizes=(6, 3, 3))
    res = run_probe(
        "classification.yaml", data, tmp_path / "online", "--task=TONE",
        "--label_column=label", "--number_of_epochs=1", "--hidden_state_cache=none",
    )
    assert res["metric"] == "acc" and 0.0 <= res["value"] <= 100.0
    # the frozen encoder stayed frozen
    assert len(res["layer_weights"]) == 3


def test_ctc_probe_gives_wer_and_cer(tmp_path):
    data = tone_task(str(tmp_path / "data"), sizes=(12, 6, 6))
    out = tmp_path / "asr"
    res = run_probe("ctc_asr.yaml", data, out, "--number_of_epochs=2", "--rnn_layers=1", "--rnn_size=16")
    assert res["task"] == "ASR" and res["metric"] == "WER" and res["higher_is_better"] is False
    assert set(res["test"]) >= {"WER", "CER", "loss"}
    assert 0.0 <= res["test"]["CER"] and 0.0 <= res["value"]
    assert (out / "wer_test.txt").read_text().startswith("%WER")
    assert json.loads((out / "tokens.json").read_text())[0] == "<blank>"


def test_disk_cache_is_reused_and_equals_memory(tmp_path):
    data = tone_task(str(tmp_path / "data"), sizes=(3, 1, 1))
    rows = list(csv.DictReader(open(os.path.join(data, "train.csv"))))
    wavs = {r["ID"]: r["wav"] for r in rows}
    enc = load_encoder("random:tiny")
    mem = HiddenStateCache(enc)
    mem.build(wavs)
    disk = HiddenStateCache(enc, str(tmp_path / "cache"))
    disk.build(wavs)
    again = HiddenStateCache(enc, str(tmp_path / "cache"))
    again.encoder = None  # must not be needed: everything is on disk
    again.build(wavs)
    for uid in wavs:
        assert torch.equal(mem.get(uid), again.get(uid))
        assert mem.get(uid).shape[1:] == (enc.num_hidden_states, enc.hidden_size)


# --------------------------------------------------------------------------
# Table writer
# --------------------------------------------------------------------------


def write_result(folder, task, metric, value, checkpoint):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"task": task, "task_type": "x", "metric": metric, "value": value, "checkpoint": checkpoint}, f)


def test_table_avg_is_hand_computed(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write_result(a / "ASR", "ASR", "WER", 30.0, "ckpt/a")
    write_result(a / "SID", "SID", "acc", 70.0, "ckpt/a")
    write_result(a / "ER1", "ER", "acc", 50.0, "ckpt/a")
    write_result(a / "ER2", "ER", "acc", 60.0, "ckpt/a")  # folds: mean 55
    write_result(a / "LID", "LID", "acc", 90.0, "ckpt/a")
    write_result(b / "ASR", "ASR", "WER", 50.0, "ckpt/b")
    write_result(b / "IC", "IC", "acc", 80.0, "ckpt/b")
    out = table.main([str(a), str(b)])
    assert capsys.readouterr().out.strip() == out
    lines = out.splitlines()
    assert lines[0] == "| checkpoint | ASR WER ↓ | SID acc ↑ | IC acc ↑ | ER acc ↑ | LID acc ↑ | Avg ↑ |"
    # a: mean(100-30, 70, 55, 90) = 71.25; b: mean(100-50, 80) = 65
    assert lines[2] == "| ckpt/a | 30.00 | 70.00 | - | 55.00 (mean of 2) | 90.00 | 71.25 |"
    assert lines[3] == "| ckpt/b | 50.00 | - | 80.00 | - | - | 65.00 |"
    # NAME=folder and a JSON spec name the rows
    named = table.main([f"Latent-RQ={b}"]).splitlines()[2]
    assert named.startswith("| Latent-RQ |") and named.endswith("| 65.00 |")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"BEST-RQ": ["a"]}))
    assert table.main([str(spec)]).splitlines()[2].startswith("| BEST-RQ |")


def test_table_rejects_bad_results(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps({"task": "IC", "metric": "acc"}))
    with pytest.raises(ValueError, match=r"results.json lacks the key 'value'"):
        table.collect([(None, str(tmp_path / "r"))])
    with pytest.raises(ValueError, match="no results.json under"):
        table.collect([(None, str(tmp_path / "empty"))])


# --------------------------------------------------------------------------
# Manifest checks
# --------------------------------------------------------------------------


def small_task(folder, test_label="b", test_spk="s2", dup=False, missing_audio=False):
    rng = np.random.default_rng(0)
    wav = os.path.join(folder, "a.wav")
    write_wav(wav, gated_tone(rng, 0, 0.5))
    header = ["ID", "duration", "wav", "label", "spk"]
    write_csv(os.path.join(folder, "train.csv"), header,
              [["u1", 0.5, wav, "a", "s1"], ["u2", 0.5, wav, "b", "s1"]] + ([["u1", 0.5, wav, "a", "s1"]] if dup else []))
    write_csv(os.path.join(folder, "valid.csv"), header, [["v1", 0.5, wav, "a", "s3"]])
    test_wav = os.path.join(folder, "gone.wav") if missing_audio else wav
    write_csv(os.path.join(folder, "test.csv"), header, [["t1", 0.5, test_wav, test_label, test_spk]])
    return task_manifests(folder)


def check(m, **kw):
    kw = dict(dict(label_column="label", speaker_column="spk", disjoint=[("train", "test")]), **kw)
    return check_task(m, **kw)


def test_check_task_accepts_consistent_manifests(tmp_path):
    rows = check(small_task(str(tmp_path)))
    assert sorted(rows["train"]) == ["u1", "u2"]


@pytest.mark.parametrize(
    "kwargs, check_kw, match",
    [
        (dict(test_label="zzz"), {}, r"label 'zzz' \(column 'label'\) of .*test.csv, line 2 \(ID t1\) never occurs in train"),
        (dict(test_spk="s1"), {}, r"spk value\(s\) \['s1'\] are in both train manifest .*train.csv and test manifest"),
        (dict(dup=True), {}, r"train.csv, line 4: duplicate ID 'u1'"),
        (dict(missing_audio=True), {}, r"test.csv, line 2 \(ID t1\): audio file .*gone.wav does not exist"),
        ({}, dict(label_column="intent"), r"manifest .*train.csv lacks column 'intent'"),
    ],
)
def test_check_task_rejects(tmp_path, kwargs, check_kw, match):
    m = small_task(str(tmp_path), **kwargs)
    with pytest.raises(DataError, match=match):
        check(m, **check_kw)


def test_check_task_rejects_empty_split_and_cross_split_duplicate(tmp_path):
    m = small_task(str(tmp_path))
    with open(m["valid"], "w") as f:
        f.write("ID,duration,wav,label,spk\n")
    with pytest.raises(DataError, match=r"valid.csv is empty"):
        check(m)
    m = small_task(str(tmp_path))
    text = open(m["valid"]).read().replace("v1,", "u2,")
    open(m["valid"], "w").write(text)
    with pytest.raises(DataError, match=r"ID 'u2' is in both .*train.csv and .*valid.csv"):
        check(m)


# --------------------------------------------------------------------------
# Data preparation of each corpus, on fake trees that mimic their layout
# --------------------------------------------------------------------------


def tone(seconds=0.3, seed=0):
    return gated_tone(np.random.default_rng(seed), seed % 3, seconds)


def fake_librispeech(root, overlap=False):
    spk = {"train-clean-100": ["19", "26"], "dev-clean": ["84"], "test-clean": ["19" if overlap else "121"]}
    for split, speakers in spk.items():
        for s in speakers:
            c = "200" if split == "test-clean" else "100"
            chap = os.path.join(root, split, s, c)
            lines = []
            for i in range(2):
                uid = f"{s}-{c}-{i:04d}"
                os.makedirs(chap, exist_ok=True)
                soundfile.write(os.path.join(chap, uid + ".flac"), tone(0.3, i), SR)
                lines.append(f"{uid} HELLO WORLD {i}")
            open(os.path.join(chap, f"{s}-{c}.trans.txt"), "w").write("\n".join(lines) + "\n")


def test_prepare_librispeech_asr(tmp_path):
    from recipes.probes.prepare_librispeech_asr import prepare_librispeech_asr

    fake_librispeech(str(tmp_path / "LS"))
    stats = prepare_librispeech_asr(str(tmp_path / "LS"), str(tmp_path / "out"), num_workers=1)
    assert stats == {"train": 4, "valid": 2, "test": 2}
    row = next(csv.DictReader(open(tmp_path / "out" / "test.csv")))
    assert row["wrd"] == "HELLO WORLD 0" and row["spk_id"] == "121"
    fake_librispeech(str(tmp_path / "LS2"), overlap=True)
    with pytest.raises(DataError, match=r"spk_id value\(s\) \['19'\] are in both train manifest"):
        prepare_librispeech_asr(str(tmp_path / "LS2"), str(tmp_path / "out2"), num_workers=1)
    with pytest.raises(DataError, match=r"split folder .*LS/nope does not exist \(the test split"):
        prepare_librispeech_asr(str(tmp_path / "LS"), str(tmp_path / "o"), splits={"test": "nope"})


def fake_voxceleb(root, lines):
    for _, rel in lines:
        path = os.path.join(root, "wav", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        soundfile.write(path, tone(0.3), SR)
    split_file = os.path.join(root, "iden_split.txt")
    open(split_file, "w").write("".join(f"{c} {rel}\n" for c, rel in lines))
    return os.path.join(root, "wav"), split_file


def test_prepare_voxceleb1_sid(tmp_path):
    from recipes.probes.prepare_voxceleb1_sid import prepare_voxceleb1_sid

    lines = [(1, "id10001/vidA/00001.wav"), (1, "id10002/vidB/00001.wav"),
             (2, "id10001/vidC/00002.wav"), (3, "id10002/vidD/00003.wav")]
    wav, split_file = fake_voxceleb(str(tmp_path / "vc"), lines)
    assert prepare_voxceleb1_sid(wav, split_file, str(tmp_path / "out")) == {"train": 2, "valid": 1, "test": 1}
    row = next(csv.DictReader(open(tmp_path / "out" / "test.csv")))
    assert row["ID"] == "id10002-vidD-00003" and row["spk_id"] == "id10002"
    # a test speaker never seen in training
    wav, split_file = fake_voxceleb(str(tmp_path / "vc2"), lines + [(3, "id10009/vidE/00001.wav")])
    with pytest.raises(DataError, match=r"label 'id10009' \(column 'spk_id'\) of .*test.csv"):
        prepare_voxceleb1_sid(wav, split_file, str(tmp_path / "out2"))
    open(split_file, "a").write("4 id1/x.wav\n")
    with pytest.raises(DataError, match=r"iden_split.txt, line 6: expected"):
        prepare_voxceleb1_sid(wav, split_file, str(tmp_path / "out3"))


def fake_fsc(root, test_speaker="spkC", test_action="activate"):
    os.makedirs(os.path.join(root, "data"))
    specs = {"train": [("spkA", "activate"), ("spkA", "deactivate")], "valid": [("spkB", "activate")],
             "test": [(test_speaker, test_action)]}
    for split, items in specs.items():
        rows = []
        for i, (spk, action) in enumerate(items):
            rel = f"wavs/speakers/{spk}/{split}{i}.wav"
            write_wav(os.path.join(root, rel), tone(0.3, i))
            rows.append([i, rel, spk, "turn on the lights", action, "lights", "kitchen"])
        write_csv(os.path.join(root, "data", f"{split}_data.csv"),
                  ["", "path", "speakerId", "transcription", "action", "object", "location"], rows)
    return root


def test_prepare_fsc_ic(tmp_path):
    from recipes.probes.prepare_fsc_ic import prepare_fsc_ic

    fsc = fake_fsc(str(tmp_path / "fsc"))
    assert prepare_fsc_ic(fsc, str(tmp_path / "out")) == {"train": 2, "valid": 1, "test": 1}
    row = next(csv.DictReader(open(tmp_path / "out" / "test.csv")))
    assert row["intent"] == "activate_lights_kitchen"
    with pytest.raises(DataError, match=r"spk_id value\(s\) \['spkA'\] are in both train"):
        prepare_fsc_ic(fake_fsc(str(tmp_path / "f2"), test_speaker="spkA"), str(tmp_path / "o2"))
    with pytest.raises(DataError, match=r"label 'bring_lights_kitchen' \(column 'intent'\) of .*test.csv"):
        prepare_fsc_ic(fake_fsc(str(tmp_path / "f3"), test_action="bring"), str(tmp_path / "o3"))


def fake_iemocap(root, drop_wav=None):
    emotions = ["neu", "exc", "ang", "sad", "fru", "hap"]
    for k in range(1, 6):
        for gender in "FM":
            dialog = f"Ses0{k}{gender}_impro01"
            lines = []
            for i, emo in enumerate(emotions):
                utt = f"{dialog}_{gender}{i:03d}"
                if utt != drop_wav:
                    write_wav(os.path.join(root, f"Session{k}", "sentences", "wav", dialog, utt + ".wav"), tone(0.2, i))
                lines.append(f"[1.0 - 2.0]\t{utt}\t{emo}\t[2.5, 2.5, 2.5]")
            folder = os.path.join(root, f"Session{k}", "dialog", "EmoEvaluation")
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, dialog + ".txt"), "w").write("% header\n\n" + "\n".join(lines) + "\n")
    return root


def test_prepare_iemocap_er(tmp_path):
    from recipes.probes.prepare_iemocap_er import prepare_iemocap_er

    stats = prepare_iemocap_er(fake_iemocap(str(tmp_path / "iemo")), str(tmp_path / "out"), folds=[1, 3])
    # 5 sessions x 2 speakers x 5 kept labels (fru dropped); session k is the test set
    assert stats[1]["test"] == 10 and stats[1]["train"] + stats[1]["valid"] == 40
    test = list(csv.DictReader(open(tmp_path / "out" / "fold3" / "test.csv")))
    assert {r["spk_id"] for r in test} == {"Ses03F", "Ses03M"}
    assert sorted({r["emotion"] for r in test}) == ["ang", "hap", "neu", "sad"]
    with pytest.raises(DataError, match=r"audio file .*Ses02M_impro01_M003.wav of labelled utterance"):
        prepare_iemocap_er(fake_iemocap(str(tmp_path / "i2"), drop_wav="Ses02M_impro01_M003"), str(tmp_path / "o2"))


def fake_asterisk(root, languages=("en", "fr", "es"), prompts=30):
    rows = {"train": [], "valid": []}
    for lang in languages:
        for p in range(prompts):
            name = f"prompt-{p}"
            wav = os.path.join(root, "wav", lang, name + ".wav")
            dur = write_wav(wav, tone(0.3, p))
            text = f"Press {p}, then \"pound\"." if p % 5 else ""
            rows["valid" if p < 3 else "train"].append([f"{lang}-{name}", dur, wav, f"asterisk-{lang}", text])
    for split, r in rows.items():
        write_csv(os.path.join(root, f"{split}.csv"), ["ID", "duration", "wav", "spk_id", "wrd"], r)
    return root


def test_prepare_asterisk_probes_prompt_disjoint(tmp_path):
    from recipes.probes.prepare_asterisk_probes import prepare_asterisk_probes

    root = fake_asterisk(str(tmp_path / "ast"))
    stats = prepare_asterisk_probes(root, str(tmp_path / "out"), languages=("en", "fr", "es"),
                                    valid_fraction=0.2, test_fraction=0.2)
    assert sum(stats["lid"].values()) == 90 and sum(stats["asr_en"].values()) == 24  # 6 untranscribed
    lid = {s: list(csv.DictReader(open(tmp_path / "out" / "lid" / f"{s}.csv"))) for s in ("train", "valid", "test")}
    prompts = {s: {r["prompt"] for r in rows} for s, rows in lid.items()}
    assert not prompts["train"] & prompts["test"] and not prompts["train"] & prompts["valid"]
    # a test prompt is held out in every language at once
    assert all(len([r for r in lid["test"] if r["prompt"] == p]) == 3 for p in prompts["test"])
    asr = list(csv.DictReader(open(tmp_path / "out" / "asr_en" / "train.csv")))
    assert all(r["ID"].startswith("en-") for r in asr)
    assert asr[0]["wrd"].startswith("PRESS ") and asr[0]["wrd"].endswith(" THEN POUND")
    with pytest.raises(DataError, match=r"language\(s\) \['ru'\] not in the manifests"):
        prepare_asterisk_probes(root, str(tmp_path / "o2"), languages=("en", "ru"))
    os.remove(os.path.join(root, "wav", "fr", "prompt-7.wav"))
    with pytest.raises(DataError, match=r"train.csv, line \d+ \(ID fr-prompt-7\): audio file .*does not exist"):
        prepare_asterisk_probes(root, str(tmp_path / "o3"), languages=("en", "fr"))


def fake_packs(root, bad_split=False):
    rng = np.random.default_rng(0)
    def pack(name, header, rows):
        for r in rows:
            write_wav(os.path.join(root, name, r[1]), tone(0.2, int(rng.integers(3))))
        write_csv(os.path.join(root, name, "manifest.csv"), header, rows)
    kw = []
    for spk, split in [("1", "train"), ("2", "train"), ("3", "val"), ("4", "test")]:
        for w in ("up", "down"):
            for i in range(3):
                kw.append([f"{w}/{spk}_{i}", f"audio/{w}_{spk}_{i}.ogg".replace(".ogg", ".wav"), 0.2, w, spk,
                           "bogus" if bad_split and spk == "4" else split])
    pack("arabic-commands", ["id", "wav", "duration", "keyword", "speaker", "split"], kw)
    fsdd = [[f"{d}_{s}_{i}", f"audio/{d}_{s}_{i}.wav", 0.2, d, s, "test" if i == 0 else "train"]
            for d in "01" for s in ("ann", "bob", "cid", "dan", "eve", "fay") for i in range(4)]
    pack("fsdd", ["id", "wav", "duration", "digit", "speaker", "split"], fsdd)
    coffee = [[f"c{d}{i}", f"audio/c{d}{i}.wav", 0.2, d] for d in ("latte", "mocha") for i in range(10)]
    pack("coffee-intents", ["id", "wav", "duration", "coffeeDrink"], coffee)
    ls = [[f"{s}-1-{i}", f"audio/{s}-1-{i}.wav", 0.2, str(s), "MF"[s % 2], "test-other"] for s in range(10) for i in range(2)]
    pack("librispeech-mini", ["id", "wav", "duration", "speaker", "gender", "split"], ls)
    return root


def test_prepare_shared_packs(tmp_path):
    from recipes.probes.prepare_shared_packs import prepare_shared_packs

    stats = prepare_shared_packs(fake_packs(str(tmp_path / "packs")), str(tmp_path / "out"))
    assert stats["ks_arabic"] == {"train": 12, "valid": 6, "test": 6}
    assert stats["ic_coffee"] == {"train": 14, "valid": 2, "test": 4}  # stratified 20 % / 10 %
    sid = {s: list(csv.DictReader(open(tmp_path / "out" / "sid_fsdd" / f"{s}.csv"))) for s in ("train", "test")}
    assert {r["speaker"] for r in sid["test"]} <= {r["speaker"] for r in sid["train"]}  # speaker-shared
    digits = {s: {r["speaker"] for r in csv.DictReader(open(tmp_path / "out" / "digits_fsdd" / f"{s}.csv"))}
              for s in ("train", "valid", "test")}
    assert len(digits["test"]) == 1 and len(digits["valid"]) == 1 and len(digits["train"]) == 4
    with pytest.raises(DataError, match=r"arabic-commands/manifest.csv, line \d+ \(ID up/4_0\): split 'bogus'"):
        prepare_shared_packs(fake_packs(str(tmp_path / "p2"), bad_split=True), str(tmp_path / "o2"), ["ks_arabic"])


def test_load_encoder_from_a_checkpoint_folder(tmp_path):
    """The probes load a run's save/ folder as the pre-training writes it."""
    from speechbrain.utils.checkpoints import Checkpointer

    from latent_rq_brain.sharing.pretrained import EncoderSpec, PretrainedEncoder
    from recipes.probes.probing import encoder_fingerprint

    src = PretrainedEncoder.from_config(PretrainedEncoder.tiny_config(), seed=3)
    spec = EncoderSpec.from_hparams(PretrainedEncoder.tiny_config())
    ckpter = Checkpointer(str(tmp_path / "save"), {"encoder": src.encoder, "encoder_spec": spec})
    ckpter.save_checkpoint(meta={"transition_to_stage": 1})
    enc = load_encoder(str(tmp_path))
    assert encoder_fingerprint(enc) == encoder_fingerprint(src)
    # <run>@stage<k>: the checkpoint written at the transition to stage k
    assert encoder_fingerprint(load_encoder(f"{tmp_path}@stage1")) == encoder_fingerprint(src)
    with pytest.raises(ValueError, match=r"transition to stage 2 \(found: \[1\]\)"):
        load_encoder(f"{tmp_path}@stage2")
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    with pytest.raises(ValueError, match=r"checkpoint '.*nope' does not exist"):
        load_encoder(str(tmp_path / "nope"))


def _fill_probe_cache(args):
    from recipes.probes import quick

    items, cache = args
    return [len(w) for w in quick.load_audio(items, cache)]


def test_processes_filling_one_quick_probe_cache_at_once_all_succeed(tmp_path):
    """Evaluations run in parallel share a probe cache: each writes its own
    temporary file, so none finds another's renamed away."""
    import multiprocessing

    from recipes.probes import quick

    items = []
    for k in range(3):
        path = tmp_path / f"a{k}.wav"
        soundfile.write(path, np.random.default_rng(k).uniform(-0.5, 0.5, 16000 + 800 * k), 16000)
        items.append((f"a{k}", str(path), "x"))
    cache = str(tmp_path / "cache" / "audio_task.npz")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        lengths = pool.map(_fill_probe_cache, [(items, cache)] * 8)
    assert lengths == [[16000, 16800, 17600]] * 8
    assert os.listdir(tmp_path / "cache") == ["audio_task.npz"]
    assert [len(w) for w in quick.load_audio(items, cache)] == [16000, 16800, 17600]
