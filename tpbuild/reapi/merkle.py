"""Directory trees as REAPI Merkle trees, both ways: an action's input root from its resolved inputs, and
its outputs from an ActionResult (client side); an input root onto disk and outputs into an
ActionResult (worker side).

A `Directory` lists files, subdirectories and symlinks each sorted by name, serialized
deterministically, and is named by the SHA-256 of those bytes, so equal trees have equal digests on
every machine (REAPI's canonical form). Executables carry `is_executable`; no mtimes or modes enter.
Output entries are relative to the action's `out/` directory, as the local executor records them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..action import Entry, OutputEntry, Source, Symlink
from ..executor import Resolved
from .blobs import LocalBlobs, MissingBlob, Server, Upload
from .wire import digest_of, re_pb2


@dataclass
class _Dir:
    files: dict[str, re_pb2.FileNode] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, "_Dir"] = field(default_factory=dict)

    def child(self, name: str) -> "_Dir":
        return self.dirs.setdefault(name, _Dir())


def _directory(d: _Dir, seen) -> re_pb2.Directory:
    """`d` as a Directory message; `seen(message, bytes, digest)` is called for every Directory below it."""
    msg = re_pb2.Directory(
        files=[d.files[n] for n in sorted(d.files)],
        symlinks=[re_pb2.SymlinkNode(name=n, target=d.links[n]) for n in sorted(d.links)])
    for n in sorted(d.dirs):
        sub = _directory(d.dirs[n], seen)
        data = sub.SerializeToString(deterministic=True)
        dg = digest_of(data)
        seen(sub, data, dg)
        msg.directories.add(name=n, digest=dg)
    return msg


def _place(root: _Dir, rel: str) -> tuple[_Dir, str]:
    parts = rel.split("/")
    d = root
    for p in parts[:-1]:
        d = d.child(p)
    return d, parts[-1]


def _file_node(name: str, e: Entry, local: LocalBlobs, uploads: list[Upload]) -> re_pb2.FileNode:
    dg = local.wire_digest(e.digest, e.executable, e.size)
    uploads.append(Upload(dg, path=local.cas.path(e.digest, e.executable)))
    return re_pb2.FileNode(name=name, digest=dg, is_executable=e.executable)


def input_root(inputs: list[Resolved], local: LocalBlobs,
               extra_dirs: tuple[str, ...] = ()) -> tuple[re_pb2.Digest, list[Upload]]:
    """The input root of a run action (its inputs where the executor would place them, plus
    `extra_dirs`, empty directories the command expects) and every blob it needs on the server."""
    root = _Dir()
    uploads: list[Upload] = []
    for r in inputs:
        if isinstance(r.input, Source):
            e = r.entries[0]
            dg = local.source_digest(r.full_path, e.digest)
            d, name = _place(root, r.dest)
            d.files[name] = re_pb2.FileNode(name=name, digest=dg, is_executable=r.executable)
            uploads.append(Upload(dg, path=Path(r.full_path)))
            continue
        for e in r.entries:
            rel = r.dest if r.input.path else (f"{r.dest}/{e.path}" if r.dest else e.path)
            d, name = _place(root, rel)
            if isinstance(e, Symlink):
                d.links[name] = e.target
            else:
                d.files[name] = _file_node(name, e, local, uploads)
    for rel in extra_dirs:
        d = root
        for p in rel.split("/"):
            d = d.child(p)
    top = _directory(root, lambda _m, data, dg: uploads.append(Upload(dg, data=data)))
    data = top.SerializeToString(deterministic=True)
    dg = digest_of(data)
    uploads.append(Upload(dg, data=data))
    return dg, uploads


# -- results, client side --------------------------------------------------------------------------

def entries_of(result: re_pb2.ActionResult, local: LocalBlobs, prefix: str,
               outs: tuple[str, ...]) -> tuple[OutputEntry, ...]:
    """The declared outputs `outs` (below `prefix`, `out/`) as local entries, every blob fetched and
    verified. A result is data from another machine: paths it names beyond the declared outputs are
    ignored, and names inside output trees must be plain file names. MissingBlob when the server
    lacks a blob: the result cannot be used."""
    server = local.server
    out: list[OutputEntry] = []
    declared = {prefix + o: o for o in outs}

    def rel(p: str) -> str | None:
        return declared.get(p)

    for f in result.output_files:
        if (p := rel(f.path)) is not None:
            out.append(Entry.file(p, local.fetch(f.digest, f.is_executable), f.digest.size_bytes, f.is_executable))
    for s in list(result.output_symlinks) or [*result.output_file_symlinks, *result.output_directory_symlinks]:
        if (p := rel(s.path)) is not None:
            out.append(Symlink(p, s.target))
    for od in result.output_directories:
        if (p := rel(od.path)) is None:
            continue
        tree = re_pb2.Tree.FromString(server.read_bytes(od.tree_digest))
        children = {digest_of(c.SerializeToString(deterministic=True)).hash: c for c in tree.children}
        _walk(tree.root, p, children, local, out)
    out.sort(key=lambda e: e.path)
    return tuple(out)


def _walk(d: re_pb2.Directory, base: str, children: dict, local: LocalBlobs, out: list[OutputEntry]) -> None:
    for node in (*d.files, *d.symlinks, *d.directories):
        _check_name(node.name)
    for f in d.files:
        out.append(Entry.file(f"{base}/{f.name}", local.fetch(f.digest, f.is_executable), f.digest.size_bytes,
                              f.is_executable))
    for s in d.symlinks:
        out.append(Symlink(f"{base}/{s.name}", s.target))
    for sub in d.directories:
        child = children.get(sub.digest.hash)
        if child is None:
            raise MissingBlob(f"directory {base}/{sub.name} is not in its output tree")
        _walk(child, f"{base}/{sub.name}", children, local, out)


def result_of(entries: tuple[OutputEntry, ...], outs: list[str], local: LocalBlobs, prefix: str,
              log: bytes) -> tuple[re_pb2.ActionResult, list[Upload]]:
    """A local result as an ActionResult (for the remote cache): each declared output a file, symlink
    or directory (a Tree) as a remote executor would have reported it; the log as stdout."""
    uploads: list[Upload] = []
    result = re_pb2.ActionResult(exit_code=0)
    by_out: dict[str, list[OutputEntry]] = {o: [] for o in outs}
    for e in entries:
        top = next((o for o in outs if e.path == o or e.path.startswith(o + "/")), None)
        if top is None:
            raise MissingBlob(f"{e.path} is under no declared output")
        by_out[top].append(e)
    for o, es in sorted(by_out.items()):
        if len(es) == 1 and es[0].path == o:
            e = es[0]
            if isinstance(e, Symlink):
                result.output_symlinks.add(path=prefix + o, target=e.target)
            else:
                node = _file_node(o, e, local, uploads)
                result.output_files.add(path=prefix + o, digest=node.digest, is_executable=node.is_executable)
            continue
        root = _Dir()
        for e in es:
            d, name = _place(root, e.path[len(o) + 1:])
            if isinstance(e, Symlink):
                d.links[name] = e.target
            else:
                d.files[name] = _file_node(name, e, local, uploads)
        tree = tree_of(root)
        data = tree.SerializeToString(deterministic=True)
        td = digest_of(data)
        uploads.append(Upload(td, data=data))
        result.output_directories.add(path=prefix + o, tree_digest=td)
    if log:
        result.stdout_digest.CopyFrom(digest_of(log))
        uploads.append(Upload(result.stdout_digest, data=log))
    return result, uploads


def tree_of(root: _Dir) -> re_pb2.Tree:
    """A REAPI Tree: the root Directory and every Directory below it (each once)."""
    children: dict[str, re_pb2.Directory] = {}
    top = _directory(root, lambda m, _data, dg: children.setdefault(dg.hash, m))
    return re_pb2.Tree(root=top, children=[children[h] for h in sorted(children)])


# -- the worker side ------------------------------------------------------------------------------

def fetch_root(server: Server, root: re_pb2.Digest, dest: Path) -> None:
    """Write the input root `root` into the empty directory `dest`: files verified, executables 0755."""
    dirs = {root.hash: re_pb2.Directory.FromString(server.read_bytes(root))}
    pending = [dirs[root.hash]]
    while pending:  # every Directory, fetched once
        d = pending.pop()
        for sub in d.directories:
            if sub.digest.hash not in dirs:
                dirs[sub.digest.hash] = re_pb2.Directory.FromString(server.read_bytes(sub.digest))
                pending.append(dirs[sub.digest.hash])

    def place(d: re_pb2.Directory, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for f in d.files:
            _check_name(f.name)
            server.download(f.digest, path / f.name)
            os.chmod(path / f.name, 0o755 if f.is_executable else 0o644)
        for s in d.symlinks:
            _check_name(s.name)
            os.symlink(s.target, path / s.name)
        for sub in d.directories:
            _check_name(sub.name)
            place(dirs[sub.digest.hash], path / sub.name)

    place(dirs[root.hash], dest)


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise MissingBlob(f"a directory tree names {name!r}, which is not a file name")


def collect(base: Path, rel: str, result: re_pb2.ActionResult, uploads: list[Upload]) -> None:
    """Add the output at `base/rel` (if the command made it) to `result`, as a file, symlink or Tree."""
    p = base / rel
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        result.output_symlinks.add(path=rel, target=os.readlink(p))
        return
    if stat.S_ISREG(st.st_mode):
        dg = _file_digest(p)
        uploads.append(Upload(dg, path=p))
        result.output_files.add(path=rel, digest=dg, is_executable=bool(st.st_mode & stat.S_IXUSR))
        return
    root = _Dir()
    for dirpath, dirnames, filenames in os.walk(p):
        here = Path(dirpath)
        d = root
        for part in here.relative_to(p).parts:
            d = d.child(part)
        for name in dirnames + filenames:
            f = here / name
            fst = os.lstat(f)
            if stat.S_ISLNK(fst.st_mode):
                d.links[name] = os.readlink(f)
            elif stat.S_ISREG(fst.st_mode):
                dg = _file_digest(f)
                uploads.append(Upload(dg, path=f))
                d.files[name] = re_pb2.FileNode(name=name, digest=dg, is_executable=bool(fst.st_mode & stat.S_IXUSR))
            elif stat.S_ISDIR(fst.st_mode):
                d.child(name)
        dirnames[:] = [n for n in dirnames if not os.path.islink(here / n)]
    tree = tree_of(root)
    data = tree.SerializeToString(deterministic=True)
    td = digest_of(data)
    uploads.append(Upload(td, data=data))
    result.output_directories.add(path=rel, tree_digest=td)


def _file_digest(path: Path) -> re_pb2.Digest:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return re_pb2.Digest(hash=h.hexdigest(), size_bytes=size)
