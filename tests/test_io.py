"""Atomic writes leave the old file or the new one, with the usual permissions, and no temporary behind."""

import os
import stat

import pytest

from polydistill.io import atomic_file, atomic_write_text


def test_written_files_get_umask_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.md", "x")
        atomic_file(tmp_path / "b.png", lambda tmp: tmp.write_bytes(b"png"))
    finally:
        os.umask(old)
    for name in ("a.md", "b.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"previous")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_file(target, broken)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


def test_the_temporary_keeps_the_suffix_so_format_sniffing_writers_work(tmp_path):
    seen = []
    atomic_file(tmp_path / "p.png", lambda tmp: (seen.append(tmp.suffix), tmp.write_bytes(b"")))
    assert seen == [".png"]
