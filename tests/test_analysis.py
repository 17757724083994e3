"""Tests of the analysis instruments (recipes/analysis, latent_rq_brain.targets.target_quality).

Fast, no shared data: toy label/code arrays with hand-computed values, a random
tiny encoder and generated audio. PocketSphinx tests are skipped when it is
not installed.
"""

import csv
import json
import math
import os

import numpy as np
import pytest
import torch

from latent_rq_brain.targets.target_quality import (
    code_label_quality,
    code_usage,
    codebook_quality,
    joint_counts,
    purity_pnmi,
)
from latent_rq_brain.training.synthetic import synth_utterance
from recipes.analysis import common, layer_weights, target_quality, tsne
from recipes.analysis.labels import n_enc_frames, segments_to_frames, transcript_words


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------ purity / PNMI


def test_pnmi_hand_computed_toy():
    # 8 frames: codes z and phone labels y
    z = [0, 0, 0, 1, 1, 1, 2, 2]
    y = ["a", "a", "b", "b", "b", "b", "a", "c"]
    counts, zv, yv = joint_counts(z, y)
    #            a  b  c
    # z=0:       2  1  0
    # z=1:       0  3  0
    # z=2:       1  0  1
    assert counts.tolist() == [[2, 1, 0], [0, 3, 0], [1, 0, 1]]
    # p(y) = (3/8, 4/8, 1/8)
    h_y = -(3 / 8 * math.log(3 / 8) + 4 / 8 * math.log(4 / 8) + 1 / 8 * math.log(1 / 8))
    # H(y|z) = sum_z p(z) H(y|z):
    #   z=0 (p 3/8): (2/3, 1/3) ; z=1 (p 3/8): (1) -> 0 ; z=2 (p 2/8): (1/2, 1/2) -> ln 2
    h_y_z = 3 / 8 * -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) + 2 / 8 * math.log(2)
    # numerically: H(y) = 0.974315 nats, H(y|z) = 0.411980, I = 0.562335, PNMI = 0.577160
    assert h_y == pytest.approx(0.974315, abs=1e-6)
    assert h_y_z == pytest.approx(0.411980, abs=1e-6)
    r = purity_pnmi(counts)
    assert r["label_entropy"] == pytest.approx(h_y)
    assert r["mutual_info"] == pytest.approx(h_y - h_y_z)
    assert r["pnmi"] == pytest.approx((h_y - h_y_z) / h_y)
    assert r["pnmi"] == pytest.approx(0.577160, abs=1e-6)
    # cluster purity: (max row counts 2 + 3 + 1) / 8
    assert r["cluster_purity"] == pytest.approx(6 / 8)
    # phone purity: (max column counts a:2 + b:3 + c:1) / 8
    assert r["label_purity"] == pytest.approx(6 / 8)
    assert r["frames"] == 8


def test_pnmi_bijection_is_one_and_independent_is_zero():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    perm = rng.permutation(100)[:7]
    z = perm[y]  # a relabelling: bijection between labels and codes
    r = code_label_quality(z, y.astype(str))
    assert r["pnmi"] == 1.0
    assert r["cluster_purity"] == 1.0 and r["label_purity"] == 1.0
    # independent: the joint is the outer product of the marginals
    counts = np.outer([1, 2, 3], [4, 1, 5])
    assert purity_pnmi(counts)["pnmi"] == 0.0
    # one code for all frames: no information, label purity 1
    r = code_label_quality(np.zeros(6, int), list("aabbcc"))
    assert r["pnmi"] == 0.0 and r["label_purity"] == 1.0
    assert r["cluster_purity"] == pytest.approx(2 / 6)


def test_pnmi_single_label_is_nan_and_bad_input_errors():
    assert math.isnan(code_label_quality([0, 1, 2], ["a", "a", "a"])["pnmi"])
    with pytest.raises(ValueError, match="3 codes and 2 labels"):
        joint_counts([0, 1, 2], ["a", "b"])
    with pytest.raises(ValueError, match="minimum -1"):
        purity_pnmi([[1, -1]])
    with pytest.raises(ValueError, match="0..7"):
        code_usage([0, 8], codebook_size=8)


