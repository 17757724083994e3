"""Offline target cache: the targets of a whole training set for one stage.

In a Latent-RQ stage the target encoder and the quantizer are frozen, and the
features are deterministic, so the target of every (utterance, encoder frame,
codebook) is fixed for the whole stage. The cache computes them once, at the
start of the stage, and training reads them instead of running the target
encoder every step. Codes are stored as uint16 (V <= 65536) in one flat file
per rank, with a JSON index ``{id: [shard, offset, frames]}``.

The file name is a key over everything the targets depend on: the target
encoder's weights, the quantizer's buffers, target layers and normalisation,
the feature settings, the precision and the training manifest (IDs, paths,
durations). Any change gives a new key, hence a new cache; stale files are
removed. The cache is refused when inputs are not deterministic (random crops
or augmentation), because the stored targets would not match the features.

Under DDP every rank computes a strided share of the utterances and the ranks
read each other's shards: the cache folder must be on a file system all ranks
share (the output folder usually is).

Authors
 * latent-rq developers 2026
"""

import glob
import hashlib
import json
import logging
import os
import time

import numpy as np
import torch

from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.distributed import is_distributed_initialized

logger = logging.getLogger(__name__)


def cache_key(target_encoder, quantizer, settings, dataset):
    """Hex key over everything the cached targets depend on."""
    h = hashlib.sha256()
    h.update(target_encoder.checksum().encode())
    h.update(quantizer.checksum().encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for uid in dataset.data_ids:
        item = dataset.data[uid]
        h.update(f"{uid}|{item.get('wav')}|{item.get('duration')}\n".encode())
    return h.hexdigest()[:20]


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
    """

    def __init__(self, folder, key, n_codebooks):
        self.folder, self.key, self.n = folder, key, int(n_codebooks)
        self.index = None
        self.shards = None

    def _path(self, rank, ext):
        return os.path.join(self.folder, f"{self.key}.rank{rank}.{ext}")

    def complete(self, world_size):
        """Whether every rank's shard and index are written."""
        return all(os.path.exists(self._path(r, "done")) for r in range(world_size))

    @torch.no_grad()
    def build_shard(self, make_targets, dataset, rank, world_size, max_batch_seconds,
                    num_workers=0):
        """Computes this rank's share of the targets and writes its shard.

        ``make_targets(batch)`` returns ``(codes (sum(enc_lens), N), enc_lens)``
        (:meth:`latent_rq_brain.brain.LatentRQBrain.all_frame_targets`).
        Utterances are sorted by duration and batched up to ``max_batch_seconds``
        of audio; ``num_workers`` loader processes read the audio.
        """
        os.makedirs(self.folder, exist_ok=True)
        ids = [
            uid
            for i, uid in enumerate(
                sorted(dataset.data_ids, key=lambda u: dataset.data[u]["duration"])
            )
            if i % world_size == rank
        ]
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
        position = {u: i for i, u in enumerate(dataset.data_ids)}
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=[[position[u] for u in chunk] for chunk in batches],
            collate_fn=PaddedBatch,
            num_workers=num_workers,
        )
        index, offset = {}, 0
        with open(self._path(rank, "u16"), "wb") as out:
            for batch in loader:
                codes, enc_lens = make_targets(batch)
                arr = codes.cpu().numpy().astype(np.uint16)
                out.write(arr.tobytes())
                for uid, n in zip(batch.id, enc_lens.tolist()):
                    index[uid] = [rank, offset, n]
                    offset += n
        with open(self._path(rank, "json"), "w", encoding="utf-8") as f:
            json.dump(index, f)
        open(self._path(rank, "done"), "w").close()
        logger.info(f"target cache {self.key}: rank {rank} wrote {offset} frames")

    @classmethod
    def prepare(cls, folder, key, n_codebooks, make_targets, dataset, max_batch_seconds,
                num_workers=0):
        """The cache of ``key``, built if needed by every rank (its share), then
        opened; files of other keys are removed. See :meth:`build_shard`."""
        cache = cls(folder, key, n_codebooks)
        world = torch.distributed.get_world_size() if is_distributed_initialized() else 1
        rank = torch.distributed.get_rank() if is_distributed_initialized() else 0
        if not cache.complete(world):
            start = time.time()
            cache.build_shard(make_targets, dataset, rank, world, max_batch_seconds,
                              num_workers)
            logger.info(
                f"target cache {key}: rank {rank} computed its share in "
                f"{time.time() - start:.1f} s"
            )
        if is_distributed_initialized():
            torch.distributed.barrier()
        cache.open(world)
        if rank == 0:
            cache.remove_others()
        return cache

    def open(self, world_size):
        """Loads the indexes and maps the shards (read-only)."""
        if not self.complete(world_size):
            raise RuntimeError(
                f"target cache {self.key} in {self.folder} is incomplete: every rank "
                "must see the files of the others (shared file system), or set "
                "target_cache: False"
            )
        self.index, self.shards = {}, []
        for r in range(world_size):
            with open(self._path(r, "json"), encoding="utf-8") as f:
                self.index.update(json.load(f))
            size = os.path.getsize(self._path(r, "u16"))
            self.shards.append(
                np.memmap(self._path(r, "u16"), dtype=np.uint16, mode="r",
                          shape=(size // (2 * self.n), self.n))
                if size else np.zeros((0, self.n), dtype=np.uint16)
            )

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
        """Deletes cache files of other keys (stale stages or settings)."""
        for path in glob.glob(os.path.join(self.folder, "*.rank*.*")):
            if not os.path.basename(path).startswith(self.key + "."):
                os.remove(path)

