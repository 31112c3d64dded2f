"""Explicit torch randomness for the neural components (imports torch: only neural code imports this module).

Randomness is passed in, never global (STYLE.md 6): nothing here calls the global
``torch.manual_seed``.  A seed becomes a `torch.Generator` (`make_generator`), and
the generator is handed to whatever draws:

* `init_module` re-draws the initial weights of a module's layers from it, with the
  same distributions PyTorch's own ``reset_parameters`` uses;
* `SeededDropout` is ``nn.Dropout`` whose masks come from a generator the training
  loop sets (`set_dropout_generator`); eval mode and ``p = 0`` draw nothing.

>>> from torch import nn
>>> a = init_module(nn.Linear(3, 2), make_generator(7))
>>> b = init_module(nn.Linear(3, 2), make_generator(7))
>>> bool(torch.equal(a.weight, b.weight))
True
"""

from __future__ import annotations

import math
from typing import Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from aetheris_ray.errors import InvalidInput

__all__ = ["make_generator", "init_module", "SeededDropout", "set_dropout_generator"]

M = TypeVar("M", bound=nn.Module)


def make_generator(seed: int | Sequence[int], device: str | torch.device = "cpu") -> torch.Generator:
    """A `torch.Generator` on ``device`` seeded from ``seed``.

    Parameters
    ----------
    seed : int (used as is: the same stream as the global CPU generator seeded with
        ``seed``) or a sequence of ints, mixed through ``np.random.SeedSequence``
        (e.g. ``[seed, step]`` for a per-step stream)
    device : the device the generator draws on (must match the tensors it fills)
    """
    if isinstance(seed, (int, np.integer)):
        value = int(seed)
    else:
        value = int(np.random.SeedSequence([int(s) for s in seed]).generate_state(1, dtype=np.uint64)[0])
    g = torch.Generator(device=device)
    g.manual_seed(value)
    return g


def init_module(module: M, generator: torch.Generator) -> M:
    """Re-draw the initial weights of every ``Linear`` / ``Conv*`` / ``Embedding`` layer of ``module`` from ``generator``.

    Layers are visited in ``module.modules()`` order (registration order), each
    drawing its weight then its bias with PyTorch's default scheme (Kaiming-uniform
    with ``a = sqrt(5)``, bias uniform in ``+-1/sqrt(fan_in)``; ``Embedding`` standard
    normal).  The generator must live on the device of the parameters.  Other
    parameters (norm layers, parameters a module sets itself) are left as their
    constructor made them: deterministic constants, so override afterwards any
    layer whose initial values you set by hand.  Returns ``module`` (modified in place).
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, generator=generator)
                if m.padding_idx is not None:
                    m.weight[m.padding_idx].fill_(0)
    return module


class SeededDropout(nn.Module):
    """``nn.Dropout`` drawing its masks from ``self.generator`` (set it before training; None = no randomness allowed).

    Has no parameters or buffers, so a state_dict is the same as with ``nn.Dropout``.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise InvalidInput(f"dropout p={p!r}: must lie in [0, 1); lower it")
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.generator is None:
            raise RuntimeError("SeededDropout in training mode without a generator: set module.generator "
                               "(aetheris_ray.components.torch_utils.make_generator) before training")
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def set_dropout_generator(module: nn.Module, generator: torch.Generator | None) -> int:
    """Point every `SeededDropout` of ``module`` at ``generator``; returns how many there are."""
    n = 0
    for m in module.modules():
        if isinstance(m, SeededDropout):
            m.generator = generator
            n += 1
    return n
