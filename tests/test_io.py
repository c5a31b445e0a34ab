"""Atomic writing: complete files or none, in folders made as needed."""
from __future__ import annotations

import os

import pytest

from mask2former.io import atomic_path, atomic_write_text


def test_writes_into_a_missing_folder(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(target, "done")
    assert target.read_text() == "done"
    assert os.listdir(target.parent) == ["out.txt"]  # no temporary left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # a plain open()'s permissions, not mkstemp's


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
