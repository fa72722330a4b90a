"""`tpbuild publish LABEL DEST`: put a built model repository where a Triton server reads it, incrementally,
in an order that is safe for a server polling it, and prove what is there.

**The manifest** (`DEST/.tpbuild-publish.json`, first key `format: tpbuild-publish v1`) maps every file
tpbuild put into DEST to its SHA-256, size, mode and the change tag the destination reported (ETag or
mtime). It is what makes a publish incremental: a file whose SHA-256 equals its claim, and whose size
and tag in DEST still equal the claim's, is kept; everything else is uploaded. A claim whose size or
tag disagrees with DEST (changed behind tpbuild's back) is not trusted: the file is uploaded again,
with a warning. A file in DEST that no claim covers is never deleted.

**The manifest never claims a file that is not there.** Before anything is written, the manifest is
rewritten with every file about to change marked `pending` (tpbuild may have written that path, but
vouches for no content); claims are added only after their upload, and removed before their delete.
A killed publish therefore leaves a manifest that is true, and running it again finishes the job
(pending files are uploaded again). The manifest is checkpointed every few seconds during long
uploads, so a rerun does not redo hours of work.

**Order, for a server polling DEST** (triton-facts.md, "Model repositories on S3, and poll mode"):
model by model, and in each version directory the model file first: a version directory seen without
it hangs the server. A model DEST already holds gets its version directories, then its other files
(env tarball, stub), then `config.pbtxt` last, so a changed config never describes files that are not
there yet, and a half-published change fails to load (the old version keeps serving) until it is whole.
A model new to DEST is the other way round: `config.pbtxt` first, then the other files, then the
version directories. Triton 2.51 in poll mode (checked here) *loads* a model directory that has a
version with its model file but no config.pbtxt, READY with an auto-completed empty config (no inputs,
max_batch_size 0), running the model's `initialize`; with only its config it refuses it ("at least one
version must be available") and retries at each poll, as it retries a model file whose helper module
is not there yet. So a new model is never loaded with a wrong config: it fails to load (and is retried)
until its model file and the modules it imports are there.
Deletions (`--prune` only) come after every upload, in the existing-model order except that the model
file is the last file deleted from its version directory (and config.pbtxt, last of all, keeps a half-
deleted model from being auto-completed).

The files are read from the repository the build placed in tpbuild-out. Each distinct file is hashed
once: its SHA-256 is remembered by (inode, size, mtime) in `tpbuild-out/.tpbuild/publish-sha256.json`
(outputs are hardlinks of immutable cache blobs), so an unchanged GB env tarball is not read again.

Test-only: `TPBUILD_PUBLISH_TEST_KILL_AFTER=N` makes the process SIGKILL itself after its N-th upload,
so the tests can interrupt a publish at an exact point. Nothing else reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tpbuild.plugin import BuildError, Command, UserError

from .destination import Destination, open_destination

FORMAT = "tpbuild-publish v1"
VERSION_DIR = re.compile(r"^(0|[1-9][0-9]*)$")
CHECKPOINT_SECONDS = 5.0
SHA_MEMO = "tpbuild-out/.tpbuild/publish-sha256.json"


@dataclass(frozen=True)
class LocalFile:
    """One file of the built repository. `mode` is '644', '755' or 'link' (then `link` is its target)."""

    path: str
    source: Path
    sha256: str
    size: int
    mode: str
    link: str | None = None


@dataclass(frozen=True)
class Repository:
    label: str
    out_dir: Path  # the workspace's tpbuild-out
    files: dict[str, LocalFile]
    model_files: dict[str, str]  # model name -> its model file (model.py or default_model_filename)


@dataclass(frozen=True)
class Claim:
    """A manifest entry. A `pending` one only says that tpbuild may have written the path."""

    sha256: str
    size: int
    mode: str
    tag: str = ""
    link: str | None = None
    pending: bool = False

    def to_json(self) -> dict:
        d = {"sha256": self.sha256, "size": self.size, "mode": self.mode, "tag": self.tag}
        if self.link is not None:
            d["link"] = self.link
        if self.pending:
            d["pending"] = True
        return d


def _claim_of(f: LocalFile, tag: str = "", pending: bool = False) -> Claim:
    return Claim(f.sha256, f.size, f.mode, tag, f.link, pending)


@dataclass
class Manifest:
    label: str = ""
    models: dict[str, str] = field(default_factory=dict)  # model name -> model file, for ordering deletes
    files: dict[str, Claim] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        used = {p.split("/", 1)[0] for p in self.files}
        return json.dumps({"format": FORMAT, "label": self.label,
                           "models": {m: f for m, f in sorted(self.models.items()) if m in used},
                           "files": {p: c.to_json() for p, c in sorted(self.files.items())}},
                          indent=1, sort_keys=False).encode() + b"\n"

    @staticmethod
    def parse(data: bytes | None, where: str, warn) -> "Manifest":
        """An unreadable manifest, or one of another format, is no manifest: nothing in DEST is trusted
        (everything is uploaded again) and nothing is deleted."""
        if data is None:
            return Manifest()
        try:
            d = json.loads(data)
            if d.get("format") != FORMAT:
                warn(f"{where}: manifest format {d.get('format')!r} is not {FORMAT!r}; ignoring it")
                return Manifest()
            files = {p: Claim(c["sha256"], int(c["size"]), c["mode"], c.get("tag", ""), c.get("link"),
                              bool(c.get("pending", False))) for p, c in d["files"].items()}
            return Manifest(d.get("label", ""), dict(d.get("models", {})), files)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            warn(f"{where}: the manifest does not parse ({type(e).__name__}: {e}); ignoring it")
            return Manifest()


# -- the build ----------------------------------------------------------------------------------------

def build_repository(session, label: str, jobs: int) -> Repository | None:
    """Build LABEL as `tpbuild build` would and describe the repository it placed; None if the build failed."""
    if label.endswith("...") or label.endswith(":all") or label.startswith("-"):
        raise UserError(f"LABEL {label!r} must name one model_repository target, not a pattern")
    built = _build(session, label, jobs)
    if built is None:
        return None
    target, rule, root, out = built
    if rule != "model_repository":
        raise UserError(f"{target} is a {rule}, not a model_repository: publish the repository that holds the models")
    shas = _ShaMemo(root / SHA_MEMO)
    files: dict[str, LocalFile] = {}
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            full = Path(dirpath, name)
            rel = full.relative_to(out).as_posix()
            st = full.lstat()
            if full.is_symlink():
                files[rel] = LocalFile(rel, full, "", st.st_size, "link", os.readlink(full))
            else:
                files[rel] = LocalFile(rel, full, shas.sha256(full, st), st.st_size,
                                       "755" if st.st_mode & 0o100 else "644")
    shas.save()
    models = sorted({p.split("/", 1)[0] for p in files})
    model_files = {m: _model_file(files.get(f"{m}/config.pbtxt"), m) for m in models}
    return Repository(target, root / "tpbuild-out", files, model_files)


def _build(session, label: str, jobs: int) -> tuple[str, str, Path, Path] | None:
    """(target, its rule, workspace root, its output directory), or None if the build failed.

    The one place publish touches the CLI session and the engine's build result."""
    result = session.build([label], jobs=jobs)
    if result is None or not result.success:
        return None
    if len(result.requested) != 1:
        raise UserError(f"LABEL {label!r} must name one model_repository target")
    target = result.requested[0]
    return str(target), result.infos[target].rule, session.root, session.output(target)

