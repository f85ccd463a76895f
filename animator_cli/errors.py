"""One small exception hierarchy; the CLI maps each class to an exit code and prints one line."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class AnimatorError(Exception):
    """Base class: an error the user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1
    silent = False  # the error line was printed by another process of the same job (animator_cli.distributed)

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(AnimatorError):
    """Bad input or usage: a missing, unreadable or malformed file, an invalid option value."""

    exit_code = 2


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else an InputError naming ``what`` (e.g. "reference image") and the problem."""
    if not Path(path).is_file():
        problem = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise InputError(f"{what} {path} {problem}")
    return Path(path)


class DiskFullError(InputError):
    """The disk (or the user's quota) filled up while writing; the partial file has been removed."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        super().__init__(f"no space left on device at {path or 'the output folder'}",
                         "free some space or write the output elsewhere")


class WeightsError(AnimatorError):
    """Missing or incompatible model weights."""

    exit_code = 3


class OutOfMemoryError(AnimatorError):
    """The device ran out of memory; the hint says what to reduce."""

    exit_code = 4

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(
            message, hint or "try fewer frames, --offload, a smaller --tile or a lower resolution"
        )


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (torch's OOM error, or a RuntimeError saying so)."""
    import sys

    torch = sys.modules.get("torch")  # no torch imported means no torch allocation failed
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write failing because the disk or the user's quota is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def known_failure(exc: BaseException, device: str | None = None) -> AnimatorError | None:
    """The AnimatorError a foreign exception stands for (out of memory: exit 4, disk full: exit 2), else None.

    The CLI and `animator batch` both ask this, so a failure gets the same code and line either way."""
    if is_out_of_memory(exc):
        return OutOfMemoryError(f"out of memory on {device or 'the device'}")
    if is_disk_full(exc):
        return DiskFullError(getattr(exc, "filename", None))
    return None
