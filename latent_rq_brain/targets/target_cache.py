"""Offline target cache: the targets of a whole training set for one stage.

In a Latent-RQ stage the target encoder and the quantizer are frozen, and the
features are deterministic, so the target of every (utterance, encoder frame,
codebook) is fixed for the whole stage. The cache computes them once, at the
start of the stage, and training reads them instead of running the target
encoder every step. Codes are stored in one flat file per rank, as uint16 when
``codebook_size <= 65536`` and int32 otherwise, with a JSON index
``{id: [shard, offset, frames]}``.

Integrity: each rank's ``.done`` file, written last, holds the SHA-256 of its
shard and index. Opening the cache verifies them, which reads the whole cache
once per stage start (about 1 s per GB); a shard that fails (truncated,
flipped or rewritten bytes, a cut index, a missing or unreadable ``.done``) is
rebuilt with a warning. The world size is part of the file names: a run
resumed with another number of ranks builds its own cache.

The file name is a key over everything the targets depend on
(:func:`cache_key`), derived from the resolved objects rather than listed:
every setting and tensor of the feature extractor, every target source's
settings and frozen parts (the target encoder's settings and weights, any
frozen module's), the quantizer's settings and buffers, the precision, and
the training manifest (every column) with a hash of each audio file's bytes
(remembered in the output folder's ``.audio_hashes.json`` with the file's
size, modification time, inode and change time; hashed again when any of them
changed). Any change gives a new key, hence a new cache; stale files
are removed. The cache is refused when inputs are not deterministic (random crops
or augmentation), because the stored targets would not match the features.

Under DDP every rank computes a strided share of the batches, which are formed
from the whole training set first (:func:`cache_batches`): an utterance is
computed in the same batch, with the same padding, whatever the number of
ranks, so caches built with 1 or 2 ranks hold the same codes. The ranks
read each other's shards: the cache folder must be on a file system all ranks
share (the output folder usually is).

Authors
 * latent-rq developers 2026
"""

import errno
import glob
import hashlib
import json
import logging
import os
import time

import numpy as np
import torch

from latent_rq_brain.model.features import module_settings
from latent_rq_brain.training.data import AUDIO_HASHES, AudioHashes
from latent_rq_brain.training.disk import DiskFullError, free_space
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.distributed import is_distributed_initialized

logger = logging.getLogger(__name__)


def target_settings(features, sources, quantizer, precision):
    """Everything but the data that the cached targets depend on, derived from
    the resolved objects (:func:`latent_rq_brain.model.features.module_settings`),
    not from a list of YAML keys: every plain setting of the feature extractor
    with its tensors (STFT window, Mel filters), every target source's settings
    and frozen parts (``sources.settings()``,
    :meth:`latent_rq_brain.targets.target_sources.TargetSources.settings`: the target
    encoder's settings and weights, any frozen module's), the quantizer's
    settings and buffers, and the precision the targets are computed in.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from latent_rq_brain.targets.quantizer import latent_rq_quantizer
    >>> from latent_rq_brain.targets.target_encoder import TargetEncoder
    >>> from latent_rq_brain.targets.target_sources import MelFrames, TargetSources, layer_sources
    >>> sources = TargetSources(MelFrames(4, 320), layer_sources(TargetEncoder([0]), 32, 2, "random", "random"), 0)
    >>> q = latent_rq_quantizer(2, 16, 8, 320, 32, [0], 2, seed=1)
    >>> s = target_settings(Fbank(f_min=50), sources, q, "fp32")
    >>> s["features"]["compute_fbanks.f_min"], s["sources"]["frozen"]["target_encoder"]["norm"], s["precision"]
    (50, 'utterance', 'fp32')
    """
    return {
        "features": module_settings(features, tensors=True),
        "sources": sources.settings(),
        "quantizer": dict(module_settings(quantizer, tensors=True), buffers=quantizer.checksum()),
        "precision": str(precision),
    }


def cache_key(features, sources, quantizer, precision, dataset, hashes=None):
    """Hex key over everything the cached targets depend on:
    :func:`target_settings` and, for every utterance of ``dataset``, its
    manifest entry (ID, path, duration, any other column) and the content
    hash of its audio file (:class:`latent_rq_brain.training.data.AudioHashes`:
    a file whose size, modification time, inode and change time are those
    remembered in ``hashes`` is not read again). Same key: same targets; a
    resume reuses the cache.

    Arguments
    ---------
    features, sources, quantizer, precision
        See :func:`target_settings`.
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        The training set (``wav`` paths).
    hashes : latent_rq_brain.training.data.AudioHashes, optional
        Remembered hashes (default: every file is hashed).
    """
    hashes = AudioHashes() if hashes is None else hashes
    h = hashlib.sha256()
    settings = target_settings(features, sources, quantizer, precision)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for uid in dataset.data_ids:
        item = dataset.data[uid]
        entry = [uid, item, hashes.digest(item.get("wav"))]
        h.update(json.dumps(entry, sort_keys=True, default=str).encode() + b"\n")
    return h.hexdigest()[:20]


