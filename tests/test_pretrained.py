"""Encoder loading without the YAML, and the s3prl upstream."""

import math
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train  # noqa: E402
from latent_rq_brain.sharing.pretrained import (  # noqa: E402
    EncoderSpec,
    PretrainedEncoder,
    build_encoder,
    load_quantizer,
)
from latent_rq_brain.sharing.s3prl_upstream.expert import UpstreamExpert  # noqa: E402
from latent_rq_brain.targets.target_encoder import unwrap  # noqa: E402
from test_hparams import PAPER, load, paper_path  # noqa: E402
from test_training import tiny_args, write_corpus  # noqa: E402

ODD = [16001, 12345, 4481, 7]  # samples: odd lengths, one shorter than a frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained 3 steps through a transition at step 2."""
    tmp = tmp_path_factory.mktemp("pretrained")
    corpus = write_corpus(str(tmp / "corpus"), n_train=8, n_valid=2)
    out = tmp / "run"
    brain = train.main(tiny_args(out, corpus, "--stage_transitions=[2]",
                                 "--optimizer_step_limit=3"))
    return out, brain


def waves(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) * 0.1 for n in lengths]


def batch(wavs):
    S = max(w.numel() for w in wavs)
    padded = torch.zeros(len(wavs), S)
    for i, w in enumerate(wavs):
        padded[i, : w.numel()] = w
    return padded, torch.tensor([w.numel() / S for w in wavs])


def test_checkpoint_loads_without_yaml_and_matches_the_trained_encoder(trained):
    out, brain = trained
    enc = PretrainedEncoder.from_checkpoint(out)
    assert enc.info["stage"] == 1 and enc.info["step"] == 3
    assert enc.info["target_layers"] == [0, 2]
    assert enc.num_hidden_states == 4 and enc.hidden_size == 32
    assert all(not p.requires_grad for p in enc.parameters())
    wavs, lens = batch(waves([16000, 9000]))
    states, enc_lens = enc(wavs, lens)
    trained_encoder = unwrap(brain.modules.encoder).eval()
    with torch.no_grad():
        feats, _, ref_lens = brain.modules.features(wavs, torch.round(lens * wavs.shape[1]).long())
        _, ref = trained_encoder(feats, ref_lens)
    assert enc_lens.tolist() == ref_lens.tolist()
    for a, b in zip(states, ref):
        torch.testing.assert_close(a, b)


def test_every_checkpoint_form_is_accepted(trained):
    out, _ = trained
    save = out / "save"
    ckpts = sorted(p for p in save.iterdir() if p.name.startswith("CKPT+"))
    for path in (out, save, ckpts[0]):
        enc = PretrainedEncoder.from_checkpoint(path)
        assert enc.info["checkpoint"].startswith(str(save))
    # the transition checkpoint (end of stage 0) is still there, stage 0 weights
    infos = [PretrainedEncoder.from_checkpoint(p).info for p in ckpts]
    assert {i["stage"] for i in infos} == {0, 1}
    assert [i.get("transition_to_stage") for i in infos].count(1) == 1


def test_missing_checkpoint_and_spec_fail_clearly(trained, tmp_path):
    with pytest.raises(ValueError, match=f"no checkpoint found at {tmp_path}"):
        PretrainedEncoder.from_checkpoint(tmp_path)
    out, _ = trained
    ckpt = sorted((out / "save").glob("CKPT+*"))[-1]
    spec = ckpt / "encoder_spec.ckpt"
    text = spec.read_text()
    try:
        spec.unlink()
        with pytest.raises(ValueError, match="has no encoder_spec.ckpt"):
            PretrainedEncoder.from_checkpoint(ckpt)
        spec.write_text(text.replace("d_model: 32", "d_model: 48"))
        with pytest.raises(ValueError, match="encoder.ckpt does not fit"):
            PretrainedEncoder.from_checkpoint(ckpt)
    finally:
        spec.write_text(text)


