"""The torch parts of ``fm_gp``: the velocity network, the GP prior's kernel fit, the ODE sampler.

Imports torch, gpytorch and torchdiffeq: only `training` and the fitted part's
methods import this module, so importing `aetheris_ray.components.fm_gp` stays cheap.

* `VelocityNet` -- ``v(x_t, t, c)``: an MLP whose first layer is split into an
  ``x`` part and a ``(c, time features)`` part, so the sampler projects each
  origin's conditioning once and each step's time once, and the per-path work is
  ``h -> hidden -> ... -> h`` only.
* `fit_gp_prior` -- a `gpytorch` kernel (Matern-5/2 or RBF; learned lengthscale and
  outputscale) plus a white-noise variance over the step index ``1..H``, fitted by
  maximising the Gaussian marginal likelihood of the training residual sequences.
* `integrate` -- ``dx/dt = v(x, t, c)`` from ``t = 0`` (the GP source) to ``t = 1``
  with `torchdiffeq.odeint` (fixed-step ``euler`` / ``midpoint`` / ``rk4`` with
  ``steps`` steps, or adaptive ``dopri5``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from aetheris_ray.components.torch_utils import init_module
from aetheris_ray.errors import InvalidInput

__all__ = [
    "VelocityNet", "time_features", "N_TIME", "fm_loss", "gp_kernel", "fit_gp_prior", "integrate", "FIXED_SOLVERS",
]

#: Size of the time embedding ``(t, sin 2 pi k t, cos 2 pi k t)`` for k = 1, 2.
N_TIME = 5
#: torchdiffeq's fixed-grid methods the sampler accepts (``dopri5`` is the adaptive one).
FIXED_SOLVERS = ("euler", "midpoint", "rk4")


def time_features(t: torch.Tensor) -> torch.Tensor:
    """Time embedding, shape ``t.shape + (N_TIME,)``."""
    t = torch.as_tensor(t, dtype=torch.float32)
    w = 2.0 * math.pi * t[..., None] * torch.tensor([1.0, 2.0], dtype=torch.float32)
    return torch.cat([t[..., None], torch.sin(w), torch.cos(w)], dim=-1)


class VelocityNet(nn.Module):
    """``v(x_t, t, c)`` for paths of ``horizon`` steps.

    Parameters
    ----------
    horizon : int       H, the path length
    n_cond : int        conditioning features (standardised)
    hidden, layers : int  width and number of hidden layers (>= 1)
    generator : torch.Generator or None   seeds the initial weights (`init_module`)
    """

    def __init__(self, horizon: int, n_cond: int, hidden: int = 64, layers: int = 2,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if layers < 1 or hidden < 1:
            raise InvalidInput(f"VelocityNet: layers={layers!r} and hidden={hidden!r} must be >= 1")
        self.horizon, self.n_cond = int(horizon), int(n_cond)
        self.in_x = nn.Linear(self.horizon, hidden)
        self.in_ct = nn.Linear(self.n_cond + N_TIME, hidden, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.out = nn.Linear(hidden, self.horizon)
        self.act = nn.SiLU()
        if generator is not None:
            init_module(self, generator)

    def cond_projection(self, c: torch.Tensor) -> torch.Tensor:
        """The conditioning's share of the first layer, ``c (..., n_cond) -> (..., hidden)``."""
        return c @ self.in_ct.weight[:, : self.n_cond].T

    def time_projection(self, t: torch.Tensor) -> torch.Tensor:
        """The time's share of the first layer, ``t (...) -> (..., hidden)``."""
        return time_features(t) @ self.in_ct.weight[:, self.n_cond:].T

    def field(self, x: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
        """Velocity from ``x (..., H)`` and the summed conditioning + time projection (broadcastable to (..., hidden))."""
        h = self.act(self.in_x(x) + proj)
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.out(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Training route: ``x (B, H)``, ``t (B,)``, ``c (B, n_cond)`` -> ``(B, H)``."""
        return self.field(x, self.cond_projection(c) + self.time_projection(t))


def fm_loss(net: VelocityNet, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Conditional flow-matching loss ``mean |v(x_t, t, c) - (x1 - x0)|^2``, ``x_t = (1 - t) x0 + t x1``.

    ``x0`` (B, H) source draws, ``x1`` (B, H) targets, ``t`` (B,) in [0, 1], ``c`` (B, n_cond).
    """
    xt = (1.0 - t[:, None]) * x0 + t[:, None] * x1
    return torch.mean(torch.square(net(xt, t, c) - (x1 - x0)))


def gp_kernel(kind: str, lengthscale: float, outputscale: float) -> Any:
    """The gpytorch kernel ``outputscale * k(|i - j| / lengthscale)`` (``kind``: ``matern52`` or ``rbf``)."""
    import gpytorch

    if kind == "matern52":
        base = gpytorch.kernels.MaternKernel(nu=2.5)
    elif kind == "rbf":
        base = gpytorch.kernels.RBFKernel()
    else:
        raise InvalidInput(f"GP kernel {kind!r}: use 'matern52' or 'rbf'")
    k = gpytorch.kernels.ScaleKernel(base)
    k.base_kernel.lengthscale = float(lengthscale)
    k.outputscale = float(outputscale)
    return k


def _steps(horizon: int) -> torch.Tensor:
    return torch.arange(1, horizon + 1, dtype=torch.float64)[:, None]


def fit_gp_prior(x: np.ndarray, kind: str = "matern52", n_iter: int = 150, lr: float = 0.05) -> dict[str, float]:
    """Kernel hyperparameters by maximum marginal likelihood of the sequences ``x`` (n, H).

    The rows are independent draws of ``N(0, K + noise I)`` with ``K`` the gpytorch
    kernel over the step index ``1..H``; Adam on the mean negative log likelihood
    (float64; gpytorch's positive constraints on lengthscale and outputscale, a
    softplus for the noise).

    Returns
    -------
    dict with ``lengthscale``, ``outputscale``, ``noise`` (floats) and ``nll`` (per sequence)
    """
    y = torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64)
    n, h = y.shape
    k = gp_kernel(kind, 1.0, 0.5).double()
    raw_noise = torch.tensor(math.log(math.expm1(0.5)), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam(list(k.parameters()) + [raw_noise], lr=lr)
    s = _steps(h)
    scatter = y.T @ y / n  # the log likelihood depends on the data only through this
    eye = torch.eye(h, dtype=torch.float64)
    nll = torch.tensor(0.0)
    for _ in range(int(n_iter)):
        cov = k(s).to_dense() + (nn.functional.softplus(raw_noise) + 1e-6) * eye
        chol = torch.linalg.cholesky(cov)
        nll = 0.5 * (h * math.log(2 * math.pi) + 2.0 * torch.log(torch.diagonal(chol)).sum()
                     + torch.trace(torch.cholesky_solve(scatter, chol)))
        opt.zero_grad()
        nll.backward()
        opt.step()
    with torch.no_grad():
        return {"lengthscale": float(k.base_kernel.lengthscale), "outputscale": float(k.outputscale),
                "noise": float(nn.functional.softplus(raw_noise)) + 1e-6, "nll": float(nll)}


def integrate(net: VelocityNet, x0: torch.Tensor, cproj: torch.Tensor, solver: str, steps: int,
              rtol: float = 1e-4, atol: float = 1e-4) -> torch.Tensor:
    """Push source samples through the learned ODE, ``t: 0 -> 1``, with `torchdiffeq.odeint`.

    Parameters
    ----------
    x0 : (n, m, H) source samples;  cproj : (n, 1, hidden) `VelocityNet.cond_projection` of each origin
    solver : ``euler``, ``midpoint``, ``rk4`` (``steps`` equal steps) or ``dopri5`` (adaptive, ``rtol`` / ``atol``)

    Returns
    -------
    (n, m, H) the samples at ``t = 1``
    """
    from torchdiffeq import odeint

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return net.field(x, cproj + net.time_projection(t))

    grid = torch.tensor([0.0, 1.0], dtype=x0.dtype)
    if solver in FIXED_SOLVERS:
        return odeint(field, x0, grid, method=solver, options={"step_size": 1.0 / int(steps)})[-1]
    if solver == "dopri5":
        return odeint(field, x0, grid, method="dopri5", rtol=rtol, atol=atol)[-1]
    raise InvalidInput(f"ODE solver {solver!r}: use one of {', '.join(FIXED_SOLVERS)} or 'dopri5'")
