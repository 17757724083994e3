"""The Zipformer-like encoder (encoder_architecture: zipformer): stacks at
several frame rates, exact under padding at every rate and odd length, per-layer
hidden states at the base rate, and the demo path (pre-training with a
transition, export, load_model_folder, a quick probe).

Authors
 * latent-rq developers 2026
"""

import os
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from latent_rq_brain.model.features import valid_frames  # noqa: E402
from latent_rq_brain.model.zipformer_encoder import (  # noqa: E402
    WeightedDownsample,
    ZipformerEncoder,
)
from latent_rq_brain.sharing.pretrained import PretrainedEncoder, build_encoder, yaml_config  # noqa: E402


def zipformer(num_layers=6, seed=0, **kw):
    config = dict(PretrainedEncoder.tiny_config(), num_encoder_layers=num_layers,
                  encoder_architecture="zipformer", **kw)
    torch.manual_seed(seed)
    _, enc = build_encoder(config)
    return enc


def test_stacks_run_at_u_shaped_rates():
    enc = zipformer(8)
    assert enc.factors == [1, 2, 4, 8, 4, 2] and enc.layer_counts == [1, 1, 2, 2, 1, 1]
    assert [s.downsample is None for s in enc.stacks] == [True] + [False] * 5
    assert zipformer(2).factors == [1, 2]


def test_padded_utterance_gives_the_hidden_states_it_gives_alone():
    """Every hidden state of a short utterance, on its valid frames, is the same
    alone as in a batch padded to a longer one, at odd lengths for every rate
    (1 .. 17 base frames: groups of 2, 4, 8 straddle the end)."""
    enc = zipformer(8, seed=1).eval()  # (the CNN front-end has dropout in training)
    torch.manual_seed(2)
    long = torch.randn(44 * 4, 80)
    for n in (1, 3, 5, 7, 9, 13, 17):
        short = torch.randn(n * 4, 80)
        _, alone = enc(short[None], torch.tensor([n]))
        batch = torch.zeros(2, long.shape[0], 80)
        batch[0, : n * 4] = short
        batch[1] = long
        _, padded = enc(batch, torch.tensor([n, 44]))
        assert len(padded) == enc.num_layers + 1
        for a, b in zip(alone, padded):
            assert torch.allclose(a[0], b[0, :n], atol=1e-5), n


def test_pooling_ignores_what_follows_the_end():
    """The group that straddles the end pools its valid frames only (a plain
    average of pairs would mix in the padding)."""
    down = WeightedDownsample(4)
    with torch.no_grad():
        down.weights.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    x = torch.randn(1, 7, 3)
    valid = valid_frames(torch.tensor([6]), 7)
    y, low = down(x, valid)
    w = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    assert torch.allclose(y[0, 1], w[0] * x[0, 4] + w[1] * x[0, 5], atol=1e-6)
    x2 = x.clone()
    x2[0, 6:] = 100.0
    assert torch.equal(down(x2, valid)[0], y) and low.tolist() == [[True, True]]


def test_truncated_copy_cuts_a_stack_short():
    enc = zipformer(8).eval()
    feats, lens = torch.randn(2, 40, 80), torch.tensor([10, 7])
    _, full = enc(feats, lens)
    top = enc.truncated_copy(3)  # stacks 0, 1 and the first layer of stack 2
    assert top.layer_counts == [1, 1, 1] and top.factors == [1, 2, 4]
    _, states = top(feats, lens)
    assert len(states) == 4
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(states, full))


