"""Atomic writes (flowkit.files): all or nothing, and the permissions an ordinary write gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowkit.files import atomic_path, atomic_write_text


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_written_file_has_the_mode_of_an_ordinary_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert plain.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_a_writer_that_replaces_the_temporary_file_keeps_the_mode(tmp_path: Path) -> None:
    # Some libraries write their own temporary file and rename it over the path they are given.
    with atomic_path(tmp_path / "model.bin") as tmp:
        own = tmp.with_name("own")
        own.write_bytes(b"weights")
        os.chmod(own, 0o600)
        os.replace(own, tmp)
    assert (tmp_path / "model.bin").read_bytes() == b"weights"
    assert (tmp_path / "model.bin").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
