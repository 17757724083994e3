"""Reliability: non-finite data and weights, target cache integrity, resume,
the output-folder lock and degenerate settings (issue 12).

Each test fails on the code before the guard it checks. Tiny runs as in
``tests/test_training.py``, on synthetic audio.
"""

import os
import re
import time

import numpy as np
import pytest
import soundfile
import torch

from latent_rq_brain.targets.target_encoder import unwrap
from test_training import built, fit_batches, latest_ckpt, state_copy, tiny_args, train, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def poison_wav(path, n_nan=None):
    """Rewrites a wav as float samples, with NaN in all (None) or n_nan samples."""
    x, sr = soundfile.read(path, dtype="float32")
    if n_nan is None:
        x[:] = np.nan
    else:
        x[np.linspace(0, len(x) - 1, n_nan).astype(int)] = np.nan
    soundfile.write(path, x, sr, subtype="FLOAT")


def all_finite(module):
    return all(bool(torch.isfinite(v).all()) for v in unwrap(module).state_dict().values())


# ---------------------------------------------------------------- non-finite data and weights
@pytest.mark.parametrize("n_nan", [None, 100])
def test_nan_audio_is_skipped_named_and_counted(tmp_path, n_nan):
    """The NaN utterance is the longest of the corpus, hence of its batch."""
    corpus = write_corpus(str(tmp_path / "data"), n_train=8, n_valid=2)
    # the longest utterance: dropping it shortens the padded batch too
    durations = {f.name: soundfile.info(str(f)).duration
                 for f in (tmp_path / "data").glob("train*.wav")}
    longest = max(durations, key=durations.get)
    poison_wav(str(tmp_path / "data" / longest), n_nan)
    out = tmp_path / "run"
    brain = train.main(tiny_args(out, corpus, "--stage_transitions=[]",
                                 "--optimizer_step_limit=4"))
    uid = longest[: -len(".wav")]
    assert f"non-finite audio (NaN/Inf): {uid}" in open(out / "log.txt").read()
    assert brain.optimizer_step == 4
    assert all_finite(brain.modules.encoder) and all_finite(brain.modules.heads)
    ckpt = latest_ckpt(out / "save")
    saved = torch.load(ckpt.paramfiles["encoder"], weights_only=True)
    assert all(bool(torch.isfinite(v).all()) for v in saved.values())
    log = open(out / "train_log.txt").read()
    assert "skipped_utterances: 1" in log


def test_non_finite_loss_never_updates_weights(tmp_path, corpus, monkeypatch):
    brain, loader = built(tmp_path, corpus, "--stage_transitions=[]")
    fit_batches(brain, loader, 1)
    before, step = state_copy(brain.modules.encoder), brain.optimizer_step
    orig = type(brain).compute_objectives
    monkeypatch.setattr(type(brain), "compute_objectives",
                        lambda self, *a: orig(self, *a) * float("nan"))
    brain.nonfinite_count = 0  # set by SpeechBrain's epoch loop
    fit_batches(brain, loader, 2)  # within SpeechBrain's nonfinite_patience (3)
    after = state_copy(brain.modules.encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert brain.optimizer_step == step and brain.train_stats.skipped_steps == 2


def test_checkpoint_with_non_finite_weights_is_never_written(tmp_path, corpus):
    brain, loader = built(tmp_path, corpus, "--stage_transitions=[]")
    fit_batches(brain, loader, 1)
    with torch.no_grad():
        next(unwrap(brain.modules.encoder).parameters())[0] = float("nan")
    before = latest_ckpt(tmp_path / "save")
    with pytest.raises(RuntimeError, match="non-finite weights .* no checkpoint is written"):
        brain._save_intra_epoch_ckpt()
    assert latest_ckpt(tmp_path / "save") == before


def test_run_never_ends_with_status_0_and_non_finite_weights(tmp_path, corpus, monkeypatch):
    from latent_rq_brain.training.brain import LatentRQBrain

    def poison_without_saving(self, stage, stage_loss, epoch=None):
        with torch.no_grad():
            next(unwrap(self.modules.heads).parameters())[0] = float("nan")

    monkeypatch.setattr(LatentRQBrain, "on_stage_end", poison_without_saving)
    with pytest.raises(RuntimeError, match="non-finite weights at the end of training"):
        train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[]",
                             "--optimizer_step_limit=1"))


# ---------------------------------------------------------------- target cache integrity
from latent_rq_brain.targets import target_cache  # noqa: E402
from latent_rq_brain.targets.target_cache import TargetCache  # noqa: E402
from speechbrain.dataio.dataset import DynamicItemDataset  # noqa: E402


