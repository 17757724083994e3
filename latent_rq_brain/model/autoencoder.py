"""A continuous-latent speech autoencoder on the masked-prediction Brain.

One training step (``hparams/autoencoder.yaml``)::

    wav -> log-Mel feats (B, T, 80), normalised, 10 ms frames
      student: mask spans -> encoder (any of the contract) -> out (B, T/4, d)
        semantic objective: heads -> masked multi-codebook prediction (the
                            BEST-RQ / Latent-RQ loss, LatentRQBrain's)
        bottleneck: z = linear(out) (B, T/4, latent_dim), one vector per
                    encoder frame (40 ms with downsampling 4)
        decoder: z -> (B, T, 80), the clean feats of every frame, masked ones too
    loss = cross-entropy + w_rec * L1(decoder(z), feats) [valid frames]
                         + w_reg * latent regulariser of z

The latent regulariser (``latent_regularizer``):

* ``sigreg``: SIGReg (:mod:`latent_rq_brain.objectives.sigreg`, LeJEPA) of the valid
  frames of a deterministic ``z``: pushes the aggregate distribution of ``z``
  towards N(0, I); it does not limit how much each frame carries;
* ``kl``: a VAE bottleneck: the linear layer predicts a mean and a
  log-variance, ``z`` is sampled (reparameterised) in training and is the mean
  otherwise; the term is KL(q(z|x) || N(0, I)) summed over dimensions,
  averaged over valid frames (the rate, in nats per frame);
* ``none``: a deterministic ``z`` without regulariser.

Reconstruction and regulariser are named loss terms
(:mod:`latent_rq_brain.objectives.loss_terms`);
:class:`~latent_rq_brain.training.autoencoder_brain.AutoencoderBrain` only adds the
bottleneck and the decoder to the forward pass. This module imports no Brain,
so that :mod:`latent_rq_brain.sharing.pretrained` can build the bottleneck.

Authors
 * latent-rq developers 2026
"""

import torch

from latent_rq_brain.model.features import valid_frames
from latent_rq_brain.objectives.sigreg import SIGReg, effective_dimension, step_generator

#: values of ``latent_regularizer``
LATENT_REGULARIZERS = ("none", "sigreg", "kl")


def check_regularizer(kind):
    """``kind`` if it is one of :data:`LATENT_REGULARIZERS`, else a ValueError.

    Example
    -------
    >>> check_regularizer("kl")
    'kl'
    >>> check_regularizer("vae")
    Traceback (most recent call last):
    ...
    ValueError: latent_regularizer must be one of ('none', 'sigreg', 'kl'), got 'vae'
    """
    if kind not in LATENT_REGULARIZERS:
        raise ValueError(f"latent_regularizer must be one of {LATENT_REGULARIZERS}, got {kind!r}")
    return kind


class Bottleneck(torch.nn.Module):
    """The continuous bottleneck: a linear projection of the encoder's final
    output to ``latent_dim`` per encoder frame (or, for ``kl``, to a mean and
    a log-variance).

    Arguments
    ---------
    input_size : int
        Width of the encoder output (``d_model``).
    latent_dim : int
        Width of ``z``.
    regularizer : str
        ``kl`` makes it variational; ``none`` and ``sigreg`` deterministic.

    Example
    -------
    >>> b = Bottleneck(8, 4, "kl")
    >>> z, mean, logvar = b(torch.randn(2, 5, 8), sample=False)
    >>> z.shape, bool(torch.equal(z, mean)), logvar.shape
    (torch.Size([2, 5, 4]), True, torch.Size([2, 5, 4]))
    >>> Bottleneck(8, 4, "sigreg")(torch.randn(2, 5, 8))[2] is None
    True
    """

    def __init__(self, input_size, latent_dim, regularizer="none"):
        super().__init__()
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.variational = check_regularizer(regularizer) == "kl"
        self.proj = torch.nn.Linear(int(input_size), self.latent_dim * (2 if self.variational else 1))

    def forward(self, h, sample=False):
        """``(z, mean, logvar)`` of encoder outputs ``h`` (B, T, d); ``logvar``
        is None for a deterministic bottleneck (then ``z`` is ``mean``);
        ``sample``: draw ``z`` (training of a variational one)."""
        out = self.proj(h)
        if not self.variational:
            return out, out, None
        mean, logvar = out.chunk(2, dim=-1)
        logvar = logvar.clamp(-30.0, 20.0)
        if not sample:
            return mean, mean, logvar
        return mean + torch.randn_like(mean) * torch.exp(0.5 * logvar), mean, logvar


