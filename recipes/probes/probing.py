"""Building blocks of the frozen-encoder probes (SUPERB style).

* the frozen encoder is :meth:`latent_rq_brain.sharing.pretrained.PretrainedEncoder.load`
  (a checkpoint, ``<run>@stage<k>``, or a seeded random one, ``random:small``).
* :class:`WeightedLayerSum`: the learnable softmax-weighted sum over all hidden
  states (CNN front-end output + every Conformer layer).
* :class:`PoolingClassifier`: mean pooling over valid frames + linear or
  1-hidden-layer MLP (utterance classification).
* :class:`CTCHead`: BiLSTM (or frame-wise MLP) + linear to characters (ASR).
* :class:`HiddenStateCache`: all hidden states of a split computed once, stored
  in fp16 in memory or as one file per utterance on disk.

Authors
 * latent-rq developers 2026
"""

import hashlib
import json
import logging
import os
from types import SimpleNamespace

import torch

from latent_rq_brain.model.features import valid_frames
from latent_rq_brain.sharing.pretrained import PretrainedEncoder
from latent_rq_brain.sharing.safe_load import load_weights
from latent_rq_brain.training.data import named_out_of_memory
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.epoch_loop import EpochCounterWithStopper

logger = logging.getLogger(__name__)

def encoder_fingerprint(encoder):
    """A short hash of an encoder's weights and configuration (cache key).

    Example
    -------
    >>> a, b = PretrainedEncoder.load("random:tiny", seed=0), PretrainedEncoder.load("random:tiny", seed=1)
    >>> encoder_fingerprint(a) == encoder_fingerprint(PretrainedEncoder.load("random:tiny", seed=0))
    True
    >>> encoder_fingerprint(a) == encoder_fingerprint(b)
    False
    """
    h = hashlib.sha1(repr(sorted(getattr(encoder, "config", {}).items())).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class WeightedLayerSum(torch.nn.Module):
    """Softmax-weighted sum of hidden states, SUPERB's featurizer.

    The weights start equal (zeros before the softmax). Each hidden state may
    be standardised per frame first (``layer_norm``, s3prl's default), so that
    the weights compare layers of different scales.

    Arguments
    ---------
    num_layers : int
        Number of hidden states summed.
    layer_norm : bool
        Standardise each hidden state over its feature dimension first.

    Example
    -------
    >>> ws = WeightedLayerSum(3)
    >>> x = torch.randn(2, 5, 3, 4)  # (B, T, layers, D)
    >>> ws(x).shape, ws.weights().tolist()
    (torch.Size([2, 5, 4]), [0.3333333432674408, 0.3333333432674408, 0.3333333432674408])
    """

    def __init__(self, num_layers, layer_norm=True):
        super().__init__()
        if int(num_layers) < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = int(num_layers)
        self.layer_norm = bool(layer_norm)
        self.logits = torch.nn.Parameter(torch.zeros(self.num_layers))

    def weights(self):
        """The normalised weights (softmax of the logits), detached."""
        return torch.softmax(self.logits.detach().float(), dim=0).cpu()

    def forward(self, states):
        """Sums ``states`` (B, T, layers, D) over the layer axis -> (B, T, D)."""
        if states.shape[-2] != self.num_layers:
            raise ValueError(
                f"got {states.shape[-2]} hidden states, the layer sum was built "
                f"for {self.num_layers}"
            )
        states = states.float()
        if self.layer_norm:
            states = torch.nn.functional.layer_norm(states, states.shape[-1:])
        w = torch.softmax(self.logits, dim=0)
        return torch.einsum("btld,l->btd", states, w)


class PoolingClassifier(torch.nn.Module):
    """Mean pooling over valid frames, then a linear layer or a 1-hidden MLP.

    Arguments
    ---------
    input_size : int
        Feature size of the frames.
    n_outputs : int
        Number of classes.
    hidden_size : int
        0: a linear classifier; > 0: Linear -> ReLU -> Dropout -> Linear.
    dropout : float
        Dropout on the pooled vector (and the hidden layer).

    Example
    -------
    >>> head = PoolingClassifier(4, 3, hidden_size=8)
    >>> x = torch.randn(2, 5, 4)
    >>> head(x, torch.tensor([5, 2])).shape
    torch.Size([2, 3])
    """

    def __init__(self, input_size, n_outputs, hidden_size=0, dropout=0.0):
        super().__init__()
        layers = [torch.nn.Dropout(dropout)]
        if hidden_size:
            layers += [
                torch.nn.Linear(input_size, hidden_size),
                torch.nn.ReLU(),
                torch.nn.Dropout(dropout),
                torch.nn.Linear(hidden_size, n_outputs),
            ]
        else:
            layers.append(torch.nn.Linear(input_size, n_outputs))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x, lens):
        """Logits (B, n_outputs) of frames ``x`` (B, T, D) with ``lens`` valid frames."""
        mask = valid_frames(lens.to(x.device), x.shape[1]).unsqueeze(-1).float()
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.net(pooled)