def cache_dataset(n=12):
    data = {f"u{i}": {"duration": 1.0 + 0.1 * i} for i in range(n)}
    ds = DynamicItemDataset(data)
    ds.add_dynamic_item(lambda d: torch.zeros(int(d * 100)), takes="duration", provides="sig")
    ds.set_output_keys(["id", "sig"])
    return ds


def fake_targets(codebook_size, n_codebooks=3):
    """A make_targets whose codes depend on the utterance ID only."""

    def make(batch):
        lens = torch.tensor([10 + int(u[1:]) for u in batch.id])
        codes = [torch.randint(0, codebook_size, (int(n), n_codebooks),
                               generator=torch.Generator().manual_seed(int(u[1:])))
                 for u, n in zip(batch.id, lens)]
        return torch.cat(codes), lens

    return make


def cached_codes(cache, ds):
    ids = list(ds.data_ids)
    lens = torch.tensor([10 + int(u[1:]) for u in ids])
    return cache.lookup(ids, lens, "cpu")


def prepare(folder, ds, codebook_size=64):
    return TargetCache.prepare(str(folder), "k", 3, fake_targets(codebook_size), ds, 5.0,
                               codebook_size=codebook_size)


def test_cache_dtype_holds_codebook_size(tmp_path):
    ds = cache_dataset()
    codes = cached_codes(prepare(tmp_path, ds, 70000), ds)
    assert int(codes.max()) >= 65536  # would wrap in uint16
    lens = [10 + int(u[1:]) for u in ds.data_ids]
    expect = [torch.randint(0, 70000, (n, 3), generator=torch.Generator().manual_seed(int(u[1:])))
              for u, n in zip(ds.data_ids, lens)]
    for b, (e, n) in enumerate(zip(expect, lens)):
        assert torch.equal(codes[b, :n], e)


def _rewrite_codes(path):
    x = np.fromfile(path, dtype=np.uint16)
    np.random.default_rng(0).integers(0, 64, x.shape).astype(np.uint16).tofile(path)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip(path):
    with open(path, "r+b") as f:
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("victim,damage", [
    ("uint16", _rewrite_codes), ("uint16", _truncate), ("uint16", _flip),
    ("json", _truncate), ("done", lambda p: open(p, "w").close()),
])
def test_corrupted_cache_shard_is_rebuilt_with_a_warning(tmp_path, monkeypatch, victim, damage):
    ds = cache_dataset()
    clean = cached_codes(prepare(tmp_path, ds), ds)
    (path,) = [os.path.join(tmp_path, f) for f in os.listdir(tmp_path) if f.endswith("." + victim)]
    damage(path)
    warnings = []
    monkeypatch.setattr(target_cache.logger, "warning", warnings.append)
    assert torch.equal(cached_codes(prepare(tmp_path, ds), ds), clean)
    assert len(warnings) == 1 and "failed its check" in warnings[0] and "rebuilding" in warnings[0]


def test_corrupted_shard_of_another_rank_stops_naming_the_cache(tmp_path):
    ds = cache_dataset()
    for rank in (0, 1):
        TargetCache(str(tmp_path), "k", 3, 64, world_size=2).build_shard(
            fake_targets(64), ds, rank, 2, 5.0)
    _flip(os.path.join(tmp_path, "k.world2.rank1.uint16"))
    with pytest.raises(RuntimeError, match=r"target cache .*k.world2.rank1.uint16 failed its "
                                           r"check .*delete .* to rebuild"):
        TargetCache(str(tmp_path), "k", 3, 64, world_size=2).open()


def test_cache_of_another_world_size_is_not_read(tmp_path):
    """A 1-rank resume of a 2-rank run builds its own cache (world size in the name)."""
    ds = cache_dataset()
    for rank in (0, 1):  # what a 2-rank run left
        TargetCache(str(tmp_path), "k", 3, 64, world_size=2).build_shard(
            fake_targets(64), ds, rank, 2, 5.0)
    cache = prepare(tmp_path, ds)  # 1 rank
    assert cached_codes(cache, ds).shape[0] == len(ds)
    assert not [f for f in os.listdir(tmp_path) if ".world2." in f]  # stale files removed


def batch_dependent_targets(n_codebooks=3):
    """A make_targets whose codes depend on the batch an utterance is in (its
    padded length), as float rounding makes real targets do in rare ties."""

    def make(batch):
        lens = torch.tensor([10 + int(u[1:]) for u in batch.id])
        padded = int(lens.max())
        codes = [torch.full((int(n), n_codebooks), int(u[1:]) * 100 + padded) for u, n in
                 zip(batch.id, lens)]
        return torch.cat(codes), lens

    return make


