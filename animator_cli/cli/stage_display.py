"""What a long command shows on stderr while it works: the library's current stage and its step count.

The library announces stages as log records (`animator_cli.progress.stage`) and counts steps through a
``(done, total)`` callback. On a terminal that becomes one transient bar whose label follows the stage
("generate: loading models", "generate: denoising 3/25"); elsewhere (a log file, CI) the stage start and end
lines of the log stay, plus a plain "denoising: 3/25" line at most every few seconds and at the last step.
Nothing is shown with --quiet.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from animator_cli.cli.context import settings, stderr
from animator_cli.progress import START
from animator_cli.progress import Progress as StepCallback

log = logging.getLogger("animator")
LINE_INTERVAL_S = 5.0  # plain step lines at most this often


class _StageFollower(logging.Handler):
    """Remembers the current stage from the library's stage records (and renames the bar, if any)."""

    def __init__(self, label: str, bar: Progress | None) -> None:
        super().__init__()
        self.label, self.bar, self.stage = label, bar, label
        self.task = bar.add_task(label, total=None, count="") if bar is not None else None
        self.last_line = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "stage_event", None) == START:
            self.stage = record.stage  # type: ignore[attr-defined]
            if self.bar is not None:
                self.bar.update(self.task, description=f"{self.label}: {self.stage}", completed=0, total=None,
                                count="")

    def step(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total or None, count=f"{done}/{total}" if total else "")
            return
        now = time.monotonic()
        if done == total or now - self.last_line >= LINE_INTERVAL_S:
            self.last_line = now
            log.info("%s: %d/%s", self.stage, done, total or "?")


@contextlib.contextmanager
def stage_display(label: str, shown: bool = True) -> Iterator[StepCallback]:
    """Show the stages and steps of the work done in the block (not when ``shown`` is False: ranks other than 0
    of a multi-GPU run); yields the ``(done, total)`` callback to pass to the library."""
    live = shown and stderr.is_terminal and not settings.quiet
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) if live else contextlib.nullcontext() as bar:
        follower = _StageFollower(label, bar)
        log.addHandler(follower)
        try:
            yield follower.step
        finally:
            log.removeHandler(follower)