def test_code_usage_and_mean_over_codebooks():
    u = code_usage([5, 5, 5, 5, 1, 1, 2, 3], codebook_size=16)
    assert u["distinct"] == 4
    assert u["sorted_freqs"] == [0.5, 0.25, 0.125, 0.125]
    h = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 2 * 0.125 * math.log(0.125))
    assert u["perplexity"] == pytest.approx(math.exp(h))
    assert u["usage_fraction"] == 0.25
    codes = np.array([[0, 1], [0, 1], [1, 1], [1, 1]])
    q = codebook_quality(codes, {"phone": ["a", "a", "b", None]}, 4)
    # the None frame is left out: 3 frames scored
    assert q["per_codebook"][0]["phone"]["frames"] == 3
    assert q["per_codebook"][0]["phone"]["pnmi"] == 1.0
    assert q["per_codebook"][1]["phone"]["pnmi"] == 0.0
    assert q["mean"]["phone"]["pnmi"] == 0.5
    assert q["mean"]["perplexity"] == pytest.approx((2 + 1) / 2)


# ------------------------------------------------------------ labels


def test_segments_to_frames_majority_and_unlabelled():
    segs = [("SIL", 0, 4), ("AH", 5, 11)]  # 10 ms frames 0..11
    assert segments_to_frames(segs, 4) == ["SIL", "AH", "AH", None]
    assert transcript_words("3") == "three"


def test_pocketsphinx_phone_labels_cover_the_utterance():
    pytest.importorskip("pocketsphinx")
    from recipes.analysis.labels import PocketSphinxPhones

    wav = synth_utterance(np.random.default_rng(1), 1.0)
    ps = PocketSphinxPhones()
    segs, how = ps(wav, "zero")
    # synthetic buzz is no speech: alignment may fail and fall back to recognition
    assert how in ("align", "allphone") and segs
    if how == "align":
        assert [s[0] for s in segs][:4] == ["Z", "IY", "R", "OW"]
    frames = segments_to_frames(segs, 26)
    assert len(frames) == 26 and sum(f is not None for f in frames) >= 20
    segs, how = ps(wav, "notaword_xyz")  # not in the dictionary: recognition
    assert how == "allphone" and segs