def test_cache_is_the_same_for_any_number_of_ranks(tmp_path):
    """Batches are formed from the whole set, then shared out: each utterance
    is computed in the same batch with 1 or 2 ranks."""
    ds = cache_dataset()
    codes = {}
    for world in (1, 2):
        folder = str(tmp_path / f"world{world}")
        for rank in range(world):
            TargetCache(folder, "k", 3, 64, world_size=world).build_shard(
                batch_dependent_targets(), ds, rank, world, 5.0)
        cache = TargetCache(folder, "k", 3, 64, world_size=world)
        cache.open()
        codes[world] = cached_codes(cache, ds)
    assert torch.equal(codes[1], codes[2])


def key_parts(f_min=0, norm="utterance"):
    """Feature extractor, target sources and quantizer as a run resolves them."""
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    from latent_rq_brain.model.features import MelFeatures
    from latent_rq_brain.targets.quantizer import latent_rq_quantizer
    from latent_rq_brain.targets.target_encoder import TargetEncoder

    from latent_rq_brain.targets.maker import quantizer_sources

    features = MelFeatures(Fbank(n_mels=80, f_min=f_min), InputNormalization(norm_type="sentence"))
    quantizer = latent_rq_quantizer(4, 64, 8, 320, 32, [0], 2, seed=1)
    return features, quantizer_sources(quantizer, TargetEncoder([0], norm=norm), 4, 0), quantizer


def wav_dataset(folder, seed=0):
    path = os.path.join(folder, "a.wav")
    rng = np.random.default_rng(seed)
    soundfile.write(path, rng.uniform(-0.5, 0.5, 16000).astype("float32"), 16000)
    return DynamicItemDataset({"a": {"wav": path, "duration": 1.0}}), path


def test_cache_key_follows_every_feature_setting(tmp_path):
    """f_min is in no list of YAML keys: the key is derived from the objects."""
    ds, _ = wav_dataset(str(tmp_path))
    key = target_cache.cache_key(*key_parts(), "fp32", ds)
    assert target_cache.cache_key(*key_parts(), "fp32", ds) == key  # same settings: reused
    assert target_cache.cache_key(*key_parts(f_min=50), "fp32", ds) != key
    assert target_cache.cache_key(*key_parts(norm="layer"), "fp32", ds) != key
    assert target_cache.cache_key(*key_parts(), "bf16", ds) != key


def test_cache_key_follows_a_wav_rewritten_in_place(tmp_path):
    """Same path, same length, new content: size or modification time differ."""
    ds, path = wav_dataset(str(tmp_path))
    key = target_cache.cache_key(*key_parts(), "fp32", ds)
    size, mtime = os.path.getsize(path), os.stat(path).st_mtime_ns
    wav_dataset(str(tmp_path), seed=1)  # rewritten: same number of samples
    os.utime(path, ns=(mtime + 1_000_000, mtime + 1_000_000))  # even within one clock tick
    assert os.path.getsize(path) == size
    assert target_cache.cache_key(*key_parts(), "fp32", ds) != key


# ---------------------------------------------------------------- resume
def test_resumed_run_reuses_its_target_cache(tmp_path, corpus):
    """The derived key is stable: fresh objects, same settings, same key."""
    args = ("--stage_transitions=[1]",)
    first = train.main(tiny_args(tmp_path, corpus, *args, "--optimizer_step_limit=2"))
    resumed = train.main(tiny_args(tmp_path, corpus, *args, "--optimizer_step_limit=3"))
    assert resumed.resumed_from is not None and resumed.optimizer_step == 3
    assert resumed.target_cache.key == first.target_cache.key
    assert f"target cache {first.target_cache.key}: rank 0 shard verified" in log_of(tmp_path)


def log_of(out):
    return open(os.path.join(out, "log.txt")).read()


def test_no_complete_checkpoint_starts_fresh_with_a_warning(tmp_path, corpus):
    """A kill during the first save: every checkpoint lacks a file."""
    train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[]", "--optimizer_step_limit=1"))
    ckpt = latest_ckpt(tmp_path / "save")
    os.remove(ckpt.paramfiles["encoder"])
    brain = train.main(tiny_args(tmp_path, corpus, "--stage_transitions=[]",
                                 "--optimizer_step_limit=2"))
    assert brain.resumed_from is None and brain.optimizer_step == 2
    assert "no complete checkpoint" in log_of(tmp_path) and "starting fresh" in log_of(tmp_path)


