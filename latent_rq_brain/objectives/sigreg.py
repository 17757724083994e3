"""Geometric regularisers of embeddings: SIGReg and a whitening penalty.

**SIGReg** (Sketched Isotropic Gaussian Regularisation; LeJEPA, Balestriero &
LeCun 2025, arXiv 2511.08544; reference code ``rbalestr-lab/lejepa``) pushes a
set of embeddings towards an isotropic standard normal: M unit-norm random
directions are drawn, the embeddings are projected on each, and every 1-D
projection is scored against N(0, 1) by the **Epps-Pulley** statistic

    EP = N * integral over t of w(t) |phi_N(t) - exp(-t^2 / 2)|^2 dt,

the weighted squared distance between the projection's empirical
characteristic function ``phi_N(t) = mean_i exp(i t x_i)`` and the standard
normal's, with weight ``w(t) = exp(-t^2 / 2)``; the integral runs over t in
[-t_max, t_max] and is taken by the trapezoid rule on ``knots`` points of
[0, t_max] (the integrand is even). SIGReg is the mean of EP over the slices.
For a standard normal sample its expectation is about 1.06 whatever N (the
integral of ``w(t) (1 - exp(-t^2))``); for a collapsed or mis-scaled sample it
grows in proportion to N.

The directions are redrawn at every optimizer step from a generator seeded by
the step alone, so every rank of a DDP run uses the same ones and a resumed run
draws the same ones again (nothing to checkpoint). Each rank scores its own
frames (the statistic is not all-reduced across ranks).

**Whitening** is Zipformer's cheap metric (Yao et al. 2023, arXiv 2310.11230)
``d * tr(C^2) / tr(C)^2`` of the covariance ``C`` of d-dimensional features:
1 when white, up to d when all variance lies in one direction; it is the
feature count over the *effective dimension* (participation ratio
``tr(C)^2 / tr(C^2)``, :func:`effective_dimension`). Penalised only above a
limit.

Both run in fp32 with autocast off (cos/sin of bf16 values are too coarse).

Authors
 * latent-rq developers 2026
"""

import torch

#: the statistic's defaults (LeJEPA's): 17 knots on [0, 3]
DEFAULT_KNOTS = 17
DEFAULT_T_MAX = 3.0


