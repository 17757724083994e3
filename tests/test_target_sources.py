"""The target-source contract, proven by a source that exists only here.

``ToySource`` (a frozen seeded linear map of the stacked Mel frames, scaled) is
defined in this file alone and configured by a command-line override of
``latent_sources``: it trains through a stage transition, its frozen module
is checkpointed and compared across ranks, and the target cache is keyed on
its settings and weights, so changing either gives another key. The EMA
target encoder is a setting of the target encoder, checked on resume.
"""

import os

import pytest
import torch

import speechbrain as sb
import train
from latent_rq_brain.model.features import valid_frames
from latent_rq_brain.targets import target_cache
from latent_rq_brain.targets.maker import TargetMaker
from latent_rq_brain.targets.target_encoder import TargetEncoder
from latent_rq_brain.targets.target_sources import FrameSource, MelFrames, TargetSources, stack_frames
from test_training import REPO, latest_ckpt, tiny_args, write_corpus


class ToySource(FrameSource):
    """A latent source no module of the package knows: a frozen, seeded linear
    map of the stacked Mel frames, times ``scale``."""

    def __init__(self, input_dim, mel_dim, scale=1.0, seed=0, downsampling=4, name="toy"):
        super().__init__(name, input_dim)
        self.scale, self.downsampling = float(scale), int(downsampling)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = torch.nn.Linear(mel_dim, input_dim).requires_grad_(False)

    def frames(self, feats, enc_lens, shared):
        return self.scale * self.net(stack_frames(feats, self.downsampling))


TOY_YAML = """base_hparams: {base}
latent_sources:
    - !new:test_target_sources.ToySource
        input_dim: 12
        mel_dim: !ref <n_mels> * <downsampling>
        scale: {scale}
        seed: {seed}
"""


