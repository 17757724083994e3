"""The encoder contract (latent_rq_brain.model.encoder.LayeredEncoder) on every
architecture, and the demo path on the second one (encoder_architecture:
transformer): pre-training, a transition, probe features, export and
fine-tuning.

Authors
 * latent-rq developers 2026
"""

import os
import sys

import pytest
import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from latent_rq_brain.model.architectures import (  # noqa: E402
    available_architectures,
    build_architecture,
)
from latent_rq_brain.model.encoder import LayeredEncoder  # noqa: E402
from latent_rq_brain.model.transformer_encoder import TransformerStackEncoder  # noqa: E402
from latent_rq_brain.sharing.pretrained import EncoderSpec, PretrainedEncoder, build_encoder  # noqa: E402

ARCHITECTURES = available_architectures()


def tiny(name, num_layers=3):
    config = dict(PretrainedEncoder.tiny_config(), num_encoder_layers=num_layers)
    config["encoder_architecture"] = name
    torch.manual_seed(0)
    features, encoder = build_encoder(config)
    return features, encoder


def test_the_second_architecture_is_there():
    assert ARCHITECTURES[0] == "conformer" and "transformer" in ARCHITECTURES


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_forward_gives_every_layer_at_the_downsampled_rate(name):
    features, enc = tiny(name)
    assert isinstance(enc, LayeredEncoder)
    assert enc.downsampling == features.downsampling == 4
    enc.eval()
    feats, enc_lens = torch.randn(2, 24, 80), torch.tensor([6, 4])
    out, states = enc(feats, enc_lens)
    assert out.shape == (2, 24 // enc.downsampling, enc.d_model)
    assert len(states) == enc.num_layers + 1 == 4
    # every hidden state at the base rate, each of its own width
    assert [tuple(s.shape) for s in states] == [(2, 24 // enc.downsampling, d) for d in enc.layer_dims]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_truncated_copy_is_frozen_and_runs_the_first_layers(name):
    _, enc = tiny(name)
    enc.eval()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    feats, enc_lens = torch.randn(2, 24, 80), torch.tensor([6, 4])
    _, full = enc(feats, enc_lens)
    for n in (0, 2, 3):
        top = enc.truncated_copy(n)
        assert top.num_layers == n and top is not enc and not top.training
        assert not any(p.requires_grad for p in top.parameters())
        _, states = top(feats, enc_lens)
        assert len(states) == n + 1
        for a, b in zip(states, full):
            assert torch.allclose(a, b, atol=1e-6)
    assert enc.num_layers == 3 and all(p.requires_grad for p in enc.parameters())
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())
    with pytest.raises(ValueError, match=r"truncated_copy\(n_layers=4\): the encoder has 3 layers"):
        enc.truncated_copy(4)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_layer_of_names_the_layer_every_parameter_feeds(name):
    """Every parameter is in one paper layer (or in the final norm, which no
    hidden state passes through), every layer has parameters, and changing a
    layer-l parameter leaves hidden states below l unchanged."""
    _, enc = tiny(name)
    enc.eval()
    layers = {n: enc.layer_of(n) for n, _ in enc.named_parameters()}
    assert set(layers.values()) - {None} == {-1, 0, 1, 2}
    assert all("norm" in n for n, layer in layers.items() if layer is None)
    feats, enc_lens = torch.randn(1, 24, 80), torch.tensor([6])
    _, ref = enc(feats, enc_lens)
    params = dict(enc.named_parameters())
    for layer in (0, 2):
        name_ = next(n for n, k in layers.items() if k == layer)
        saved = params[name_].detach().clone()
        with torch.no_grad():
            params[name_].add_(1.0)
        _, moved = enc(feats, enc_lens)
        with torch.no_grad():
            params[name_].copy_(saved)
        assert all(torch.equal(a, b) for a, b in zip(moved[: layer + 1], ref[: layer + 1]))
        assert not torch.allclose(moved[layer + 1], ref[layer + 1])
    # a truncated copy drops the layers above its top
    top = enc.truncated_copy(1)
    assert {top.layer_of(n) for n, _ in top.named_parameters()} - {None} == {-1, 0}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_is_exact_under_padding(name):
    """The contract's padding-exactness, on every registered architecture:
    an utterance padded in a batch (first or second row, beside a longer
    one) gives, on its valid frames, the hidden states it gives alone
    (features included: waveform in, every hidden state out)."""
    features, enc = tiny(name)
    features.eval()
    enc.eval()
    torch.manual_seed(1)
    short, long = torch.randn(9000), torch.randn(16000)

    def states(wavs, n_samples):
        with torch.no_grad():
            feats, _, enc_lens = features(wavs, torch.tensor(n_samples))
            _, hidden = enc(feats, enc_lens)
        return hidden, enc_lens

    alone, alone_lens = states(short[None], [9000])
    batch = torch.zeros(2, 16000)
    for row in (0, 1):
        batch.zero_()
        batch[row, :9000] = short
        batch[1 - row] = long
        lens = [9000, 16000] if row == 0 else [16000, 9000]
        padded, enc_lens = states(batch, lens)
        n = int(alone_lens[0])
        assert int(enc_lens[row]) == n and len(padded) == len(alone) == enc.num_layers + 1
        for i, (a, b) in enumerate(zip(padded, alone)):
            assert a.shape[1] > n  # the batch is longer: padding after the short one
            err = (a[row, :n] - b[0, :n]).abs().max().item()
            assert err < 1e-5, f"{name}: hidden state {i} moves by {err:.2e} under padding"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_layer_dims_give_each_hidden_state_width(name):
    _, enc = tiny(name)
    enc.eval()
    _, states = enc(torch.randn(1, 16, 80), torch.tensor([4]))
    assert enc.layer_dims == [s.shape[-1] for s in states]


class Widening(LayeredEncoder):
    """A toy encoder whose hidden states widen layer by layer (8, 12, 16)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            [torch.nn.Linear(80, 8), torch.nn.Linear(8, 12), torch.nn.Linear(12, 16)]
        )

    num_layers = property(lambda self: len(self.layers) - 1)
    d_model = property(lambda self: self.layers[-1].out_features)
    downsampling = property(lambda self: 4)
    layer_dims = property(lambda self: [layer.out_features for layer in self.layers])

    def forward(self, feats, enc_lens):
        x = feats[:, ::4]
        states = []
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        return x, states


def test_each_layer_source_reads_its_own_width():
    """A quantizer built from an encoder's layer_dims quantizes hidden states
    of several widths: each source's projection reads its layer's width."""
    from latent_rq_brain.model.layers import hidden_state_index, layer_source
    from latent_rq_brain.targets.quantizer import latent_rq_quantizer

    enc = Widening()
    q = latent_rq_quantizer(4, 16, 4, 320, None, [-1, 1], enc.num_layers, seed=1,
                            layer_dims=enc.layer_dims)
    assert q.sources == {"mel": (320, 4), "layer-1": (8, 2), "layer1": (16, 2)}
    _, states = enc(torch.randn(2, 16, 80), torch.tensor([4, 4]))
    for layer in (-1, 1):
        x = states[hidden_state_index(layer, enc.num_layers)].reshape(-1, enc.layer_dims[layer + 1])
        codes = q(x, layer_source(layer))
        assert codes.shape == (8, 2) and int(codes.max()) < 16
    with pytest.raises(ValueError, match=r"layer_dims \[8, 12\] must give one width per hidden state: 3"):
        latent_rq_quantizer(4, 16, 4, 320, None, [1], 2, seed=1, layer_dims=[8, 12])


def test_architecture_errors_name_the_setting():
    with pytest.raises(ValueError, match="encoder_architecture: 'mamba' has no file"):
        build_encoder(dict(PretrainedEncoder.tiny_config(), encoder_architecture="mamba"))
    with pytest.raises(ValueError, match="downsampling: 8 but the encoder of .*architecture_transformer.yaml downsamples by 4"):
        build_architecture("transformer", **dict(PretrainedEncoder.tiny_config(), downsampling=8))


def test_spec_names_only_a_non_default_architecture():
    """Conformer specs stay as before (byte-identical checkpoints); another
    architecture is named, and a spec rebuilds it."""
    assert "encoder_architecture" not in EncoderSpec.from_hparams(PretrainedEncoder.tiny_config()).config
    config = dict(PretrainedEncoder.tiny_config(), encoder_architecture="transformer")
    spec = EncoderSpec.from_hparams(config).config
    assert spec["encoder_architecture"] == "transformer"
    assert isinstance(PretrainedEncoder(spec).encoder, TransformerStackEncoder)


# ---------------------------------------------------------------- demo path
@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory):
    """A tiny pre-training run of hparams/small/latent_rq_transformer.yaml
    (shrunk further on the command line): 3 steps of stage 0,
    the transition to stage 1 (target cache on), 2 steps of stage 1."""
    import train
    from test_training import tiny_args, write_corpus

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("transformer")
    corpus = write_corpus(str(tmp / "corpus"), n_train=8, n_valid=2)
    out = tmp / "run"
    args = tiny_args(
        out, corpus, "--stage_transitions=[3]", "--optimizer_step_limit=5",
        "--target_layers=[0, 1]", "--number_of_epochs=10",
    )
    args[0] = os.path.join(REPO, "hparams", "small", "latent_rq_transformer.yaml")
    brain, train_data, valid_data, train_opts, valid_opts = train.build(args)
    brain.fit(brain.hparams.epoch_counter, train_data, valid_data,
              train_loader_kwargs=train_opts, valid_loader_kwargs=valid_opts)
    return str(out), brain


def test_transformer_pretrains_and_transitions(transformer_run):
    out, brain = transformer_run
    assert isinstance(brain.modules.encoder, TransformerStackEncoder)
    assert brain.optimizer_step == 5 and brain.schedule.stage == 1
    te = brain.target_encoder
    assert te.snapshot_step == 3 and isinstance(te.module, TransformerStackEncoder)
    assert te.module.num_layers == 2  # truncated above target layer 1
    assert os.listdir(os.path.join(out, "target_cache"))
    spec = yaml.safe_load(open(os.path.join(out, "save", os.listdir(os.path.join(out, "save"))[0], "encoder_spec.ckpt")))
    assert spec["encoder_architecture"] == "transformer"


def test_transformer_checkpoint_gives_probe_features_exports_and_finetunes(transformer_run, tmp_path):
    from latent_rq_brain.sharing.export import EncoderInterface, export
    from recipes.probes.probing import HiddenStateCache
    from recipes.finetune import train as finetune
    from test_finetune import HPARAMS, encoder_weights
    from test_probes import tone_task

    out, brain = transformer_run
    enc = PretrainedEncoder.load(out)
    assert isinstance(enc.encoder, TransformerStackEncoder)
    trained = brain.modules.encoder.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in enc.encoder.state_dict().items())
    assert (enc.downsample_rate, enc.mel_target_dim, enc.num_hidden_states) == (640, 320, 4)

    # probe features: every hidden state of every frame
    data = tone_task(str(tmp_path / "data"), sizes=(8, 4, 4))
    wav = os.path.join(data, "wav", "train0.wav")
    cache = HiddenStateCache(enc)
    cache.build({"a": wav})
    assert cache.get("a").shape[1:] == (4, 32)

    # export and reload with SpeechBrain's interface
    model = str(tmp_path / "model")
    export(out, model)
    assert "transformer: front-end (4x) + 3 layers" in open(os.path.join(model, "README.md")).read()
    loaded = EncoderInterface.from_hparams(source=model, savedir=str(tmp_path / "sb"))
    wavs, lens = torch.randn(2, 16000), torch.tensor([1.0, 0.5])
    want, _ = enc(wavs, lens)
    got, _ = loaded.encode_batch(wavs, lens)
    assert all(torch.equal(a, b) for a, b in zip(got, want))

    # CTC fine-tuning of layer 1 only: layer_of picks its parameters
    ft = tmp_path / "ft"
    res = finetune.main([
        HPARAMS, f"--checkpoint={out}", f"--data_folder={data}", f"--output_folder={ft}",
        "--vocab_size=14", "--batch_size=4", "--rnn_layers=0", "--rnn_size=16",
        "--beam_size=3", "--number_of_epochs=1", "--freeze_encoder_steps=0",
        "--finetune_layers=[1]",
    ])
    assert res["optimizer_steps"] == 2 and res["finetune_layers"] == [1]
    start = enc.encoder.state_dict()
    moved = {
        enc.encoder.layer_of(k[len("pretrained.encoder."):])
        for k, v in encoder_weights(ft).items()
        if not torch.equal(v, start[k[len("pretrained.encoder."):]])
    }
    assert moved == {1}


def test_old_encoder_name_still_builds_and_old_folders_load(tmp_path):
    """LatentRQEncoder (the Conformer's name before ConformerEncoder): a YAML
    naming it builds the same module (same parameter names, same outputs),
    and a model folder written before the rename (hyperparams.yaml with the
    settings of the time, encoder.ckpt) loads."""
    from hyperpyyaml import load_hyperpyyaml

    from latent_rq_brain.model import encoder as encoder_module
    from latent_rq_brain.model.architectures import architecture_file
    from latent_rq_brain.sharing.export import load_model_folder

    assert encoder_module.LatentRQEncoder is encoder_module.ConformerEncoder
    text = open(architecture_file("conformer")).read()
    assert "latent_rq_brain.model.encoder.ConformerEncoder" in text
    old_yaml = text.replace("latent_rq_brain.model.encoder.ConformerEncoder", "latent_rq_brain.model.encoder.LatentRQEncoder")
    settings = {k: v for k, v in PretrainedEncoder.tiny_config().items() if f"{k}: !PLACEHOLDER" in text}
    settings["cnn_channels"] = tuple(settings["cnn_channels"])
    import shutil

    shutil.copy(os.path.join(os.path.dirname(architecture_file("conformer")), "frontend.yaml"), tmp_path)
    (tmp_path / "old.yaml").write_text(old_yaml)
    with open(tmp_path / "old.yaml") as f:
        old = load_hyperpyyaml(f, settings)["encoder"]
    _, new = tiny("conformer", num_layers=2)
    old.load_state_dict(new.state_dict(), strict=True)
    old.eval(), new.eval()
    feats = torch.randn(1, 16, 80)
    assert torch.equal(old(feats, torch.tensor([4]))[0], new(feats, torch.tensor([4]))[0])

    # a folder as the exporter wrote it before: no attention_type, no architecture name
    folder = tmp_path / "old_model"
    folder.mkdir()
    ref = PretrainedEncoder.from_config(PretrainedEncoder.tiny_config(), seed=2)
    torch.save(ref.state_dict(), folder / "encoder.ckpt")
    config = "".join(f"        {k}: {v}\n" for k, v in PretrainedEncoder.tiny_config().items())
    (folder / "hyperparams.yaml").write_text(
        "sample_rate: 16000\ndownsample_rate: 640\n"
        "encoder: !new:latent_rq_brain.sharing.pretrained.PretrainedEncoder\n"
        f"    config:\n{config}    info:\n        step: 7\n"
        "modules:\n    encoder: !ref <encoder>\n"
    )
    # the safe loader refuses a folder without the manifest exports now write last,
    # with a clear message; with its manifest (the two files as they were) it loads
    with pytest.raises(ValueError, match="has no SHA256SUMS: not a complete folder"):
        load_model_folder(str(folder))
    from latent_rq_brain.sharing.export import write_manifest

    (folder / "README.md").write_text("an old export\n")
    write_manifest(str(folder))
    loaded = load_model_folder(str(folder))
    wavs = torch.randn(1, 8000)
    assert all(torch.equal(a, b) for a, b in zip(loaded(wavs)[0], ref(wavs)[0]))


@pytest.fixture
def kernel_architecture(tmp_path, monkeypatch):
    """A registry holding the package's architectures plus ``kconv``: the
    Conformer with its convolution's ``kernel_size`` (default 31) and a
    per-stack list setting (``widths``, unused by the modules) declared."""
    import shutil

    from latent_rq_brain.model import architectures

    for name in ("architecture.yaml", "architecture_transformer.yaml", "frontend.yaml"):
        shutil.copy(os.path.join(architectures.FOLDER, name), tmp_path)
    text = (tmp_path / "architecture.yaml").read_text()
    text = text.replace("attention_type: RelPosMHAXL\n", "attention_type: RelPosMHAXL\nkernel_size: 31\nwidths: [96, 128]\n")
    text = text.replace("    encoder_module: conformer\n", "    encoder_module: conformer\n    kernel_size: !ref <kernel_size>\n")
    (tmp_path / "architecture_kconv.yaml").write_text(text)
    monkeypatch.setattr(architectures, "FOLDER", str(tmp_path))
    return dict(PretrainedEncoder.tiny_config(), encoder_architecture="kconv")


def test_resume_and_branch_compare_the_architectures_own_settings(kernel_architecture, tmp_path):
    """A resume (EncoderSpec's loader) and a branch (branch_differences) that
    change kernel_size 3 -> 7 of an architecture declaring it are refused
    by name; list settings (per-stack widths) are accepted and compared."""
    from speechbrain.utils.checkpoints import Checkpointer

    from latent_rq_brain.training.checkpoints import branch_differences, recover_newest_complete

    spec3 = EncoderSpec.from_hparams(dict(kernel_architecture, kernel_size=3, widths=(96, 128)))
    assert spec3.config["kernel_size"] == 3 and spec3.config["widths"] == [96, 128]
    folder = str(tmp_path / "save")
    Checkpointer(folder, {"encoder_spec": spec3}).save_checkpoint()
    ckpt = Checkpointer(folder).find_checkpoint()

    # same settings: resumes; the encoder is rebuilt with kernel_size 3 and widths as a list
    assert recover_newest_complete(Checkpointer(folder, {"encoder_spec": EncoderSpec(spec3.config)})) is not None
    enc = PretrainedEncoder(spec3.config)
    assert enc.encoder.transformer.encoder.layers[0].convolution_module.conv.kernel_size[0] == 3

    spec7 = EncoderSpec.from_hparams(dict(kernel_architecture, kernel_size=7))
    with pytest.raises(ValueError, match=r"kernel_size: 3 \(checkpoint\) != 7 \(config\)"):
        recover_newest_complete(Checkpointer(folder, {"encoder_spec": spec7}))
    assert branch_differences(ckpt, dict(kernel_architecture, kernel_size=7)) == [
        "kernel_size: 3 in the checkpoint, 7 here"
    ]
    # a setting left at its default compares as the default
    assert branch_differences(ckpt, kernel_architecture) == ["kernel_size: 3 in the checkpoint, 31 here"]
    assert branch_differences(ckpt, dict(kernel_architecture, kernel_size=3, widths=(96, 256))) == [
        "widths: [96, 128] in the checkpoint, [96, 256] here"
    ]
    other = dict(PretrainedEncoder.tiny_config(), encoder_architecture="transformer")
    assert branch_differences(ckpt, other) == [
        "encoder_architecture: kconv in the checkpoint, transformer here"
    ]


def test_list_settings_pass_the_value_check_and_strings_do_not(kernel_architecture):
    from latent_rq_brain.model.architectures import check_arch_values

    built = PretrainedEncoder(dict(kernel_architecture, widths=[64, 96, 128]))
    assert built.config["widths"] == [64, 96, 128]
    with pytest.raises(ValueError, match=r"encoder setting widths: \[64, '!apply:os.system'\] must be a number or a list of numbers"):
        check_arch_values({"widths": [64, "!apply:os.system"]})
