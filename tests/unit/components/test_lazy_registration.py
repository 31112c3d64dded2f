"""A neural variant is registered lazily: listing and resolving the registry costs no torch import.

Probed in a fresh interpreter (this process may have imported torch already), stage by stage,
with ``'torch' in sys.modules`` recorded after each.  The last stage builds the neural
variant's network, which must import torch: it is the control that shows the probe can see an
import, so the earlier ``False`` answers mean something.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.slow]  # the control stage imports torch (about 3 s)

PROBE = textwrap.dedent("""
    import json, sys

    seen = {}

    def stage(name):
        seen[name] = "torch" in sys.modules

    stage("start")
    from aetheris_ray.components.registry import names, spec_class
    stage("import registry")
    listed = {kind: names(kind) for kind in ("trend", "volatility", "jumps", "residuals")}
    stage("names(kind) of every kind")
    baselines = [(k, n) for k, ns in listed.items() for n in ns if not getattr(spec_class(k, n), "requires_torch", False)]
    specs = [spec_class(k, n)() for k, n in baselines]
    stage("resolve and build every baseline spec")
    neural = spec_class("volatility", "rough_vol")
    stage("resolve the rough_vol class")
    fitted = neural.fitted_cls.from_params()  # the seeded untrained network
    stage("build rough_vol's network (control)")
    print(json.dumps({"seen": seen, "listed": listed, "baselines": len(specs),
                      "requires_torch": neural.requires_torch, "fitted": type(fitted).__name__}))
""")


def test_registry_listing_and_baselines_import_no_torch_and_the_neural_network_does():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    seen = out["seen"]
    assert "rough_vol" in out["listed"]["volatility"]
    assert out["requires_torch"] is True and out["baselines"] >= 8
    assert {stage: imported for stage, imported in seen.items() if stage != "build rough_vol's network (control)"} == {
        "start": False,
        "import registry": False,
        "names(kind) of every kind": False,
        "resolve and build every baseline spec": False,
        "resolve the rough_vol class": False,
    }, seen
    assert seen["build rough_vol's network (control)"] is True, f"the probe never saw torch imported: {seen}"
