"""Safe writes: results appear under their final name only when complete, and never over the command's inputs.

Temporary names carry their writer (scratch.py), so a later write into the same folder removes what a killed
writer left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from animator_cli import scratch
from animator_cli.errors import DiskFullError, InputError, is_disk_full


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


def _same(a: Path, b: Path) -> bool:
    """Whether two existing paths are one file or folder (one inode: symlinks and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet) or cannot be examined
        return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies below ``folder``, compared by inode so symlinks and bind mounts are seen through."""
    try:
        target = folder.stat()
    except OSError:
        return False
    for parent in path.resolve().parents:
        with contextlib.suppress(OSError):
            found = parent.stat()
            if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
                return True
    return False


def _check_writable(output: Path, folder: bool) -> None:
    """The output is of the right kind (file or folder) and its nearest existing folder is writable."""
    if output.is_dir() and not folder:
        raise InputError(f"output {output} is an existing folder", "give a file name")
    if output.exists() and not output.is_dir() and folder:
        raise InputError(f"output folder {output} is an existing file", "choose another output path")
    parent = next(p for p in output.absolute().parents if p.exists())
    if not parent.is_dir():
        raise InputError(f"output path {parent} is a file, not a directory", "choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into {parent}", "choose another output path")


def check_output_path(output: Path, inputs: Iterable[Path | str | None], *, folder: bool = False,
                      names: Iterable[str] = ()) -> None:
    """Fail with an InputError, before any work, when ``output`` cannot be written or writing it would destroy
    one of ``inputs``.

    ``output`` clashes with an input that is the same file or folder under any name (symlinks and hard links
    included), and with an existing file inside an input folder (a new file there is fine). With ``folder``,
    ``output`` is a folder the command replaces or fills, so an input inside it clashes too. ``names`` are the
    files the command writes inside ``output`` (e.g. frame_<i>.png); each is checked.
    """
    output = Path(output)
    _check_writable(output, folder or bool(names))
    targets = [output, *(output / name for name in names)]
    for source in (Path(p) for p in inputs if p is not None):
        if not source.exists():
            continue  # a missing input gets its own error; nothing of it can be lost
        for target in targets:
            resolved = target.resolve()  # `new/../in.mp4` is in.mp4 once `new` is created
            if _same(resolved, source) or (source.is_dir() and resolved.exists() and _inside(resolved, source)):
                raise InputError(f"output {target} is also an input ({source}); writing it would destroy the input",
                                 "choose another output path")
        if folder and _inside(source, output):
            raise InputError(f"output folder {output} holds the input {source}; writing it could destroy the input",
                             "choose another output folder")


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
    scratch.sweep(target.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=scratch.prefix(target.stem), suffix=suffix if suffix is not None else target.suffix,
            dir=target.parent)
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
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(target) from exc
        raise


@contextlib.contextmanager
def atomic_dir(target: Path, replace: bool = True, *,
               keep_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary directory next to ``target``; it becomes ``target`` on success.

    An existing folder at ``target`` is replaced only when ``replace`` is true (callers pass false for a
    user's folder that is not a previous result of theirs); an existing file is never replaced.
    ``keep_existing``: a folder found at ``target`` when this one is complete is kept, and this result dropped,
    when ``keep_existing(target)`` says it is sound (the same work finished by another process: a cache
    entry), so a finished folder is never swapped under a process reading it.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InputError(f"output folder {target} is an existing file", "choose another output path")
    if target.is_dir() and not replace and any(target.iterdir()):
        raise InputError(f"output folder {target} already exists and holds other files",
                         "choose a new folder, or remove it first")
    ensure_writable_dir(target.parent)
    scratch.sweep(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=scratch.prefix(target.name), suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise InputError(f"cannot write into {target.parent}: {exc.strerror}", "choose another output path") from exc
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if keep_existing is None or not _placed_or_kept(tmp, target, keep_existing):
            _swap_into_place(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise DiskFullError(target) from exc
        raise


def _placed_or_kept(tmp: Path, target: Path, keep_existing: Callable[[Path], bool]) -> bool:
    """Rename ``tmp`` to ``target`` when nothing is there (a rename onto a folder with files fails, so whichever
    process renames first wins, atomically), or drop ``tmp`` when the folder there is sound. False: a folder
    that is not sound is in the way (the caller swaps ``tmp`` in)."""
    try:
        os.rename(tmp, target)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR) or not keep_existing(target):
            return False
    shutil.rmtree(tmp, ignore_errors=True)
    return True


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target``, moving an old ``target`` aside first so it is never missing or mixed."""
    old = None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=scratch.prefix(target.name), suffix=".old", dir=target.parent))
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
