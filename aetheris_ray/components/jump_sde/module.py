"""The torch side of ``jump_sde``: the network, the between-jump ODE, the daily density and the filter.

Imports torch and torchdiffeq: only loaded when a jump SDE is built, trained or used.

Shapes: ``b`` rows (origins in the filter, origins x paths in a simulation),
``T`` days, ``H`` hidden units, ``S`` ODE sub-steps per day, ``K`` the largest jump
count of the daily mixture.  Every tensor here is float64.

The state of a row is ``(x, j)``: ``x`` the log of the diffusion's instantaneous
daily variance, ``j`` the recent jump activity.  Conditioning is per row: the
origin's anchor ``a`` (log mean square of its context returns; ``s_a = exp(a / 2)``
sets the scale of the return drift and the jump sizes, so one network serves assets
of any volatility) and the embedding of its standardised conditioning vector
(regime vector + MM indices).

One day, from the state ``(x_0, j_0)`` at its start (`day_step`):

* between jumps, ``dx/ds = kappa (m - x)``, ``dj/ds = -decay j``, and the day's
  integrated variance ``V = int exp(x) ds`` and drift ``M = int mu ds`` ride along
  (``torchdiffeq.odeint``, fixed-step ``rk4`` on ``S`` sub-steps);
* jumps arrive with intensity ``lam(x(s), j(s))`` (below `LAM_MAX` by construction,
  the thinning bound); ``Lam`` is its integral, the trapezoid over the ``S + 1``
  grid values (the simulation's thinning interpolates the same values linearly, so
  both see the same intensity); sizes are ``N(jump_mean, jump_sd^2)`` with the
  parameters of the day's start;
* the day's return is ``M + sqrt(V) z + sum of the jumps``: given the start state its
  density is the Poisson mixture ``sum_k Pois(k; Lam) N(M + k jump_mean, V + k jump_sd^2)``
  over ``k = 0..K`` (`mixture`);
* at the day's end the state takes the day's news (`update`): ``x += gain (u - 1) +
  raise E[N | r]`` and ``j += E[N | r]``, where ``u`` is the posterior mean of the
  squared diffusive part over ``V`` (the day's 2h-bar realised variance over ``V``
  where the filter has one), capped at `NEWS_CAP`.  A jump thus raises the next days'
  volatility (``raise``) and intensity (through ``j``).

The update is a function of the observed return, so the state is a deterministic
function of past returns and the likelihood is exact (an observation-driven model);
the simulation applies the same update to the simulated returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint

from aetheris_ray.components.torch_utils import init_module

__all__ = [
    "HEADS", "LAM_MAX", "JumpSdeNet", "Dynamics", "day_step", "mixture", "update", "run_filter", "thinned_counts",
    "simulate_days",
    "skeleton", "as_tensor",
]

#: Network outputs, in column order.
HEADS = ("kappa", "m", "mu", "lam", "jump_mean", "jump_sd", "raise", "gain")
#: Upper bound of the jump intensity per day (``lam = LAM_MAX * sigmoid``): the thinning bound.
LAM_MAX = 1.0
#: Largest mean-reversion speed of ``x`` per day.
KAPPA_MAX = 0.5
#: ``m - a`` lies within +-M_BAND; ``x - a`` is kept within +-X_BAND.
M_BAND = 4.0
X_BAND = 7.0
#: Return drift within +-MU_SCALE s_a per day; jump mean within +-JUMP_MEAN_SCALE s_a.
MU_SCALE = 0.2
JUMP_MEAN_SCALE = 4.0
#: Jump sd in (JUMP_SD_MIN, JUMP_SD_MIN + JUMP_SD_SPAN) s_a.
JUMP_SD_MIN = 0.5
JUMP_SD_SPAN = 6.0
#: Largest rise of ``x`` per jump and largest news gain.
RAISE_MAX = 1.0
GAIN_MAX = 0.3
#: The news ratio ``u`` is capped here (a crash moves ``x`` by at most ``gain * (NEWS_CAP - 1)``).
NEWS_CAP = 6.0
#: Output biases of the untrained network: kappa 0.06, m = a, mu 0, lam 0.047, jump mean 0,
#: jump sd 2 s_a, raise 0.12, gain 0.05.
_INIT_BIAS = (-2.0, 0.0, 0.0, -3.0, 0.0, -1.0986, -2.0, -1.5)


class JumpSdeNet(nn.Module):
    """``(x - a, j, conditioning)`` -> the raw `HEADS`, rows on the last axis.

    The conditioning enters through its own linear layer (`embed`, once per origin
    or path), the state ``(x - a, j)`` through a bias-free one, then ``layers - 1``
    further ReLU layers and a linear head (weights scaled by 0.1 at init, biases
    `_INIT_BIAS`).  Features-by-rows layout ((H, b) hidden activations): with few
    hidden units and many paths this is what CPU matrix products do fastest.
    """

    def __init__(self, n_cond: int, hidden: int, layers: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cond = nn.Linear(n_cond, hidden)
        self.state = nn.Linear(2, hidden, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.head = nn.Linear(hidden, len(HEADS))
        if generator is not None:
            init_module(self, generator)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.copy_(torch.tensor(_INIT_BIAS))

    def embed(self, c: torch.Tensor) -> torch.Tensor:
        """Conditioning (b, n_cond) -> its embedding (H, b)."""
        return torch.addmm(self.cond.bias[:, None], self.cond.weight, c.T)

    def forward(self, emb: torch.Tensor, x_rel: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Raw heads (8, b) from the embedding (H, b) and the state ``x - a``, ``j`` (b,) each."""
        h = torch.relu(torch.addmm(emb, self.state.weight, torch.stack([x_rel, j])))
        for layer in self.hidden:
            h = torch.relu(torch.addmm(layer.bias[:, None], layer.weight, h))
        return torch.addmm(self.head.bias[:, None], self.head.weight, h)


