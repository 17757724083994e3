"""Tests of CTC fine-tuning (recipes/finetune) and the trainable encoder.

All audio is generated here; nothing needs ../shared/data or a download.

Authors
 * latent-rq developers 2026
"""

import json
import os
import shutil

import pytest
import soundfile
import torch

from latent_rq_brain.sharing.pretrained import PretrainedEncoder
from latent_rq_brain.training.data import DataError
from latent_rq_brain.training.finetune import TrainableEncoder, parse_layers
from test_probes import fake_librispeech, tone, tone_task

HPARAMS = os.path.join(
    os.path.dirname(__file__), "..", "recipes", "finetune", "hparams", "ctc_sentencepiece.yaml"
)


def run_finetune(data, out, *extra):
    from recipes.finetune import train

    torch.set_num_threads(1)
    argv = [
        HPARAMS, "--checkpoint=random:tiny", f"--data_folder={data}",
        f"--output_folder={out}", "--vocab_size=14", "--batch_size=4",
        "--rnn_layers=0", "--rnn_size=16", "--beam_size=3",
    ] + list(extra)
    return train.main(argv)


def encoder_weights(folder):
    """The fine-tuned encoder weights of the newest checkpoint of a run."""
    from latent_rq_brain.sharing.pretrained import find_checkpoint

    state = torch.load(os.path.join(find_checkpoint(folder).path, "encoder.ckpt"))
    return {k: v for k, v in state.items() if k.startswith("pretrained.encoder.")}


def test_finetune_trains_unfreezes_and_decodes(tmp_path):
    data = tone_task(str(tmp_path / "data"), sizes=(12, 4, 4))
    out = tmp_path / "ft"
    res = run_finetune(
        data, out, "--number_of_epochs=2", "--freeze_encoder_steps=3",
        "--finetune_layers=[1]",
    )
    # greedy and beam WER, CER on test; valid WER per epoch
    assert {"WER", "WER_beam", "CER", "loss"} <= set(res)
    assert all(0.0 <= res[k] for k in ("WER", "WER_beam", "CER"))
    assert [v["epoch"] for v in res["valid"]] == [1, 2]
    assert res["optimizer_steps"] == 6 and res["finetune_layers"] == [1]
    assert (out / "wer_test.txt").read_text().startswith("%WER")
    assert json.loads((out / "results.json").read_text())["units"] == 14
    log = (out / "train_log.txt").read_text()
    assert "encoder: frozen" not in log.splitlines()[-2]  # unfrozen after 3 steps
    # only layer 1 moved: compare with the seeded random encoder it started from
    start = PretrainedEncoder.from_config(PretrainedEncoder.tiny_config(), seed=0).encoder
    tuned = encoder_weights(out)
    moved = {
        k.split(".")[5] if ".layers." in k else k.split(".")[2]
        for k, v in tuned.items()
        if not torch.equal(v, start.state_dict()[k[len("pretrained.encoder."):]])
    }
    assert moved == {"1"}


def test_finetune_encoder_stays_frozen_before_n_steps(tmp_path):
    data = tone_task(str(tmp_path / "data"), sizes=(8, 4, 4))
    out = tmp_path / "ft"
    res = run_finetune(data, out, "--number_of_epochs=1", "--freeze_encoder_steps=100")
    start = PretrainedEncoder.from_config(PretrainedEncoder.tiny_config(), seed=0).encoder
    tuned = encoder_weights(out)
    assert all(torch.equal(v, start.state_dict()[k[len("pretrained.encoder."):]])
               for k, v in tuned.items())
    assert res["optimizer_steps"] == 2


def test_trainable_encoder_layers_and_augment():
    pre = PretrainedEncoder.from_config(PretrainedEncoder.tiny_config(), seed=0)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, feats):
            seen.append(feats.shape)
            return feats

    enc = TrainableEncoder(pre, trainable_layers="top1", feature_augment=[Spy()])
    assert enc.trainable_layers == [1] and enc.downsample_rate == 640
    enc.train()
    states, _ = enc(torch.randn(1, 8000))
    states[-1].sum().backward()
    grads = {n for n, p in enc.named_parameters() if p.grad is not None}
    assert grads and all(".layers.1." in n for n in grads)
    assert len(seen) == 1
    enc.eval()
    enc(torch.randn(1, 8000))
    assert len(seen) == 1  # no augmentation outside training
    assert parse_layers("none", 2) == [] and enc.set_trainable("all") == [-1, 0, 1]
    with pytest.raises(ValueError, match="top<k>"):
        parse_layers("bottom", 2)


def test_prepare_librispeech_finetune_sets(tmp_path):
    from recipes.finetune.prepare_librispeech import prepare_librispeech_finetune

    root = str(tmp_path / "LibriSpeech")
    fake_librispeech(root)
    counts = prepare_librispeech_finetune(root, str(tmp_path / "ls100"), train="100h")
    assert counts == {"train": 4, "valid": 2, "test": 2}
    # Libri-light limited: librispeech_finetuning/{1h/<fold>/<clean|other>,9h/<clean|other>}
    ll = os.path.join(root, "librispeech_finetuning")
    shutil.copytree(os.path.join(root, "train-clean-100", "19"), os.path.join(ll, "1h", "0", "clean", "19"))
    shutil.copytree(os.path.join(root, "train-clean-100", "26"), os.path.join(ll, "9h", "clean", "26"))
    chap = os.path.join(ll, "9h", "other", "27", "300")
    os.makedirs(chap)
    soundfile.write(os.path.join(chap, "27-300-0000.flac"), tone(0.3), 16000)
    open(os.path.join(chap, "27-300.trans.txt"), "w").write("27-300-0000 GOOD BYE\n")
    assert prepare_librispeech_finetune(root, str(tmp_path / "ll1"), train="1h")["train"] == 2
    assert prepare_librispeech_finetune(root, str(tmp_path / "ll10"), train="10h")["train"] == 5
    shutil.rmtree(os.path.join(ll, "9h", "clean"))
    with pytest.raises(DataError, match="9h/clean does not exist"):
        prepare_librispeech_finetune(root, str(tmp_path / "ll10b"), train="10h")