def cache_batches(dataset, max_batch_seconds, ids=None):
    """Utterance IDs (``ids`` in their order, default: all sorted by duration),
    cut into batches of at most ``max_batch_seconds`` of audio (one utterance at
    least). The same for any number of ranks: rank r of W builds batches r, r + W, ...

    Example
    -------
    >>> from types import SimpleNamespace
    >>> ds = SimpleNamespace(data_ids=["a", "b", "c"],
    ...                      data={"a": {"duration": 3.0}, "b": {"duration": 1.0}, "c": {"duration": 2.0}})
    >>> cache_batches(ds, 3.5)
    [['b', 'c'], ['a']]
    """
    if ids is None:
        ids = sorted(dataset.data_ids, key=lambda u: dataset.data[u]["duration"])
    batches, cur, secs = [], [], 0.0
    for uid in ids:
        d = float(dataset.data[uid]["duration"])
        if cur and secs + d > max_batch_seconds:
            batches.append(cur)
            cur, secs = [], 0.0
        cur.append(uid)
        secs += d
    if cur:
        batches.append(cur)
    return batches


def code_dtype(codebook_size):
    """Smallest NumPy integer type that holds every code of ``codebook_size``.

    Example
    -------
    >>> code_dtype(65536).__name__, code_dtype(70000).__name__
    ('uint16', 'int32')
    """
    if codebook_size <= 2**16:
        return np.uint16
    if codebook_size <= 2**31:
        return np.int32
    raise ValueError(f"codebook_size {codebook_size} is too large for the target cache")


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class TargetCache:
    """Reads and writes the cached targets of one stage.

    Arguments
    ---------
    folder : str
        Where the cache files live (``<output_folder>/target_cache``).
    key : str
        From :func:`cache_key`.
    n_codebooks : int
        Codebooks per frame.
    codebook_size : int
        Codes per codebook (chooses the stored integer type).
    world_size : int
        Ranks that build the cache, one shard each (part of the file names).
    """

    def __init__(self, folder, key, n_codebooks, codebook_size=2**16, world_size=1):
        self.folder, self.key, self.n = folder, key, int(n_codebooks)
        self.dtype = code_dtype(int(codebook_size))
        self.world_size = int(world_size)
        self.index = None
        self.shards = None
        self.verified = set()  # ranks whose shard this process checked or wrote

    def _path(self, rank, ext):
        return os.path.join(
            self.folder, f"{self.key}.world{self.world_size}.rank{rank}.{ext}"
        )

    def _data_path(self, rank):
        return self._path(rank, np.dtype(self.dtype).name)

    def complete(self, world_size=None):
        """Whether every rank's shard and index are written."""
        world_size = self.world_size if world_size is None else world_size
        return all(os.path.exists(self._path(r, "done")) for r in range(world_size))

    def verify(self, rank):
        """None if the shard of ``rank`` matches the checksums written with it,
        else what is wrong (reads the whole shard)."""
        try:
            with open(self._path(rank, "done"), encoding="utf-8") as f:
                done = json.load(f)
            sums = {ext: _sha256(self._path(rank, ext))
                    for ext in ("json", np.dtype(self.dtype).name)}
        except (OSError, ValueError) as err:
            return f"{type(err).__name__}: {err}"
        if not isinstance(done, dict) or done.get("sha256") != sums:
            return "checksum mismatch (files changed, truncated or corrupted)"
        self.verified.add(rank)
        return None

    @torch.no_grad()
    def build_shard(self, make_targets, dataset, rank, world_size, max_batch_seconds,
                    num_workers=0):
        """Computes this rank's share of the targets and writes its shard.

        ``make_targets(batch)`` returns ``(codes (sum(enc_lens), N), enc_lens)``
        (:meth:`latent_rq_brain.training.brain.LatentRQBrain.all_frame_targets`).
        The batches (:func:`cache_batches`) are formed from the whole training
        set, then shared out: every rank count computes each utterance in the
        same batch, hence with the same padding and the same codes.
        ``num_workers`` loader processes read the audio.
        """
        os.makedirs(self.folder, exist_ok=True)
        batches = cache_batches(dataset, max_batch_seconds)[rank::world_size]
        position = {u: i for i, u in enumerate(dataset.data_ids)}
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=[[position[u] for u in chunk] for chunk in batches],
            collate_fn=PaddedBatch,
            num_workers=num_workers,
        )
        if os.path.exists(self._path(rank, "done")):
            os.remove(self._path(rank, "done"))
        try:
            offset = self._write_shard(loader, make_targets, rank)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DiskFullError(
                errno.ENOSPC,
                f"cannot write the target cache into {self.folder}: the disk is full or "
                f"over quota ({free_space(self.folder)} free there; {err.strerror}). Free "
                "some space (the cache takes 2 bytes x n_codebooks per 40 ms frame) or set "
                "target_cache: False",
            ) from err
        self.verified.add(rank)
        logger.info(f"target cache {self.key}: rank {rank} wrote {offset} frames")

    def _write_shard(self, loader, make_targets, rank):
        """Writes codes, index and ``.done`` of this rank's shard; returns its frames."""
        index, offset, data_sum = {}, 0, hashlib.sha256()
        with open(self._data_path(rank), "wb") as out:
            for batch in loader:
                codes, enc_lens = make_targets(batch)
                data = codes.cpu().numpy().astype(self.dtype).tobytes()
                out.write(data)
                data_sum.update(data)
                for uid, n in zip(batch.id, enc_lens.tolist()):
                    index[uid] = [rank, offset, n]
                    offset += n
        index_bytes = json.dumps(index).encode()
        with open(self._path(rank, "json"), "wb") as f:
            f.write(index_bytes)
        sums = {"json": hashlib.sha256(index_bytes).hexdigest(),
                np.dtype(self.dtype).name: data_sum.hexdigest()}
        with open(self._path(rank, "done.tmp"), "w", encoding="utf-8") as f:
            json.dump({"sha256": sums, "frames": offset}, f)
        os.replace(self._path(rank, "done.tmp"), self._path(rank, "done"))
        return offset

    @classmethod
    def prepare(cls, folder, key, n_codebooks, make_targets, dataset, max_batch_seconds,
                num_workers=0, codebook_size=2**16):
        """The cache of ``key``, built if needed by every rank (its share), then
        opened; files of other keys are removed. See :meth:`build_shard`.

        Each rank verifies its own shard first and rebuilds it, with a
        warning, if it is missing or fails its checksums."""
        world = torch.distributed.get_world_size() if is_distributed_initialized() else 1
        rank = torch.distributed.get_rank() if is_distributed_initialized() else 0
        cache = cls(folder, key, n_codebooks, codebook_size, world)
        problem = "not built yet"
        if os.path.exists(cache._path(rank, "done")):
            start = time.time()
            problem = cache.verify(rank)
            if problem is not None:
                logger.warning(
                    f"target cache {cache._data_path(rank)} failed its check ({problem}): "
                    "rebuilding this shard"
                )
            else:
                logger.info(f"target cache {key}: rank {rank} shard verified in "
                            f"{time.time() - start:.1f} s")
        if problem is not None:
            start = time.time()
            cache.build_shard(make_targets, dataset, rank, world, max_batch_seconds,
                              num_workers)
            logger.info(
                f"target cache {key}: rank {rank} computed its share in "
                f"{time.time() - start:.1f} s"
            )
        if is_distributed_initialized():
            torch.distributed.barrier()
        cache.open()
        if rank == 0:
            cache.remove_others()
        return cache

    @classmethod
    def keyed(cls, folder, parts, dataset, make_targets, n_codebooks, max_batch_seconds,
              num_workers=0, codebook_size=2**16, hashes=None):
        """:meth:`prepare` under the key of what the targets depend on
        (:func:`cache_key` of ``parts`` and ``dataset``).

        Arguments
        ---------
        folder : str
            Where the cache files live.
        parts : tuple
            ``(features, sources, quantizer, precision)``: the unwrapped
            feature extractor, the target sources
            (:class:`~latent_rq_brain.targets.target_sources.TargetSources`), the
            quantizer, the precision.
        dataset, make_targets, n_codebooks, max_batch_seconds, num_workers, codebook_size
            As in :meth:`prepare`.
        hashes : latent_rq_brain.training.data.AudioHashes, optional
            Remembered audio hashes (see :func:`cache_key`); saved once used.
        """
        key = cache_key(*parts, dataset, hashes=hashes)
        if hashes is not None:
            hashes.save()
        return cls.prepare(folder, key, n_codebooks, make_targets, dataset, max_batch_seconds,
                           num_workers, codebook_size)

    def open(self, world_size=None):
        """Verifies every shard, loads the indexes and maps the shards (read-only)."""
        world_size = self.world_size if world_size is None else world_size
        if not self.complete(world_size):
            raise RuntimeError(
                f"target cache {self.key} in {self.folder} is incomplete: every rank "
                "must see the files of the others (shared file system), or set "
                "target_cache: False"
            )
        self.index, self.shards = {}, []
        itemsize = np.dtype(self.dtype).itemsize
        start = time.time()
        for r in range(world_size):
            problem = None if r in self.verified else self.verify(r)
            if problem is not None:
                raise RuntimeError(
                    f"target cache {self._data_path(r)} failed its check ({problem}): "
                    f"delete {self.folder} to rebuild it, or set target_cache: False"
                )
            with open(self._path(r, "json"), encoding="utf-8") as f:
                self.index.update(json.load(f))
            path = self._data_path(r)
            size = os.path.getsize(path)
            self.shards.append(
                np.memmap(path, dtype=self.dtype, mode="r",
                          shape=(size // (itemsize * self.n), self.n))
                if size else np.zeros((0, self.n), dtype=self.dtype)
            )
        logger.info(f"target cache {self.key}: {world_size} shard(s) verified and "
                    f"opened in {time.time() - start:.1f} s")

    def lookup(self, ids, enc_lens, device):
        """(B, max(enc_lens), N) int64 targets of a batch (padding: 0)."""
        T = int(enc_lens.max())
        out = torch.zeros(len(ids), T, self.n, dtype=torch.long)
        for b, (uid, n) in enumerate(zip(ids, enc_lens.tolist())):
            if uid not in self.index:
                raise KeyError(f"utterance {uid} is not in target cache {self.key}")
            shard, offset, frames = self.index[uid]
            if frames != n:
                raise RuntimeError(
                    f"target cache {self.key}: {uid} has {frames} frames cached but "
                    f"{n} now: the features changed, delete {self.folder}"
                )
            out[b, :n] = torch.from_numpy(self.shards[shard][offset : offset + n].astype(np.int64))
        return out.to(device)

    def remove_others(self):
        """Deletes cache files of other keys or world sizes (stale stages or settings)."""
        mine = f"{self.key}.world{self.world_size}."
        for path in glob.glob(os.path.join(self.folder, "*.rank*.*")):
            if not os.path.basename(path).startswith(mine):
                os.remove(path)


def stage_cache(hparams, stage, dataset, parts, make_targets):
    """The offline targets of ``stage`` (a :class:`TargetCache`, built or
    reopened), or None for online targets.

    Only in stages >= 1, with ``target_cache: True`` and a known training set
    (None: evaluation or a unit test); refused (``ValueError``) with a frozen
    part that changes within a stage (``check_cacheable``: the EMA target
    encoder) or inputs that are not deterministic (``augmentation``,
    ``random_crop``).

    Arguments
    ---------
    hparams : types.SimpleNamespace
        The brain's hparams (``target_cache``, ``output_folder``, ...).
    stage : int
        The Latent-RQ stage.
    dataset : speechbrain.dataio.dataset.DynamicItemDataset or None
        The training set.
    parts : tuple
        ``(features, sources, quantizer, precision)``, see :meth:`TargetCache.keyed`.
    make_targets : callable
        ``make_targets(batch) -> (codes, enc_lens)``, see :meth:`TargetCache.build_shard`.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> stage_cache(SimpleNamespace(target_cache=True), 0, None, (), None) is None
    True
    """
    if not getattr(hparams, "target_cache", False) or stage == 0:
        return None
    parts[1].check_cacheable()  # e.g. the EMA target encoder
    for key in ("augmentation", "random_crop"):
        if getattr(hparams, key, None):
            raise ValueError(
                f"target_cache: True needs deterministic inputs, but {key} is set: "
                "cached targets would not match the augmented features. Set "
                "target_cache: False (targets are then computed online)."
            )
    if dataset is None:
        return None  # not fitting (e.g. evaluation or a unit test): online targets
    return TargetCache.keyed(
        os.path.join(hparams.output_folder, "target_cache"),
        parts,
        dataset,
        make_targets,
        hparams.n_codebooks,
        hparams.target_cache_batch_seconds,
        hparams.train_dataloader_opts.get("num_workers", 0),
        hparams.codebook_size,
        AudioHashes(os.path.join(hparams.output_folder, AUDIO_HASHES)),
    )