def _params(raw: torch.Tensor, anchor: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Raw heads (8, ...) -> the model's parameters, each (...,); ``anchor``, ``scale`` broadcast."""
    s = torch.sigmoid(raw)
    return {
        "kappa": KAPPA_MAX * s[0],
        "m": anchor + M_BAND * torch.tanh(raw[1] / M_BAND),
        "mu": MU_SCALE * scale * torch.tanh(raw[2]),
        "lam": LAM_MAX * s[3],
        "jump_mean": JUMP_MEAN_SCALE * scale * torch.tanh(raw[4] / JUMP_MEAN_SCALE),
        "jump_sd": scale * (JUMP_SD_MIN + JUMP_SD_SPAN * s[5]),
        "raise": RAISE_MAX * s[6],
        "gain": GAIN_MAX * s[7],
    }


class Dynamics(nn.Module):
    """The between-jump ODE of one day for ``torchdiffeq``: state (4, b) = ``(x, j, V, M)``.

    ``dx/ds = kappa (m - x)``, ``dj/ds = -decay j``, ``dV/ds = exp(x)``, ``dM/ds = mu``,
    with ``kappa, m, mu`` from the network at the current state.
    """

    def __init__(self, net: JumpSdeNet, emb: torch.Tensor, anchor: torch.Tensor, scale: torch.Tensor,
                 decay: float) -> None:
        super().__init__()
        self.net, self.emb, self.anchor, self.scale, self.decay = net, emb, anchor, scale, float(decay)

    def raw(self, x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Raw heads (8, b) at the state ``x, j`` (b,)."""
        return self.net(self.emb, torch.clamp(x - self.anchor, -X_BAND, X_BAND), j)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, j = y[0], y[1]
        raw = self.net(self.emb, torch.clamp(x - self.anchor, -X_BAND, X_BAND), j)
        kappa = KAPPA_MAX * torch.sigmoid(raw[0])
        m = self.anchor + M_BAND * torch.tanh(raw[1] / M_BAND)
        mu = MU_SCALE * self.scale * torch.tanh(raw[2])
        return torch.stack([kappa * (m - x), -self.decay * j, torch.exp(x), mu])


def day_step(dyn: Dynamics, x: torch.Tensor, j: torch.Tensor, substeps: int) -> dict[str, torch.Tensor]:
    """One day from the start state ``x, j`` (b,): ODE solution and the day's density parameters.

    Returns
    -------
    dict of tensors: ``x1, j1, V, M, Lam`` and the start state's ``jump_mean, jump_sd,
    raise, gain``, each (b,); ``lam_grid`` (S + 1, b), the intensity on the sub-step grid.
    """
    p0 = _params(dyn.raw(x, j), dyn.anchor, dyn.scale)
    grid = torch.linspace(0.0, 1.0, substeps + 1, dtype=x.dtype)
    y0 = torch.stack([x, j, torch.zeros_like(x), torch.zeros_like(x)])
    traj = odeint(dyn, y0, grid, method="rk4", options={"step_size": 1.0 / substeps})  # (S + 1, 4, b)
    b = x.shape[0]
    x_rest = traj[1:, 0].reshape(-1)  # the grid after the start, (S b,)
    rel = torch.clamp(x_rest - dyn.anchor.repeat(substeps), -X_BAND, X_BAND)
    raw_rest = dyn.net(dyn.emb.repeat(1, substeps), rel, traj[1:, 1].reshape(-1))
    lam = torch.cat([p0["lam"][None], LAM_MAX * torch.sigmoid(raw_rest[3]).reshape(substeps, b)])
    lam_sum = (lam[0] + lam[-1]) * 0.5 + lam[1:-1].sum(dim=0)
    return {
        "x1": traj[-1, 0], "j1": traj[-1, 1], "V": torch.clamp(traj[-1, 2], min=1e-20), "M": traj[-1, 3],
        "Lam": lam_sum / substeps, "lam_grid": lam,
        "jump_mean": p0["jump_mean"], "jump_sd": p0["jump_sd"], "raise": p0["raise"], "gain": p0["gain"],
    }


def mixture(r: torch.Tensor, d: dict[str, torch.Tensor], max_jumps: int) -> tuple[torch.Tensor, ...]:
    """The day's log density of ``r`` (b,) and the posterior jump count and squared diffusive part.

    Returns
    -------
    logp, expected_n, expected_d2 : tensors (b,)
        ``log sum_k Pois(k; Lam) N(r; M + k mean, V + k sd^2)`` over ``k = 0..max_jumps``,
        ``E[N | r]`` and ``E[(diffusive part)^2 | r]`` under the same mixture.
    """
    k = torch.arange(max_jumps + 1, dtype=r.dtype)[:, None]  # (K + 1, 1)
    lam = torch.clamp(d["Lam"], min=1e-12)
    var_k = d["V"] + k * d["jump_sd"] ** 2  # (K + 1, b)
    dev = r - d["M"] - k * d["jump_mean"]
    logw = k * torch.log(lam) - lam - torch.lgamma(k + 1.0) - 0.5 * (torch.log(2 * np.pi * var_k) + dev**2 / var_k)
    logp = torch.logsumexp(logw, dim=0)
    w = torch.exp(logw - logp)
    shrink = d["V"] / var_k  # the diffusive share of the deviation given k jumps
    d2 = (dev * shrink) ** 2 + d["V"] * (1.0 - shrink)
    return logp, (w * k).sum(dim=0), (w * d2).sum(dim=0)


def update(d: dict[str, torch.Tensor], expected_n: torch.Tensor, expected_d2: torch.Tensor, anchor: torch.Tensor,
           rv: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The state at the next day's start, each (b,): news and jump rises applied, ``x`` kept near the anchor.

    ``rv`` (b,): the day's 2h-bar realised variance, NaN where absent (then the
    posterior squared diffusive part is the news).
    """
    news = expected_d2
    if rv is not None:
        news = torch.where(torch.isfinite(rv), torch.nan_to_num(rv), news)
    u = torch.clamp(news / d["V"], max=NEWS_CAP)
    x = d["x1"] + d["gain"] * (u - 1.0) + d["raise"] * expected_n
    x = torch.minimum(torch.maximum(x, anchor - X_BAND), anchor + X_BAND)
    return x, d["j1"] + expected_n


def run_filter(net: JumpSdeNet, c: torch.Tensor, anchor: torch.Tensor, returns: torch.Tensor, valid: torch.Tensor,
               rv: torch.Tensor | None, *, substeps: int, decay: float, max_jumps: int,
               score_from: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The filter along ``returns`` (b, T) from ``x = anchor, j = 0``; days where ``valid`` (b, T) is False are skipped.

    Returns
    -------
    x, j : (b,)  the state after the last day (the next day's start)
    nll : (b,)   the summed negative log density of the valid days from index ``score_from`` on
    """
    dyn = Dynamics(net, net.embed(c), anchor, torch.exp(0.5 * anchor), decay)
    x = anchor.clone()
    j = torch.zeros_like(anchor)
    nll = torch.zeros_like(anchor)
    for t in range(returns.shape[1]):
        ok = valid[:, t]
        if not bool(ok.any()):
            continue
        d = day_step(dyn, x, j, substeps)
        logp, en, ed2 = mixture(returns[:, t], d, max_jumps)
        xn, jn = update(d, en, ed2, anchor, None if rv is None else rv[:, t])
        x = torch.where(ok, xn, x)
        j = torch.where(ok, jn, j)
        if t >= score_from:
            nll = nll - torch.where(ok, logp, torch.zeros_like(logp))
    return x, j, nll


#: CDF of the thinning candidates' count per day, ``Poisson(LAM_MAX)`` (inverse-CDF draws).
_CANDIDATE_CDF = np.cumsum([np.exp(-LAM_MAX) * LAM_MAX**k / np.prod(np.arange(1, k + 1)) for k in range(40)])


def thinned_counts(lam_grid: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Jump counts of one day by thinning, (b,).

    Candidates: ``Poisson(LAM_MAX)`` per row (inverse CDF of one uniform each) at
    uniform times; each is kept with probability ``lam(t) / LAM_MAX``, ``lam`` linear
    between the sub-step grid values ``lam_grid`` (S + 1, b).  Draws: b uniforms, then
    the candidates' times and acceptance uniforms (one each per candidate).
    """
    steps, b = lam_grid.shape[0] - 1, lam_grid.shape[1]
    cand = np.searchsorted(_CANDIDATE_CDF, rng.random(b), side="right")
    total = int(cand.sum())
    if total == 0:
        return torch.zeros(b, dtype=lam_grid.dtype)
    rows = np.repeat(np.arange(b), cand)
    pos = rng.random(total) * steps
    keep = rng.random(total) * LAM_MAX
    i0 = np.minimum(pos.astype(np.int64), steps - 1)
    lam = lam_grid.numpy()
    lam_t = lam[i0, rows] + (pos - i0) * (lam[i0 + 1, rows] - lam[i0, rows])
    counts = np.bincount(rows[keep < lam_t], minlength=b)
    return torch.from_numpy(counts.astype(lam.dtype))


def simulate_days(net: JumpSdeNet, c: torch.Tensor, anchor: torch.Tensor, x: torch.Tensor, j: torch.Tensor,
                  horizon: int, rng: np.random.Generator, *, substeps: int, decay: float, max_jumps: int,
                  eta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Daily log-returns of ``b`` rows over ``horizon`` days, and the tilt's log likelihood ratio.

    Runs in the dtype of ``net`` and the tensors (float32 at forecast time).

    Parameters
    ----------
    c : (b, n_cond) standardised conditioning;  anchor, x, j : (b,) anchors and start states
    eta : (b, horizon) or None
        Tilt of the diffusion innovation ``z`` of each day (``z ~ N(eta, 1)``).

    Returns
    -------
    returns : ndarray (b, horizon) float64;  log_lr : ndarray (b,) float64 (zeros without a tilt)

    Draws per day, in this order: the thinning (`thinned_counts`), ``z`` (b,), then
    one jump-size normal per row with jumps.
    """
    dyn = Dynamics(net, net.embed(c), anchor, torch.exp(0.5 * anchor), decay)
    b = x.shape[0]
    out = np.empty((b, int(horizon)))
    log_lr = np.zeros(b)
    for t in range(int(horizon)):
        d = day_step(dyn, x, j, substeps)
        n_jumps = thinned_counts(d["lam_grid"], rng)
        z = rng.standard_normal(b)
        if eta is not None:
            e = eta[:, t]
            z += e
            log_lr += 0.5 * e * e - e * z
        r = d["M"] + torch.sqrt(d["V"]) * torch.from_numpy(z).to(x.dtype)
        hit = torch.nonzero(n_jumps).ravel()
        if hit.numel():
            nj = n_jumps[hit]
            z_jump = torch.from_numpy(rng.standard_normal(hit.numel())).to(x.dtype)
            r[hit] += nj * d["jump_mean"][hit] + torch.sqrt(nj) * d["jump_sd"][hit] * z_jump
        _, en, ed2 = mixture(r, d, max_jumps)
        x, j = update(d, en, ed2, anchor)
        out[:, t] = r.numpy()
    return out, log_lr


def skeleton(net: JumpSdeNet, c: torch.Tensor, anchor: torch.Tensor, x: torch.Tensor, j: torch.Tensor, horizon: int,
             *, substeps: int, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """The noise-free path of each row: daily mean return and daily return sd, each (b, horizon).

    The state moves by the ODE and the expected jump effects (``u = 1``,
    ``E[N] = Lam``): the centre a scenario scales deviations from, and the vol
    profile importance sampling tilts along.
    """
    dyn = Dynamics(net, net.embed(c), anchor, torch.exp(0.5 * anchor), decay)
    mean = np.empty((x.shape[0], int(horizon)))
    sd = np.empty_like(mean)
    for t in range(int(horizon)):
        d = day_step(dyn, x, j, substeps)
        mean[:, t] = (d["M"] + d["Lam"] * d["jump_mean"]).numpy()
        sd[:, t] = torch.sqrt(d["V"] + d["Lam"] * (d["jump_mean"] ** 2 + d["jump_sd"] ** 2)).numpy()
        x = torch.minimum(torch.maximum(d["x1"] + d["raise"] * d["Lam"], anchor - X_BAND), anchor + X_BAND)
        j = d["j1"] + d["Lam"]
    return mean, sd


def as_tensor(a: Any) -> torch.Tensor:
    """A float64 tensor (a copy-free view of a float64 array)."""
    return torch.as_tensor(np.asarray(a, dtype=float))