# ------------------------------------------------------------ model + audio


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """6 generated utterances from 3 'speakers' and a manifest with speakers."""
    folder = tmp_path_factory.mktemp("analysis_audio")
    import soundfile

    rng = np.random.default_rng(0)
    rows = []
    for i, dur in enumerate([0.6, 1.1, 0.9, 1.4, 0.7, 1.0]):
        wav = os.path.join(folder, f"u{i}.wav")
        soundfile.write(wav, synth_utterance(rng, dur), 16000)
        rows.append([f"u{i}", dur, wav, f"spk{i % 3}"])
    path = os.path.join(folder, "m.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "wav", "speaker"])
        w.writerows(rows)
    return path


def test_extract_matches_training_targets(corpus):
    """Codes per frame equal the quantizer applied as compute_targets does."""
    from latent_rq_brain.targets.target_encoder import normalize_states

    enc, q = common.load_model(common.RANDOM_TINY)
    items = common.select_utterances(corpus)
    wavs = common.read_wavs(items)
    lens, out = common.extract(enc, q, ["mel", "layer0"], wavs, batch_size=4)
    # alone, whole utterance 3
    w = wavs[3][None]
    feats, _, enc_lens = enc.features(w, torch.tensor([w.shape[1]]))
    B, T4, C = feats.shape
    mel = q(feats.view(B, T4 // 4, 4 * C)[0, : enc_lens[0]], "mel").numpy()
    assert np.array_equal(out["mel"]["codes"][3], mel)
    states = enc.encoder(feats, enc_lens)[1]
    h = normalize_states(states[1].float(), enc_lens, "utterance")  # paper layer 0
    lat = q(h[0, : enc_lens[0]], "layer0").numpy()
    assert np.array_equal(out["layer0"]["codes"][3], lat)
    assert lens == [n_enc_frames(len(x)) for x in wavs]
    assert sum(lens) == sum(c.shape[0] for c in out["mel"]["codes"])


def test_target_quality_command(corpus, tmp_path, capsys):
    out = tmp_path / "tq"
    report = target_quality.main(
        ["random:tiny", "--manifest", corpus, "--labels", "speaker", "--out", str(out)]
    )
    assert set(report["sources"]) == {"mel", "layer0"}  # stage >= 1: both
    mean = report["sources"]["mel"]["mean"]
    assert 0 <= mean["speaker"]["pnmi"] <= 1 and mean["distinct"] >= 1
    assert report["labels"]["speaker"]["distinct"] == 3
    printed = capsys.readouterr().out
    assert "| **mel** | **mean** |" in printed and "speaker PNMI" in printed
    assert json.loads((out / "target_quality.json").read_text())["frames"] == report["frames"]
    assert (out / "code_usage.png").stat().st_size > 1000


def test_tsne_command_writes_png(corpus, tmp_path):
    out = tmp_path / "tsne"
    coords = tsne.main(
        ["random:tiny", "--manifest", corpus, "--labels", "speaker", "--out", str(out),
         "--max-frames", "60", "--perplexity", "10"]
    )
    assert set(coords) == {"mel", "layer0"}
    assert coords["mel"].shape == (60, 2)
    for name in ("tsne.png", "tsne_mel_speaker.png", "tsne_layer0_speaker.png", "tsne.npz"):
        assert (out / name).stat().st_size > 1000
    with pytest.raises(ValueError, match="out of range"):
        tsne.main(["random:tiny", "--manifest", corpus, "--labels", "speaker",
                   "--out", str(out), "--codebook", "9", "--max-frames", "30"])


# ------------------------------------------------------------ layer weights


def _write_weights(folder, task, ckpt, weights):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "layer_weights.json"), "w") as f:
        json.dump({"task": task, "checkpoint": ckpt, "weights": weights}, f)


def test_layer_weight_heatmaps(tmp_path, capsys):
    root = tmp_path / "probes"
    _write_weights(root / "a" / "spk", "speaker_id", "runs/x/save/CKPT+1", [0.5, 0.3, 0.1, 0.1])
    _write_weights(root / "a" / "asr", "ctc_asr", "runs/x/save/CKPT+1", [0.1, 0.1, 0.2, 0.6])
    png = tmp_path / "fig.png"
    written = layer_weights.main([str(root), "--out", str(png)])
    assert written == [str(png)] and png.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "| ctc_asr | 2 | 0.600 |" in printed and "| speaker_id | CNN | 0.500 |" in printed
    # a second checkpoint: one figure each
    _write_weights(root / "b" / "spk", "speaker_id", "runs/y/save/CKPT+2", [1, 2, 3, 4])
    written = layer_weights.main([str(root), "--out", str(png), "--normalize"])
    assert len(written) == 2 and all(os.path.getsize(p) > 1000 for p in written)
    # inconsistent layer count is an error naming the file
    _write_weights(root / "a" / "bad", "kws", "runs/x/save/CKPT+1", [1, 2])
    with pytest.raises(ValueError, match="2 weights, but other tasks"):
        layer_weights.main([str(root), "--out", str(png)])


def test_pnmi_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 12, 3000)
    z = (y * 7 + rng.integers(0, 5, 3000)) % 40  # codes partly determined by labels
    r = code_label_quality(z, y)
    mi = metrics.mutual_info_score(y, z)  # nats
    p = np.bincount(y) / y.size
    assert r["mutual_info"] == pytest.approx(mi, rel=1e-9)
    assert r["pnmi"] == pytest.approx(mi / -(p * np.log(p)).sum(), rel=1e-9)
