"""Atomic writes: results appear under their final name only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from animator_cli.errors import InputError


def ensure_writable_dir(directory: Path) -> Path:
    """Create ``directory`` if needed and check it is writable, failing with an InputError."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"output path {directory} is a file, not a directory", "choose another output path")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {directory}: {exc.strerror}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"output directory {directory} is not writable", "choose another -o path")
    return directory


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_sibling(target: Path, suffix: str | None = None) -> Path:
    """A fresh, empty temporary file next to ``target`` (same filesystem, so a rename is atomic)."""
    target = Path(target)
    if target.is_dir():
        raise InputError(f"output {target} is an existing folder", "give a file name")
    ensure_writable_dir(target.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=suffix if suffix is not None else target.suffix, dir=target.parent)
    except OSError as exc:
        raise InputError(f"cannot write into {target.parent}: {exc.strerror}", "choose another output path") from exc
    os.close(fd)
    os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; results should look like any other file
    return Path(tmp_name)


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file path next to ``target``; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched, so an
    interrupted run never leaves a half-written result under the final name.
    """
    tmp = temp_sibling(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary directory next to ``target``; it becomes ``target`` on success.

    An existing folder at ``target`` is replaced only when ``replace`` is true (callers pass false for a
    user's folder that is not a previous result of theirs); an existing file is never replaced.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InputError(f"output folder {target} is an existing file", "choose another output path")
    if target.is_dir() and not replace and any(target.iterdir()):
        raise InputError(f"output folder {target} already exists and holds other files",
                         "choose a new folder, or remove it first")
    ensure_writable_dir(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise InputError(f"cannot write into {target.parent}: {exc.strerror}", "choose another output path") from exc
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target``, moving an old ``target`` aside first so it is never missing or mixed."""
    old = None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "previous")
        os.replace(tmp, target)
    except OSError as exc:
        if old is not None and (old / "previous").exists() and not target.exists():
            os.replace(old / "previous", target)  # put the previous result back
        raise InputError(f"cannot replace {target}: {exc.strerror}", "choose another output folder") from exc
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
