"""The model registry: versioned, atomic, self-describing artefact directories.

Layout (one folder under ``Settings.registry_path`` = ``$AETHERIS_HOME/registry``)::

    registry/
      rough_vol-20261125T031500Z-1a2b3c4d/
        manifest.json        the registry record (see `ModelRecord`)
        model/               the component's own ``save(dir)`` output
                             (its manifest.json + weights / params.npz)

A version is written into a temporary directory next to its final place and
renamed into place (`aetheris_ray.atomic.move_into_place`), so a reader never sees
half an artefact; an existing version is never overwritten unless asked, and when
it is, the old version is removed only after the new one is in place.  `load` raises `ModelNotFound` naming
the problem.  The engine's parts go through `resolve_artefact`, the one place where
``NAME``, ``NAME@VERSION`` and ``latest`` are resolved: it never raises for a missing
or corrupt artefact but names the baseline to fall back to (the variant's registered
``fallback``), with a `FallbackWarning` and the reason for the forecast's metadata.

>>> import tempfile
>>> reg = Registry(tempfile.mkdtemp())
>>> reg.list_models()
[]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aetheris_ray.atomic import move_into_place, staging_dir
from aetheris_ray.errors import FallbackWarning, InvalidInput, ModelNotFound

__all__ = [
    "REGISTRY_SCHEMA_VERSION",
    "ModelRecord",
    "Registry",
    "Resolution",
    "default_registry",
    "list_models",
    "load",
    "load_artefact",
    "register_model",
    "resolve_artefact",
]

#: Version of the registry record layout (``manifest.json`` at the top of a version).
REGISTRY_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL_DIR = "model"

@dataclass(frozen=True)
class ModelRecord:
    """One registered model version (the contents of its ``manifest.json``).

    Attributes
    ----------
    version : str          ``<component>-<UTC time>-<content hash>``
    component : str        registry name of the component (``rough_vol``)
    kind : str             ``volatility``, ``trend``, ...
    created : str          ISO UTC time of registration
    train_range : list     [first, last] training origin dates (YYYY-MM-DD), or []
    hyperparameters : dict
    metrics : dict         validation metrics (``val_ql`` ...)
    package_version, code_version : str
    schema_version : int   registry layout version
    model_schema_version : int or None   the component's own artefact version
    extra : dict           anything else (assets, Tune trial id, ...)
    promotion : dict       the comparison that decided whether this version may become ``latest``:
                           ``promoted`` (bool), ``score`` and ``incumbent_score`` (the same validation
                           metric of this version and of the version it would replace, on the same
                           windows), ``incumbent`` (that version or None), ``metric``, ``why``.  Empty for
                           versions registered without one (they are promoted).
    path : str             where it lives (not stored in the file)
    status : str           ``ok`` or ``corrupt: <why>`` (listing never raises)
    """

    version: str
    component: str
    kind: str
    created: str
    train_range: list[str] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    package_version: str = ""
    code_version: str = ""
    schema_version: int = REGISTRY_SCHEMA_VERSION
    model_schema_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    promotion: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    status: str = "ok"

    @property
    def promoted(self) -> bool:
        """Whether this version may be ``latest`` (it beat the version it would replace, or was not compared)."""
        return bool(self.promotion.get("promoted", True))

    def to_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), promoted=self.promoted)


def _code_version() -> str:
    """Git commit of the source tree when it is a checkout (read from .git, no subprocess), else ``unknown``."""
    git = Path(__file__).resolve().parents[1] / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref:"):
            ref = head.split(None, 1)[1]
            p = git / ref
            if p.is_file():
                return p.read_text().strip()[:12]
            for line in (git / "packed-refs").read_text().splitlines():
                if line.endswith(ref):
                    return line.split()[0][:12]
            return "unknown"
        return head[:12]
    except OSError:
        return "unknown"


def _hash_dir(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:8]


def jsonable(obj: Any) -> Any:
    """Plain JSON types from nested dicts / lists / numpy scalars and arrays."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


