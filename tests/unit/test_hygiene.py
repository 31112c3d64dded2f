"""Source hygiene: no global seeding anywhere in the package (STYLE.md 6: randomness is passed in)."""

from __future__ import annotations

import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2] / "aetheris_ray"

#: Global seeding calls: torch's default generator (CPU, CUDA, all devices) and numpy's/random's global state.
#: Seeding a generator object (``make_generator``: ``torch.Generator().manual_seed``) is fine.
GLOBAL_SEEDING = re.compile(
    r"\btorch\.(?:cuda\.|random\.)?manual_seed(?:_all)?\s*\("
    r"|\bfrom\s+torch(?:\.cuda|\.random)?\s+import\s+[^\n]*\bmanual_seed\b"
    r"|\b(?:np|numpy)\.random\.seed\s*\("
    r"|^\s*random\.seed\s*\(",
    re.MULTILINE,
)

def _offenders() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for p in sorted(ROOT.rglob("*.py")):
        text = p.read_text(encoding="utf-8")
        lines = [text.count("\n", 0, m.start()) + 1 for m in GLOBAL_SEEDING.finditer(text)]
        if lines:
            out[p.relative_to(ROOT).as_posix()] = lines
    return out


def test_the_pattern_catches_global_seeding_and_spares_generators():
    for bad in ("torch.manual_seed(0)", "torch.cuda.manual_seed_all(1)", "np.random.seed(3)",
                "from torch import manual_seed", "    random.seed(4)"):
        assert GLOBAL_SEEDING.search(bad), bad
    for ok in ("g = torch.Generator(device=d)\ng.manual_seed(5)", "np.random.default_rng([seed, step])",
               "no global ``torch.manual_seed``", "rng.seed_sequence"):
        assert not GLOBAL_SEEDING.search(ok), ok


def test_no_global_seeding_in_the_package():
    offenders = _offenders()
    assert offenders == {}, (
        f"global seeding (file: lines) in aetheris_ray: {offenders}; pass a torch.Generator "
        "(aetheris_ray.components.torch_utils.make_generator) or a np.random.Generator instead"
    )
