"""Named loss terms added to the masked-prediction loss, with YAML weights.

The contract (fairseq's ``get_extra_losses`` + ``loss_weights``): the YAML
names terms in ``loss_terms`` (name -> module) and their weights in
``loss_weights`` (name -> float). A term is called on the Brain's forward
output (``compute_forward``'s dict: ``hidden_states``, ``enc_lens``,
``mask``, ``logits``, ``targets``, ...) and the optimizer step::

    value, logs = term(predictions, step)

``value`` is a scalar tensor (the Brain adds ``weight * value`` to the loss),
``logs`` a dict of scalar tensors logged beside it as ``<name>.<key>``. A term
whose weight is 0, or whose ``active`` attribute is False, is never called, so
a configuration without terms computes exactly what it did before any term
existed. Terms hold no trainable parameters (they live outside ``modules``);
a term needing state across steps must be a checkpoint recoverable.

A new term is one class (a ``torch.nn.Module`` with that ``forward``) plus
two YAML lines.

Authors
 * latent-rq developers 2026
"""

import numbers

import torch

from latent_rq_brain.model.features import valid_frames
from latent_rq_brain.model.layers import hidden_state_index
from latent_rq_brain.objectives.sigreg import SIGReg, WhiteningPenalty, effective_dimension, step_generator
from latent_rq_brain.targets.target_encoder import NORMS, normalize_states

#: kinds of :class:`LayerRegularizer`
REGULARIZER_KINDS = ("none", "sigreg", "whitening")
#: which forward pass :class:`LayerRegularizer` scores
REGULARIZER_PASSES = ("train", "clean")


def active_loss_terms(terms, weights):
    """``{name: (term, weight)}`` of the terms that act (weight != 0, active).

    Refuses, by name, a term without a weight, a weight without a term, a
    weight that is not a finite number >= 0 and a term that is not callable.

    Example
    -------
    >>> reg = LayerRegularizer("sigreg", layers=[0])
    >>> sorted(active_loss_terms({"reg": reg}, {"reg": 0.05}))
    ['reg']
    >>> active_loss_terms({"reg": reg}, {"reg": 0})
    {}
    >>> active_loss_terms({"reg": reg}, {"rgr": 0.1})
    Traceback (most recent call last):
     ...
    ValueError: loss_weights names rgr, loss_terms reg: every term needs a weight and every weight a term
    """
    terms, weights = dict(terms or {}), dict(weights or {})
    if set(terms) != set(weights):
        raise ValueError(
            f"loss_weights names {', '.join(sorted(weights)) or 'nothing'}, loss_terms "
            f"{', '.join(sorted(terms)) or 'nothing'}: every term needs a weight and "
            "every weight a term"
        )
    out = {}
    for name, term in terms.items():
        w = weights[name]
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not w >= 0 or w == float("inf"):
            raise ValueError(f"loss_weights.{name} must be a finite number >= 0, got {w!r}")
        if not callable(term):
            raise ValueError(f"loss_terms.{name} must be a module or callable, got {term!r}")
        if w > 0 and getattr(term, "active", True):
            out[name] = (term, float(w))
    return out


