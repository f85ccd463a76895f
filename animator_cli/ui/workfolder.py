"""The server's work folder, where uploads, previews, gathered pose folders and results live, each removed once
nobody has used it for a while: a server left running for weeks keeps only its recent work on disk."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("animator")


class WorkFolder:
    """``root/<kind>/<entry>``: one entry (a folder, or a file) per upload or result. Gradio keeps its uploads and
    the copies it serves in ``root/uploads`` the same way, one folder per file.

    `sweep` removes the entries unused for ``keep`` seconds (the newest modification inside counts as a use, and
    so does the end of `using`), except those a check or render is using right now."""

    def __init__(self, root: Path, keep: float) -> None:
        self.root, self.keep = Path(root).resolve(), keep
        self._busy: Counter[Path] = Counter()
        self._lock = threading.Lock()  # a sweep and the start of a render never interleave

    def new(self, kind: str) -> Path:
        """A fresh, empty entry folder of ``kind`` (outputs, previews, poses)."""
        parent = self.root / kind
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=parent))

    def _entry(self, path: Path | str) -> Path | None:
        """The entry holding ``path``, or None when it lies outside the work folder."""
        try:
            parts = Path(path).resolve().relative_to(self.root).parts
        except ValueError:
            return None
        return self.root.joinpath(*parts[:2]) if len(parts) >= 2 else None

    @contextlib.contextmanager
    def using(self, *paths: Path | str | None) -> Iterator[None]:
        """Keep the entries holding ``paths`` for the duration of the block; they count as used when it ends."""
        entries = [e for e in (self._entry(p) for p in paths if p is not None) if e is not None]
        with self._lock:
            self._busy.update(entries)
        try:
            yield
        finally:
            with self._lock:
                self._busy.subtract(entries)
                self._busy = +self._busy  # drop the zeros
            for entry in entries:
                with contextlib.suppress(OSError):
                    os.utime(entry)

    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove every entry unused for ``keep`` seconds and not in use; returns the removed entries."""
        limit = (time.time() if now is None else now) - self.keep
        removed = []
        for kind in _children(self.root):
            for entry in _children(kind):
                with self._lock:
                    if entry in self._busy or _last_use(entry) >= limit:
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
                            entry.unlink()
                removed.append(entry)
        if removed:
            log.info("animator ui: removed %d upload(s) and result(s) unused for %.0f min", len(removed),
                     self.keep / 60)
        return removed

    def sweep_every(self, interval: float) -> threading.Event:
        """Sweep every ``interval`` seconds in a daemon thread until the returned event is set."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                self.sweep()

        threading.Thread(target=loop, name="animator-ui-sweep", daemon=True).start()
        return stop


def _children(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() or p.is_file()] if folder.is_dir() else []
    except OSError:
        return []


def _last_use(entry: Path) -> float:
    """The newest modification time of ``entry`` and everything in it (inf when it vanished meanwhile)."""
    try:
        newest = entry.lstat().st_mtime
        for folder, dirs, files in os.walk(entry):
            for name in (*dirs, *files):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
        return newest
    except OSError:
        return float("inf")
