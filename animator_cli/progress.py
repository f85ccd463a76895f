"""How long-running library calls say what they are doing, for the CLI and any other front end.

Two channels, neither of which imports anything heavy:

* stages: `stage("loading models")` logs a start record and an end record with the duration on the ``animator``
  logger. Each record carries ``stage`` (the name) and ``stage_event`` (``start`` or ``end``) attributes, so a
  front end can follow the stages with a `logging.Handler` (the CLI's progress bar does) and plain logs show them
  as lines;
* steps: a ``Progress`` callback ``(done, total)`` called as the current stage advances (denoising steps, pose
  frames, training steps).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

Progress = Callable[[int, int], None]
log = logging.getLogger("animator")

START, END = "start", "end"


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Log ``name`` starting and, when it completes, how long it took (INFO on the ``animator`` logger)."""
    log.info("%s ...", name, extra={"stage": name, "stage_event": START})
    started = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", name, time.perf_counter() - started, extra={"stage": name, "stage_event": END})
