"""Log-Mel features that do not depend on padding or batch composition.

SpeechBrain's ``Fbank`` pads the STFT with zeros (``center=True``), so the frames
of an utterance are the same whether it is alone or padded in a batch, provided
the frame counts come from absolute sample counts. Per-utterance normalisation
(``InputNormalization(norm_type="sentence")``) is given exact relative lengths,
padded frames are zeroed afterwards, and the time axis is padded to a multiple of
the CNN's downsampling, so that the front-end reads zeros past the end of every
utterance, batched or not.

Authors
 * latent-rq developers 2026
"""

import hashlib

import torch


def valid_frames(lens, T):
    """(B, T) bool, True on the first ``lens[b]`` frames of each row.

    Example
    -------
    >>> valid_frames(torch.tensor([2, 3]), 3).tolist()
    [[True, True, False], [True, True, True]]
    """
    return torch.arange(T, device=lens.device)[None, :] < lens[:, None]



def ms_to_samples(sample_rate, ms):
    """Samples in ``ms`` milliseconds at ``sample_rate`` (rounded): the STFT's
    hop and window from the YAML's ``hop_length`` / ``win_length``.

    Example
    -------
    >>> ms_to_samples(16000, 10), ms_to_samples(16000, 25), ms_to_samples(22050, 10)
    (160, 400, 220)
    """
    return int(round(int(sample_rate) * float(ms) / 1000))

class MelFeatures(torch.nn.Module):
    """Waveforms -> normalised log-Mel frames, with exact frame counts.

    Arguments
    ---------
    fbank : speechbrain.lobes.features.Fbank
        80-bin log-Mel, 25 ms / 10 ms, ``center=True`` (SpeechBrain default).
    normalize : speechbrain.processing.features.InputNormalization
        With ``norm_type="sentence"``: per-utterance mean/variance.
    sample_rate : int
        Sample rate of the waveforms.
    hop_length : float
        Frame shift in ms (must match ``fbank``).
    downsampling : int
        Time reduction of the CNN front-end: frames are padded to a multiple.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.processing.features import InputNormalization
    >>> mel = MelFeatures(Fbank(n_mels=80), InputNormalization(norm_type="sentence"))
    >>> wavs = torch.randn(2, 16000)
    >>> feats, frame_lens, enc_lens = mel(wavs, torch.tensor([16000, 8000]))
    >>> feats.shape, frame_lens.tolist(), enc_lens.tolist()
    (torch.Size([2, 104, 80]), [101, 51], [26, 13])
    """

    def __init__(
        self, fbank, normalize, sample_rate=16000, hop_length=10, downsampling=4
    ):
        super().__init__()
        self.fbank = fbank
        self.normalize = normalize
        self.hop = ms_to_samples(sample_rate, hop_length)
        self.downsampling = int(downsampling)

    def frame_lengths(self, n_samples):
        """Valid Mel frames for ``n_samples`` samples (STFT with center=True)."""
        return torch.div(n_samples, self.hop, rounding_mode="floor") + 1

    def encoder_lengths(self, frame_lens):
        """Valid encoder frames: ceil(frames / downsampling)."""
        return -torch.div(-frame_lens, self.downsampling, rounding_mode="floor")

    @torch.no_grad()
    def forward(self, wavs, n_samples):
        """Computes features.

        Arguments
        ---------
        wavs : torch.Tensor
            (B, S) zero-padded waveforms.
        n_samples : torch.Tensor
            (B,) int, valid samples per waveform.

        Returns
        -------
        feats : torch.Tensor
            (B, T, n_mels), T a multiple of ``downsampling``, zeros past the end.
        frame_lens : torch.Tensor
            (B,) valid Mel frames.
        enc_lens : torch.Tensor
            (B,) valid encoder frames.
        """
        n_samples = n_samples.to(wavs.device).long()
        with torch.autocast(wavs.device.type, enabled=False):
            feats = self.fbank(wavs.float())
        T = feats.shape[1]
        frame_lens = self.frame_lengths(n_samples)
        expected = wavs.shape[1] // self.hop + 1  # the batch may be padded further
        if expected != T or int(frame_lens.max()) > T:  # than its longest utterance
            raise RuntimeError(
                f"Fbank gave {T} frames for {wavs.shape[1]} samples, expected "
                f"{expected}: is hop_length consistent with fbank?"
            )
        feats = self.normalize(feats, frame_lens.float() / T)
        valid = valid_frames(frame_lens.to(feats.device), T)
        feats = feats.masked_fill(~valid.unsqueeze(-1), 0.0)
        pad = (-T) % self.downsampling
        if pad:
            feats = torch.nn.functional.pad(feats, (0, 0, 0, pad))
        return feats, frame_lens, self.encoder_lengths(frame_lens)


#: Run-time state, not settings: mode flags, a first-call flag, devices, counters.
VOLATILE_ATTRIBUTES = frozenset({"training", "first_call", "device", "device_inp", "count"})


def _plain(value):
    """``value`` if it is plain YAML data (numbers, strings, lists, dicts of
    them), else :data:`NOT_PLAIN`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return NOT_PLAIN if any(v is NOT_PLAIN for v in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v) for k, v in value.items()}
        return NOT_PLAIN if any(v is NOT_PLAIN for v in items.values()) else items
    return NOT_PLAIN


NOT_PLAIN = object()


def tensor_digest(tensor):
    """Short SHA-256 of a tensor's dtype, shape and values."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.float().numpy().tobytes() if t.is_floating_point() else t.numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]


def module_settings(obj, tensors=False):
    """Every plain setting of ``obj`` and its sub-modules, by dotted name.

    Derived from the objects themselves (their public attributes), not from a
    list: a setting added to the YAML (``f_min``, ``window_fn``...) is in it.
    Run-time state (:data:`VOLATILE_ATTRIBUTES`, private attributes) is not.
    With ``tensors``, tensor attributes, parameters and buffers are added as
    digests (:func:`tensor_digest`): e.g. the STFT window, the Mel filters.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> s = module_settings(Fbank(n_mels=40, hop_length=20))
    >>> s["compute_STFT.hop_length"], s["compute_fbanks.n_mels"], s["compute_fbanks.f_min"]
    (320, 40, 0)
    >>> "compute_STFT.window" in s, "compute_STFT.window" in module_settings(Fbank(), tensors=True)
    (False, True)
    """
    found = {}
    named = obj.named_modules() if isinstance(obj, torch.nn.Module) else [("", obj)]
    for prefix, sub in named:
        items = [(k, v) for k, v in vars(sub).items()
                 if not k.startswith("_") and k not in VOLATILE_ATTRIBUTES]
        if tensors and isinstance(sub, torch.nn.Module):
            items += list(sub.named_parameters(recurse=False))
            items += list(sub.named_buffers(recurse=False))
        for key, value in sorted(items, key=lambda kv: kv[0]):
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, torch.Tensor):
                if tensors:
                    found[name] = tensor_digest(value)
                continue
            value = _plain(value)
            if value is not NOT_PLAIN:
                found[name] = value
    return found


def setting_differences(saved, current):
    """``"name: saved (checkpoint) != current (config)"`` for each setting both
    hold with another value (a setting only one of them has is not compared).

    Example
    -------
    >>> setting_differences({"hop": 160, "n_fft": 400}, {"hop": 320, "n_fft": 400, "new": 1})
    ['hop: 160 (checkpoint) != 320 (config)']
    """
    return [
        f"{k}: {saved[k]!r} (checkpoint) != {current[k]!r} (config)"
        for k in sorted(set(saved) & set(current))
        if saved[k] != current[k]
    ]