def _model_file(config: LocalFile | None, model: str) -> str:
    from . import modelconfig

    if config is None:
        return "model.py"
    return modelconfig.default_model_filename(modelconfig.parse_text(config.source.read_text(), model))


class _ShaMemo:
    """SHA-256 of the files of the last publish from this workspace, by (inode, size, mtime). The
    files of tpbuild-out are read-only hardlinks of immutable cache blobs, so that identity names their
    content, and an env tarball linked into forty models is one inode, hashed once."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.old = json.loads(path.read_text())
        except (OSError, ValueError):
            self.old = {}
        self.new: dict[str, str] = {}

    def sha256(self, path: Path, st: os.stat_result) -> str:
        key = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        sha = self.new.get(key) or self.old.get(key)
        if sha is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            sha = h.hexdigest()
        self.new[key] = sha
        return sha

    def save(self) -> None:
        if self.new == self.old:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.new, sort_keys=True))
        os.replace(tmp, self.path)


# -- the plan -----------------------------------------------------------------------------------------

@dataclass
class Plan:
    upload: list[str] = field(default_factory=list)  # in publishing order
    keep: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)  # in deleting order (--prune)
    stale: list[str] = field(default_factory=list)  # tpbuild's files no longer in the build, left (no --prune)
    drop: list[str] = field(default_factory=list)  # claims of files that are gone from DEST and the build
    demote: list[str] = field(default_factory=list)  # stale files changed behind tpbuild's back: now pending
    # Version directories --prune removes whole: dir -> every file in it (tpbuild's, and the __pycache__
    # Python wrote beside them), in deleting order.
    retire: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def order_key(path: str, model_files: dict[str, str], new_models: frozenset = frozenset(),
              deleting: bool = False) -> tuple:
    """Where `path` goes in a publish (or, `deleting`, a prune): model by model; in a version directory
    the model file first (last when deleting); config.pbtxt after the version directories and the other
    files, except in a model new to DEST, where it goes first (see the module docstring)."""
    parts = path.split("/")
    model = parts[0]
    new = model in new_models
    if len(parts) >= 3 and VERSION_DIR.match(parts[1]):
        is_model_file = len(parts) == 3 and parts[2] == model_files.get(model, "model.py")
        return (model, 2 if new else 0, int(parts[1]), 1 if is_model_file == deleting else 0, path)
    if len(parts) == 2 and parts[1] == "config.pbtxt":
        return (model, 0 if new else 2, 0, 0, path)
    return (model, 1, 0, 0, path)


def _verified(claim: Claim | None, stored) -> bool:
    return (claim is not None and not claim.pending and stored is not None and stored.size == claim.size
            and stored.tag == claim.tag and stored.link == claim.link)


def make_plan(repo: Repository, manifest: Manifest, listing: dict, prune: bool) -> Plan:
    plan = Plan()
    foreign: list[str] = []
    for path, f in repo.files.items():
        claim, stored = manifest.files.get(path), listing.get(path)
        if _verified(claim, stored):
            if (claim.sha256, claim.mode, claim.link) == (f.sha256, f.mode, f.link):
                plan.keep.append(path)
                continue
        elif claim is not None and not claim.pending:
            plan.warnings.append(_distrust(path, claim, stored))
        elif claim is None and stored is not None:
            foreign.append(path)
        plan.upload.append(path)
    if foreign:
        plan.warnings.append(f"{len(foreign)} file(s) in DEST that tpbuild did not publish are replaced: "
                             + ", ".join(sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else ""))
    for path, claim in manifest.files.items():
        if path in repo.files:
            continue
        if path not in listing:
            plan.drop.append(path)
        elif prune:
            if not claim.pending and not _verified(claim, listing[path]):
                plan.warnings.append(_distrust(path, claim, listing[path]) + " (deleting it: --prune)")
            plan.delete.append(path)
        else:
            plan.stale.append(path)
            if not claim.pending and not _verified(claim, listing[path]):
                plan.demote.append(path)
    models = {**manifest.models, **repo.model_files}
    new_models = frozenset(repo.model_files) - {p.split("/", 1)[0] for p in listing}
    plan.upload.sort(key=lambda p: order_key(p, models, new_models))
    plan.delete.sort(key=lambda p: order_key(p, models, deleting=True))
    _retire_version_dirs(plan, repo, listing, models)
    plan.keep.sort()
    plan.stale.sort()
    return plan


def byproduct(path: str) -> bool:
    """Python's bytecode cache, which a server reading a directory DEST in place writes beside the modules."""
    return "__pycache__" in path.split("/")