@pytest.mark.parametrize("meta", ["", "unixtime: [1, 2\n", "\xff\xfe"])
def test_empty_or_unreadable_ckpt_yaml_is_an_incomplete_checkpoint(tmp_path, corpus, meta):
    args = ("--stage_transitions=[2]",)
    train.main(tiny_args(tmp_path, corpus, *args, "--optimizer_step_limit=3"))
    newest = latest_ckpt(tmp_path / "save")
    with open(newest.path / "CKPT.yaml", "w", encoding="latin-1") as f:
        f.write(meta)
    brain = train.main(tiny_args(tmp_path, corpus, *args, "--optimizer_step_limit=4"))
    assert brain.optimizer_step == 4
    assert brain.resumed_from.meta.get("transition_to_stage") == 1  # the older, complete one
    assert f"moved to {newest.path.parent / ('incomplete-' + newest.path.name)}" in log_of(tmp_path)
    # removed once a newer checkpoint is complete
    assert not (newest.path.parent / ("incomplete-" + newest.path.name)).exists()
    assert "is incomplete" in log_of(tmp_path) and "removed incomplete checkpoint" in log_of(tmp_path)


# ---------------------------------------------------------------- output folder
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from latent_rq_brain.training import output_lock  # noqa: E402
from test_training import REPO  # noqa: E402


def folder_bytes(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def test_refused_resume_writes_nothing(tmp_path, corpus):
    out = tmp_path / "run"
    train.main(tiny_args(out, corpus, "--stage_transitions=[]", "--optimizer_step_limit=1"))
    output_lock.release_output_lock(str(out / ".lock"))  # as at the end of that process
    before = folder_bytes(out)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"),
         *tiny_args(out, corpus, "--stage_transitions=[]", "--d_model=48")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "cannot resume from checkpoint" in proc.stderr
    assert folder_bytes(out) == before  # hyperparams.yaml and logs included


def test_second_run_into_a_folder_stops_naming_the_holder(tmp_path, corpus):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(RuntimeError, match=rf"in use by PID {holder.pid} on host "
                                               rf"{socket.gethostname()}"):
            train.main(tiny_args(tmp_path, corpus))
    finally:
        holder.kill()
        holder.wait()
    # nothing else written (SpeechBrain's Checkpointer makes the empty save/ at YAML load)
    assert list(folder_bytes(tmp_path)) == [".lock"]


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, corpus, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    warnings = []
    monkeypatch.setattr(output_lock.logger, "warning", warnings.append)
    built(tmp_path, corpus, "--stage_transitions=[]")
    assert len(warnings) == 1 and f"PID {dead.pid}, which is not running" in warnings[0]
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    output_lock.release_output_lock(str(tmp_path / ".lock"))
    assert not (tmp_path / ".lock").exists()


# ---------------------------------------------------------------- degenerate settings and data
from latent_rq_brain.training.data import DataError, read_manifest  # noqa: E402


@pytest.mark.parametrize("setting,match", [
    ("--codebook_size=1", r"codebook_size: 1 must be >= 2"),
    ("--mask_prob=0", r"mask_prob: 0 must be in \(0, 1\]"),
    ("--mask_prob=1.5", r"mask_prob: 1.5 must be in \(0, 1\]"),
    ("--mask_length=40", r"mask_length: 40 .* masks every frame"),
    ("--log_interval=0", r"log_interval: 0 must be an integer >= 1"),
    ("--warmup_steps=0", r"warmup_steps: 0 must be an integer >= 1"),
    ("--grad_accumulation_factor=0", r"grad_accumulation_factor: 0 must be an integer >= 1"),
    ("--ckpt_to_keep=0", r"ckpt_to_keep: 0 must be an integer >= 1"),
    ("--number_of_epochs=0", r"number_of_epochs: 0 must be an integer >= 1"),
    ("--optimizer_step_limit=0", r"optimizer_step_limit: 0 must be an integer >= 1"),
])
def test_degenerate_setting_is_refused_at_start_up_naming_it(tmp_path, corpus, setting, match):
    with pytest.raises(ValueError, match=match):
        train.build(tiny_args(tmp_path / "run", corpus, setting))
    assert not (tmp_path / "run").exists() or not folder_bytes(tmp_path / "run")


def test_mask_length_masking_nearly_everything_is_warned(tmp_path, corpus, monkeypatch):
    from latent_rq_brain.training import hparams

    warnings = []
    monkeypatch.setattr(hparams.logger, "warning", warnings.append)
    train.build(tiny_args(tmp_path, corpus, "--mask_length=20", "--mask_prob=0.8"))
    assert len(warnings) == 1 and "mask_length: 20" in warnings[0] and "masks" in warnings[0]


def test_duration_filter_drops_are_logged_with_counts_and_hours(tmp_path, corpus):
    train.build(tiny_args(tmp_path, corpus, "--avoid_if_shorter_than=1.5"))
    log = log_of(tmp_path)
    assert "duration filters dropped" in log and "shorter than 1.5 s (" in log and " h)" in log


def test_non_utf8_manifest_names_file_and_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"ID,duration,wav\nu1,1.0,a.wav\nu2,1.0,caf\xe9.wav\n")
    with pytest.raises(DataError, match=rf"manifest {path}, line 3: byte .* is not UTF-8"):
        read_manifest(str(path))