class CTCHead(torch.nn.Module):
    """Frame-wise CTC log-probabilities from a BiLSTM (SUPERB: 2 x 1024) or an MLP.

    Arguments
    ---------
    input_size : int
        Feature size of the frames.
    n_outputs : int
        Output tokens, blank included.
    rnn_layers : int
        BiLSTM layers; 0 replaces the BiLSTM by a frame-wise
        Linear -> ReLU -> Dropout layer of ``rnn_size`` units.
    rnn_size : int
        Units per direction of each LSTM layer (hidden units of the MLP).
    dropout : float
        Dropout between layers and before the output layer.

    Example
    -------
    >>> head = CTCHead(4, 6, rnn_layers=1, rnn_size=8)
    >>> head(torch.randn(2, 5, 4), torch.tensor([5, 3])).shape
    torch.Size([2, 5, 6])
    >>> CTCHead(4, 6, rnn_layers=0, rnn_size=8)(torch.randn(2, 5, 4), None).shape
    torch.Size([2, 5, 6])
    """

    def __init__(self, input_size, n_outputs, rnn_layers=2, rnn_size=1024, dropout=0.2):
        super().__init__()
        self.rnn = None
        if rnn_layers > 0:
            self.rnn = torch.nn.LSTM(
                input_size,
                rnn_size,
                num_layers=rnn_layers,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if rnn_layers > 1 else 0.0,
            )
            out_in = 2 * rnn_size
            self.mlp = torch.nn.Identity()
        else:
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(input_size, rnn_size), torch.nn.ReLU()
            )
            out_in = rnn_size
        self.dropout = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(out_in, n_outputs)

    def forward(self, x, lens):
        """Log-probabilities (B, T, n_outputs) of frames ``x`` (B, T, D)."""
        if self.rnn is not None:
            if lens is None:
                lens = torch.full((x.shape[0],), x.shape[1])
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, lens.cpu().clamp(min=1), batch_first=True, enforce_sorted=False
            )
            out, _ = self.rnn(packed)
            x, _ = torch.nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=x.shape[1]
            )
        else:
            x = self.mlp(x)
        return torch.log_softmax(self.out(self.dropout(x)), dim=-1)


def stack_states(hidden_states):
    """List of L (B, T, D) hidden states -> one (B, T, L, D) tensor.

    Example
    -------
    >>> stack_states([torch.zeros(2, 5, 4)] * 3).shape
    torch.Size([2, 5, 3, 4])
    """
    return torch.stack(list(hidden_states), dim=2)


class HiddenStateCache:
    """All hidden states of a set of utterances, computed once with a frozen encoder.

    Each utterance is stored as a (T, layers, D) fp16 tensor of its valid
    frames: in a dict (``folder=None``) or as one ``.pt`` file per audio file
    under ``folder`` (read back lazily, so a disk cache costs no memory and
    is shared by every task and split that uses the same audio and encoder).
    File names hash the audio path, size and modification time; ``folder``
    should be specific to the encoder (see :func:`encoder_fingerprint`).

    Arguments
    ---------
    encoder : latent_rq_brain.sharing.pretrained.PretrainedEncoder
        The frozen encoder.
    folder : str, optional
        Disk cache folder; None keeps everything in memory.
    keep_in_memory : bool
        With a disk cache, also keep every tensor in memory once read.

    Example
    -------
    >>> import soundfile, tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> wav = os.path.join(d, "a.wav")
    >>> soundfile.write(wav, np.zeros(8000, dtype="float32"), 16000)
    >>> cache = HiddenStateCache(PretrainedEncoder.load("random:tiny"))
    >>> cache.build({"a": wav})
    >>> cache.get("a").shape, cache.get("a").dtype
    (torch.Size([13, 3, 32]), torch.float16)
    """

    def __init__(self, encoder, folder=None, keep_in_memory=False):
        self.encoder = encoder
        self.folder = folder
        self.keep_in_memory = keep_in_memory or folder is None
        self.items = {}  # uid -> tensor (memory) or file path (disk)
        if folder is not None:
            os.makedirs(folder, exist_ok=True)

    def _file(self, wav):
        st = os.stat(wav)
        key = f"{os.path.abspath(wav)}|{st.st_size}|{st.st_mtime_ns}"
        return os.path.join(self.folder, hashlib.sha1(key.encode()).hexdigest() + ".pt")

    def __contains__(self, uid):
        return uid in self.items

    def get(self, uid):
        """The (T, layers, D) fp16 hidden states of utterance ``uid``."""
        item = self.items[uid]
        if isinstance(item, str):
            tensor = load_weights(item)
            if self.keep_in_memory:
                self.items[uid] = tensor
            return tensor
        return item

    @torch.no_grad()
    def build(self, wavs, batch_seconds=60.0, read_audio=None, device="cpu"):
        """Encodes every utterance not cached yet.

        Arguments
        ---------
        wavs : dict
            ``{uid: wav path}``.
        batch_seconds : float
            Audio per encoder batch (utterances are sorted by length).
        read_audio : callable, optional
            ``path -> 1-D float tensor``; defaults to a checked soundfile read.
        device : str
            Where the encoder runs.
        """
        todo = []
        for uid, wav in wavs.items():
            if uid in self.items:
                continue
            if self.folder is not None:
                path = self._file(wav)
                if os.path.isfile(path):
                    self.items[uid] = path
                    continue
            todo.append((uid, wav))
        if not todo:
            return
        if read_audio is None:
            from latent_rq_brain.training.data import read_audio_checked

            sr = self.encoder.sample_rate
            read_audio = lambda p: read_audio_checked(p, sr)  # noqa: E731
        audio = [(uid, wav, read_audio(wav)) for uid, wav in todo]
        audio.sort(key=lambda x: x[2].shape[0])
        limit = int(batch_seconds * self.encoder.sample_rate)
        batch = []
        for item in audio:
            if batch and item[2].shape[0] * (len(batch) + 1) > limit:
                self._encode(batch, device)
                batch = []
            batch.append(item)
        if batch:
            self._encode(batch, device)

    def _encode(self, batch, device):
        S = max(x[2].shape[0] for x in batch)
        wavs = torch.zeros(len(batch), S)
        for i, (_, _, sig) in enumerate(batch):
            wavs[i, : sig.shape[0]] = sig
        rel = torch.tensor([x[2].shape[0] / S for x in batch])
        try:
            states, lens = self.encoder(wavs.to(device), rel.to(device))
        except RuntimeError as err:  # out of memory: the longest utterance named
            named = SimpleNamespace(id=[x[0] for x in batch], sig=(wavs, rel))
            data = {uid: {"wav": wav} for uid, wav, _ in batch}
            raise named_out_of_memory(
                err, named, [SimpleNamespace(data=data)], self.encoder.sample_rate,
                where="caching hidden states", batch_setting="cache_batch_seconds") from err
        states = stack_states(states).to("cpu", torch.float16)
        for i, (uid, wav, _) in enumerate(batch):
            item = states[i, : int(lens[i])].clone()
            if self.folder is not None:
                path = self._file(wav)
                tmp = path + ".tmp"
                torch.save(item, tmp)
                os.replace(tmp, path)
                if not self.keep_in_memory:
                    item = path
            self.items[uid] = item


