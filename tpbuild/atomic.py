"""Atomic publication in directories that many builds (threads and processes, on one machine or on a
shared filesystem) write at once: write a temp file on the same filesystem, then rename it into place,
so a reader sees the old file or the new one, never a part. The temp names are unique per process,
thread and call, so writers never share one."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def temp_path(tmp_dir: Path, hint: str) -> Path:
    return tmp_dir / f"{hint}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}"


def write_bytes(dest: Path, data: bytes, tmp_dir: Path, hint: str) -> None:
    tmp = temp_path(tmp_dir, hint)
    tmp.write_bytes(data)
    os.replace(tmp, dest)