class Registry:
    """A registry rooted at ``root`` (default: ``load_settings().registry_path``)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        if root is None:
            from aetheris_ray.config import load_settings

            root = load_settings().registry_path
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- writing ---------------------------------------------------------------------------

    def register(
        self,
        fitted: Any,
        *,
        component: str | None = None,
        kind: str | None = None,
        train_range: list[str] | tuple[str, str] | None = None,
        hyperparameters: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        version: str | None = None,
        overwrite: bool = False,
        promotion: dict[str, Any] | None = None,
    ) -> ModelRecord:
        """Save ``fitted`` (anything with ``save(dir)``) as a new version; returns its record.

        Defaults are read from the fitted object: ``component`` from ``.name``,
        ``kind`` from ``.kind``, ``train_range`` / ``metrics`` from
        ``.info``, ``hyperparameters`` from ``.spec``.  ``promotion`` records the
        comparison with the current ``latest`` (`ModelRecord.promotion`); a version
        with ``promoted: False`` is kept and listed but never resolved as ``latest``.
        """
        from aetheris_ray import __version__

        component = component or getattr(fitted, "name", None)
        if not component:
            raise InvalidInput("register: component=None and the fitted object has no .name; pass component=...")
        kind = kind or getattr(fitted, "kind", None)
        info = dict(getattr(fitted, "info", {}) or {})
        if hyperparameters is None:
            spec = getattr(fitted, "spec", None)
            if hasattr(spec, "to_dict"):
                hyperparameters = spec.to_dict()
            elif dataclasses.is_dataclass(spec):
                hyperparameters = dataclasses.asdict(spec)
            else:
                hyperparameters = {}
        if version is not None and (not version or "/" in version or version.startswith(".")):
            raise InvalidInput(f"version={version!r}: a version id is a plain name without '/' or a leading '.'")
        with staging_dir(self.root, prefix=".register.") as tmp:
            fitted.save(tmp / MODEL_DIR)
            created = datetime.now(timezone.utc)
            version = version or f"{component}-{created:%Y%m%dT%H%M%S}Z-{_hash_dir(tmp / MODEL_DIR)}"
            final = self.root / version
            if final.exists() and not overwrite:
                raise InvalidInput(f"register: version {version!r} already exists in {self.root}; pass overwrite=True to replace it")
            model_man = _read_json(tmp / MODEL_DIR / MANIFEST)
            record = ModelRecord(
                version=version,
                component=component,
                kind=str(kind or ""),
                created=created.isoformat(timespec="seconds"),
                train_range=list(train_range or info.get("train_range", [])),
                hyperparameters=jsonable(hyperparameters),
                metrics=jsonable(metrics if metrics is not None else info.get("metrics", {})),
                package_version=__version__,
                code_version=_code_version(),
                model_schema_version=model_man.get("schema_version"),
                extra=jsonable(extra or {}),
                promotion=jsonable(promotion or {}),
            )
            stored = record.to_dict()
            for derived in ("path", "status", "promoted"):
                stored.pop(derived)
            (tmp / MANIFEST).write_text(json.dumps(stored, indent=2, sort_keys=True))
            move_into_place(tmp, final, overwrite=overwrite, what="register")
        return dataclasses.replace(record, path=str(final))

    # -- reading ---------------------------------------------------------------------------

    def _record(self, path: Path) -> ModelRecord:
        try:
            man = json.loads((path / MANIFEST).read_text())
            fields = {f.name for f in dataclasses.fields(ModelRecord)} - {"path", "status"}
            rec = ModelRecord(**{k: v for k, v in man.items() if k in fields})
        except FileNotFoundError:
            return ModelRecord(path.name, "?", "?", "", path=str(path), status=f"corrupt: no {MANIFEST}")
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            return ModelRecord(path.name, "?", "?", "", path=str(path), status=f"corrupt: {type(e).__name__}: {e}")
        status = "ok"
        if rec.schema_version != REGISTRY_SCHEMA_VERSION:
            status = f"corrupt: registry schema {rec.schema_version}, expected {REGISTRY_SCHEMA_VERSION}"
        elif not (path / MODEL_DIR / MANIFEST).is_file():
            status = f"corrupt: no {MODEL_DIR}/{MANIFEST}"
        return dataclasses.replace(rec, path=str(path), status=status)

    def list_models(self, component: str | None = None) -> list[ModelRecord]:
        """Every version (oldest first), corrupt ones included with their ``status``; never raises."""
        if not self.root.is_dir():
            return []
        recs = [self._record(p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if component is not None:
            recs = [r for r in recs if r.component == component]
        return sorted(recs, key=lambda r: (r.created, r.version))

    def record(self, component: str, version: str = "latest") -> ModelRecord:
        """The record of ``version`` (``"latest"`` = newest healthy, promoted version of ``component``)."""
        if version == "latest":
            ok = [r for r in self.list_models(component) if r.status == "ok" and r.promoted]
            if not ok:
                from aetheris_ray.components.registry import train_command

                raise ModelNotFound(
                    f"no healthy, promoted {component!r} model in the registry at {self.root}; "
                    f"train one with `{train_command(component)}`"
                )
            return ok[-1]
        path = self.root / version
        if not path.is_dir() or version.startswith("."):
            known = [r.version for r in self.list_models(component)][-5:]
            raise ModelNotFound(f"model version {version!r} not found in {self.root}; known: {known or 'none'}")
        rec = self._record(path)
        if rec.status != "ok":
            raise ModelNotFound(f"model version {version!r} at {path} is unusable ({rec.status})")
        if rec.component != component:
            raise ModelNotFound(f"model version {version!r} is a {rec.component!r} model, not {component!r}")
        return rec

    def load(self, component: str, version: str = "latest") -> Any:
        """The fitted component of ``version``; `ModelNotFound` on a missing or corrupt artefact."""
        rec = self.record(component, version)
        model_dir = Path(rec.path) / MODEL_DIR
        try:
            from aetheris_ray.components.base import load_component

            return load_component(model_dir)
        except ModelNotFound:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to read an artefact means "corrupt"
            raise ModelNotFound(f"model version {rec.version!r} at {rec.path} cannot be loaded ({type(e).__name__}: {e})") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def default_registry() -> Registry:
    """The registry of the current settings (honours ``AETHERIS_HOME``)."""
    return Registry()


def list_models(component: str | None = None, root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Registered versions as JSON-ready dicts (what ``GET /v1/models`` and ``aetheris models`` show)."""
    return [r.to_dict() for r in Registry(root).list_models(component)]