class MelDecoder(torch.nn.Module):
    """Rebuilds log-Mel frames from ``z``: residual 1-D convolutions at the
    encoder's frame rate, then a linear layer to ``downsampling`` Mel frames
    per encoder frame (the inverse of ``targets.stack_frames``).

    Frames past ``lens`` are zeroed before every convolution, so the output of
    an utterance does not depend on the batch it is in.

    Arguments
    ---------
    latent_dim : int
        Width of ``z``.
    n_mels : int
        Mel bins per frame.
    downsampling : int
        Mel frames per encoder frame.
    channels, num_layers, kernel_size : int
        Width, depth and kernel of the convolution stack.

    Example
    -------
    >>> dec = MelDecoder(4, 80, 4, channels=16, num_layers=2)
    >>> dec(torch.randn(2, 5, 4), torch.tensor([5, 3])).shape
    torch.Size([2, 20, 80])
    """

    def __init__(self, latent_dim, n_mels, downsampling, channels=256, num_layers=3,
                 kernel_size=5):
        super().__init__()
        if int(kernel_size) % 2 == 0:
            raise ValueError(f"decoder_kernel_size must be odd, got {kernel_size}")
        self.n_mels, self.downsampling = int(n_mels), int(downsampling)
        self.inp = torch.nn.Linear(int(latent_dim), int(channels))
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(int(channels)) for _ in range(num_layers))
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv1d(int(channels), int(channels), int(kernel_size),
                            padding=int(kernel_size) // 2)
            for _ in range(num_layers)
        )
        self.out = torch.nn.Linear(int(channels), self.n_mels * self.downsampling)

    @classmethod
    def from_state_dict(cls, state, n_mels, downsampling):
        """A decoder of the shape of ``state`` (a trained one's ``state_dict``:
        width, depth and kernel are read from its weights), with its weights.

        Example
        -------
        >>> dec = MelDecoder(4, 80, 4, channels=16, num_layers=2, kernel_size=3)
        >>> copy = MelDecoder.from_state_dict(dec.state_dict(), 80, 4)
        >>> len(copy.convs), copy.convs[0].kernel_size, copy.inp.in_features
        (2, (3,), 4)
        """
        channels, latent_dim = state["inp.weight"].shape
        convs = sorted({k.split(".")[1] for k in state if k.startswith("convs.")}, key=int)
        kernel = state["convs.0.weight"].shape[-1] if convs else 1
        dec = cls(latent_dim, n_mels, downsampling, channels, len(convs), kernel)
        dec.load_state_dict(state, strict=True)
        return dec

    def forward(self, z, lens=None):
        """(B, T * downsampling, n_mels) frames of ``z`` (B, T, latent_dim);
        ``lens``: (B,) valid frames of ``z`` (None: all)."""
        B, T, _ = z.shape
        keep = (torch.ones(B, T, 1, device=z.device, dtype=torch.bool) if lens is None
                else valid_frames(lens.to(z.device), T).unsqueeze(-1))
        x = self.inp(z)
        for norm, conv in zip(self.norms, self.convs):
            y = norm(x).masked_fill(~keep, 0.0)
            x = x + torch.nn.functional.gelu(conv(y.transpose(1, 2))).transpose(1, 2)
        return self.out(x).reshape(B, T * self.downsampling, self.n_mels)


def mel_l1(reconstruction, feats, feat_lens):
    """Mean absolute error over the valid Mel frames (and bins) of a batch.

    Example
    -------
    >>> feats = torch.zeros(2, 4, 3)
    >>> rec = torch.ones(2, 4, 3); rec[1, 2:] = 100.0  # padding of utterance 1
    >>> float(mel_l1(rec, feats, torch.tensor([4, 2])))
    1.0
    """
    T = min(reconstruction.shape[1], feats.shape[1])
    valid = valid_frames(feat_lens.to(feats.device), T)
    return (reconstruction[:, :T].float() - feats[:, :T].float()).abs()[valid].mean()


