"""s3prl ``UpstreamExpert`` for latent-rq checkpoints.

List of 16 kHz waveforms in, ``{"hidden_states": [...]}`` out: the
front-end output and every layer of the encoder
(:class:`~latent_rq_brain.model.encoder.LayeredEncoder`), at its downsample rate
(640 samples = 40 ms for the paper's configuration), as SUPERB's weighted-sum
featurizer expects.

Frozen or fine-tuned as s3prl asks: without ``-f`` s3prl calls ``eval()`` and
runs the upstream under ``torch.no_grad()``; with ``-f`` (``--upstream_trainable``)
it calls ``train()``, gives ``parameters()`` to its optimizer and runs it with
autograd, and the hidden states then carry gradients to every encoder layer
(:class:`~latent_rq_brain.training.finetune.TrainableEncoder`).

Example
-------
>>> import torch
>>> from latent_rq_brain.sharing.pretrained import PretrainedEncoder
>>> expert = UpstreamExpert(PretrainedEncoder.from_config(PretrainedEncoder.tiny_config()))
>>> out = expert([torch.randn(16000), torch.randn(8001)])
>>> len(out["hidden_states"]), out["hidden_states"][0].shape
(3, torch.Size([2, 26, 32]))
>>> expert.get_downsample_rates("hidden_states")
640
>>> with torch.no_grad():  # s3prl without -f
...     expert.eval()([torch.randn(8000)])["hidden_states"][-1].requires_grad
False
>>> expert.train()([torch.randn(8000)])["hidden_states"][-1].requires_grad  # -f
True

Authors
 * latent-rq developers 2026
"""

import torch
from torch.nn.utils.rnn import pad_sequence

try:  # inside s3prl: its base class adds the hook machinery
    from s3prl.upstream.interfaces import UpstreamBase as _Base
except ImportError:  # standalone use and tests
    _Base = torch.nn.Module

from latent_rq_brain.sharing.pretrained import PretrainedEncoder
from latent_rq_brain.training.finetune import TrainableEncoder


class UpstreamExpert(_Base):
    """s3prl upstream wrapping :class:`PretrainedEncoder`.

    Arguments
    ---------
    ckpt : str or PretrainedEncoder
        Any encoder name :meth:`PretrainedEncoder.load` takes (run output
        folder, save folder, CKPT+ folder, ``<run>@stage<k>``, ``random:small``),
        or an already built encoder.
    model_config : str, optional
        Unused (s3prl passes it); the checkpoint carries its architecture.
    """

    def __init__(self, ckpt, model_config=None, **kwargs):
        if _Base is torch.nn.Module:
            super().__init__()
        else:
            super().__init__(**kwargs)
        del model_config
        if not isinstance(ckpt, PretrainedEncoder):
            ckpt = PretrainedEncoder.load(ckpt)
        # every parameter trainable: s3prl decides (no_grad + eval unless -f)
        self.model = TrainableEncoder(ckpt, trainable_layers="all")

    def get_downsample_rates(self, key: str = None) -> int:
        """Samples per output frame (hop x the encoder's downsampling; 640 =
        40 ms at 16 kHz in the paper's configuration) for every key."""
        del key
        return self.model.downsample_rate

    def forward(self, wavs):
        """Encodes a list of 1-D waveforms (16 kHz) of any lengths.

        Returns a dict with ``hidden_states`` (list of (B, T, D) tensors,
        T = frames of the longest waveform) and ``last_hidden_state``.
        """
        device = wavs[0].device
        lengths = torch.tensor([w.shape[-1] for w in wavs], dtype=torch.float)
        padded = pad_sequence([w.reshape(-1) for w in wavs], batch_first=True)
        states, _ = self.model.to(device)(padded, lengths / padded.shape[1])
        return {"hidden_states": states, "last_hidden_state": states[-1]}