def test_bf16_autocast_trains_and_the_low_precision_target_copy_is_bit_exact():
    """precision: bf16 (autocast): the bypass mixes in the activations' dtype;
    the target encoder's copy with bf16 matmul weights gives the same bits."""
    from latent_rq_brain.targets.target_encoder import autocast_weights

    enc = zipformer(6)
    feats, lens = torch.randn(2, 40, 80), torch.tensor([10, 7])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = enc(feats, lens)
        out.float().pow(2).mean().backward()
    assert enc.stacks[3].bypass.grad is not None and torch.isfinite(out).all()
    enc.eval()
    low = autocast_weights(enc, torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, want = enc(feats, lens)
        _, got = low(feats, lens)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_bad_choices_name_the_setting():
    with pytest.raises(ValueError, match="zipformer norm: 'rms' must be one of"):
        ZipformerEncoder(None, None, 32, 2, 64, 2, norm="rms")
    with pytest.raises(ValueError, match="zipformer d_model: 30 must be a multiple of nhead: 4"):
        zipformer(2, d_model=30, nhead=4)


@pytest.mark.parametrize("norm,activation", [("biasnorm", "swoosh"), ("layernorm", "gelu")])
def test_zipformer_options_build_and_stay_exact(norm, activation):
    enc = ZipformerEncoder(
        zipformer(2).frontend, zipformer(2).projection, 32, 2, 64, 4,
        norm=norm, activation=activation,
    ).eval()
    short = torch.randn(1, 20, 80)
    _, alone = enc(short, torch.tensor([5]))
    batch = torch.cat([torch.cat([short, torch.zeros(1, 12, 80)], 1), torch.randn(1, 32, 80)])
    _, padded = enc(batch, torch.tensor([5, 8]))
    assert all(torch.allclose(a[0], b[0, :5], atol=1e-5) for a, b in zip(alone, padded))


def test_small_config_matches_the_conformer_parameter_count():
    """hparams/small/latent_rq_zipformer.yaml: within 1 % of the small Conformer."""
    conf = yaml_config(os.path.join(REPO, "hparams/small/latent_rq.yaml"))
    zip_ = yaml_config(os.path.join(REPO, "hparams/small/latent_rq_zipformer.yaml"))
    assert zip_["encoder_architecture"] == "zipformer"
    counts = [sum(p.numel() for p in build_encoder(c)[1].parameters()) for c in (conf, zip_)]
    assert abs(counts[1] / counts[0] - 1) < 0.01


# ---------------------------------------------------------------- demo path
@pytest.fixture(scope="module")
def zipformer_run(tmp_path_factory):
    """The demo's path on hparams/small/latent_rq_zipformer.yaml, shrunk on the
    command line (6 layers at 1, 1/2, 1/4, 1/8, 1/4, 1/2): 3 steps of stage 0,
    then a stage-1 branch of it (``--init_from``) with target layers 1 and 3
    (the 1/8 stack), target cache on, 2 more steps."""
    import train
    from test_training import tiny_args, write_corpus

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("zipformer")
    corpus = write_corpus(str(tmp / "corpus"), n_train=8, n_valid=2)
    config = os.path.join(REPO, "hparams", "small", "latent_rq_zipformer.yaml")

    def run(out, *extra):
        args = tiny_args(out, corpus, "--number_of_epochs=10", "--num_encoder_layers=6", *extra)
        args[0] = config
        brain, train_data, valid_data, train_opts, valid_opts = train.build(args)
        brain.fit(brain.hparams.epoch_counter, train_data, valid_data,
                  train_loader_kwargs=train_opts, valid_loader_kwargs=valid_opts)
        return brain

    stage0 = run(tmp / "s0", "--stage_transitions=[]", "--optimizer_step_limit=3")
    encoder0 = {k: v.clone() for k, v in stage0.modules.encoder.state_dict().items()}
    out = tmp / "s1"
    brain = run(out, "--stage_transitions=[]", "--initial_stage=1",
                f"--init_from={tmp / 's0' / 'save'}", "--target_layers=[1, 3]",
                "--optimizer_step_limit=5")
    return str(out), brain, encoder0


def test_zipformer_pretrains_branches_exports_loads_and_probes(zipformer_run, tmp_path):
    from latent_rq_brain.sharing.export import export, load_model_folder
    from recipes.probes.quick import cv_accuracy, encode, make_folds, pooled
    from test_probes import gated_tone

    out, brain, encoder0 = zipformer_run
    enc_module = brain.modules.encoder
    assert isinstance(enc_module, ZipformerEncoder) and enc_module.factors == [1, 2, 4, 8, 4, 2]
    assert brain.optimizer_step == 5 and brain.schedule.stage == 1
    te = brain.target_encoder
    assert te.snapshot_step == 3 and isinstance(te.module, ZipformerEncoder)
    # the stage-0 encoder, truncated above target layer 3 (the 1/8 stack)
    assert te.module.num_layers == 4 and te.module.factors == [1, 2, 4, 8]
    assert all(torch.equal(v, encoder0[k]) for k, v in te.module.state_dict().items())
    assert os.listdir(os.path.join(out, "target_cache"))

    enc = PretrainedEncoder.load(out)
    trained = enc_module.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in enc.encoder.state_dict().items())
    model = str(tmp_path / "model")
    export(out, model)
    assert "zipformer: front-end (4x) + 6 layers" in open(os.path.join(model, "README.md")).read()
    loaded = load_model_folder(model)
    assert isinstance(loaded.encoder, ZipformerEncoder)
    wavs, lens = torch.randn(2, 16000), torch.tensor([1.0, 0.55])
    want, want_lens = enc(wavs, lens)
    got, got_lens = loaded(wavs, lens)
    assert torch.equal(got_lens, want_lens) and all(torch.equal(a, b) for a, b in zip(got, want))

    # a quick probe: pooled hidden states of every layer, 3 tone classes
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 3
    audio = [torch.from_numpy(gated_tone(rng, int(c), 0.8)).float() for c in labels]
    states = encode(loaded, audio)
    feats = np.stack([pooled([torch.from_numpy(h)[None] for h in s], torch.tensor([len(s[0])]))[0]
                      for s in states])
    assert feats.shape == (24, 7, 64) and np.isfinite(feats).all()
    acc, _ = cv_accuracy(feats[:, 4], labels, make_folds(labels))
    assert acc > 0.5  # chance: 1/3


