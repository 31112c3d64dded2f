"""Explicit torch randomness: seeded initial weights, seeded dropout, a trainer that ignores the global RNG."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from aetheris_ray.components.torch_utils import (  # noqa: E402
    SeededDropout,
    init_module,
    make_generator,
    set_dropout_generator,
)
from aetheris_ray.errors import InvalidInput  # noqa: E402

pytestmark = pytest.mark.torch


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.SiLU(), nn.Linear(7, 3), nn.Embedding(4, 2, padding_idx=0))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_init_module_is_a_function_of_the_generator_only():
    a = init_module(_net(), make_generator(11))
    torch.rand(1000)  # move the global generator: must not matter
    b = init_module(_net(), make_generator(11))
    c = init_module(_net(), make_generator(12))
    assert _same(a, b)
    assert not torch.equal(a[0].weight, c[0].weight)
    assert torch.all(a[3].weight[0] == 0)  # padding row kept at zero


def test_init_module_draws_pytorchs_default_distribution():
    """Kaiming-uniform(a=sqrt 5) = U(+-1/sqrt(fan_in)) for weight and bias: bounds and variance."""
    lin = init_module(nn.Linear(400, 300), make_generator(0))
    w, b = lin.weight.detach(), lin.bias.detach()
    bound = 1 / math.sqrt(400)
    assert float(w.abs().max()) <= bound and float(b.abs().max()) <= bound
    assert float(w.var()) == pytest.approx(bound**2 / 3, rel=0.02)


def test_make_generator_int_seed_matches_the_old_global_seeding():
    """An int seed gives the stream torch.manual_seed(seed) gave, so seeded weights did not change."""
    g = make_generator(5)
    state = torch.random.get_rng_state()
    try:
        torch.random.default_generator.manual_seed(5)
        expected = torch.rand(4)
    finally:
        torch.random.set_rng_state(state)
    assert torch.equal(torch.rand(4, generator=g), expected)
    a = torch.rand(3, generator=make_generator([5, 1]))
    assert torch.equal(a, torch.rand(3, generator=make_generator([5, 1])))
    assert not torch.equal(a, torch.rand(3, generator=make_generator([5, 2])))


def test_seeded_dropout():
    d = SeededDropout(0.5)
    x = torch.ones(1000)
    d.eval()
    assert torch.equal(d(x), x)  # eval: identity, no generator needed
    d.train()
    with pytest.raises(RuntimeError, match="without a generator"):
        d(x)
    assert set_dropout_generator(nn.Sequential(d, nn.Linear(2, 2)), make_generator(3)) == 1
    y1 = d(x)
    d.generator = make_generator(3)
    y2 = d(x)
    assert torch.equal(y1, y2)
    assert set(np.unique(y1.numpy())) == {0.0, 2.0}
    assert float(y1.mean()) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(InvalidInput, match=r"dropout p=1\.0: must lie in \[0, 1\)"):
        SeededDropout(1.0)
    assert SeededDropout(0.3).state_dict() == nn.Dropout(0.3).state_dict() == {}


@pytest.fixture(scope="module")
def windows():
    from aetheris_ray.data.synthetic import SyntheticSource
    from aetheris_ray.windows import WindowSpec, concat_windows, make_windows

    spec = WindowSpec(lookback=32, horizon=7, stride=4, regime=True)
    src = SyntheticSource(seed=4, start="2020-01-01", end="2022-12-31")
    return concat_windows([make_windows(src.history(a), spec) for a in src.assets()], spec)


@pytest.mark.slow
def test_rough_vol_trainer_with_dropout_is_deterministic_and_restores(windows):
    """Same seed -> same weights whatever the global RNG did; a checkpoint restore replays the dropout masks."""
    from aetheris_ray.components.rough_vol import RoughVolatility
    from aetheris_ray.components.rough_vol.training import Trainer

    spec = RoughVolatility(lookback=32, hidden=8, batch_size=64, device="cpu", hurst=0.1, dropout=0.2)
    t1 = Trainer(windows, spec)
    t1.train(5)
    ckpt = copy.deepcopy(t1.state_dict())
    t1.train(5)
    torch.rand(1000)  # the global generator moves between the runs
    t2 = Trainer(windows, spec)
    t2.train(5)
    t2.train(5)
    assert _same(t1.net, t2.net)
    t3 = Trainer(windows, spec)
    t3.load_state_dict(ckpt)
    t3.train(5)
    assert _same(t1.net, t3.net)
    t4 = Trainer(windows, RoughVolatility(lookback=32, hidden=8, batch_size=64, device="cpu", hurst=0.1,
                                          dropout=0.2, seed=spec.seed + 1))
    assert not _same(Trainer(windows, spec).net, t4.net)
