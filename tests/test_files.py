"""The one way files are written (tuco_kernels/files.py): whole or not at all, never through a planted link, with
the umask's permissions; locks opened without following links; folders probed before any work."""

from __future__ import annotations

import os
import stat

import pytest

from tuco_kernels import files
from tuco_kernels.errors import OutputError


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_a_new_file_gets_what_the_umask_gives_and_a_replaced_one_keeps_its_mode(tmp_path, umask_027):
    assert files.umask() == 0o027
    new = files.write_atomically(tmp_path / "new.bin", b"abc")
    assert new.read_bytes() == b"abc" and mode(new) == 0o640
    old = tmp_path / "old.bin"
    old.write_bytes(b"x")
    old.chmod(0o604)
    files.write_atomically(old, lambda f: f.write(b"written by a function"))
    assert old.read_bytes() == b"written by a function" and mode(old) == 0o604
    assert files.write_json(tmp_path / "v.json", {"a": 1}).read_text() == '{\n "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.bin", "old.bin", "v.json"]   # no temporary left


def test_a_link_at_the_target_is_replaced_and_what_it_points_to_is_untouched(tmp_path, umask_027):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    victim.chmod(0o600)
    link = tmp_path / "out.csv"
    link.symlink_to(victim)
    files.write_atomically(link, b"scores")
    assert victim.read_text() == "mine" and not link.is_symlink() and link.read_bytes() == b"scores"
    assert mode(link) == 0o640    # the umask's, not the link target's


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")

    def fails(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomically(target, fails)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_a_lock_is_never_opened_through_a_link_or_as_a_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(OutputError, match=r"\.lock: the lock file is a symbolic link"):
        files.open_lock(tmp_path / ".lock")
    assert victim.read_text() == "mine"
    (tmp_path / "dangling.lock").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="symbolic link"):
        files.open_lock(tmp_path / "dangling.lock")
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "dir.lock").mkdir()
    with pytest.raises(OutputError, match=r"dir\.lock: the lock file is a folder, not a regular file"):
        files.open_lock(tmp_path / "dir.lock")
    os.mkfifo(tmp_path / "fifo.lock")
    with pytest.raises(OutputError, match=r"fifo\.lock: the lock file is a pipe"):
        files.open_lock(tmp_path / "fifo.lock")
    fd = files.open_lock(tmp_path / "ok.lock")
    assert stat.S_ISREG(os.fstat(fd).st_mode)
    os.close(fd)


def test_writability_is_probed_by_creating_a_file(tmp_path):
    files.check_writable(tmp_path, "out.csv")
    assert list(tmp_path.iterdir()) == []                       # the probe is gone
    with pytest.raises(OutputError, match=r"^/proc/x\.csv: the folder /proc is not writable \("):
        files.check_writable("/proc", "/proc/x.csv")
    assert files.nearest_existing(tmp_path / "a" / "b" / "c") == tmp_path