def test_zipformer_finetunes_the_layers_asked(zipformer_run, tmp_path):
    """CTC fine-tuning of layer 3 only: its stack's layer, bypass and pooling
    weights move, nothing else of the encoder (layer_of)."""
    from recipes.finetune import train as finetune
    from test_finetune import HPARAMS, encoder_weights
    from test_probes import tone_task

    out, _, _ = zipformer_run
    enc = PretrainedEncoder.load(out)
    data = tone_task(str(tmp_path / "data"), sizes=(8, 4, 4))
    ft = tmp_path / "ft"
    res = finetune.main([
        HPARAMS, f"--checkpoint={out}", f"--data_folder={data}", f"--output_folder={ft}",
        "--vocab_size=14", "--batch_size=4", "--rnn_layers=0", "--rnn_size=16",
        "--beam_size=3", "--number_of_epochs=1", "--freeze_encoder_steps=0",
        "--finetune_layers=[3]",
    ])
    assert res["optimizer_steps"] == 2 and res["finetune_layers"] == [3]
    start = enc.encoder.state_dict()
    prefix = "pretrained.encoder."
    moved = {k[len(prefix):] for k, v in encoder_weights(ft).items()
             if not torch.equal(v, start[k[len(prefix):]])}
    assert {enc.encoder.layer_of(k) for k in moved} == {3}
    assert {"stacks.3.bypass", "stacks.3.downsample.weights"} <= moved


def test_bench_times_the_zipformer_against_the_conformer(capsys):
    from tools import bench

    tiny = ["--d_model=32", "--nhead=2", "--num_encoder_layers=6", "--d_ffn=64",
            "--n_codebooks=4", "--codebook_size=64", "--target_layers=[0, 2]"]
    summary = bench.main(["--device", "cpu", "--batch-seconds", "4", "--utt-seconds", "2",
                          "--warmup", "1", "--iters", "2", "--architectures-only",
                          "--architectures", "hparams/small/latent_rq_zipformer.yaml",
                          "hparams/small/autoencoder.yaml", *tiny])
    rows = summary["architectures"]
    assert list(rows) == ["hparams/small/latent_rq.yaml", "hparams/small/latent_rq_zipformer.yaml",
                          "hparams/small/autoencoder.yaml"]
    conformer, zipformer_, autoencoder = rows.values()
    assert conformer["ratio"] == 1.0 and zipformer_["ratio"] > 0 and autoencoder["ratio"] > 0
    # the stacks at lower rates count fewer FLOPs per layer than the Conformer's
    assert 0 < zipformer_["gflop"] < conformer["gflop"]
    # each config's own Brain: the autoencoder's adds a bottleneck and a decoder
    assert autoencoder["gflop"] > conformer["gflop"]
    text = capsys.readouterr().out
    assert "| `hparams/small/latent_rq_zipformer.yaml` | LatentRQBrain | ZipformerEncoder | 6 |" \
        in text
    assert "| `hparams/small/autoencoder.yaml` | AutoencoderBrain | ConformerEncoder |" in text


def test_bench_zipformer_times_every_option_and_profiles():
    from tools import bench_zipformer

    summary = bench_zipformer.main(["--batch-seconds", "2", "--utt-seconds", "1", "--rounds", "2",
                                    "--warmup", "0", "--profile-calls", "1", "--top", "5"])
    labels = [label for label, _, _ in bench_zipformer.OPTIONS]
    assert labels[0] in summary and summary[labels[0]]["vs_default"] == 1.0
    assert all(summary[label]["ms"] > 0 for label in labels)
    assert "CNN front-end + projection alone" in summary