def _retire_version_dirs(plan: Plan, repo: Repository, listing: dict, models: dict[str, str]) -> None:
    """A version directory must never exist without its model file, nor a model file without its config
    (the server would auto-complete one). A version directory --prune empties goes whole, with the
    __pycache__ a server wrote into it. One that also holds files tpbuild did not publish keeps every
    file tpbuild put there, and if its model leaves the build, the whole model stays: a warning says
    which, to remove by hand."""
    by_dir: dict[str, list[str]] = {}
    for p in plan.delete:
        parts = p.split("/")
        if len(parts) >= 3 and VERSION_DIR.match(parts[1]):
            by_dir.setdefault(f"{parts[0]}/{parts[1]}", []).append(p)
    keep: set[str] = set()
    for vdir, paths in sorted(by_dir.items()):
        model = vdir.split("/")[0]
        if f"{vdir}/{models.get(model, 'model.py')}" not in paths or any(q.startswith(vdir + "/") for q in repo.files):
            continue  # the directory stays, with its (new) model file
        others = [q for q in listing if q.startswith(vdir + "/") and q not in paths]
        foreign = sorted(q for q in others if not byproduct(q))
        if not foreign:
            plan.retire[vdir] = sorted(others) + paths
            continue
        held = paths if model in repo.model_files else [p for p in plan.delete if p.split("/", 1)[0] == model]
        keep.update(held)
        plan.warnings.append(f"{vdir} holds files tpbuild did not publish ({', '.join(foreign[:3])}): --prune "
                             f"leaves {vdir if model in repo.model_files else 'model ' + model} in place, so "
                             "that no version is left without its model file; remove it by hand")
    if keep:
        plan.delete = [p for p in plan.delete if p not in keep]
        plan.stale = sorted(set(plan.stale) | keep)
        plan.retire = {d: fs for d, fs in plan.retire.items() if not keep.intersection(fs)}


