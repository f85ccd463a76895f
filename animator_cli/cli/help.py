"""How `--help` pages are laid out: option panels, choice lists for enumerated options, flags without a value.

One option, one spelling in every command (`--pose-backend`, never `--backend` in one and `--pose-backend` in
another); an old spelling stays readable as a hidden option (`renamed_option`). Short flags have one meaning across
every command: -h --help, -q --quiet, -v --verbose, -o --output, -c --config, -r --reference. Every other option
is long only. tests/test_help.py holds the command tree to both rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import TypeVar

import typer

from animator_cli.check.report import CHECK_MODES
from animator_cli.errors import InputError
from animator_cli.options import ATTENTION_BACKENDS, COMPILE_MODES, DTYPES, RESOLUTIONS, SCHEDULES
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
AttentionChoice = choices("Attention", ATTENTION_BACKENDS)
CompileModeChoice = choices("CompileMode", COMPILE_MODES)
BackendChoice = choices("Backend", BACKENDS)
CheckMode = choices("CheckMode", CHECK_MODES)
DtypeChoice = choices("Dtype", DTYPES)
ResolutionChoice = choices("Resolution", RESOLUTIONS)
ScheduleChoice = choices("Schedule", SCHEDULES)
HELP_OPTIONS = ["-h", "--help"]
T = TypeVar("T")


def renamed_option(ctx: typer.Context, name: str, value: T, old_value: T | None, old_flag: str) -> T:
    """The value of option ``name``, or of its old spelling ``old_flag`` (a hidden option kept so that existing
    scripts run). Both on one command line must agree."""
    if old_value is None:
        return value
    given = ctx.get_parameter_source(name)
    if given is not None and given.name == "COMMANDLINE" and value != old_value:
        flag = next(p.opts[0] for p in ctx.command.params if p.name == name)
        raise InputError(f"{old_flag} is the old name of {flag}, and the two disagree", f"give {flag} only")
    return old_value


def tidy_help(command: typer.core.TyperGroup | typer.core.TyperCommand) -> None:
    """Flags take no value: drop the ``<bool>`` placeholder Typer shows for them, in every (sub)command (the help
    option is made here, once, so that it is the one the command later uses)."""
    help_option = command.get_help_option(typer.Context(command, help_option_names=HELP_OPTIONS))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