def test_branch_from_a_stage1_checkpoint_loads_its_target_encoder(tmp_path, corpus):
    train.main(tiny_args(tmp_path / "s0", corpus, "--stage_transitions=[2]",
                         "--optimizer_step_limit=3"))
    brain, _ = built(tmp_path / "s1", corpus, "--stage_transitions=[]", "--initial_stage=1",
                     f"--init_from={tmp_path / 's0' / 'save'}")
    assert brain.schedule.stage == 1 and brain.target_encoder.snapshot_step == 2


# ---------------------------------------------------------------- torch.load
class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["EXPLOIT_MARK"],))


def test_checkpoint_loading_never_unpickles_code(tmp_path, corpus, monkeypatch):
    """Even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (told to s3prl users)."""
    brain, _ = built(tmp_path / "run", corpus, "--stage_transitions=[]")
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARK", str(mark))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    bad = tmp_path / "evil.ckpt"
    torch.save({"config": _Exploit(), "state": {}}, bad)
    loaders = [brain.quantizer.check_same, brain.quantizer._load,
               brain.target_encoder._load, type(brain.quantizer).from_file]
    from latent_rq_brain.training.checkpoints import load_state
    from latent_rq_brain.sharing.safe_load import UnsafeCheckpointError

    loaders.append(lambda path: load_state(brain.modules.heads, path, "cpu", "test"))
    for load in loaders:
        with pytest.raises(UnsafeCheckpointError, match=rf"{re.escape(str(bad))}: it holds pickled"):
            load(str(bad))
    assert not mark.exists()


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory, corpus):
    """A finished 1-step run (stage 0), copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("one_step") / "run"
    train.main(tiny_args(out, corpus, "--stage_transitions=[]", "--optimizer_step_limit=1"))
    output_lock.release_output_lock(str(out / ".lock"))
    return out


def copy_run(run, dest):
    import shutil

    shutil.copytree(run, dest)
    return dest


@pytest.mark.parametrize("victim", ["optimizer", "lr_annealing", "encoder"])
def test_resume_never_unpickles_code_planted_in_a_checkpoint(tmp_path, corpus, one_step_run,
                                                             monkeypatch, victim):
    """SpeechBrain's own loaders (modules, optimizer, scheduler) call torch.load
    without weights_only; TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 would let them
    unpickle code. The resume is refused naming the file, before anything is written."""
    from latent_rq_brain.sharing.safe_load import UnsafeCheckpointError

    out = copy_run(one_step_run, tmp_path / "run")
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARK", str(mark))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = latest_ckpt(out / "save").paramfiles[victim]
    torch.save({"state": _Exploit()}, path)
    before = folder_bytes(out)
    with pytest.raises(UnsafeCheckpointError, match=rf"refused to load {re.escape(str(path))}: it holds "
                                                    r"pickled code \(posix.system\)") as err:
        train.main(tiny_args(out, corpus, "--stage_transitions=[]", "--optimizer_step_limit=2"))
    assert "weights_only=False" not in str(err.value)
    assert not mark.exists()
    assert folder_bytes(out) == before


@pytest.mark.parametrize("setting,named", [
    ("--hop_length=20", "hop_length: 10 (checkpoint) != 20 (config)"),
    ("--n_fft=512", "n_fft: 400 (checkpoint) != 512 (config)"),
    ("--win_length=20", "fbank.compute_STFT.win_length: 400 (checkpoint) != 320 (config)"),
])
def test_resume_with_another_feature_setting_is_refused_by_name(tmp_path, corpus, one_step_run,
                                                                setting, named):
    """The encoder's weights cannot tell a hop length: the settings of the
    resolved feature extractor are saved and compared, each by name."""
    out = copy_run(one_step_run, tmp_path / "run")
    before = folder_bytes(out)
    with pytest.raises(ValueError, match=r"cannot resume from checkpoint .*" + re.escape(named)):
        train.main(tiny_args(out, corpus, "--stage_transitions=[]", "--optimizer_step_limit=2",
                             setting))
    assert folder_bytes(out) == before


def test_batch_of_only_non_finite_utterances_updates_nothing_it_should_not(tmp_path, corpus):
    brain, loader = built(tmp_path, corpus, "--stage_transitions=[]", "--log_interval=100")
    brain.nonfinite_count = 0
    batch = next(iter(loader))
    batch.sig.data[:] = float("inf")
    brain.step += 1
    loss = brain.fit_batch(batch)
    assert float(loss) == 0.0 and brain.train_stats.skipped_utterances == len(batch.id)
    assert all_finite(brain.modules.encoder) and all_finite(brain.modules.heads)


def test_skipped_half_loaded_checkpoint_leaves_a_fresh_start_fresh(tmp_path, corpus):
    """Every checkpoint has a truncated brain.ckpt (loaded after the weights)."""
    args = ("--stage_transitions=[2]",)
    train.main(tiny_args(tmp_path, corpus, *args, "--optimizer_step_limit=3"))
    for ckpt in [latest_ckpt(tmp_path / "save")] + [
            c for c in __import__("speechbrain").utils.checkpoints.Checkpointer(
                tmp_path / "save").list_checkpoints()]:
        path = ckpt.paramfiles["brain"]
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)
    fresh, _ = built(tmp_path / "fresh", corpus, *args)
    brain, _ = built(tmp_path, corpus, *args)
    assert brain.resumed_from is None and brain.optimizer_step == 0
    assert brain.schedule.stage == 0 and not brain.target_encoder.active
    a, b = state_copy(brain.modules.encoder), state_copy(fresh.modules.encoder)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- lock race
LOCK_RACER = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
from latent_rq_brain.training import output_lock
base, me, n, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
for k in range(n):
    start = t0 + 0.25 * k
    while time.time() < start:  # every racer tries trial k at the same moment
        pass
    try:
        output_lock.acquire_output_lock(os.path.join(base, str(k)))
        print(k, "HELD", flush=True)
    except RuntimeError as err:
        print(k, "BUSY" if "is in use by" in str(err) else "OTHER " + str(err), flush=True)
    except Exception as err:
        print(k, "CRASH", type(err).__name__, err, flush=True)
open(os.path.join(base, "done." + me), "w").close()
while len([f for f in os.listdir(base) if f.startswith("done.")]) < 3:
    time.sleep(0.05)  # hold the locks won until every racer is done
"""


