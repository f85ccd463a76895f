"""Temporary names that say which process made them, and the removal of those whose process is gone.

Results are written under a temporary name next to their final one and renamed when complete (fileio.py). A
writer killed with SIGKILL, or by the out-of-memory killer, cannot remove its temporary file or folder, which then
lay next to the user's output for good. Each temporary name now carries its writer:

    .<name>.animator-<host>-<boot>-<pid>-<random><suffix>

``host`` hashes the host name and the PID namespace (a container sharing the folder has another), ``boot`` the
kernel's boot id (a PID is only meaningful within one boot). Before a process first writes into a folder it
removes the temporaries of this scheme whose writer is certainly gone: made on this host, and either in an earlier
boot, or by a PID that no longer exists. Anything else stays: other names (however similar), temporaries of a live
process (or of one that reused the PID), of another machine or container, and everything on systems without
POSIX signals. A folder a dead writer was swapping into place (``.old``, holding the previous result) is put back
when the result is missing, so no result is lost.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import shutil
import socket
from pathlib import Path

MARK = "animator"
_NAME = re.compile(rf"\.(?P<name>.+)\.{MARK}-(?P<host>[0-9a-f]{{8}})-(?P<boot>[0-9a-f]{{8}})-(?P<pid>[1-9][0-9]*)-"
                   r"[a-z0-9_]{8}(?P<suffix>\..*)?")
_swept: set[Path] = set()
log = logging.getLogger("animator")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@functools.cache
def _host() -> str:
    namespace = ""
    with contextlib.suppress(OSError):
        namespace = os.readlink("/proc/self/ns/pid")
    return _digest(f"{socket.gethostname()}\0{namespace}")


@functools.cache
def _boot() -> str:
    try:
        return _digest(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        return _digest("")  # unknown: only the PID decides


def prefix(name: str) -> str:
    """The start of a temporary name for ``name`` made by this process (``tempfile`` adds the random part)."""
    return f".{name}.{MARK}-{_host()}-{_boot()}-{os.getpid()}-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or not a PID this system has: left alone
        return True
    return True


def _writer_gone(match: re.Match[str]) -> bool:
    if match["host"] != _host():
        return False
    return match["boot"] != _boot() or not _running(int(match["pid"]))


def _remove(path: Path, match: re.Match[str]) -> None:
    """Delete a dead writer's temporary; a swap folder whose result is missing gives the previous one back."""
    if path.is_dir() and not path.is_symlink():
        target, previous = path.parent / match["name"], path / "previous"
        if match["suffix"] == ".old" and previous.exists() and not target.exists():
            os.replace(previous, target)
            log.warning("restored %s, which a killed process was replacing", target)
        shutil.rmtree(path)
    else:
        path.unlink()
    log.info("removed %s, left by a killed process", path)


def sweep(folder: Path) -> None:
    """Remove, once per process, the temporaries in ``folder`` whose writer is gone (see the module docstring)."""
    folder = Path(folder).absolute()
    if folder in _swept or os.name != "posix":
        return
    _swept.add(folder)
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            match = _NAME.fullmatch(path.name)
            if match and _writer_gone(match):
                with contextlib.suppress(OSError):
                    _remove(path, match)
