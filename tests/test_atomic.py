"""Folders and JSON files are written whole, with the usual permissions, or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from converters.atomic import atomic_dir
from device_runners.files import atomic_write_json


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_dir_replaces_and_uses_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "bundle"
        out.mkdir()
        (out / "old.txt").write_text("old")
        (out / "manifest.json").write_text('{"kind": "edge-ee-bundle"}')  # only bundles are replaced
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
            assert (out / "old.txt").exists()  # untouched until the rename
        assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
        assert _mode(out) == 0o755
        assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary left
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        assert _mode(tmp_path / "r.json") == 0o644
    finally:
        os.umask(old)


def test_atomic_dir_error_keeps_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("validation failed")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
