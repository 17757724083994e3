"""Named loss terms and the layer regulariser (SIGReg, whitening).

The statistic's behaviour on normal, collapsed and mis-scaled samples; a term
defined in this file alone trains, logs and resumes; the regulariser off (or
at weight 0) trains bit for bit as without it.
"""

import re

import pytest
import speechbrain as sb
import torch

from latent_rq_brain.objectives.loss_terms import LayerRegularizer, active_loss_terms
from latent_rq_brain.objectives.sigreg import SIGReg, WhiteningPenalty, effective_dimension, whitening_metric
from test_training import built, fit_batches, state_copy, tiny_args, train, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def sample(n=2048, d=32, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_sigreg_is_small_for_isotropic_normal_and_large_otherwise():
    sig = SIGReg(slices=64)
    z = sample()
    normal = float(sig(z, step=5))
    assert 0.5 < normal < 1.6  # expectation about 1.06
    low_rank = z[:, :3] @ torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    low_rank = low_rank / low_rank.std(0, keepdim=True)  # unit variance per dim, rank 3
    for bad in (low_rank, 4 * z, 0.2 * z, z + 2.0):
        assert float(sig(bad, step=5)) > 10 * normal


def test_sigreg_directions_follow_the_step_only():
    sig, z = SIGReg(slices=16), sample(512, 8)
    assert torch.equal(sig(z, step=3), SIGReg(slices=16)(z, step=3))
    assert not torch.equal(sig(z, step=3), sig(z, step=4))


def test_sigreg_gradient_moves_a_collapsed_sample_towards_isotropy():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1024, 1, generator=g) * torch.ones(1, 8) + 0.05 * torch.randn(1024, 8, generator=g)
    z.requires_grad_(True)
    sig = SIGReg(slices=32)
    opt = torch.optim.Adam([z], lr=0.05)
    before, first = float(effective_dimension(z.detach())), float(sig(z, 0))
    for step in range(60):
        opt.zero_grad()
        loss = sig(z, step)
        loss.backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
        opt.step()
    assert before < 1.1 and float(effective_dimension(z.detach())) > 2
    assert float(sig(z, 0)) < first / 2


def test_whitening_metric_and_penalty():
    z = sample(8000, 16)
    assert abs(float(whitening_metric(z)) - 1) < 0.05
    line = z[:, :1].expand(-1, 16)
    assert abs(float(whitening_metric(line)) - 16) < 1e-3
    pen = WhiteningPenalty(limit=2.0)
    assert float(pen(z)) == 0.0 and float(pen(line)) == pytest.approx(14.0, abs=1e-3)


def test_loss_term_settings_are_checked_by_name():
    reg = LayerRegularizer("sigreg", layers=[0])
    with pytest.raises(ValueError, match=r"loss_weights.reg must be a finite number >= 0, got -1"):
        active_loss_terms({"reg": reg}, {"reg": -1})
    with pytest.raises(ValueError, match="layer_regularizer must be one of"):
        LayerRegularizer("sigrek", layers=[0])
    assert active_loss_terms({"reg": LayerRegularizer("none")}, {"reg": 1.0}) == {}


def test_layer_regularizer_scores_only_valid_frames():
    """Frames past an utterance's end (padding) never reach the statistic."""
    reg = LayerRegularizer("sigreg", layers=[0], max_frames=10_000, slices=8)
    h = torch.randn(2, 30, 4)
    lens = torch.tensor([30, 12])
    value, _ = reg({"hidden_states": [h, h], "enc_lens": lens}, step=1)
    h2 = h.clone()
    h2[1, 12:] = 1e6  # garbage in the padding
    value2, _ = reg({"hidden_states": [h2, h2], "enc_lens": lens}, step=1)
    assert torch.allclose(value, value2)


class ToyTerm(torch.nn.Module):
    """A loss term defined here alone: the mean square of a layer's states."""

    def __init__(self, layer=0):
        super().__init__()
        self.layer = layer

    def forward(self, predictions, step):
        h = predictions["hidden_states"][self.layer + 1]
        value = h.float().square().mean()
        return value, {"step_seen": torch.tensor(float(step))}


def log_lines(out):
    return (out / "train_log.txt").read_text().splitlines()


