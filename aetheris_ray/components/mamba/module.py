"""The pure torch module of the ``mamba`` trend (imported only when torch is wanted): a selective SSM and its scan.

The selective state-space recursion (S6, Gu & Dao 2023), per channel ``d`` and state ``s``::

    h_t[d, s] = exp(delta_t[d] A[d, s]) h_{t-1}[d, s] + delta_t[d] B_t[s] u_t[d],   h_0 = 0
    y_t[d]    = sum_s C_t[s] h_t[d, s] + D[d] u_t[d]

with a diagonal, negative ``A`` (so ``exp(delta A)`` lies in (0, 1]) and input-dependent
``delta``, ``B``, ``C`` (the "selection").  The discretisation is mamba-ssm's
(``exp(delta A)`` for the decay, ``delta B u`` for the input), so the optional kernel
computes the same numbers.

`selective_scan` evaluates it with a parallel (Hillis-Steele) associative scan in
log space: ``ceil(log2 L)`` doubling steps, each combining the pairs
``(log a, h)`` at distance ``k``: ``h_t += exp(log a_t) h_{t-k}``, ``log a_t += log a_{t-k}``.
Every exponent is a sum of ``delta A <= 0`` terms, so nothing overflows however long
the sequence.  Memory is ``O(batch x L x d x s)`` per step.  The tests check it
against a plain sequential loop in float64 (``atol=1e-12``).

Optional kernel: when the tensors are on a CUDA device and ``mamba_ssm`` is importable,
``backend="auto"`` calls ``mamba_ssm``'s ``selective_scan_fn`` instead (a small branch,
`_mamba_ssm_scan`).  Its float32 outputs are expected to equal the pure scan's within
``rtol=1e-3, atol=1e-4`` (`KERNEL_RTOL`, `KERNEL_ATOL`); mamba-ssm is not installed on the
development machine, so that branch and its test (skipped there) are untested here.

`MambaDriftNet` stacks Mamba blocks (input projection, causal depthwise convolution,
SiLU, the selective scan, a SiLU gate, output projection, pre-norm residual) over the
per-day input channels, reads the last day's state, appends the origin's static
features and maps them to the drift path in units of the origin's daily vol, bounded
by ``max_sigma tanh(.)``; the head starts at zero, so an untrained net gives zero drift.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from aetheris_ray.components.torch_utils import init_module
from aetheris_ray.errors import InvalidInput

__all__ = ["selective_scan", "mamba_ssm_available", "MambaMixer", "MambaDriftNet", "KERNEL_RTOL", "KERNEL_ATOL"]

#: Tolerance of the optional mamba-ssm kernel against the pure scan (float32).
KERNEL_RTOL = 1e-3
KERNEL_ATOL = 1e-4
BACKENDS = ("auto", "torch", "mamba_ssm")


@lru_cache(maxsize=1)
def _mamba_ssm_fn() -> Any:
    """mamba-ssm's ``selective_scan_fn`` when the package imports, else None (checked once per process)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - a missing or broken optional kernel means "use the pure scan"
        return None
    return selective_scan_fn


def mamba_ssm_available() -> bool:
    """Whether the optional kernel can run here (mamba-ssm importable and CUDA available)."""
    return torch.cuda.is_available() and _mamba_ssm_fn() is not None


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """The selective SSM outputs over a batch of sequences.

    Parameters
    ----------
    u : tensor, shape (b, L, d)          inputs per step and channel
    delta : tensor, shape (b, L, d)      positive step sizes
    A : tensor, shape (d, s)             diagonal state matrix (negative entries)
    B, C : tensor, shape (b, L, s)       input-dependent input / output maps (shared by the channels)
    D : tensor, shape (d,), optional     skip connection
    backend : {"auto", "torch", "mamba_ssm"}
        ``auto``: mamba-ssm's kernel when the tensors are on CUDA and it is installed, else
        the pure torch scan; ``torch``: always the pure scan; ``mamba_ssm``: the kernel or an error.

    Returns
    -------
    tensor, shape (b, L, d)
    """
    if backend not in BACKENDS:
        raise InvalidInput(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
    if u.dim() != 3 or delta.shape != u.shape or B.shape != C.shape or B.shape[:2] != u.shape[:2] \
            or A.shape != (u.shape[2], B.shape[2]):
        raise InvalidInput(f"selective_scan: shapes u {tuple(u.shape)}, delta {tuple(delta.shape)}, "
                           f"A {tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}; "
                           "want (b, L, d), (b, L, d), (d, s), (b, L, s) x 2")
    use_kernel = backend == "mamba_ssm" or (backend == "auto" and u.is_cuda and _mamba_ssm_fn() is not None)
    if use_kernel:
        return _mamba_ssm_scan(u, delta, A, B, C, D)
    log_a = delta[..., None] * A  # (b, L, d, s), <= 0
    h = (delta * u)[..., None] * B[:, :, None, :]  # (b, L, d, s)
    k, length = 1, u.shape[1]
    while k < length:  # Hillis-Steele: after the step, entry t combines entries (t - 2k, t]
        h = torch.cat([h[:, :k], h[:, k:] + torch.exp(log_a[:, k:]) * h[:, :-k]], dim=1)
        log_a = torch.cat([log_a[:, :k], log_a[:, k:] + log_a[:, :-k]], dim=1)
        k *= 2
    y = torch.einsum("blds,bls->bld", h, C)
    return y if D is None else y + u * D


def _mamba_ssm_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                    D: torch.Tensor | None) -> torch.Tensor:
    """The optional CUDA kernel (mamba-ssm's layout: channels before time).  Untested on the development machine."""
    fn = _mamba_ssm_fn()
    if fn is None or not u.is_cuda:
        raise InvalidInput("backend='mamba_ssm' needs the mamba-ssm package and CUDA tensors; "
                           "use backend='torch' (the pure scan) or install mamba-ssm on a GPU machine")
    t = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731 - (b, L, .) -> (b, ., L)
    y = fn(t(u), t(delta), A.contiguous(), t(B), t(C), D=None if D is None else D.contiguous(),
           delta_softplus=False)
    return y.transpose(1, 2)