def toy_args(folder, corpus, *extra, scale=1.0, seed=0):
    """A tiny run's command line whose YAML lists the toy as the latent source."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"toy_{scale}_{seed}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(TOY_YAML.format(base=os.path.join(REPO, "hparams/small/latent_rq.yaml"),
                                scale=scale, seed=seed))
    return [path, *tiny_args(folder, corpus, *extra)[1:]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def test_toy_source_trains_through_a_transition_keyed_saved_and_resumed(tmp_path, corpus):
    args = ["--stage_transitions=[2]", "--target_cache=True"]
    brain = train.main(toy_args(tmp_path, corpus, *args, "--optimizer_step_limit=4"))
    assert brain.schedule.stage == 1 and brain.optimizer_step == 4
    assert brain.quantizer.sources == {"mel": (320, 4), "toy": (12, 4)}
    toy = brain.hparams.target_sources.by_name("toy")
    assert isinstance(toy, ToySource) and brain.targets.sources(1) == ["toy"]
    # stage-1 targets are the toy's codes, from the cache as from the source
    feats = torch.randn(2, 40, 80)
    enc_lens = torch.tensor([10, 7])
    frames = valid_frames(enc_lens, 10)
    expected = brain.quantizer(toy.frames(feats, enc_lens, {})[frames], "toy")
    assert torch.equal(brain.compute_targets(feats, enc_lens, frames), expected)
    assert brain.target_cache is not None
    parts = (brain.modules.features, brain.hparams.target_sources, brain.quantizer,
             brain.precision)
    key = target_cache.cache_key(*parts, brain.train_dataset)
    assert brain.target_cache.key == key
    # its frozen module: in the rank checksums and in every checkpoint
    assert "net" in brain.check_rank_consistency("probe")
    ckpt = latest_ckpt(tmp_path / "save")
    assert "target_source.net" in ckpt.paramfiles
    saved = torch.load(ckpt.paramfiles["target_source.net"], weights_only=True)
    assert torch.equal(saved["weight"], toy.net.weight)
    # another scale or other weights: another key (the same: the same key)
    for other, same in ((dict(scale=1.0), True), (dict(scale=2.0), False),
                        (dict(seed=1), False)):
        hp = built_hparams(toy_args(str(tmp_path / "other"), corpus, **other))
        q = hp["quantizer"]
        other_key = target_cache.cache_key(brain.modules.features, hp["target_sources"], q,
                                           brain.precision, brain.train_dataset)
        assert (other_key == key) is same, other
    # a resume rebuilds the toy and reuses the cache
    resumed = train.main(toy_args(tmp_path, corpus, *args, "--optimizer_step_limit=5"))
    assert resumed.optimizer_step == 5 and resumed.target_cache.key == key


def built_hparams(argv):
    """The resolved YAML of a command line (nothing trained, no Brain)."""
    from hyperpyyaml import load_hyperpyyaml

    from latent_rq_brain.training.hparams import expand_hparams_file

    hparams_file, _, overrides = sb.parse_arguments(argv)
    hparams_file, overrides = expand_hparams_file(hparams_file, overrides)
    with open(hparams_file, encoding="utf-8") as f:
        return load_hyperpyyaml(f, overrides)


def test_frozen_parts_are_listed_once_and_named_by_source_when_they_clash():
    te = TargetEncoder([0])
    a, b = ToySource(4, 320), ToySource(4, 320, name="toy2", seed=1)
    from latent_rq_brain.targets.target_sources import layer_sources

    sources = TargetSources(MelFrames(4, 320), [a, b, *layer_sources(te, 8, 2, "random",
                                                                      "random")], 0)
    assert list(sources.frozen_parts()) == ["net", "toy2.net", "target_encoder"]
    with pytest.raises(ValueError, match=r"target sources \['toy'\] are listed twice"):
        TargetSources(MelFrames(4, 320), [a, ToySource(4, 320)], 0)
    with pytest.raises(ValueError, match=r"not divisible by the 3 latent sources"):
        TargetSources(MelFrames(4, 320), [a, b, ToySource(4, 320, name="c")], 0).groups(4)


def test_toy_source_codes_follow_its_frames():
    q_sources = TargetSources(MelFrames(4, 320), [ToySource(6, 320)], 1)
    from latent_rq_brain.targets.target_sources import build_quantizer

    q = build_quantizer(q_sources, 3, 16, 4, seed=1)
    make = TargetMaker(q, q_sources)
    feats, enc_lens = torch.randn(2, 20, 80), torch.tensor([5, 3])
    frames = valid_frames(enc_lens, 5)
    codes = make(feats, enc_lens, frames, stage=1)
    toy = q_sources.by_name("toy").frames(feats, enc_lens, {})
    assert torch.equal(codes[:, :1], q(stack_frames(feats, 4)[frames], "mel", 1))  # anchor
    assert torch.equal(codes[:, 1:], q(toy[frames], "toy"))


# ---------------------------------------------------------------- EMA on resume


def test_ema_is_a_target_encoder_setting_and_a_switched_resume_is_refused(tmp_path, corpus):
    ema = ["--target_encoder_ema=True", "--target_cache=False", "--ema_decay=0.9",
           "--ema_end_decay=0.99", "--ema_anneal_steps=4"]
    hp = built_hparams(tiny_args(tmp_path / "hp", corpus, *ema))
    te = hp["target_encoder"]
    assert (te.ema, te.ema_decay, te.ema_end_decay, te.ema_anneal_steps) == (True, 0.9, 0.99, 4)
    train.main(tiny_args(tmp_path / "ema", corpus, "--stage_transitions=[2]", *ema,
                         "--optimizer_step_limit=3"))
    with pytest.raises(ValueError, match="trained with target_encoder_ema: True, but the "
                                         "config asks target_encoder_ema: False"):
        train.build(tiny_args(tmp_path / "ema", corpus, "--stage_transitions=[2]",
                              "--optimizer_step_limit=4"))
    train.main(tiny_args(tmp_path / "frozen", corpus, "--stage_transitions=[2]",
                         "--optimizer_step_limit=3"))
    with pytest.raises(ValueError, match="trained with target_encoder_ema: False, but the "
                                         "config asks target_encoder_ema: True"):
        train.build(tiny_args(tmp_path / "frozen", corpus, "--stage_transitions=[2]", *ema,
                              "--optimizer_step_limit=4"))