def test_three_processes_taking_over_a_stale_lock_at_once(tmp_path):
    """Exactly one holds it, every time; the others are told who does."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    n = 12
    for k in range(n):
        (tmp_path / str(k)).mkdir()
        (tmp_path / str(k) / ".lock").write_text(
            json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    script = LOCK_RACER.format(repo=REPO)
    t0 = time.time() + 3.0  # after the three interpreters have started
    racers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(i), str(n),
                                str(t0)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for i in range(3)]
    outputs = [r.communicate(timeout=120) for r in racers]
    results = {}
    for out, err in outputs:
        assert "Traceback" not in err, err
        for line in out.splitlines():
            k, what = line.split(" ", 1)
            results.setdefault(int(k), []).append(what)
    assert sorted(results) == list(range(n))
    for k, got in results.items():
        assert sorted(got) == ["BUSY", "BUSY", "HELD"], (k, got)
    assert not list(tmp_path.glob("*/.lock"))  # released at exit


# ---------------------------------------------------------------- corrupt and half-written checkpoints
@pytest.fixture(scope="module")
def two_ckpt_run(tmp_path_factory, corpus):
    """A run with a transition checkpoint (step 2) and a newer one (step 3)."""
    out = tmp_path_factory.mktemp("two_ckpt") / "run"
    train.main(tiny_args(out, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=3"))
    output_lock.release_output_lock(str(out / ".lock"))
    return out


def checkpoints_of(run):
    from speechbrain.utils.checkpoints import Checkpointer

    return sorted(Checkpointer(run / "save").list_checkpoints(), key=lambda c: c.meta["unixtime"])


def damage_file(path, how):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write({"empty": b"", "truncated": data[: len(data) // 2],
                 "random": np.random.default_rng(0).bytes(len(data))}[how])


@pytest.mark.parametrize("how", ["empty", "truncated", "random"])
def test_corrupt_encoder_file_is_named_by_every_loader(tmp_path, corpus, two_ckpt_run, how):
    """Named explicitly (one CKPT+ folder), the file is read and its fault named;
    nothing suggests weights_only=False."""
    from latent_rq_brain.sharing.export import export
    from latent_rq_brain.sharing.pretrained import PretrainedEncoder

    run = copy_run(two_ckpt_run, tmp_path / "run")
    ckpt = checkpoints_of(run)[-1]
    path = ckpt.paramfiles["encoder"]
    damage_file(path, how)
    named = re.escape(f"cannot read {path} (") + r"\d+ bytes\): it is empty, truncated or not a PyTorch file"
    for load in (lambda: PretrainedEncoder.load(str(ckpt.path)),
                 lambda: export(str(ckpt.path), str(tmp_path / "model")),
                 lambda: built(tmp_path / "branch", corpus, "--stage_transitions=[]",
                               f"--init_from={ckpt.path}")):
        with pytest.raises(ValueError, match=named) as err:
            load()
        assert "weights_only" not in str(err.value)


@pytest.mark.parametrize("how", ["planted", "empty", "truncated", "random"])
def test_init_from_reads_the_quantizer_safely_naming_it(tmp_path, corpus, two_ckpt_run,
                                                        monkeypatch, how):
    """The early --init_from check reads quantizer.ckpt weights-only: a planted
    pickle, an empty, a truncated or a random file is a one-line usage error
    naming the file, before anything is written; no code runs."""
    from latent_rq_brain.training.arguments import UsageError

    run = copy_run(two_ckpt_run, tmp_path / "run")
    ckpt = checkpoints_of(run)[-1]
    path = ckpt.paramfiles["quantizer"]
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARK", str(mark))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    if how == "planted":
        torch.save({"config": _Exploit(), "state": {}}, path)
    else:
        damage_file(path, how)
    out = tmp_path / "branch"
    with pytest.raises(UsageError, match=rf"--init_from=.*{re.escape(str(path))}") as err:
        train.main(tiny_args(out, corpus, "--stage_transitions=[]", f"--init_from={ckpt.path}"))
    assert "weights_only" not in str(err.value)
    assert not mark.exists()
    assert not out.exists()


@pytest.mark.parametrize("how", ["lacks quantizer", "truncated encoder"])
def test_loaders_skip_a_half_written_newest_checkpoint(tmp_path, corpus, two_ckpt_run, how):
    """As a resume does: the newest complete checkpoint of a run folder is used."""
    from latent_rq_brain.sharing.export import export
    from latent_rq_brain.sharing.pretrained import PretrainedEncoder, load_quantizer

    run = copy_run(two_ckpt_run, tmp_path / "run")
    older, newest = checkpoints_of(run)[-2:]
    if how == "lacks quantizer":
        os.remove(newest.paramfiles["quantizer"])
        loaders_skip = ["init_from", "quantizer"]
    else:
        damage_file(newest.paramfiles["encoder"], "truncated")
        loaders_skip = ["init_from", "quantizer", "encoder", "export"]
    if "encoder" in loaders_skip:
        assert PretrainedEncoder.load(str(run)).info["checkpoint"] == str(older.path)
        export(str(run), str(tmp_path / "model"))  # from the older one, without an error
    if "quantizer" in loaders_skip:
        assert load_quantizer(str(run)).checksum() == load_quantizer(str(older.path)).checksum()
    brain, _ = built(tmp_path / "branch", corpus, "--stage_transitions=[]", "--initial_stage=1",
                     f"--init_from={run}")
    assert brain.optimizer_step == 2  # the older, complete checkpoint's step
    assert f"initialised from {older.path}" in log_of(tmp_path / "branch")


@pytest.mark.parametrize("victim", ["brain", "stage_schedule", "encoder_spec"])
def test_unreadable_text_file_makes_the_newest_checkpoint_incomplete(tmp_path, corpus, two_ckpt_run,
                                                                    victim):
    """Random bytes in a YAML-text file of the newest checkpoint: a resume and
    the loaders of a run folder use the older complete one, naming the file in
    a warning; the checkpoint named explicitly is an error naming the file."""
    from latent_rq_brain.training.checkpoints import file_problem
    from latent_rq_brain.sharing.pretrained import PretrainedEncoder

    run = copy_run(two_ckpt_run, tmp_path / "run")
    older, newest = checkpoints_of(run)[-2:]
    path = newest.paramfiles[victim]
    damage_file(path, "random")
    assert file_problem(path, text=True).startswith("it is not readable text")

    brain, _ = built(run, corpus, "--stage_transitions=[2]")
    assert brain.resumed_from.path == older.path and brain.optimizer_step == 2
    assert f"skipping checkpoint {newest.path}: {victim}.ckpt: it is not readable text" in log_of(run)

    assert PretrainedEncoder.load(str(run)).info["checkpoint"] == str(older.path)
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {newest.path} is damaged: {victim}.ckpt: "
                                                   "it is not readable text")) as err:
        PretrainedEncoder.load(str(newest.path))
    assert "does not fit" not in str(err.value)


# ---------------------------------------------------------------- saving: disk full, debris
def test_the_training_yaml_declares_the_guarded_checkpointer(tmp_path, caplog):
    """The guards are in the YAML (no class swap at run time); a YAML with a
    plain SpeechBrain Checkpointer is named in a warning."""
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.checkpoints import Checkpointer

    from latent_rq_brain.training.checkpointer import GuardedCheckpointer, check_guarded
    from latent_rq_brain.training.hparams import expand_hparams_file

    path, overrides = expand_hparams_file(
        os.path.join(REPO, "hparams", "small", "latent_rq.yaml"),
        {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "out")},
    )
    with open(path) as f:
        hparams = load_hyperpyyaml(f, overrides)
    assert type(hparams["checkpointer"]) is GuardedCheckpointer
    with caplog.at_level("WARNING", logger="latent_rq_brain.training.checkpointer"):
        check_guarded(Checkpointer(tmp_path / "plain"), "my.yaml")
    assert "my.yaml: checkpointer is a Checkpointer, not a latent_rq_brain.training.checkpointer.GuardedCheckpointer" in caplog.text


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4224 vs 4112"),
    OSError(28, "No space left on device"),
])
def test_disk_full_while_saving_names_the_folder_and_free_space(tmp_path, corpus, monkeypatch,
                                                                error):
    from latent_rq_brain.training.checkpoints import DiskFullError

    brain, loader = built(tmp_path, corpus, "--stage_transitions=[]")
    fit_batches(brain, loader, 1)
    real_save = torch.save

    def full(obj, path, *args, **kwargs):
        if str(path).endswith("heads.ckpt"):  # a few files in: a half-written checkpoint
            raise error
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=rf"cannot write a checkpoint into {tmp_path / 'save'}: "
                                            r"the disk is full or over quota \([\d.]+ [kMGT]?B free"):
        brain._save_intra_epoch_ckpt()
    monkeypatch.setattr(torch, "save", real_save)  # space is back
    brain._save_intra_epoch_ckpt()
    ckpts = list((tmp_path / "save").glob("CKPT+*"))
    assert len(ckpts) == 1 and "removed incomplete checkpoint" in log_of(tmp_path)


def test_debris_of_killed_saves_is_removed_once_a_newer_checkpoint_is_complete(
        tmp_path, corpus, two_ckpt_run):
    """An incomplete-CKPT+* folder, and a transition checkpoint with a 0-byte
    optimizer.ckpt kept beside the good one of the same stage."""
    import shutil

    run = copy_run(two_ckpt_run, tmp_path / "run")
    transition = next(c for c in checkpoints_of(run) if "transition_to_stage" in c.meta)
    broken = transition.path.with_name(transition.path.name[:-2] + "99")
    shutil.copytree(transition.path, broken)
    meta = (broken / "CKPT.yaml").read_text().replace(
        f"unixtime: {transition.meta['unixtime']}", f"unixtime: {transition.meta['unixtime'] - 1}")
    (broken / "CKPT.yaml").write_text(meta)
    (broken / "optimizer.ckpt").write_bytes(b"")
    set_aside = transition.path.with_name("incomplete-" + transition.path.name[:-2] + "98")
    shutil.copytree(transition.path, set_aside)
    train.main(tiny_args(run, corpus, "--stage_transitions=[2]", "--optimizer_step_limit=4"))
    assert not broken.exists() and not set_aside.exists()
    assert transition.path.is_dir()  # the good transition checkpoint is kept forever
    log = log_of(run)
    assert f"removed incomplete checkpoint {broken} (optimizer.ckpt: it is empty (0 bytes))" in log


def test_out_of_memory_names_the_longest_utterance(tmp_path, corpus, monkeypatch):
    brain, loader = built(tmp_path, corpus, "--stage_transitions=[]")
    brain.train_dataset = loader.dataset  # as fit() keeps it
    batch = next(iter(loader))
    longest = batch.id[int(batch.sig[1].argmax())]

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(brain, "compute_forward", oom)
    brain.step += 1
    with pytest.raises(torch.OutOfMemoryError, match=rf"out of memory on a batch of {len(batch.id)} "
                                                     rf".*its longest: {longest} \(.*{longest}.wav, "):
        brain.fit_batch(batch)


def test_disk_full_while_building_the_target_cache_names_the_folder(tmp_path, monkeypatch):
    """/dev/full: every write fails with ENOSPC, as on a full disk."""
    from latent_rq_brain.training.checkpoints import DiskFullError

    ds = cache_dataset()
    monkeypatch.setattr(TargetCache, "_data_path", lambda self, rank: "/dev/full")
    with pytest.raises(DiskFullError, match=rf"cannot write the target cache into {tmp_path}: the "
                                            r"disk is full or over quota \([\d.]+ [kMGT]?B free"):
        prepare(tmp_path, ds)
