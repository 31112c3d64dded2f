"""Unit-test guard: with ``AETHERIS_FORBID_HEAVY=1``, importing torch, ray, gpytorch or torchdiffeq fails.

`test_core_imports.py` runs ``pytest tests/unit -m "not torch and not ray and not slow"`` in a
subprocess with the variable set: every numpy-core unit test must then pass without those
packages.  Tests that need torch carry the ``torch`` marker; unit tests of the Ray shells that
import ray (without starting it) carry ``ray``; anything that starts Ray is in tests/integration.

The hook lets ``importlib.util.find_spec("torch")`` answer (libraries probe for optional
backends that way: scoringrules does at import), refuses the actual import with ``ImportError``,
and records each attempt with the test that made it: code under test may catch the error
(``try: import torch except ImportError``, ``pytest.importorskip``) and carry on, so
`pytest_sessionfinish` fails the run and lists them.  Imports made in child processes (CLI
tests run ``python -m aetheris_ray ...``) are not seen.

In the guarded run, a test file whose module-level ``pytestmark`` has ``pytest.mark.torch`` (or
``ray``) is not collected at all: its module-level imports may need the package, and all of its
tests would be deselected anyway.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import os
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "ray", "gpytorch", "torchdiffeq")
FORBID = os.environ.get("AETHERIS_FORBID_HEAVY") == "1"

# --doctest-modules would import this file under the module name "conftest" after a subfolder's
# conftest has taken that name (pytest's import file mismatch); it has no doctests.
collect_ignore = ["conftest.py"]

_attempts: list[str] = []


class _Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        where = os.environ.get("PYTEST_CURRENT_TEST", "collection (a test file's or conftest's module level)")
        _attempts.append(f"{spec.name!r} imported by {where}")
        raise ImportError(
            f"{spec.name!r} imported in a numpy-core unit test ({where}); AETHERIS_FORBID_HEAVY=1 forbids "
            f"{', '.join(HEAVY)}. Mark the test `torch` (needs torch) or `ray` (imports ray), move a test that "
            "starts Ray to tests/integration, or keep the import lazy in the code under test"
        )

    def exec_module(self, module):  # pragma: no cover - create_module always raises
        raise ImportError(module.__name__)


class _ForbidHeavy(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder whose specs for the heavy packages refuse to load."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in HEAVY:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Refuse())


if FORBID:
    _already = sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY)
    if _already:
        raise pytest.UsageError(f"AETHERIS_FORBID_HEAVY=1 but already imported before the unit tests: {_already}")
    sys.meta_path.insert(0, _ForbidHeavy())


def _module_marks(path: Path) -> set[str]:
    """Names of the ``pytest.mark.X`` in a test file's module-level ``pytestmark``."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return set()
    marks: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            for sub in ast.walk(node.value):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute) and sub.value.attr == "mark":
                    marks.add(sub.attr)
    return marks


def pytest_ignore_collect(collection_path: Path, config):
    if FORBID and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if _module_marks(collection_path) & {"torch", "ray"}:
            return True
    return None


def pytest_sessionfinish(session, exitstatus):
    if FORBID and _attempts:
        sys.stderr.write("\nAETHERIS_FORBID_HEAVY: forbidden imports were attempted:\n  " + "\n  ".join(_attempts) + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