class MambaMixer(nn.Module):
    """One Mamba mixer (S6): in-projection, causal depthwise conv, SiLU, selective scan, SiLU gate, out-projection.

    Parameters
    ----------
    d_model : int    width of the residual stream
    d_state : int    SSM states per channel
    expand : int     ``d_inner = expand * d_model`` scanned channels
    d_conv : int     causal convolution width
    backend : str    `selective_scan` backend

    Forward: (b, L, d_model) -> (b, L, d_model).
    """

    def __init__(self, d_model: int, d_state: int = 8, expand: int = 2, d_conv: int = 4,
                 backend: str = "auto") -> None:
        super().__init__()
        d_inner = expand * d_model
        self.dt_rank = max(1, math.ceil(d_model / 16))
        self.d_state, self.backend = d_state, backend
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        # S4D-real initialisation: A[d, s] = -(s + 1)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def init_dt(self, generator: torch.Generator, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba's step-size initialisation: ``softplus(bias)`` log-uniform in [dt_min, dt_max]."""
        with torch.no_grad():
            r = torch.rand(self.dt_proj.bias.shape, generator=generator, device=self.dt_proj.bias.device)
            dt = torch.exp(r * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = nn.functional.silu(self.conv(xs.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = self.x_proj(xs).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = nn.functional.softplus(self.dt_proj(dt))
        y = selective_scan(xs, delta, -torch.exp(self.A_log), B, C, self.D, backend=self.backend)
        return self.out_proj(y * nn.functional.silu(z))


class MambaDriftNet(nn.Module):
    """Mamba blocks over the per-day channels -> the drift path in units of the origin's daily vol.

    Parameters
    ----------
    n_channels : int   per-day input channels
    n_static : int     origin features appended to the last day's state
    horizon : int      drift steps produced
    d_model, d_state, expand, layers : sizes
    max_sigma : float  bound of the daily drift in vols (``max_sigma tanh(.)``)
    generator : torch.Generator, optional
        Draws the initial weights (`torch_utils.init_module` plus Mamba's step-size
        initialisation); None for a net whose weights are loaded right after.
    backend : str      `selective_scan` backend

    Forward
    -------
    seq : (b, L, n_channels) standardised per-day inputs;  static : (b, n_static)
    Returns (b, horizon): the daily drift per step divided by the origin's daily vol.
    """

    def __init__(self, n_channels: int, n_static: int, horizon: int, d_model: int = 16, d_state: int = 8,
                 expand: int = 2, layers: int = 2, max_sigma: float = 0.1,
                 generator: torch.Generator | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.max_sigma = float(max_sigma)
        self.embed = nn.Linear(n_channels, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.mixers = nn.ModuleList(MambaMixer(d_model, d_state, expand, backend=backend) for _ in range(layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model + n_static, horizon)
        if generator is not None:
            init_module(self, generator)
            for m in self.mixers:
                m.init_dt(generator)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, seq: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        x = self.embed(seq)
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        last = self.final_norm(x[:, -1])
        return self.max_sigma * torch.tanh(self.head(torch.cat([last, static], dim=-1)))