def test_quantizer_loads_with_the_run_buffers(trained):
    out, brain = trained
    assert load_quantizer(out).checksum() == brain.quantizer.checksum()


def test_odd_lengths_give_exact_frames_independent_of_padding():
    enc = PretrainedEncoder.from_config(PretrainedEncoder.tiny_config(), seed=0)
    wavs = waves(ODD)
    states, enc_lens = enc(*batch(wavs))
    expected = [math.ceil((n // 160 + 1) / 4) for n in ODD]
    assert enc_lens.tolist() == expected
    assert len(states) == enc.num_hidden_states == 3
    assert all(s.shape == (len(ODD), max(expected), 32) for s in states)
    for i, w in enumerate(wavs):  # alone vs in the padded batch
        alone, _ = enc(w[None], torch.ones(1))
        for a, b in zip(alone, states):
            torch.testing.assert_close(a[0], b[i, : expected[i]], atol=1e-4, rtol=1e-4)


def test_s3prl_upstream_returns_one_tensor_per_layer(trained):
    out, _ = trained
    expert = UpstreamExpert(str(out))
    assert expert.get_downsample_rates("hidden_states") == 640
    result = expert(waves(ODD))
    hs = result["hidden_states"]
    assert len(hs) == 4
    frames = math.ceil((max(ODD) // 160 + 1) / 4)
    assert all(h.shape == (len(ODD), frames, 32) for h in hs)
    assert result["last_hidden_state"] is hs[-1]


def test_rebuilt_paper_encoder_matches_the_yaml(tmp_path):
    """build_encoder mirrors the YAML: same parameters, names and shapes."""
    hparams = load(paper_path("best_rq"), tmp_path)
    spec = EncoderSpec.from_hparams(hparams)
    _, rebuilt = build_encoder(spec.config)
    mine = {k: v.shape for k, v in rebuilt.state_dict().items()}
    theirs = {k: v.shape for k, v in hparams["encoder"].state_dict().items()}
    assert mine == theirs
    assert sum(v.numel() for v in rebuilt.state_dict().values()) > 100e6
    assert "best_rq" in PAPER


def test_random_encoder_from_a_yaml_leaves_hyperpyyaml_alone():
    """random:small reads hparams/small/latent_rq.yaml without changing how
    HyperPyYAML reads later files (a probe YAML saved after it kept its !ref)."""
    from hyperpyyaml import resolve_references

    enc = PretrainedEncoder.load("random:small")
    assert (enc.encoder.num_layers, enc.hidden_size) == (4, 96)
    assert resolve_references("a: 1\nb: !ref <a>/x\n").getvalue() == "a: 1\nb: 1/x\n"


def test_training_yaml_and_build_encoder_give_the_same_seeded_weights(tmp_path):
    """One definition of the architecture: the small training YAML (which includes
    latent_rq_brain/model/architecture.yaml) and build_encoder from its settings build
    bitwise the same features and encoder from the same seed."""
    import torch

    hparams = load(os.path.join(REPO, "hparams", "small", "latent_rq.yaml"), tmp_path)
    assert hparams["features"] is hparams["architecture"]["features"]
    assert hparams["modules"]["encoder"] is hparams["architecture"]["encoder"]
    torch.manual_seed(hparams["seed"])
    features, encoder = build_encoder(EncoderSpec.from_hparams(hparams).config)
    theirs = hparams["encoder"].state_dict()
    mine = encoder.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert features.downsampling == hparams["features"].downsampling == 4
    # training keeps its dropout; a pre-trained encoder gets the file's default (0.0)
    def dropouts(module):
        return {m.p for m in module.modules() if isinstance(m, torch.nn.Dropout)}

    assert dropouts(hparams["encoder"]) == {hparams["dropout"]} and hparams["dropout"] > 0
    # (some SpeechBrain dropouts are fixed at 0.1 whatever the setting)
    assert 0.0 in dropouts(encoder) and 0.0 not in dropouts(hparams["encoder"])
