"""Stage cache: each stage's output lives in a directory keyed by what produced it.

The key hashes the content of the stage's input files, its parameters and the package version.
A finished entry holds ``manifest.json``; an entry is built in a temporary directory and renamed
into place only when complete, so an interrupted run never leaves a result a rerun would trust.
The manifest records the size and SHA-256 of every file of the entry; an entry is served only while they
match, so a truncated or altered file (a full disk, a crash of another tool, a manual edit) is rebuilt instead
of copied to the user. Entries written before files were recorded this way are rebuilt too.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from animator_cli import __version__
from animator_cli.errors import InputError
from animator_cli.fileio import atomic_dir

MANIFEST = "manifest.json"
ABANDONED_AFTER_S = 7 * 24 * 3600  # a scratch folder untouched this long belongs to a build that died
# atomic_dir's scratch names before they carried their writer (scratch.py removes the newer ones once it is gone):
# tempfile's 8 characters after the key.
_SCRATCH_NAME = re.compile(r"\.[0-9a-f]{24}\.[a-z0-9_]{8}\.(tmp|old)")
_CHUNK = 1 << 20
_SETTLED_NS = 2_000_000_000  # an input unchanged for this long may be hashed once per process
log = logging.getLogger("animator")


def default_cache_dir() -> Path:
    """``$ANIMATOR_CACHE``, else ``$XDG_CACHE_HOME/animator/stages``, else ``~/.cache/animator/stages``."""
    if env := os.environ.get("ANIMATOR_CACHE"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "animator" / "stages"


def hash_path(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's relative names and file contents."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(hash_path(child).encode())
        return digest.hexdigest()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(_CHUNK):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    return digest.hexdigest()


def hash_input(path: Path) -> str:
    """`hash_path` of a stage's input. A file is read once per process while it stays the same file (inode, size,
    mtime): `animate` hands the reference and the driving video to several stages (check, pose, face, generate).
    A file changed in the last seconds is always read, since a rewrite within the file system's timestamp
    granularity would keep its mtime (git's "racily clean" rule)."""
    path = Path(path)
    if not path.is_file():
        return hash_path(path)
    st = path.stat()
    if time.time_ns() - st.st_mtime_ns < _SETTLED_NS:
        return hash_path(path)
    return _file_digest(str(path.resolve()), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, _stamp: tuple[int, int, int, int]) -> str:
    return hash_path(Path(path))


def _canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))


@dataclass(frozen=True)
class CacheEntry:
    stage: str
    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def intact(self) -> bool:
        """A finished entry whose files match its manifest (no side effect; `done` also drops a damaged one)."""
        return (self.path / MANIFEST).is_file() and self._damage() is None

    @property
    def done(self) -> bool:
        """Whether a finished, intact entry is here. A damaged or outdated entry is removed (with one log
        line) and reported as not done, so the caller rebuilds it."""
        if not (self.path / MANIFEST).is_file():
            return False
        problem = self._damage()
        if problem is None:
            return True
        if problem:
            log.warning("cache entry %s is damaged (%s); rebuilding", self.path, problem)
        else:
            log.info("cache entry %s predates file checks; rebuilding", self.path)
        shutil.rmtree(self.path, ignore_errors=True)
        return False

    def _damage(self) -> str | None:
        """None for an intact entry, "" for one without recorded sizes and hashes, else what is wrong."""
        try:
            files = self.read_manifest().get("files")
        except (OSError, ValueError, AttributeError):
            return f"{MANIFEST}: unreadable"
        if not isinstance(files, dict) or not all(isinstance(r, dict) for r in files.values()):
            return ""
        for name, record in files.items():
            path = self.path / name
            try:
                size = path.stat().st_size
            except OSError:
                return f"{name}: missing"
            if size != record.get("size"):
                return f"{name}: size mismatch"
            try:
                digest = hash_path(path)
            except InputError:
                return f"{name}: unreadable"
            if digest != record.get("sha256"):
                return f"{name}: hash mismatch"
        return None

    @contextlib.contextmanager
    def writing(self, replace: bool = False) -> Iterator[Path]:
        """Yield a scratch directory; on success it becomes this entry, manifest (with each file's size and
        SHA-256) included. An intact entry found there by then (another process finished the same work: batch
        shards sharing a reference, a shared cache folder) is kept and this copy dropped, so processes reading
        it never see it swapped; ``replace`` (``--force``) swaps this copy in instead."""
        sweep_abandoned(self.path.parent)
        with atomic_dir(self.path, keep_existing=None if replace else lambda _: self.intact) as tmp:
            yield tmp
            files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": hash_path(p)}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            record = dict(self.manifest, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), files=files)
            (tmp / MANIFEST).write_text(json.dumps(record, indent=2))

    def read_manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())


def sweep_abandoned(stage_dir: Path, older_than_s: float = ABANDONED_AFTER_S) -> None:
    """Remove the scratch folders (``.<key>.<random>.tmp``/``.old``, as `atomic_dir` named them in earlier versions)
    of builds that died without cleaning up (killed, out of host memory) and were not touched for ``older_than_s``:
    a live build writes into its folder. Nothing else in the folder is touched, whatever its name."""
    try:
        scratch = [p for p in Path(stage_dir).iterdir() if _SCRATCH_NAME.fullmatch(p.name)]
    except OSError:
        return
    limit = time.time() - older_than_s
    for path in scratch:
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_mtime < limit:
                log.info("removing an abandoned cache build %s", path)
                shutil.rmtree(path, ignore_errors=True)


class StageCache:
    """A directory of stage outputs, ``<root>/<stage>/<key>/``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()

    def entry(self, stage: str, inputs: Iterable[Path], params: Mapping[str, Any]) -> CacheEntry:
        hashed = {str(Path(p)): hash_input(Path(p)) for p in inputs}
        digest = hashlib.sha256()
        digest.update(f"{stage}\0{__version__}\0".encode())
        digest.update("\0".join(hashed.values()).encode())  # order matters: roles differ
        digest.update(_canonical(params).encode())
        key = digest.hexdigest()[:24]
        manifest = {"stage": stage, "key": key, "version": __version__,
                    "inputs": hashed, "params": json.loads(_canonical(params))}
        return CacheEntry(stage, key, self.root / stage / key, manifest)
