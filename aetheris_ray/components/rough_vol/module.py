"""The pure torch module of the rough volatility component (imported only when torch is wanted).

`RoughVolNet` maps conditioning features (HAR-style summaries of recent log realised
vol and returns, and the regime vector when trained with one) to the four parameters of a rough
fractional Ornstein-Uhlenbeck log-volatility over the forecast horizon::

    X_k - m = (1 - kappa) (X_{k-1} - m) + nu dB_H(k),   X_0 = x0,   k = 1..horizon

with ``dB_H`` unit-step fractional Gaussian noise (Hurst ``H`` fixed, estimated from
data).  ``X`` is the log daily volatility.  Because ``X`` is linear in the Gaussian
``dB_H``, its law over the horizon is Gaussian with closed-form mean and covariance
(`rfou_moments`), so the network trains by the exact Gaussian NLL of the observed
future log realised vol (observation = ``X`` + noise of learned scale).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aetheris_ray.components.torch_utils import SeededDropout, init_module

__all__ = ["RoughVolNet", "rfou_moments", "gaussian_nll"]

#: Upper bound of the per-day mean reversion ``kappa``.
KAPPA_MAX = 0.5


class RoughVolNet(nn.Module):
    """MLP: features -> (x0, m, nu, kappa).

    Parameters
    ----------
    n_features : int
    hidden : int
    layers : int, >= 1 hidden layers
    dropout : float; the masks come from a generator the training loop sets
        (`aetheris_ray.components.torch_utils.set_dropout_generator`)
    generator : torch.Generator, optional
        Draws the initial hidden-layer weights (`torch_utils.init_module`); the head
        starts at fixed values.  None = PyTorch's global generator, for a network
        whose weights are loaded right after (a seeded initial network needs one:
        ``generator=make_generator(seed)``).

    Forward
    -------
    feats : tensor, shape (batch, n_features), standardised features
    anchors : tensor, shape (batch, 2), the raw (x0, m) anchors: the recent and the
        monthly mean log vol; the network outputs offsets from them.

    Returns a dict of tensors of shape (batch,): ``x0``, ``m``, ``nu`` (> 0), ``kappa`` in (0, KAPPA_MAX).
    """

    def __init__(self, n_features: int, hidden: int = 32, layers: int = 2, dropout: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_features
        for _ in range(max(1, int(layers))):
            blocks += [nn.Linear(width, hidden), nn.SiLU()]
            if dropout > 0:
                blocks.append(SeededDropout(dropout))
            width = hidden
        self.body = nn.Sequential(*blocks)
        if generator is not None:
            init_module(self.body, generator)
        self.head = nn.Linear(width, 4)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():  # start at nu ~ 0.3, kappa ~ 0.05, no offsets
            self.head.bias.copy_(torch.tensor([0.0, 0.0, math.log(math.expm1(0.3)), math.log(0.1 / 0.9)]))
        #: log of the observation-noise scale of log realised vol around X (a proxy is noisy)
        self.log_obs_sd = nn.Parameter(torch.tensor(math.log(0.3)))

    def forward(self, feats: torch.Tensor, anchors: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self.body(feats))
        return {
            "x0": anchors[:, 0] + out[:, 0],
            "m": anchors[:, 1] + out[:, 1],
            "nu": nn.functional.softplus(out[:, 2]) + 1e-3,
            "kappa": KAPPA_MAX * torch.sigmoid(out[:, 3]),
        }


def rfou_moments(params: dict[str, torch.Tensor], fgn_cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of ``X_1..X_h`` given ``X_0`` under the discretised rough fOU.

    Parameters
    ----------
    params : dict of (batch,) tensors ``x0, m, nu, kappa``
    fgn_cov : tensor, shape (h, h), Toeplitz covariance of unit-step fGn

    Returns
    -------
    mean : (batch, h);  cov : (batch, h, h) (latent, without observation noise)
    """
    h = fgn_cov.shape[0]
    k = torch.arange(1, h + 1, dtype=fgn_cov.dtype, device=fgn_cov.device)
    phi = 1.0 - params["kappa"][:, None]  # (b, 1)
    decay = phi ** k[None, :]  # (b, h)
    mean = params["m"][:, None] + (params["x0"] - params["m"])[:, None] * decay
    lag = (k[:, None] - k[None, :])  # k - j
    tri = (lag >= 0).to(fgn_cov.dtype)
    mmat = tri[None] * phi[:, :, None] ** lag.clamp(min=0)[None]  # (b, h, h): (1-kappa)^(k-j), j <= k
    cov = params["nu"][:, None, None] ** 2 * (mmat @ fgn_cov @ mmat.transpose(1, 2))
    return mean, cov


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, obs_sd: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per target day of ``y ~ N(mean, cov + obs_sd^2 I)``; y, mean (b, h)."""
    h = y.shape[1]
    eye = torch.eye(h, dtype=cov.dtype, device=cov.device)
    scale = torch.linalg.cholesky(cov + (obs_sd**2 + 1e-6) * eye)
    dist = torch.distributions.MultivariateNormal(mean, scale_tril=scale)
    return -dist.log_prob(y).mean() / h
