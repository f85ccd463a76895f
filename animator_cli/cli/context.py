"""Global CLI settings shared by every subcommand, and how results and logs are printed."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from animator_cli.cache import StageCache
from animator_cli.weights.home import WeightsHome

# Logs, tables and progress bars go to stderr; stdout carries only results.
stderr = Console(stderr=True)
log = logging.getLogger("animator")


@dataclass
class Settings:
    weights: WeightsHome = field(default_factory=WeightsHome.resolve)
    cache: StageCache = field(default_factory=StageCache)
    device: str | None = None
    quiet: bool = False
    verbose: bool = False
    json: bool = False


settings = Settings()


def configure_logging(quiet: bool, verbose: bool) -> None:
    """animator's own logger at the chosen level; every other library's stays at WARNING, even with --verbose
    (Pillow's and others' debug output would bury ours). Without a terminal, plain timestamped lines."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    if stderr.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    log.setLevel(level)


def emit(result: dict[str, Any], paths: list[Path] | None = None) -> None:
    """Print a command's result: written paths one per line, or the whole result as JSON."""
    if settings.json:
        print(json.dumps(result, default=str, indent=None))
    else:
        for path in paths or []:
            print(path)
