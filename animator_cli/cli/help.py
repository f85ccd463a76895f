"""How `--help` pages are laid out: option panels, choice lists for enumerated options, flags without a value.

Short flags have one meaning across every command: -h --help, -q --quiet, -v --verbose, -o --output,
-c --config, -r --reference. Every other option is long only.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

import typer

from animator_cli.check.report import CHECK_MODES
from animator_cli.options import DTYPES, RESOLUTIONS, SCHEDULES
from animator_cli.pose.align import ALIGN_MODES
from animator_cli.pose.backend import BACKENDS

# Panels of `generate`, `animate` (and `batch`): a new option names its panel with rich_help_panel=<one of these>.
OUTPUT = "Output"
SAMPLING = "Sampling"
IDENTITY = "Identity and face optimisation (HJB)"
MEMORY = "Memory and speed"
POSE = "Pose extraction"


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """An Enum of the library's accepted ``values``, so Typer validates them and lists them in `--help`.
    The command passes ``member.value`` on to the library."""
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


AlignChoice = choices("Align", ALIGN_MODES)
BackendChoice = choices("Backend", BACKENDS)
CheckMode = choices("CheckMode", CHECK_MODES)
DtypeChoice = choices("Dtype", DTYPES)
ResolutionChoice = choices("Resolution", RESOLUTIONS)
ScheduleChoice = choices("Schedule", SCHEDULES)
HELP_OPTIONS = ["-h", "--help"]


def tidy_help(command: typer.core.TyperGroup | typer.core.TyperCommand) -> None:
    """Flags take no value: drop the ``<bool>`` placeholder Typer shows for them, in every (sub)command (the help
    option is made here, once, so that it is the one the command later uses)."""
    help_option = command.get_help_option(typer.Context(command, help_option_names=HELP_OPTIONS))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