def _fp32(x):
    """At least fp32 (float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


class EppsPulley(torch.nn.Module):
    """The Epps-Pulley statistic of each column of ``(N, M)`` samples against N(0, 1).

    Arguments
    ---------
    knots : int
        Trapezoid points on [0, t_max] (odd, >= 3).
    t_max : float
        Upper end of the integration range.

    Example
    -------
    >>> ep = EppsPulley()
    >>> g = torch.Generator().manual_seed(0)
    >>> normal = ep(torch.randn(2000, 64, generator=g))
    >>> collapsed = ep(torch.zeros(2000, 64))
    >>> normal.shape, round(float(normal.mean()), 1), bool(collapsed.min() > 100)
    (torch.Size([64]), 1.0, True)
    """

    def __init__(self, knots=DEFAULT_KNOTS, t_max=DEFAULT_T_MAX):
        super().__init__()
        knots = int(knots)
        if knots < 3 or knots % 2 == 0:
            raise ValueError(f"sigreg knots must be an odd number >= 3, got {knots}")
        if not float(t_max) > 0:
            raise ValueError(f"sigreg t_max must be > 0, got {t_max}")
        t = torch.linspace(0.0, float(t_max), knots, dtype=torch.float64)
        dt = float(t_max) / (knots - 1)
        # trapezoid on [0, t_max], doubled for [-t_max, 0] (the integrand is even)
        trap = torch.full((knots,), 2 * dt, dtype=torch.float64)
        trap[0] = trap[-1] = dt
        phi = torch.exp(-0.5 * t * t)
        self.register_buffer("t", t.float(), persistent=False)
        self.register_buffer("phi", phi.float(), persistent=False)
        self.register_buffer("weights", (trap * phi).float(), persistent=False)

    def forward(self, x):
        """(M,) statistics of the M columns of ``x`` (N, M)."""
        n = x.shape[0]
        xt = _fp32(x).unsqueeze(-1) * self.t  # (N, M, knots)
        err = (torch.cos(xt).mean(0) - self.phi).square() + torch.sin(xt).mean(0).square()
        return (err @ self.weights) * n


def step_generator(step, seed=0):
    """A CPU generator seeded by the optimizer step (and a fixed seed): the
    same on every rank and after a resume.

    Example
    -------
    >>> a = torch.rand(2, generator=step_generator(7))
    >>> bool(torch.equal(a, torch.rand(2, generator=step_generator(7))))
    True
    """
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def random_directions(dim, slices, generator):
    """(dim, slices) unit-norm Gaussian directions drawn from ``generator``."""
    a = torch.randn(dim, slices, generator=generator)
    return a / a.norm(dim=0, keepdim=True)


class SIGReg(torch.nn.Module):
    """SIGReg of (N, d) embeddings: the mean Epps-Pulley statistic of ``slices``
    random 1-D projections (module docstring).

    Arguments
    ---------
    slices : int
        Random directions per step (M).
    knots : int
        Trapezoid points of the Epps-Pulley integral.
    t_max : float
        Its integration range [0, t_max].
    seed : int
        Mixed with the step into the directions' generator.

    Example
    -------
    >>> sig = SIGReg(slices=32)
    >>> g = torch.Generator().manual_seed(0)
    >>> z = torch.randn(1024, 16, generator=g)
    >>> small = sig(z, step=1)
    >>> collapsed = sig(z[:, :1].expand(-1, 16).contiguous(), step=1)
    >>> misscaled = sig(5 * z, step=1)
    >>> bool(small < 2), bool(collapsed > 20 * small), bool(misscaled > 20 * small)
    (True, True, True)
    """

    def __init__(self, slices=64, knots=DEFAULT_KNOTS, t_max=DEFAULT_T_MAX, seed=0):
        super().__init__()
        if int(slices) < 1:
            raise ValueError(f"sigreg slices must be >= 1, got {slices}")
        self.slices, self.seed = int(slices), int(seed)
        self.statistic = EppsPulley(knots, t_max)

    def forward(self, z, step):
        """SIGReg of ``z`` (N, d) with the directions of optimizer step ``step``."""
        with torch.autocast(z.device.type, enabled=False):
            a = random_directions(z.shape[-1], self.slices, step_generator(step, self.seed))
            return self.statistic(_fp32(z) @ a.to(z.device)).mean()


def covariance(x):
    """(d, d) covariance of (N, d) samples (fp32)."""
    x = _fp32(x)
    x = x - x.mean(0, keepdim=True)
    return x.T @ x / max(x.shape[0] - 1, 1)


def whitening_metric(x):
    """``d * tr(C^2) / tr(C)^2`` of (N, d) samples: 1 when white, d when collapsed
    onto one direction.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> round(float(whitening_metric(torch.randn(20000, 8, generator=g))), 2)
    1.0
    >>> round(float(whitening_metric(torch.randn(500, 1, generator=g).expand(-1, 8))), 2)
    8.0
    """
    c = covariance(x)
    return c.shape[0] * (c * c).sum() / torch.diagonal(c).sum().square().clamp(min=1e-20)


def effective_dimension(x):
    """Participation ratio ``tr(C)^2 / tr(C^2)`` of (N, d) samples: how many
    directions carry the variance (d for white data, 1 for a line).

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> round(float(effective_dimension(torch.randn(20000, 8, generator=g))), 1)
    8.0
    """
    return _fp32(x).shape[-1] / whitening_metric(x)


class WhiteningPenalty(torch.nn.Module):
    """``relu(whitening_metric(z) - limit)``: no pressure while the features'
    metric is at most ``limit`` (module docstring).

    Example
    -------
    >>> pen = WhiteningPenalty(limit=2.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> float(pen(torch.randn(4000, 8, generator=g), step=0))
    0.0
    >>> float(pen(torch.randn(500, 1, generator=g).expand(-1, 8), step=0)) > 5
    True
    """

    def __init__(self, limit=2.0):
        super().__init__()
        if not float(limit) >= 1:
            raise ValueError(f"whitening limit must be >= 1 (1 = white), got {limit}")
        self.limit = float(limit)

    def forward(self, z, step=None):
        """The penalty of ``z`` (N, d); ``step`` is unused (same call as SIGReg)."""
        with torch.autocast(z.device.type, enabled=False):
            return torch.relu(whitening_metric(z) - self.limit)