class LayerRegularizer(torch.nn.Module):
    """Keeps chosen encoder layers isotropic: SIGReg or a whitening penalty on
    their normalised hidden states (:mod:`latent_rq_brain.objectives.sigreg`).

    Acts where the quantizer looks: each layer's hidden states are normalised
    as the targets are (``norm``, per utterance by default), and at most
    ``max_frames`` valid frames of the batch (the same frames for every layer,
    drawn from a generator seeded by the step) are scored. The value is the
    mean over layers; each layer's effective dimension (participation ratio)
    on those frames is logged as ``eff_dim_layer<l>``.

    ``pass_`` says which hidden states are scored:

    * ``train``: those of the training forward (masked input, dropout on). No
      extra cost, but dropout and the masked frames' noise are isotropic by
      themselves, so the encoder can lower the statistic by letting noise
      dominate what a frozen snapshot (eval mode, clean input) would show.
    * ``clean``: those of a second forward of the live encoder, with
      gradients, in eval mode on the clean features of just enough utterances
      (a seeded sample) to hold ``max_frames`` valid frames: the states a
      target encoder snapshotted now would quantize. It costs one more
      forward and backward on that share of the batch. The Brain passes the
      encoder as ``predictions["clean_hidden_states"]``, a callable
      ``(feats, enc_lens, feat_lens) -> hidden_states``.

    Arguments
    ---------
    kind : str
        ``none`` (off), ``sigreg`` or ``whitening``.
    layers : list of int
        Paper layers (``-1`` = front-end output, ``0..L-1``).
    max_frames : int
        Frames scored per step.
    slices, knots, t_max :
        SIGReg's random directions per step and its Epps-Pulley integral.
    whitening_limit : float
        The whitening metric below which there is no penalty.
    norm : str
        Normalisation of the hidden states (as ``target_norm``).
    seed : int
        Mixed with the step into the directions' and frames' generators.
    pass_ : str
        ``train`` or ``clean`` (above).

    Example
    -------
    >>> reg = LayerRegularizer("sigreg", layers=[0], max_frames=64, slices=8)
    >>> h = [torch.randn(2, 40, 6, requires_grad=True) for _ in range(3)]
    >>> value, logs = reg({"hidden_states": h, "enc_lens": torch.tensor([40, 30])}, step=3)
    >>> value.backward()
    >>> h[1].grad.abs().sum() > 0, h[2].grad is None, sorted(logs)
    (tensor(True), True, ['eff_dim_layer0'])

    The clean pass encodes a sample of utterances again:

    >>> net = torch.nn.Linear(6, 6)
    >>> clean = LayerRegularizer("sigreg", layers=[0], max_frames=50, slices=8, pass_="clean")
    >>> encode = lambda feats, lens, feat_lens: [feats, net(feats)]
    >>> feats = torch.randn(3, 40, 6)
    >>> value, _ = clean({"feats": feats, "feat_lens": torch.tensor([40, 30, 20]),
    ...                   "enc_lens": torch.tensor([40, 30, 20]),
    ...                   "clean_hidden_states": encode}, step=3)
    >>> value.backward()
    >>> net.weight.grad.abs().sum() > 0
    tensor(True)
    """

    def __init__(self, kind="none", layers=(), max_frames=1024, slices=64, knots=17,
                 t_max=3.0, whitening_limit=2.0, norm="utterance", seed=0, pass_="train"):
        super().__init__()
        if kind not in REGULARIZER_KINDS:
            raise ValueError(f"layer_regularizer must be one of {REGULARIZER_KINDS}, got {kind!r}")
        if norm not in NORMS:
            raise ValueError(f"layer_regularizer norm must be one of {NORMS}, got {norm!r}")
        if int(max_frames) < 2:
            raise ValueError(f"layer_regularizer_frames must be >= 2, got {max_frames}")
        self.kind = kind
        self.layers = [int(x) for x in layers]
        if kind != "none" and not self.layers:
            raise ValueError("layer_regularizer_layers is empty: name the layers to regularise")
        if pass_ not in REGULARIZER_PASSES:
            raise ValueError(
                f"layer_regularizer_pass must be one of {REGULARIZER_PASSES}, got {pass_!r}")
        self.max_frames, self.norm, self.seed = int(max_frames), norm, int(seed)
        self.pass_ = pass_
        self.penalty = (SIGReg(slices, knots, t_max, seed) if kind == "sigreg"
                        else WhiteningPenalty(whitening_limit) if kind == "whitening" else None)

    @property
    def active(self):
        """False for ``kind: none`` (the Brain then never calls it)."""
        return self.kind != "none"

    def sample(self, n, step, device):
        """Indices of at most ``max_frames`` of ``n`` frames (seeded by ``step``)."""
        if n <= self.max_frames:
            return None
        gen = step_generator(step, self.seed + 1)
        return torch.randperm(n, generator=gen)[: self.max_frames].to(device)

    def clean_states(self, predictions, step):
        """``(hidden_states, enc_lens, picked)`` of the clean pass: the encoder of
        ``predictions`` on the clean features of a seeded sample of utterances
        whose valid frames add up to at least ``max_frames`` (all of them
        when the batch holds fewer)."""
        enc_lens, feat_lens = predictions["enc_lens"], predictions["feat_lens"]
        order = torch.randperm(len(enc_lens), generator=step_generator(step, self.seed + 2))
        covered = torch.cumsum(enc_lens.cpu()[order], 0)
        keep = int((covered < self.max_frames).sum()) + 1
        pick = order[:keep].sort().values.to(enc_lens.device)
        lens = enc_lens[pick]
        hidden = predictions["clean_hidden_states"](predictions["feats"][pick], lens,
                                                    feat_lens[pick])
        if hidden[0].shape[1] < int(lens.max()):
            raise RuntimeError(f"clean pass: the encoder gave {hidden[0].shape[1]} frames "
                               f"for enc_lens up to {int(lens.max())}")
        return hidden, lens, pick

    def forward(self, predictions, step):
        """``(value, logs)`` for the hidden states of ``predictions``."""
        if self.pass_ == "clean":
            hidden, enc_lens, _ = self.clean_states(predictions, step)
        else:
            hidden, enc_lens = predictions["hidden_states"], predictions["enc_lens"]
        num_layers = len(hidden) - 1
        valid = valid_frames(enc_lens.to(hidden[0].device), hidden[0].shape[1])
        idx = self.sample(int(valid.sum()), step, hidden[0].device)
        values, logs = [], {}
        for layer in self.layers:
            h = hidden[hidden_state_index(layer, num_layers)]
            frames = normalize_states(h.float(), enc_lens, self.norm)[valid]
            if idx is not None:
                frames = frames[idx]
            values.append(self.penalty(frames, step))
            with torch.no_grad():
                logs[f"eff_dim_layer{layer}"] = effective_dimension(frames.detach())
        return torch.stack(values).mean(), logs