def _distrust(path: str, claim: Claim, stored) -> str:
    if stored is None:
        return f"{path} is missing from DEST although the manifest lists it: uploading it again"
    what = f"size {stored.size}, the manifest says {claim.size}" if stored.size != claim.size else \
        "its ETag/mtime differs from the manifest's"
    return f"{path} in DEST was changed behind tpbuild's back ({what}): uploading it again"


# -- running it ---------------------------------------------------------------------------------------

class _Progress:
    """A live line on a terminal; nothing on a CI log (which gets one line per file instead)."""

    def __init__(self, total_bytes: int, files: int):
        self.tty = sys.stderr.isatty()
        self.total, self.files = total_bytes, files
        self.done, self.index, self.path = 0, 0, ""
        self._last = 0.0

    def start(self, index: int, path: str) -> None:
        self.index, self.path = index, path
        self._show(force=True)

    def add(self, n: int) -> None:
        self.done += n
        self._show()

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.tty or (not force and now - self._last < 0.2):
            return
        self._last = now
        pct = 100 * self.done // self.total if self.total else 100
        line = f"[{self.index}/{self.files}] {pct}% {_size(self.done)}/{_size(self.total)} {self.path}"
        print(f"\r\033[K{line[:150]}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def execute(dest: Destination, repo: Repository, manifest: Manifest, plan: Plan) -> Manifest:
    files = {p: c for p, c in manifest.files.items() if p not in plan.drop}
    state = Manifest(repo.label, {**manifest.models, **repo.model_files}, files)
    for p in plan.demote:
        files[p] = Claim(files[p].sha256, files[p].size, files[p].mode, pending=True)
    if not plan.upload and not plan.delete:
        if plan.drop or plan.demote or manifest.label != repo.label:
            dest.write_manifest(state.to_bytes())
        return state
    for p in plan.upload:
        files[p] = _claim_of(repo.files[p], pending=True)
    dest.write_manifest(state.to_bytes())
    kill_after = os.environ.get("TPBUILD_PUBLISH_TEST_KILL_AFTER", "")
    kill_after = int(kill_after) if kill_after.isdigit() else 0
    progress = _Progress(sum(repo.files[p].size for p in plan.upload), len(plan.upload))
    checkpoint = time.monotonic()
    try:
        for i, p in enumerate(plan.upload, 1):
            f = repo.files[p]
            progress.start(i, p)
            stored = dest.put_link(p, f.link) if f.mode == "link" else \
                dest.put(p, f.source, f.mode == "755", progress.add)
            files[p] = _claim_of(f, stored.tag)
            if not progress.tty:
                print(f"uploaded {p} ({_size(f.size)})")
            if i == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            if time.monotonic() - checkpoint > CHECKPOINT_SECONDS:
                dest.write_manifest(state.to_bytes())
                checkpoint = time.monotonic()
    finally:
        progress.close()
    for p in plan.delete:
        files[p] = Claim(files[p].sha256, files[p].size, files[p].mode, pending=True)
    dest.write_manifest(state.to_bytes())
    if plan.delete:
        retired: set[str] = set()
        for p in plan.delete:
            vdir = "/".join(p.split("/")[:2])
            if vdir in plan.retire:
                if vdir not in retired:
                    dest.delete_dir(vdir, plan.retire[vdir])
                    retired.add(vdir)
            else:
                dest.delete(p)
            del files[p]
            print(f"deleted {p}")
        dest.write_manifest(state.to_bytes())
    return state


def verify(repo: Repository, manifest: Manifest, listing: dict, has_manifest: bool) -> list[tuple[str, str]]:
    """(path, problem) for every way DEST differs from its manifest or from the build."""
    if not has_manifest:
        return [("", "no tpbuild manifest in DEST: nothing was published there (or it was removed)")]
    out: list[tuple[str, str]] = []
    for path, f in sorted(repo.files.items()):
        claim = manifest.files.get(path)
        if claim is None:
            out.append((path, "in the build, not published"))
        elif claim.pending:
            out.append((path, "an interrupted publish left it unconfirmed"))
        elif (claim.sha256, claim.mode, claim.link) != (f.sha256, f.mode, f.link):
            out.append((path, "published content differs from the build"))
    for path, claim in sorted(manifest.files.items()):
        stored = listing.get(path)
        if stored is None:
            out.append((path, "listed in the manifest, missing from DEST"))
        elif not claim.pending and not _verified(claim, stored):
            out.append((path, f"changed in DEST (size {stored.size}, manifest {claim.size}; or its ETag/mtime)"))
        if path not in repo.files and stored is not None:
            out.append((path, "not in the build (publish --prune deletes it)"))
    for path in sorted(p for p in listing.keys() - manifest.files.keys() - repo.files.keys() if not byproduct(p)):
        out.append((path, "in DEST, not published by tpbuild"))
    return out


def reload_models(url: str, load: list[str], unload: list[str]) -> list[dict]:
    """Ask a server in explicit mode to (re)load each changed model and unload each pruned one."""
    results = []
    for name, action in [*((m, "load") for m in load), *((m, "unload") for m in unload)]:
        code, body = _post(url, f"/v2/repository/models/{name}/{action}", timeout=600)
        ok = code == 200
        state = ""
        if ok:
            _, index = _post(url, "/v2/repository/index", timeout=30)
            states = {m.get("name"): m.get("state", "") for m in index} if isinstance(index, list) else {}
            state = states.get(name, "UNAVAILABLE" if action == "unload" else "")
        message = "" if ok else (body.get("error") if isinstance(body, dict) else "") or f"HTTP {code}"
        results.append({"model": name, "action": action, "ok": ok, "state": state, "message": message})
    return results


def _post(base: str, path: str, timeout: float) -> tuple[int, object]:
    req = urllib.request.Request(base.rstrip("/") + path, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    except (urllib.error.URLError, OSError) as e:
        raise BuildError(f"--reload {base}: cannot reach the server ({getattr(e, 'reason', e)})") from None
    try:
        return code, json.loads(raw) if raw else {}
    except ValueError:
        return code, {"error": raw.decode(errors="replace")}


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _bytes(repo: Repository, manifest: Manifest, paths: list[str]) -> int:
    return sum(repo.files[p].size if p in repo.files else manifest.files[p].size for p in paths)


class PublishCommand(Command):
    name = "publish"
    help = "build a model_repository and publish it to S3 or a directory, incrementally"

    def configure(self, parser) -> None:
        parser.add_argument("label", metavar="LABEL", help="a model_repository target")
        parser.add_argument("dest", metavar="DEST", help="s3://bucket/prefix or a directory")
        parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
        parser.add_argument("--prune", action="store_true",
                            help="delete what tpbuild published earlier that is no longer in the build")
        parser.add_argument("--reload", metavar="URL",
                            help="then (re)load each changed model on this Triton server (explicit mode)")
        parser.add_argument("--verify", action="store_true",
                            help="compare DEST with its manifest and the build; exit 1 on a difference")
        parser.add_argument("--endpoint-url", metavar="URL", help="an S3-compatible endpoint (MinIO, Ceph, ...)")
        parser.add_argument("--report", metavar="FILE", help="write a JSON report of files and bytes")
        parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)

    def run(self, session, args) -> int:
        t0 = time.monotonic()
        if args.verify and (args.dry_run or args.prune or args.reload):
            raise UserError("--verify only reads DEST: it cannot be combined with --dry-run, --prune or --reload")
        dest = open_destination(args.dest, args.endpoint_url)
        report_path = Path(args.report).absolute() if args.report else None
        repo = build_repository(session, args.label, args.jobs)
        if repo is None:
            return 1
        if dest.inside(repo.out_dir):
            raise UserError(f"DEST {dest.url} is inside {repo.out_dir}, which tpbuild rewrites on every build: "
                            "publish somewhere else")
        links = sorted(p for p, f in repo.files.items() if f.mode == "link")
        if links and not dest.symlinks:
            raise UserError(f"{repo.label} holds symlinks, which {dest.url} cannot store: {', '.join(links[:5])} "
                            "(an env with format = \"dir\"? use format = \"tar.gz\" for object storage)")
        warnings: list[str] = []

        def warn(msg: str) -> None:
            warnings.append(msg)
            print(f"warning: {msg}", file=sys.stderr)

        report: dict = {"label": repo.label, "destination": dest.url}
        try:
            with dest.lock(write=not (args.verify or args.dry_run)):
                raw = dest.read_manifest()
                manifest = Manifest.parse(raw, dest.url, warn)
                if manifest.label and manifest.label != repo.label:
                    warn(f"{dest.url} was published from {manifest.label}; its files that {repo.label} does not "
                         "have count as no longer in the build")
                listing = dest.list()
                if args.verify:
                    return self._verify(repo, manifest, listing, raw is not None, dest.url, report, report_path)
                plan = make_plan(repo, manifest, listing, args.prune)
                for w in plan.warnings:
                    warn(w)
                if args.dry_run:
                    for p in plan.upload:
                        print(f"would upload {p} ({_size(repo.files[p].size)})")
                    for p in plan.delete:
                        print(f"would delete {p}")
                else:
                    execute(dest, repo, manifest, plan)
        except OSError as e:  # a directory DEST: permissions, a full disk
            raise BuildError(f"{dest.url}: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")) from None
        if plan.stale:
            stale_models = sorted({p.split("/", 1)[0] for p in plan.stale} - set(repo.model_files))
            warn(f"{len(plan.stale)} file(s) published earlier are no longer in the build and stay in DEST"
                 + (f" (models: {', '.join(stale_models)})" if stale_models else "")
                 + ": run with --prune to delete them")
        up, kept, gone = (_bytes(repo, manifest, plan.upload), _bytes(repo, manifest, plan.keep),
                          _bytes(repo, manifest, plan.delete))
        verb = "Dry run, would publish" if args.dry_run else "Published"
        print(f"{verb} {repo.label} to {dest.url}: {len(plan.upload)} uploaded ({_size(up)}), "
              f"{len(plan.keep)} kept ({_size(kept)}), {len(plan.delete)} deleted ({_size(gone)}) "
              f"in {time.monotonic() - t0:.2f}s")
        report.update({
            "dry_run": args.dry_run,
            "files": {"uploaded": [{"path": p, "size": repo.files[p].size, "sha256": repo.files[p].sha256}
                                   for p in plan.upload],
                      "kept": [{"path": p, "size": repo.files[p].size} for p in plan.keep],
                      "deleted": [{"path": p, "size": manifest.files[p].size} for p in plan.delete],
                      "stale": plan.stale},
            "bytes": {"uploaded": up, "kept": kept, "deleted": gone},
            "warnings": warnings,
        })
        code = 0
        if args.reload and not args.dry_run:
            code = self._reload(args.reload, repo, manifest, plan, report)
        report["seconds"] = round(time.monotonic() - t0, 3)
        report["success"] = code == 0
        if report_path:
            _write_report(report_path, report)
        return code

    @staticmethod
    def _reload(url: str, repo: Repository, manifest: Manifest, plan: Plan, report: dict) -> int:
        touched = {p.split("/", 1)[0] for p in plan.upload + plan.delete}
        load = sorted(touched & set(repo.model_files))
        unload = sorted(touched - set(repo.model_files))
        results = reload_models(url, load, unload)
        report["reload"] = results
        failed = 0
        for r in results:
            if r["ok"]:
                print(f"{r['action']}ed {r['model']} on {url}: {r['state'] or 'state unknown'}")
            else:
                failed += 1
                print(f"error: model {r['model']!r} failed to {r['action']} on {url}: {r['message']}",
                      file=sys.stderr)
        if not results:
            print(f"no model changed: nothing to reload on {url}")
        return 1 if failed else 0

    @staticmethod
    def _verify(repo, manifest, listing, has_manifest, url, report, report_path) -> int:
        diffs = verify(repo, manifest, listing, has_manifest)
        for path, problem in diffs:
            print(f"{path}: {problem}" if path else problem)
        if diffs:
            print(f"{url} differs from {repo.label}: {len(diffs)} difference(s)")
        else:
            print(f"{url} matches {repo.label}: {len(repo.files)} files, "
                  f"{_size(sum(f.size for f in repo.files.values()))}")
        report.update({"verify": True, "success": not diffs,
                       "differences": [{"path": p, "problem": m} for p, m in diffs]})
        if report_path:
            _write_report(report_path, report)
        return 1 if diffs else 0


def _write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
