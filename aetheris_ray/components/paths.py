"""The composed path model (kind ``paths``, variant ``composed``): ``drift + sigma z + jumps``.

It is the default whole-path generator: built from the four fitted parts (trend,
volatility, jumps, residuals), each drawing from its own child stream of the
generator (``rng.spawn``), so one part's variable draw counts never shift
another's.  A whole-path generator such as a neural jump SDE is another ``paths``
variant that draws its paths itself and needs none of these parts.

Conditioning wires each part's declared ``needs`` (`contract`): filtered historical
residuals standardised by the volatility part's one-step variances declare
``{"variance": "volatility.filter"}`` and receive ``volatility.filter(ctx)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.components.base import Context, FittedBase, SpecBase
from aetheris_ray.components.registry import PATH_PARTS
from aetheris_ray.errors import InvalidInput

__all__ = ["ComposedPaths", "FittedComposedPaths", "wire_needs"]


def wire_needs(part: Any, parts: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The keyword inputs of ``part.condition``: ``{arg: parts[kind].verb(ctx)}`` per declared need.

    A volatility model driven by its own noise (``filters_returns`` False, e.g. rough vol)
    has no returns filter: a ``volatility.filter`` need is then left out, and the part
    conditions without it (its own EWMA stand-in).
    """
    out: dict[str, Any] = {}
    for arg, ref in part.needs.items():
        kind, _, verb = ref.partition(".")
        if kind not in parts:
            raise InvalidInput(f"{part.kind} {part.name!r} needs {ref!r}, but the model has no {kind} part")
        if ref == "volatility.filter" and not getattr(parts[kind], "filters_returns", True):
            continue
        out[arg] = getattr(parts[kind], verb)(ctx)
    return out


@dataclass(frozen=True, eq=False)
class FittedComposedPaths(FittedBase):
    """The four fitted parts as children, in `PATH_PARTS` order."""

    kind: ClassVar[str] = "paths"
    name: ClassVar[str] = "composed"
    parts: ClassVar[tuple[str, ...]] = PATH_PARTS

    def part(self, kind: str) -> Any:
        return self.children[PATH_PARTS.index(kind)]

    def by_kind(self) -> dict[str, Any]:
        return dict(zip(PATH_PARTS, self.children))

    def condition(self, ctx: Context) -> dict[str, Any]:
        """Each part's conditioning, keyed by kind (declared needs wired from the other parts)."""
        parts = self.by_kind()
        return {k: p.condition(ctx, **wire_needs(p, parts, ctx)) for k, p in parts.items()}

    def drift(self, cond: dict, horizon: int) -> FloatArray:
        return self.part("trend").drift(cond["trend"], horizon)

    def simulate(self, cond: dict, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        """Daily log-return paths ``drift + sigma z + jumps``, shape (n_origins, n_paths, horizon), float64."""
        r_res, r_vol, r_jmp = rng.spawn(3)
        z = self.part("residuals").draw(cond["residuals"], n_paths, horizon, r_res)
        return self._finish(cond, z, horizon, r_vol, r_jmp)[0]

    def simulate_tilted(self, cond: dict, n_paths: int, horizon: int, eta: FloatArray,
                        rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """`simulate` with the innovations under the tilt ``eta``; the volatility part runs on the tilted
        innovations (its feedback included), drift and jumps are the model's own."""
        r_res, r_vol, r_jmp = rng.spawn(3)
        z, log_lr = self.part("residuals").draw_tilted(cond["residuals"], n_paths, horizon, eta, r_res)
        return self._finish(cond, z, horizon, r_vol, r_jmp)[0], log_lr

    @property
    def splittable(self) -> bool:
        """Whether `simulate_tilted_split` applies (tiltable residuals whose steps are iid with a known CDF)."""
        res = self.part("residuals")
        return bool(getattr(res, "tiltable", False) and getattr(res, "iid_steps", False))

    def simulate_tilted_split(self, cond: dict, n_paths: int, horizon: int, eta: FloatArray,
                              rng: np.random.Generator) -> tuple[FloatArray, FloatArray, FloatArray]:
        """`simulate_tilted` with the last step's innovation left out: ``X_h = sum(steps) + scale z_h``.

        Returns ``(steps, scale, log_lr)``: the daily log-returns (n_origins, n_paths, horizon)
        with the last step's ``sigma_h z_h`` left out (its drift and jumps kept), ``sigma_h``
        (n_origins, n_paths, set by the steps before), and the likelihood ratio of the tilt,
        whose last step must be 0 (``eta[:, -1] == 0``: ``z_h`` keeps the model's own law,
        `last_step_cdf`).
        """
        eta = np.asarray(eta, dtype=float)
        if np.any(eta[..., -1] != 0):
            raise ValueError("simulate_tilted_split: the last step's tilt must be 0")
        r_res, r_vol, r_jmp = rng.spawn(3)
        z, log_lr = self.part("residuals").draw_tilted(cond["residuals"], n_paths, horizon, eta, r_res)
        out, sigma = self._finish(cond, z, horizon, r_vol, r_jmp)
        last = sigma[:, :, -1]
        out[:, :, -1] -= last * z[:, :, -1]
        return out, last, log_lr

    def last_step_cdf(self, cond: dict, x: FloatArray, side: str) -> FloatArray:
        """``P(z_h < x)`` or ``P(z_h >= x)`` of the residuals' step innovation (`FittedResiduals.unit_cdf`)."""
        return self.part("residuals").unit_cdf(cond["residuals"], x, side)

    def _finish(self, cond: dict, z: FloatArray, horizon: int, r_vol: np.random.Generator,
                r_jmp: np.random.Generator) -> FloatArray:
        """``(drift + sigma z + jumps, sigma)``, each (n_origins, n_paths, horizon)."""
        sigma = self.part("volatility").sample_vol(cond["volatility"], z, r_vol)
        out = sigma * z
        out += self.drift(cond, horizon)
        self.part("jumps").add_jumps(out, cond["jumps"], r_jmp)
        return out, sigma

    def tilt_profile(self, cond: dict, horizon: int) -> tuple[float, FloatArray]:
        """``(sum of the daily drift, expected daily vol (horizon,))`` of origin 0: where importance sampling tilts."""
        drift = float(np.sum(self.drift(cond, horizon)[0, 0]))
        var = self.part("volatility").expected_variance(cond["volatility"], horizon)[0]
        return drift, np.sqrt(np.asarray(var, dtype=float))

    @property
    def tiltable(self) -> bool:
        """Whether importance sampling can tilt these paths (the residuals implement ``draw_tilted``)."""
        return bool(getattr(self.part("residuals"), "tiltable", False))


@dataclass(frozen=True)
class ComposedPaths(SpecBase):
    """``drift + sigma z + jumps`` from the model's trend, volatility, jumps and residuals parts."""

    kind: ClassVar[str] = "paths"
    name: ClassVar[str] = "composed"
    parts: ClassVar[tuple[str, ...]] = PATH_PARTS
    fit_inputs: ClassVar[tuple[str, ...]] = PATH_PARTS
    fitted_cls: ClassVar[type] = FittedComposedPaths

    def fit(self, returns: FloatArray, **parts: Any) -> FittedComposedPaths:
        """Compose the fitted parts (given by kind); nothing of its own to estimate."""
        missing = [k for k in PATH_PARTS if parts.get(k) is None]
        if missing:
            raise InvalidInput(f"paths 'composed': missing fitted part(s) {missing}")
        return FittedComposedPaths(spec=self, params={}, children=tuple(parts[k] for k in PATH_PARTS))
