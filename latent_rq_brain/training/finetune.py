"""A pre-trained encoder to fine-tune: trainable layers by paper index, SpecAugment.

:class:`~latent_rq_brain.sharing.pretrained.PretrainedEncoder` is frozen (no gradient,
eval mode). :class:`TrainableEncoder` wraps one and returns the same hidden
states with autograd, for the CTC fine-tuning recipe (``recipes/finetune``)
and the s3prl upstream under ``-f``:

* ``trainable_layers``: which parameters get gradients, by paper layer index
  (``-1`` = front-end and its projection to ``d_model``, ``0..L-1`` = layers;
  the encoder says which layer a parameter belongs to,
  :meth:`~latent_rq_brain.model.encoder.LayeredEncoder.layer_of`), ``"all"`` or
  ``None`` (frozen);
* ``feature_augment``: modules applied to the log-Mel features in training
  mode only (SpeechBrain's ``SpectrogramDrop`` for time and frequency masks).

The encoder stays in eval mode (the pre-training dropout is 0; the
per-utterance feature normalisation keeps no running statistics).

Authors
 * latent-rq developers 2026
"""

import torch


def parse_layers(value, num_layers):
    """``"all"``, ``None``/``"none"``/``[]``, ``"top<k>"`` or a list of paper
    indices -> sorted list of paper indices (``-1..L-1``).

    Example
    -------
    >>> parse_layers("all", 3), parse_layers(None, 3), parse_layers("top2", 3)
    ([-1, 0, 1, 2], [], [1, 2])
    >>> parse_layers([2, -1], 3)
    [-1, 2]
    >>> parse_layers([5], 3)
    Traceback (most recent call last):
    ...
    ValueError: layer index 5 out of range: valid paper layers are -1..2 (-1 = CNN front-end)
    """
    if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
        return []
    if isinstance(value, str):
        if value == "all":
            return list(range(-1, num_layers))
        if value.startswith("top") and value[3:].isdigit():
            k = min(int(value[3:]), num_layers + 1)
            return list(range(num_layers - k, num_layers))
        raise ValueError(f"trainable layers must be all, none, top<k> or a list, got {value!r}")
    layers = sorted({int(v) for v in value})
    bad = [layer for layer in layers if not -1 <= layer < num_layers]
    if bad:
        raise ValueError(
            f"layer index {bad[0]} out of range: valid paper layers are "
            f"-1..{num_layers - 1} (-1 = CNN front-end)"
        )
    return layers


class TrainableEncoder(torch.nn.Module):
    """All hidden states of a pre-trained encoder, with gradients where asked.

    Arguments
    ---------
    pretrained : latent_rq_brain.sharing.pretrained.PretrainedEncoder
        The encoder (its weights are trained in place).
    trainable_layers : str or list
        See :func:`parse_layers`.
    feature_augment : list of torch.nn.Module, optional
        Applied in order to the (B, T, n_mels) features in training mode.

    Example
    -------
    >>> from latent_rq_brain.sharing.pretrained import PretrainedEncoder
    >>> pre = PretrainedEncoder.from_config(PretrainedEncoder.tiny_config(), seed=0)
    >>> enc = TrainableEncoder(pre, trainable_layers=[1])
    >>> states, lens = enc(torch.randn(2, 16001), torch.tensor([1.0, 0.5]))
    >>> len(states), states[-1].requires_grad, states[0].requires_grad, lens.tolist()
    (3, True, False, [26, 13])
    >>> wav = torch.randn(1, 8000)
    >>> ref, _ = pre(wav)
    >>> new, _ = enc(wav)
    >>> all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ref, new))
    True
    """

    def __init__(self, pretrained, trainable_layers="all", feature_augment=None):
        super().__init__()
        self.pretrained = pretrained
        self.feature_augment = torch.nn.ModuleList(feature_augment or [])
        self.set_trainable(trainable_layers)

    def set_trainable(self, trainable_layers):
        """Gives gradients to the parameters of ``trainable_layers`` only."""
        enc = self.pretrained.encoder
        self.trainable_layers = parse_layers(trainable_layers, enc.num_layers)
        chosen = set(self.trainable_layers)
        for name, param in enc.named_parameters():
            param.requires_grad_(enc.layer_of(name) in chosen)
        return self.trainable_layers

    def trainable_parameters(self):
        """The parameters that get gradients."""
        return [p for p in self.parameters() if p.requires_grad]

    def __getattr__(self, name):
        """``sample_rate``, ``downsample_rate``, ``hidden_size``,
        ``num_hidden_states``, ``info``, ``config`` of the wrapped encoder."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("sample_rate", "downsample_rate", "hidden_size",
                        "num_hidden_states", "info", "config"):
                return getattr(self._modules["pretrained"], name)
            raise

    def forward(self, wavs, wav_lens=None):
        """Like :meth:`PretrainedEncoder.forward`, with autograd (where the
        global grad mode allows it) and feature augmentation in training mode."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        pre = self.pretrained
        n_samples = torch.round(wav_lens.float().cpu() * wavs.shape[1]).long()
        feats, _, enc_lens = pre.features(wavs, n_samples)
        if self.training:
            for augment in self.feature_augment:
                feats = augment(feats)
        _, hidden_states = pre.encoder(feats, enc_lens)
        return list(hidden_states), enc_lens.cpu()
