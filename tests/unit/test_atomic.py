"""aetheris_ray.atomic on real files: contents, modes, refusal to overwrite, old kept until the new is in place."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from aetheris_ray import atomic
from aetheris_ray.errors import InvalidInput


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _entries(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()}


# -- files ---------------------------------------------------------------------------------


def test_write_text_bytes_json_contents_and_mode(tmp_path):
    t = atomic.write_text(tmp_path / "a" / "b" / "t.txt", "héllo")  # parents created
    assert t.read_text(encoding="utf-8") == "héllo"
    b = atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert b.read_bytes() == b"\x00\x01"
    j = atomic.write_json(tmp_path / "j.json", {"x": [1, 2]}, indent=1, sort_keys=True)
    assert json.loads(j.read_text()) == {"x": [1, 2]}
    assert j.read_text() == json.dumps({"x": [1, 2]}, indent=1, sort_keys=True)
    assert _mode(t) == _mode(b) == _mode(j) == 0o644  # not mkstemp's 0o600
    assert _mode(atomic.write_text(tmp_path / "private", "s", mode=0o600)) == 0o600
    assert _entries(tmp_path) == ["a", "b.bin", "j.json", "private"]  # no temp files left


def test_write_replaces_existing_file(tmp_path):
    p = tmp_path / "s.json"
    atomic.write_json(p, {"v": 1})
    atomic.write_json(p, {"v": 2})
    assert json.loads(p.read_text()) == {"v": 2}
    assert _entries(tmp_path) == ["s.json"]


def test_failed_json_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "s.json"
    atomic.write_json(p, {"v": 1})
    with pytest.raises(ValueError, match="Out of range float"):
        atomic.write_json(p, {"v": float("nan")}, allow_nan=False)
    assert json.loads(p.read_text()) == {"v": 1}
    assert _entries(tmp_path) == ["s.json"]


def test_open_atomic_failure_inside_block_keeps_old(tmp_path):
    p = tmp_path / "part.parquet"
    atomic.write_bytes(p, b"old")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic.open_atomic(p) as fh:
            fh.write(b"half")
            raise RuntimeError("writer died")
    assert p.read_bytes() == b"old"
    assert _entries(tmp_path) == ["part.parquet"]
    with atomic.open_atomic(p, binary=False) as fh:
        fh.write("new")
    assert p.read_text() == "new"


def test_failed_rename_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "s.txt"
    atomic.write_text(p, "old")

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        atomic.write_text(p, "new")
    assert p.read_text() == "old"
    assert _entries(tmp_path) == ["s.txt"]


# -- directories -----------------------------------------------------------------------------


def _fill(d: Path, tag: str) -> None:
    (d / "manifest.json").write_text(json.dumps({"tag": tag}))
    (d / "sub").mkdir()
    (d / "sub" / "w.bin").write_text(tag * 3)


def test_replace_dir_creates_target_with_mode(tmp_path):
    target = tmp_path / "deep" / "model"
    with atomic.replace_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp != target and not target.exists()
        _fill(tmp, "new")
    assert _tree(target) == {"manifest.json": '{"tag": "new"}', "sub/w.bin": "newnewnew"}
    assert _mode(target) == 0o755  # not mkdtemp's 0o700
    assert _entries(target.parent) == ["model"]


def test_replace_dir_refuses_existing_without_overwrite(tmp_path):
    target = tmp_path / "model"
    with atomic.replace_dir(target) as tmp:
        _fill(tmp, "old")
    with pytest.raises(InvalidInput, match=r"save: .*model exists; pass overwrite=True to replace it"):
        with atomic.replace_dir(target, what="save"):
            pytest.fail("the block must not run")  # pragma: no cover
    assert _tree(target)["manifest.json"] == '{"tag": "old"}'
    assert _entries(tmp_path) == ["model"]


def test_replace_dir_overwrite(tmp_path):
    target = tmp_path / "model"
    with atomic.replace_dir(target) as tmp:
        _fill(tmp, "old")
        (tmp / "only_in_old").write_text("x")
    with atomic.replace_dir(target, overwrite=True) as tmp:
        _fill(tmp, "new")
        assert _tree(target)["manifest.json"] == '{"tag": "old"}'  # old intact while the new is written
    assert _tree(target) == {"manifest.json": '{"tag": "new"}', "sub/w.bin": "newnewnew"}
    assert _entries(tmp_path) == ["model"]  # old moved aside and removed, no temp left


def test_replace_dir_failure_inside_block_leaves_target_untouched(tmp_path):
    target = tmp_path / "model"
    with atomic.replace_dir(target) as tmp:
        _fill(tmp, "old")
    before = _tree(target)
    with pytest.raises(RuntimeError, match="fit crashed"):
        with atomic.replace_dir(target, overwrite=True) as tmp:
            _fill(tmp, "new")
            raise RuntimeError("fit crashed")
    assert _tree(target) == before
    assert _entries(tmp_path) == ["model"]
    with pytest.raises(RuntimeError, match="fit crashed"):
        with atomic.replace_dir(tmp_path / "fresh") as tmp:
            raise RuntimeError("fit crashed")
    assert _entries(tmp_path) == ["model"]  # a failed first write leaves nothing


def test_replace_dir_second_rename_fails_old_stays_complete(tmp_path, monkeypatch):
    """Overwrite = rename old aside, rename new in: if the second rename fails the old is put back whole."""
    target = tmp_path / "model"
    with atomic.replace_dir(target) as tmp:
        _fill(tmp, "old")
    before = _tree(target)
    real = os.replace
    calls: list[tuple[str, str]] = []

    def flaky(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new directory into place
            assert not target.exists()  # the old one is aside, not deleted
            raise OSError("rename failed")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky)
    with pytest.raises(OSError, match="rename failed"):
        with atomic.replace_dir(target, overwrite=True) as tmp:
            _fill(tmp, "new")
    assert calls[0][0] == "model" and calls[0][1].startswith(".model.old.")
    assert calls[2] == (calls[0][1], "model")  # renamed back
    assert _tree(target) == before
    assert _entries(tmp_path) == ["model"]


def test_replace_dir_old_never_deleted_before_new_in_place(tmp_path, monkeypatch):
    """At every rmtree the target exists and is complete (old or new)."""
    target = tmp_path / "model"
    with atomic.replace_dir(target) as tmp:
        _fill(tmp, "old")
    seen: list[dict[str, str]] = []
    real = atomic.shutil.rmtree

    def watching(path, *a, **k):
        seen.append(_tree(target))
        return real(path, *a, **k)

    monkeypatch.setattr(atomic.shutil, "rmtree", watching)
    with atomic.replace_dir(target, overwrite=True) as tmp:
        _fill(tmp, "new")
    assert seen and all(s == {"manifest.json": '{"tag": "new"}', "sub/w.bin": "newnewnew"} for s in seen)


def test_staging_dir_and_move_into_place(tmp_path):
    with atomic.staging_dir(tmp_path / "reg", prefix=".register.") as tmp:
        _fill(tmp, "v1")
        atomic.move_into_place(tmp, tmp_path / "reg" / "v1")
    assert _entries(tmp_path / "reg") == ["v1"]
    with atomic.staging_dir(tmp_path / "reg") as tmp:
        _fill(tmp, "v1b")
        with pytest.raises(InvalidInput, match="register: .*v1 exists; pass overwrite=True"):
            atomic.move_into_place(tmp, tmp_path / "reg" / "v1", what="register")
    assert _entries(tmp_path / "reg") == ["v1"]  # the unused staging dir is removed
    assert _tree(tmp_path / "reg" / "v1")["manifest.json"] == '{"tag": "v1"}'
