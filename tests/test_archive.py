"""The deterministic tar.gz writer: same tree, same bytes, whatever the files' history."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from tpbuild_triton import archive

LONG = "lib/" + "/".join(["deeply_nested_directory_name"] * 5) + "/module_with_a_long_name.py"


def make_tree(root: Path, *, reverse: bool, mtime: int, loose_modes: bool) -> Path:
    """The same logical tree, built in a different order, at other times, with other permissions."""
    files = {
        "bin/tool": (b"#!/bin/sh\necho tool\n", 0o777 if loose_modes else 0o700),
        "lib/pkg/__init__.py": (b"x = 1\n", 0o666 if loose_modes else 0o600),
        "lib/pkg/data.bin": (bytes(range(256)) * 64, 0o640),
        "lib/pkg/tests/test_x.py": (b"def test(): pass\n", 0o644),
        "lib/pkg/mod.pyc": (b"\x00" * 16, 0o644),
        LONG: (b"long = True\n", 0o644),
    }
    items = sorted(files.items(), reverse=reverse)
    for rel, (data, mode) in items:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, mode)
    (root / "empty").mkdir()
    os.symlink("tool", root / "bin" / "tool-link")
    os.symlink("/usr/bin/env", root / "bin" / "abs-link")
    os.symlink("does-not-exist", root / "dangling")
    os.link(root / "lib/pkg/data.bin", root / "lib/pkg/data-hardlink.bin")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)
    return root


def test_same_tree_made_differently_gives_identical_bytes(tmp_path):
    a = make_tree(tmp_path / "first" / "a", reverse=False, mtime=1_000_000, loose_modes=False)
    b = make_tree(tmp_path / "second-place" / "b", reverse=True, mtime=1_700_000_000, loose_modes=True)
    archive.write_tar_gz(a, tmp_path / "a.tar.gz")
    archive.write_tar_gz(b, tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert oct((tmp_path / "a.tar.gz").stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "b.tar.gz", "first", "second-place"]


def test_gzip_header_and_tar_entries_are_normalised(tmp_path):
    root = make_tree(tmp_path / "t", reverse=False, mtime=1_234_567, loose_modes=True)
    out = tmp_path / "t.tar.gz"
    archive.write_tar_gz(root, out)
    raw = out.read_bytes()
    assert raw[:3] == b"\x1f\x8b\x08"
    assert raw[3] & 0x08 == 0, "gzip header must not carry a file name"
    assert raw[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"

    with tarfile.open(out) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [
        "bin", "bin/abs-link", "bin/tool", "bin/tool-link", "dangling", "empty",
        "lib", "lib/deeply_nested_directory_name",
        *["lib/" + "/".join(["deeply_nested_directory_name"] * n) for n in range(2, 6)],
        LONG, "lib/pkg", "lib/pkg/__init__.py", "lib/pkg/data-hardlink.bin", "lib/pkg/data.bin",
        "lib/pkg/mod.pyc", "lib/pkg/tests", "lib/pkg/tests/test_x.py",
    ]
    by = {m.name: m for m in members}
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
    assert by["bin"].isdir() and by["bin"].mode == 0o755
    assert by["bin/tool"].mode == 0o755
    assert by["lib/pkg/__init__.py"].mode == 0o644
    assert by["lib/pkg/data.bin"].mode == 0o644
    assert by["bin/tool-link"].issym() and by["bin/tool-link"].linkname == "tool"
    assert by["bin/abs-link"].linkname == "/usr/bin/env"
    assert by["dangling"].issym() and by["dangling"].linkname == "does-not-exist"
    # A hard link is stored as a second regular file: which name would come first is an accident.
    assert by["lib/pkg/data-hardlink.bin"].isreg() and by["lib/pkg/data-hardlink.bin"].size == 256 * 64


def test_system_tar_extracts_it_faithfully(tmp_path):
    root = make_tree(tmp_path / "t", reverse=False, mtime=5, loose_modes=False)
    out = tmp_path / "t.tar.gz"
    archive.write_tar_gz(root, out)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(dest)], check=True)
    assert (dest / LONG).read_text() == "long = True\n"
    assert (dest / "lib/pkg/data.bin").read_bytes() == bytes(range(256)) * 64
    assert os.readlink(dest / "bin/tool-link") == "tool"
    assert os.access(dest / "bin/tool", os.X_OK)
    assert subprocess.run([str(dest / "bin/tool-link")], capture_output=True, text=True).stdout == "tool\n"
    assert (dest / "empty").is_dir()


def test_exclude_globs_match_archive_paths_and_drop_subtrees(tmp_path):
    root = make_tree(tmp_path / "t", reverse=False, mtime=5, loose_modes=False)
    out = tmp_path / "t.tar.gz"
    archive.write_tar_gz(root, out, exclude=["*/tests", "*.pyc", "empty/"])
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "lib/pkg/tests" not in names and "lib/pkg/tests/test_x.py" not in names
    assert "lib/pkg/mod.pyc" not in names and "empty" not in names
    assert "lib/pkg/__init__.py" in names


def test_prune_and_normalize_tree(tmp_path):
    root = make_tree(tmp_path / "t", reverse=False, mtime=1_600_000_000, loose_modes=True)
    removed = archive.prune(root, ["*/tests", "dangling"])
    assert removed == ["dangling", "lib/pkg/tests"]
    assert not (root / "lib/pkg/tests").exists() and not os.path.lexists(root / "dangling")
    archive.normalize_tree(root)
    for node in archive.walk(root):
        assert node.st.st_mtime == 0, node.rel
        if not node.path.is_symlink():
            assert node.st.st_mode & 0o7777 == (0o755 if node.path.is_dir() or node.rel == "bin/tool" else 0o644)
    assert root.stat().st_mtime == 0 and root.stat().st_mode & 0o777 == 0o755


def test_special_files_are_refused_and_leave_nothing_behind(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_text("a")
    os.mkfifo(root / "pipe")
    with pytest.raises(archive.ArchiveError, match="pipe is neither a file"):
        archive.write_tar_gz(root, tmp_path / "t.tar.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_large_files_are_streamed_not_loaded(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    with open(root / "big", "wb") as f:
        f.truncate(96 * 1024 * 1024)
    out = tmp_path / "t.tar.gz"
    tracemalloc.start()
    try:
        archive.write_tar_gz(root, out, compresslevel=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes: the file was held in memory"
    with gzip.open(out) as g, tarfile.open(fileobj=g, mode="r|") as tar:
        member = tar.next()
        assert member.name == "big" and member.size == 96 * 1024 * 1024


def test_output_replaces_an_existing_file_atomically(tmp_path):
    root = make_tree(tmp_path / "t", reverse=False, mtime=5, loose_modes=False)
    out = tmp_path / "t.tar.gz"
    out.write_bytes(b"old")
    archive.write_tar_gz(root, out)
    with tarfile.open(out) as tar:
        assert "bin/tool" in tar.getnames()
    shutil.rmtree(root / "lib")
    archive.write_tar_gz(root, out)
    with tarfile.open(out) as tar:
        assert "lib" not in tar.getnames()