def load(component: str, version: str = "latest", root: str | os.PathLike | None = None) -> Any:
    """Load a fitted component from the registry (`ModelNotFound` when missing or corrupt)."""
    return Registry(root).load(component, version)


def register_model(fitted: Any, root: str | os.PathLike | None = None, **kwargs: Any) -> ModelRecord:
    """`Registry.register` on the default registry."""
    return Registry(root).register(fitted, **kwargs)


# -- artefacts of the engine's parts, resolved in one place --------------------------------------


@dataclass(frozen=True)
class Resolution:
    """What `resolve_artefact` decided for one part.

    Attributes
    ----------
    kind, name : str          the part asked for (``volatility``, ``rough_vol``)
    wanted : str              the version asked for (``latest`` or an id)
    version : str or None     the concrete registry version used; None when it fell back
    fallback : str or None    the baseline variant used instead
    why : str                 why the artefact could not be used (for the forecast's metadata)
    """

    kind: str
    name: str
    wanted: str
    version: str | None
    fallback: str | None = None
    why: str = ""


def _registry(registry: Any) -> Registry:
    return registry if isinstance(registry, Registry) else Registry(registry)


def resolve_artefact(kind: str, name: str, version: str = "latest", registry: Any = None) -> Resolution:
    """The concrete registry version of a part's artefact, checked to load; else its kind's baseline.

    ``latest`` is the newest healthy, promoted version, so registering a new one changes the
    answer (and every cache keyed by the model version).  A missing or corrupt
    artefact never raises: the variant's registered ``fallback`` is used, with a
    `FallbackWarning` and the reason in ``why``.
    """
    from aetheris_ray.components.registry import variant

    v = variant(kind, name)
    reg = _registry(registry)
    try:
        rec = reg.record(name, version)
        load_artefact(name, rec.version, reg)
        return Resolution(kind, name, version, rec.version)
    except ModelNotFound as e:
        warnings.warn(f"{name}@{version} unavailable ({e}); fell back to the {kind} baseline {v.fallback!r}",
                      FallbackWarning, stacklevel=2)
        return Resolution(kind, name, version, None, v.fallback, str(e))


#: The key of a loaded artefact's ``info`` that names it: ``[registry root, name, version]``
#: (`aetheris_ray.components.offload` sends a network call to a part's deployment by it).
REF_KEY = "registry_ref"

#: Loaded artefacts by (registry root, version, manifest mtime): a version id names fixed contents.
_ARTEFACTS: dict[tuple[str, str, int], Any] = {}


def load_artefact(name: str, version: str, registry: Any = None) -> Any:
    """The fitted artefact of ``name`` at a concrete ``version`` (memoised per process); `ModelNotFound` if unusable."""
    reg = _registry(registry)
    rec = reg.record(name, version)
    try:
        stamp = (Path(rec.path) / MANIFEST).stat().st_mtime_ns
    except OSError as e:
        raise ModelNotFound(f"model version {version!r}: {e}") from None
    key = (str(reg.root), rec.version, stamp)
    hit = _ARTEFACTS.get(key)
    if hit is None:
        hit = reg.load(name, rec.version)
        # where it came from, so a served app can run its network in the part's own deployment (offload)
        hit = dataclasses.replace(hit, info={**hit.info, REF_KEY: [str(reg.root), name, rec.version]})
        _ARTEFACTS[key] = hit
    return hit