def test_a_term_defined_in_a_test_file_trains_logs_and_resumes(tmp_path, corpus):
    """A thin YAML over the small config adds the term: no other file changes."""
    thin = tmp_path / "toy.yaml"
    thin.write_text(
        f"base_hparams: {tiny_args(tmp_path, corpus)[0]}\n"
        "loss_terms:\n    toy: !new:test_loss_terms.ToyTerm\n        layer: 1\n"
        "loss_weights:\n    toy: 0.5\n"
    )

    def args(out, *extra):
        return [str(thin), *tiny_args(out, corpus, *extra)[1:]]

    out = tmp_path / "run"
    train.main(args(out, "--stage_transitions=[2]", "--optimizer_step_limit=3"))
    lines = log_lines(out)
    logged = [ln for ln in lines if "toy: " in ln]
    assert len(logged) >= 3 and all("toy.step_seen" in ln for ln in logged)
    assert any("stage: 1" in ln for ln in logged)  # through the transition
    # resumed to step 5: the term goes on being added and logged
    brain = train.main(args(out, "--stage_transitions=[2]", "--optimizer_step_limit=5"))
    assert brain.optimizer_step == 5
    steps = [float(m) for m in re.findall(r"toy.step_seen: ([\d.]+)", "\n".join(log_lines(out)))]
    assert max(steps) >= 4
    # and it changes training: the same run without it ends elsewhere
    plain = train.main(tiny_args(tmp_path / "plain", corpus, "--stage_transitions=[2]",
                                 "--optimizer_step_limit=3"))
    assert set(brain.loss_terms) == {"toy"} and plain.loss_terms == {}
    assert any(not torch.equal(a, b) for a, b in zip(
        state_copy(brain.modules.encoder).values(), state_copy(plain.modules.encoder).values()))


def test_regulariser_off_or_at_weight_zero_is_bit_identical_and_on_is_not(tmp_path, corpus):
    def trained(name, *extra):
        brain, loader = built(tmp_path / name, corpus, "--stage_transitions=[]", *extra)
        fit_batches(brain, loader, 3)
        return brain, state_copy(brain.modules.encoder)

    _, off = trained("off")
    _, zero = trained("zero", "--layer_regularizer=sigreg", "--layer_regularizer_weight=0")
    brain, on = trained("on", "--layer_regularizer=sigreg", "--layer_regularizer_weight=0.05")
    assert all(torch.equal(off[k], zero[k]) for k in off)
    assert any(not torch.equal(off[k], on[k]) for k in off)
    logged = (tmp_path / "on" / "train_log.txt").read_text()
    values = [float(v) for v in re.findall(r"layer_regularizer: ([\d.]+)", logged)]
    dims = [float(v) for v in re.findall(r"layer_regularizer.eff_dim_layer2: ([\d.]+)", logged)]
    assert len(values) == 3 and all(v > 0 for v in values)
    assert len(dims) == 3 and all(1 <= d <= 32 for d in dims)
    assert "layer_regularizer" not in (tmp_path / "zero" / "train_log.txt").read_text()
    _, white = trained("white", "--layer_regularizer=whitening",
                       "--layer_regularizer_whitening_limit=1.0")
    assert any(not torch.equal(off[k], white[k]) for k in off)


def test_clean_pass_scores_eval_mode_states_of_clean_input(tmp_path, corpus):
    """``layer_regularizer_pass: clean`` scores the live encoder in eval mode
    on unmasked features (what a snapshot would quantize), trains through it,
    leaves the encoder in train mode, and differs from the training pass."""
    brain, loader = built(tmp_path / "clean", corpus, "--stage_transitions=[]",
                          "--layer_regularizer=sigreg", "--layer_regularizer_pass=clean",
                          "--layer_regularizer_frames=16")
    batch = next(iter(loader))
    predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
    term = brain.loss_terms["layer_regularizer"][0]
    hidden, lens, pick = term.clean_states(predictions, step=1)
    assert brain.modules.encoder.training  # restored after the eval-mode pass
    assert int(lens.sum()) >= 16 or len(lens) == len(predictions["enc_lens"])
    # the same utterances through the encoder in eval mode without masks
    enc = brain.modules.encoder
    enc.eval()
    assert torch.equal(predictions["enc_lens"][pick], lens)
    with torch.no_grad():
        ref = enc(predictions["feats"][pick], lens)[1]  # untrimmed: padding-exact
    enc.train()
    layer = 1 + term.layers[0]  # hidden_states index of the first regularised layer
    for i, n in enumerate(lens.tolist()):
        assert torch.allclose(hidden[layer][i, :n], ref[layer][i, :n], atol=1e-5)
    value, logs = term(predictions, step=1)
    value.backward()
    grads = [p.grad for p in brain.modules.encoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    train_value, _ = LayerRegularizer("sigreg", layers=term.layers, max_frames=16)(predictions, 1)
    assert not torch.isclose(value.detach(), train_value.detach())
    with pytest.raises(ValueError, match="layer_regularizer_pass"):
        LayerRegularizer("sigreg", layers=[0], pass_="eval")
    # and it trains and logs through train.py's path
    fit_batches(brain, loader, 2)
    logged = (tmp_path / "clean" / "train_log.txt").read_text()
    dims = re.findall(rf"layer_regularizer.eff_dim_layer{term.layers[0]}: ([\d.]+)", logged)
    assert len(dims) >= 1 and all(float(d) >= 1 for d in dims)
