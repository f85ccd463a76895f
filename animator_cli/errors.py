"""One small exception hierarchy and the one policy that turns any exception into a failure report.

Exceptions say what kind of failure they are (`Kind`); `classify` maps any exception (ours, torch's out of memory,
a full disk, Ctrl-C, a bug) to its kind, exit code and one-line message. The CLI, `animator batch`, every rank of a
multi-GPU run and the web page all report through it, so one failure reads the same everywhere.

Library messages name an option by its Python name (``width``); the CLI spells it as its flag (``--width``)
through `Failure.cli_message`.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass
from pathlib import Path


class Kind(str, enum.Enum):
    """What went wrong, from the user's side. Its exit code is `EXIT_CODES`'s, the README's table."""

    INTERNAL = "internal"  # a bug: the traceback helps
    INPUT = "input"  # bad input or usage, a full disk: the user can fix it
    WEIGHTS = "weights"  # missing or incompatible model weights
    OUT_OF_MEMORY = "out_of_memory"
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM


EXIT_CODES = {Kind.INTERNAL: 1, Kind.INPUT: 2, Kind.WEIGHTS: 3, Kind.OUT_OF_MEMORY: 4, Kind.INTERRUPTED: 130}


class AnimatorError(Exception):
    """Base class: an error the user can act on, of kind ``kind``. ``option``: the option at fault (Python name),
    whose value starts the message."""

    kind = Kind.INTERNAL
    silent = False  # the error line was printed by another process of the same job (animator_cli.distributed)

    def __init__(self, message: str, hint: str | None = None, *, option: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint, self.option = message, hint, option

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(AnimatorError):
    """Bad input or usage: a missing, unreadable or malformed file, an invalid option value."""

    kind = Kind.INPUT


def option_error(option: str, value: object, problem: str, hint: str | None = None) -> InputError:
    """An invalid option value, said as ``"<option> <value> <problem>"`` (``value`` None: left out) with the
    option's Python name (the CLI spells it as its flag)."""
    return InputError(" ".join(str(part) for part in (option, value, problem) if part is not None), hint,
                      option=option)


def require_file(path: Path, what: str, option: str | None = None) -> Path:
    """``path`` if it is a file, else an InputError naming ``what`` (e.g. "reference image", or the ``option``
    that names the file) and the problem."""
    if not Path(path).is_file():
        problem = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise InputError(f"{what} {path} {problem}", option=option)
    return Path(path)


class DiskFullError(InputError):
    """The disk (or the user's quota) filled up while writing; the partial file has been removed."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        super().__init__(f"no space left on device at {path or 'the output folder'}",
                         "free some space or write the output elsewhere")


class WeightsError(AnimatorError):
    """Missing or incompatible model weights."""

    kind = Kind.WEIGHTS


class OutOfMemoryError(AnimatorError):
    """The device ran out of memory; the hint says what to reduce."""

    kind = Kind.OUT_OF_MEMORY

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


def flag(option: str) -> str:
    """The CLI's spelling of an option's Python name: ``face_opt_lr`` → ``--face-opt-lr``."""
    return "--" + option.replace("_", "-")


@dataclass(frozen=True)
class Failure:
    """What an exception means to the user: its kind, exit code and one line (library and CLI spellings)."""

    kind: Kind
    message: str
    cli_message: str
    silent: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]


def classify(exc: BaseException, device: str | None = None) -> Failure:
    """The failure ``exc`` stands for: ours by their kind; the device out of memory (exit 4) and a full disk
    (exit 2) from any library; Ctrl-C; anything else an internal error (exit 1)."""
    if isinstance(exc, KeyboardInterrupt):
        return Failure(Kind.INTERRUPTED, "interrupted", "interrupted")
    if not isinstance(exc, AnimatorError):
        if is_out_of_memory(exc):
            exc = OutOfMemoryError(f"out of memory on {device or 'the device'}")
        elif is_disk_full(exc):
            exc = DiskFullError(getattr(exc, "filename", None))
        else:
            text = str(exc).strip().splitlines()
            message = f"internal error: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
            return Failure(Kind.INTERNAL, message, message)
    message = cli_message = str(exc)
    if exc.option and message.startswith(exc.option):
        cli_message = flag(exc.option) + message[len(exc.option):]
    return Failure(exc.kind, message, cli_message, exc.silent)
