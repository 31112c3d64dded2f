"""Atomic writes for every artefact, state file and store partition (Ray-free, torch-free).

A reader of a path written here sees the old content or the new content, never a
half-written file, and a crash at any point leaves one of the two complete:

* files (`open_atomic`, `write_bytes`, `write_text`, `write_json`) go to a temporary
  file in the same directory (``mkstemp``), are flushed and fsynced, get their mode,
  are ``os.replace``-d over the target, and the directory is fsynced so the rename
  itself survives a power loss;
* directories (`replace_dir`, or `staging_dir` + `move_into_place` when the name is
  known only after writing) are built in a temporary directory next to the target
  and renamed into place.  An existing target is refused unless ``overwrite=True``;
  when overwriting, the old directory is first renamed aside, the new one renamed
  into place, and only then is the old one removed -- the old artefact is never
  deleted before the new one is complete and in place.

On any failure (including ``KeyboardInterrupt``) the temporary file or directory is
removed and the target is left as it was.  Parent directories are created.  One
writer per target at a time (two concurrent writers do not corrupt it, the last
rename wins).

>>> import json, tempfile
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> _ = write_json(root / "state" / "a.json", {"x": 1})
>>> json.loads((root / "state" / "a.json").read_text())
{'x': 1}
>>> with replace_dir(root / "model") as tmp:
...     _ = (tmp / "manifest.json").write_text("{}")
>>> sorted(p.name for p in (root / "model").iterdir())
['manifest.json']
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from aetheris_ray.errors import InvalidInput

__all__ = [
    "open_atomic", "write_bytes", "write_text", "write_json",
    "replace_dir", "staging_dir", "move_into_place", "fsync_dir",
]

#: Mode of files written here (``mkstemp`` would leave 0o600): ordinary data files.
FILE_MODE = 0o644
#: Mode of directories moved into place by `replace_dir` (``mkdtemp`` would leave 0o700).
DIR_MODE = 0o755


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Persist the entries (renames) of directory ``path``; a no-op where a directory cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike[str], *, binary: bool = True, mode: int = FILE_MODE,
                encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without an error.

    For writers that stream into a file handle (``pyarrow.parquet.write_table``,
    ``np.savez``).  If the block raises, the temporary file is removed and ``path``
    keeps its previous content (or stays absent).

    Parameters
    ----------
    path : the file to replace; its parent directories are created
    binary : True yields a binary handle, False a text handle in ``encoding``
    mode : permission bits of the written file (default 0o644)
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": encoding})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(final.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = FILE_MODE) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
    with open_atomic(path, mode=mode) as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, *, mode: int = FILE_MODE, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` (encoded as ``encoding``) atomically; returns the path."""
    return write_bytes(path, text.encode(encoding), mode=mode)


def write_json(path: str | os.PathLike[str], obj: Any, *, mode: int = FILE_MODE, **json_kwargs: Any) -> Path:
    """Replace ``path`` with ``json.dumps(obj, **json_kwargs)`` atomically; returns the path.

    The object is serialised before anything is written, so an object that cannot
    be serialised (or ``allow_nan=False`` with a NaN) raises and leaves ``path`` as it was.
    """
    return write_text(path, json.dumps(obj, **json_kwargs), mode=mode)


@contextlib.contextmanager
def staging_dir(parent: str | os.PathLike[str], *, prefix: str = ".staging.") -> Iterator[Path]:
    """Yield a fresh temporary directory in ``parent`` (created); it is removed on exit unless moved away.

    For writers that learn the final name only after writing (the registry names a
    version by the hash of its content): build in the staging directory, then
    `move_into_place` it.  Use `replace_dir` when the target is known up front.
    """
    root = Path(parent)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=root))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(src: str | os.PathLike[str], target: str | os.PathLike[str], *, overwrite: bool = False,
                    mode: int = DIR_MODE, what: str | None = None) -> Path:
    """Rename the complete directory ``src`` to ``target`` (same filesystem); returns ``target``.

    An existing ``target`` raises `InvalidInput` unless ``overwrite``; then the old
    directory is renamed aside (``.<name>.old.<random>``), ``src`` renamed into place and
    only then the old one removed; if the second rename fails the old one is renamed
    back, so ``target`` is never missing nor half-written.  ``what`` prefixes the
    error message (e.g. ``"save"``).
    """
    src, final = Path(src), Path(target)
    if final.exists() and not overwrite:
        raise _exists(final, what)
    os.chmod(src, mode)
    if final.exists():
        # a unique name for the old directory: mkdtemp reserves it, the rename replaces the empty dir
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.replace(final, old)
        try:
            os.replace(src, final)
        except BaseException:
            os.replace(old, final)  # put the old one back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, final)
    fsync_dir(final.parent)
    return final


@contextlib.contextmanager
def replace_dir(target: str | os.PathLike[str], *, overwrite: bool = False, mode: int = DIR_MODE,
                what: str | None = None) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target`` that becomes ``target`` when the block ends.

    Parameters
    ----------
    target : the directory to create (or replace); its parent directories are created
    overwrite : replace an existing ``target``; when False an existing one raises
        `InvalidInput` before anything is written
    mode : permission bits of the new directory (default 0o755)
    what : prefix of the error message, e.g. ``"save"``

    Raises
    ------
    InvalidInput
        ``target`` exists and ``overwrite`` is False.

    Notes
    -----
    The move is `move_into_place`: an old ``target`` is removed only after the new
    one is in place.  If the block raises, the temporary directory is removed and
    ``target`` is untouched.
    """
    final = Path(target)
    if final.exists() and not overwrite:
        raise _exists(final, what)
    with staging_dir(final.parent, prefix=f".{final.name}.") as tmp:
        yield tmp
        move_into_place(tmp, final, overwrite=overwrite, mode=mode, what=what)


def _exists(path: Path, what: str | None) -> InvalidInput:
    return InvalidInput(f"{what + ': ' if what else ''}{path} exists; pass overwrite=True to replace it")