def kl_standard_normal(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the last dimension.

    Example
    -------
    >>> float(kl_standard_normal(torch.zeros(1, 3), torch.zeros(1, 3)))
    0.0
    >>> float(kl_standard_normal(torch.ones(1, 2), torch.zeros(1, 2)))  # 2 * 1/2
    1.0
    """
    return 0.5 * (mean.float().square() + logvar.float().exp() - 1.0 - logvar.float()).sum(-1)


def sample_frames(n, max_frames, step, seed):
    """Indices of at most ``max_frames`` of ``n`` frames (seeded by the step),
    None when all fit (as :class:`~latent_rq_brain.objectives.loss_terms.LayerRegularizer`)."""
    if n <= max_frames:
        return None
    return torch.randperm(n, generator=step_generator(step, seed + 1))[:max_frames]


class Reconstruction(torch.nn.Module):
    """Loss term: L1 between the decoder's output and the clean normalised
    log-Mel frames, over valid frames (masked ones included).

    Logs ``masked`` (the L1 on the frames of masked spans) and ``eff_dim_z``
    (the effective dimension of ``z`` on the batch's valid frames).

    Example
    -------
    >>> term = Reconstruction()
    >>> p = {"reconstruction": torch.ones(1, 8, 2), "feats": torch.zeros(1, 8, 2),
    ...      "feat_lens": torch.tensor([8]), "mask": torch.tensor([[True, False]]),
    ...      "z": torch.randn(1, 2, 3), "enc_lens": torch.tensor([2])}
    >>> value, logs = term(p, step=0)
    >>> float(value), float(logs["masked"]), sorted(logs)
    (1.0, 1.0, ['eff_dim_z', 'masked'])
    """

    def forward(self, predictions, step):
        """``(value, logs)`` of a forward pass of :class:`AutoencoderBrain`."""
        del step
        rec, feats = predictions["reconstruction"], predictions["feats"]
        value = mel_l1(rec, feats, predictions["feat_lens"])
        logs = {}
        with torch.no_grad():
            mask = predictions["mask"]
            frames = mask.repeat_interleave(rec.shape[1] // mask.shape[1], dim=1)
            T = min(rec.shape[1], feats.shape[1], frames.shape[1])
            frames = frames[:, :T] & valid_frames(predictions["feat_lens"].to(feats.device), T)
            if frames.any():
                logs["masked"] = (rec[:, :T].float() - feats[:, :T].float()).abs()[frames].mean()
            z = predictions["z"]
            zv = z[valid_frames(predictions["enc_lens"].to(z.device), z.shape[1])]
            if zv.shape[0] > 1:
                logs["eff_dim_z"] = effective_dimension(zv.detach())
        return value, logs


class LatentRegularizer(torch.nn.Module):
    """Loss term: SIGReg of ``z`` or the VAE's KL term (module docstring).

    Arguments
    ---------
    kind : str
        ``none`` (inactive), ``sigreg`` or ``kl``.
    max_frames : int
        SIGReg: valid frames scored per step (a sample seeded by the step).
    slices : int
        SIGReg: random directions per step.
    seed : int
        Mixed with the step into SIGReg's generators.

    Example
    -------
    >>> kl = LatentRegularizer("kl")
    >>> p = {"z_mean": torch.ones(1, 3, 2), "z_logvar": torch.zeros(1, 3, 2),
    ...      "enc_lens": torch.tensor([2])}
    >>> float(kl(p, step=0)[0])  # 1 nat per frame (2 dims x 1/2); frame 3 is padding
    1.0
    >>> LatentRegularizer("none").active
    False
    """

    def __init__(self, kind="none", max_frames=1024, slices=64, seed=0):
        super().__init__()
        self.kind = check_regularizer(kind)
        if int(max_frames) < 2:
            raise ValueError(f"latent_regularizer_frames must be >= 2, got {max_frames}")
        self.max_frames, self.seed = int(max_frames), int(seed)
        self.sigreg = SIGReg(slices, seed=seed) if kind == "sigreg" else None

    @property
    def active(self):
        """False for ``kind: none`` (the Brain then never calls it)."""
        return self.kind != "none"

    def forward(self, predictions, step):
        """``(value, logs)`` of a forward pass of :class:`AutoencoderBrain`."""
        enc_lens = predictions["enc_lens"]
        if self.kind == "kl":
            mean, logvar = predictions["z_mean"], predictions["z_logvar"]
            if logvar is None:
                raise ValueError("latent_regularizer: kl needs a variational bottleneck "
                                 "(Bottleneck(..., regularizer='kl'))")
            valid = valid_frames(enc_lens.to(mean.device), mean.shape[1])
            return kl_standard_normal(mean, logvar)[valid].mean(), {}
        z = predictions["z"]
        frames = z[valid_frames(enc_lens.to(z.device), z.shape[1])]
        idx = sample_frames(frames.shape[0], self.max_frames, step, self.seed)
        if idx is not None:
            frames = frames[idx.to(z.device)]
        return self.sigreg(frames, step), {}