@register_checkpoint_hooks
class EarlyStopper(EpochCounterWithStopper):
    """SpeechBrain's ``EpochCounterWithStopper`` whose checkpoint also holds the
    early-stopping state (best score, its epoch, whether to stop).

    SpeechBrain's saves only the epoch, so a resumed (or re-run) probe forgot
    its patience and trained on past the point where it had stopped. Also, with
    ``direction="max"`` SpeechBrain's relative tolerance counts an *equal*
    score as an improvement (``-x < -(1 - 1e-6) * x``), so a plateau in
    accuracy never stopped; here an improvement must beat the best by the
    tolerance in the metric's own direction.

    Example
    -------
    >>> import tempfile
    >>> a = EarlyStopper(limit=10, limit_to_stop=2, limit_warmup=0, direction="min")
    >>> for epoch in a:
    ...     a.update_metric([3.0, 2.0, 2.5, 2.6][epoch - 1])
    >>> a.current, a.should_stop
    (4, True)
    >>> path = tempfile.mktemp()
    >>> a._save(path)
    >>> b = EarlyStopper(limit=10, limit_to_stop=2, limit_warmup=0, direction="min")
    >>> b._recover(path)
    >>> b.current, b.should_stop, b.best_score, list(b)
    (4, True, 2.0, [])
    >>> c = EarlyStopper(limit=10, limit_to_stop=2, limit_warmup=0, direction="max")
    >>> for epoch in c:  # a plateau stops too
    ...     c.update_metric(50.0)
    >>> c.current, c.best_limit
    (3, 1)
    """

    def update_metric(self, current_metric):
        """Records one validation score; sets ``should_stop`` after
        ``limit_to_stop`` epochs without improvement."""
        if self.current <= self.limit_warmup:
            return
        margin = self.min_delta * abs(self.best_score) if abs(self.best_score) < float("inf") else 0.0
        if self.sign * current_metric < self.sign * self.best_score - margin:
            self.best_limit = self.current
            self.best_score = current_metric
        waited = self.current - self.best_limit
        self.should_stop = waited >= self.limit_to_stop
        if self.should_stop:
            logger.info(f"{waited} epochs without improvement: patience of "
                        f"{self.limit_to_stop} exhausted, stopping")

    @mark_as_saver
    def _save(self, path):
        state = {
            "current": self.current,
            "best_score": self.best_score,
            "best_limit": self.best_limit,
            "should_stop": self.should_stop,
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(state, f)

    @mark_as_loader
    def _recover(self, path, end_of_epoch=True):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            state = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not an early-stopper state: {err}") from err
        if not isinstance(state, dict):  # written by SpeechBrain's counter: the epoch
            state = {"current": int(state)}
        self.current = int(state["current"]) - (0 if end_of_epoch else 1)
        self.best_score = state.get("best_score", self.best_score)
        self.best_limit = state.get("best_limit", self.best_limit)
        self.should_stop = bool(state.get("should_stop", False))
