"""Where a neural part's network runs: in the calling process, or in the part's own Serve deployment.

A fitted part marks the method that runs its network with `network`.  Such a method is
a function of its arguments and the loaded weights only (arrays, and any numpy
``Generator`` it draws from).  By default it runs where it
is called.  A served app installs a runner per part name (`install`); a call on a
registered artefact (one `registry.load_artefact` loaded: its ``info`` names it, `artefact_ref`)
then becomes a `Call` -- the artefact's registry root, name and version, the method
and its arguments -- that the runner sends to the part's deployment
(``deployments.models.Network``).  The deployment loads the same artefact and runs the
same method (`run_batch`), so the answer is the one the caller would have computed.
A generator travels with its state and comes back advanced: the caller's generator
continues exactly as after a local call, so the rest of the forecast draws the same
numbers.

Batching: a method declared ``merge=True`` takes arrays (or None) with the batch axis
first and returns an array, a tuple or a dict of arrays with the batch axis first, row
by row independent of the other rows.  `run_batch` concatenates the calls of one batch
that share the artefact, the method and every array's trailing shape, runs them once
and splits the result.  Merged rows equal unmerged ones up to float32 rounding (a
matrix product may sum in another order for another row count); a call alone in its
batch is exact.

Calls made on an event loop's thread (the ingress drawing a tiny request inline) run
locally: a blocking wait for another deployment there would stall the loop.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["Call", "network", "artefact_ref", "install", "install_handles", "uninstall", "sends_calls", "run_batch",
           "HANDLE_TIMEOUT_S"]

#: Part name -> runner: ``runner(call) -> result`` (`install`).
_RUNNERS: dict[str, Callable[["Call"], Any]] = {}


@dataclass(frozen=True)
class Call:
    """One network call of a registered artefact, as sent to the part's deployment."""

    ref: tuple[str, str, str]  # registry root, part name, version
    method: str
    args: tuple


def artefact_ref(part: Any) -> tuple[str, str, str] | None:
    """``(registry root, name, version)`` of a loaded registry artefact; None for a part built in memory."""
    from aetheris_ray.registry import REF_KEY

    ref = getattr(part, "info", {}).get(REF_KEY)
    return None if ref is None else (str(ref[0]), str(ref[1]), str(ref[2]))


def install(part: str, runner: Callable[[Call], Any]) -> None:
    """Send the network calls of part ``part`` to ``runner`` (in this process, until `uninstall`)."""
    _RUNNERS[part] = runner


#: How long a process waits for a part's deployment to answer one network call (`install_handles`).
HANDLE_TIMEOUT_S = 120.0


def install_handles(handles: dict[str, Any] | None, timeout_s: float = HANDLE_TIMEOUT_S) -> None:
    """Send this process's network calls of each part to its deployment (`install`), for every
    ``part -> handle`` of ``handles``: a Serve deployment handle of ``deployments.models.Network``
    (``handle.run.remote(call).result(timeout_s=...)``; an exception the deployment returns is raised
    here).  The served app's replicas and the Simulator's pool actors call it with the same handles."""
    for part, handle in (handles or {}).items():
        def run(call: Call, handle: Any = handle) -> Any:
            out = handle.run.remote(call).result(timeout_s=timeout_s)
            if isinstance(out, BaseException):
                raise out
            return out

        install(part, run)


def uninstall(part: str | None = None) -> None:
    """Run ``part``'s network calls (every part's, with None) in this process again."""
    if part is None:
        _RUNNERS.clear()
    else:
        _RUNNERS.pop(part, None)


def sends_calls(model: Any) -> bool:
    """Whether a fitted model (`aetheris_ray.model.FittedModel`) has a part whose network calls leave this process."""
    return any(p.name in _RUNNERS and artefact_ref(p) is not None for p in model.parts().values())


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def network(merge: bool = False) -> Callable[[Callable], Callable]:
    """Mark a fitted part's method as its network call (see the module docstring).

    ``merge``: calls can be concatenated along the first axis of every argument and result.
    """
    def mark(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def call(self: Any, *args: Any) -> Any:
            runner = _RUNNERS.get(self.name)
            ref = artefact_ref(self) if runner is not None else None
            if ref is None or _on_event_loop():
                return fn(self, *args)
            out, states = runner(Call(ref, fn.__name__, args))
            for g, state in zip(_generators(args), states):
                g.bit_generator.state = state
            return out

        call.local = fn  # type: ignore[attr-defined]
        call.merge = merge  # type: ignore[attr-defined]
        return call

    return mark


def _generators(args: Sequence[Any]) -> list[np.random.Generator]:
    return [a for a in args if isinstance(a, np.random.Generator)]


def _load(ref: tuple[str, str, str]) -> Any:
    from aetheris_ray.registry import load_artefact

    root, name, version = ref
    return load_artefact(name, version, root)


def _shape_key(args: tuple) -> tuple:
    return tuple(None if a is None else (np.shape(a)[1:], np.asarray(a).dtype.str) for a in args)


def _split(out: Any, sizes: list[int]) -> list[Any]:
    cuts = np.cumsum(sizes)[:-1]
    if isinstance(out, dict):
        parts = {k: np.split(v, cuts) for k, v in out.items()}
        return [{k: parts[k][i] for k in out} for i in range(len(sizes))]
    if isinstance(out, tuple):
        parts = [np.split(v, cuts) for v in out]
        return [tuple(p[i] for p in parts) for i in range(len(sizes))]
    return np.split(out, cuts)


def run_batch(calls: Sequence[Call]) -> list[tuple[Any, list[dict]]]:
    """Run a batch of calls where the artefacts live; each result is ``(output, generator states after)``.

    Each artefact is looked up once per batch.  Mergeable calls with the same artefact,
    method and trailing shapes run as one call (`network` ``merge=True``); the rest one by
    one, in order.  An exception is the result of the calls it concerns, not of the batch.
    """
    from aetheris_ray.api import one_blas_thread

    results: list[Any] = [None] * len(calls)
    groups: dict[tuple, list[int]] = {}
    parts: dict[tuple[str, str, str], Any] = {}
    with one_blas_thread():
        for i, c in enumerate(calls):
            try:
                if c.ref not in parts:
                    parts[c.ref] = _load(c.ref)
                part = parts[c.ref]
                method = getattr(type(part), c.method)
                if not hasattr(method, "local"):
                    raise AttributeError(f"{c.ref[1]}.{c.method} is not a network call")
            except Exception as e:  # noqa: BLE001 - this call's own error
                results[i] = e
                continue
            if method.merge:
                groups.setdefault((c.ref, c.method, _shape_key(c.args)), []).append(i)
            else:
                try:
                    out = method.local(part, *c.args)
                    results[i] = (out, [g.bit_generator.state for g in _generators(c.args)])
                except Exception as e:  # noqa: BLE001
                    results[i] = e
        for (ref, name, _), idx in groups.items():
            part = parts[ref]
            method = getattr(type(part), name).local
            try:
                if len(idx) == 1:
                    outs = [method(part, *calls[idx[0]].args)]
                else:
                    args = [None if calls[idx[0]].args[k] is None else
                            np.concatenate([calls[i].args[k] for i in idx], axis=0)
                            for k in range(len(calls[idx[0]].args))]
                    outs = _split(method(part, *args), [int(np.shape(calls[i].args[0])[0]) for i in idx])
                for i, out in zip(idx, outs):
                    results[i] = (out, [])
            except Exception as e:  # noqa: BLE001
                for i in idx:
                    results[i] = e
    return results
