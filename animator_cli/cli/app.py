"""`animator`: the Typer application, global options and the exit-code contract.

Exit codes: 0 ok, 1 internal error, 2 bad input or usage, 3 missing or incompatible weights,
4 out of memory, 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from animator_cli import __version__
from animator_cli.cache import StageCache
from animator_cli.cli import context
from animator_cli.cli.context import configure_logging, settings, stderr
from animator_cli.cli.help import HELP_OPTIONS, tidy_help
from animator_cli.errors import classify
from animator_cli.weights.home import WeightsHome

# Typer ≥ 0.29 vendors click; take the exception classes from wherever its Exit lives.
_click = importlib.import_module(typer.BadParameter.__module__)

app = typer.Typer(
    name="animator",
    help="Pose-driven, identity-preserving human image animation (StableAnimator).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": HELP_OPTIONS},
)


def _version(value: bool) -> None:
    if value:
        print(f"animator {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    weights: Annotated[Path | None, typer.Option(
        "--weights", envvar="ANIMATOR_HOME", help="Weights home (default ~/.cache/animator).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", envvar="ANIMATOR_CACHE", help="Stage cache (default ~/.cache/animator/stages).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="torch device, e.g. cuda, cuda:1, cpu (default: cuda when available).")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Only warnings and errors on stderr (also accepted after the command).")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="animator's debug logs and timings, full tracebacks (also after the command).")
    ] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Machine-readable result on stdout (also accepted after the command).")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    settings.weights = WeightsHome.resolve(weights)
    settings.cache = StageCache(cache_dir)
    settings.device, settings.quiet, settings.verbose, settings.json = device, quiet, verbose, json_out
    configure_logging(quiet, verbose)


# Each module adds its subcommands to `app`; a subcommand is listed here only once it works. In pipeline order,
# as `animator --help` lists them.
COMMAND_MODULES = {
    "weights": "weights_cmd",
    "video": "video_cmd",
    "extract-pose": "pose_cmd",
    "face": "face_cmd",
    "check": "check_cmd",
    "generate": "generate_cmd",
    "animate": "generate_cmd",
    "batch": "generate_cmd",
    "prepare-data": "train_cmd",
    "train": "train_cmd",
    "evaluate": "evaluate_cmd",
    "ui": "ui_cmd",
}
_VALUE_OPTIONS = {"--weights", "--cache-dir", "--device"}
_GLOBAL_FLAGS = {"--json", "--quiet", "-q", "--verbose", "-v"}  # also accepted after the command


def _register_commands(argv: list[str]) -> None:
    """Import the invoked command's module only (torch, diffusers and friends take seconds to import), or every
    module when no command is named (`animator --help`, a typo)."""
    if "--version" in argv[: _command_position(argv)]:
        return
    position = _command_position(argv)
    names = [COMMAND_MODULES[argv[position]]] if position < len(argv) else list(dict.fromkeys(COMMAND_MODULES.values()))
    for name in names:
        importlib.import_module(f"animator_cli.cli.{name}")


def _command_position(argv: list[str]) -> int:
    """Index of the first argument that names a command (len(argv) if none), skipping global options' values."""
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif arg in COMMAND_MODULES:
            return index
    return len(argv)


def _hoist_global_flags(group: typer.core.TyperGroup, argv: list[str]) -> list[str]:
    """`animator generate ... --json` means `animator --json generate ...`: global flags written after the command
    move in front of it, unless they are the value of one of the command's options or come after `--`."""
    position = _command_position(argv)
    value_options = _value_options(group, argv[position:])
    moved, rest, is_value = [], [], False
    for index, arg in enumerate(argv[position:], start=position):
        if arg == "--":
            rest += argv[index:]
            break
        if arg in _GLOBAL_FLAGS and not is_value:
            moved.append(arg)
        else:
            rest.append(arg)
        is_value = not is_value and arg in value_options
    return argv[:position] + moved + rest


# Options whose value may be left out (`--identity-guard` or `--identity-guard 0.3`), with the value that stands in:
# typer's parser has no optional values, so a bare one gets this value inserted before parsing.
OPTIONAL_VALUES = {"--identity-guard": "auto"}


def _fill_optional_values(argv: list[str]) -> list[str]:
    """``argv`` with each bare option of OPTIONAL_VALUES (not followed by a number, an empty value or its own
    value) given its stand-in value; nothing after `--` is touched."""
    filled: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            return filled + argv[index:]
        filled.append(arg)
        following = argv[index + 1] if index + 1 < len(argv) else None
        if arg in OPTIONAL_VALUES and not (following in ("", OPTIONAL_VALUES[arg]) or _is_number(following)):
            filled.append(OPTIONAL_VALUES[arg])
    return filled


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _value_options(group: typer.core.TyperGroup, args: list[str]) -> set[str]:
    """The option names that take a value in the (sub)commands that ``args`` names."""
    names: set[str] = set()
    command: typer.core.TyperGroup | typer.core.TyperCommand | None = group
    for arg in args:
        command = getattr(command, "commands", {}).get(arg)
        if command is None:
            break
        for param in command.params:
            if param.param_type_name == "option" and not param.is_flag and not param.count:
                names.update(param.opts + param.secondary_opts)
    return names


def _fail(message: str, code: int) -> int:
    if settings.verbose:
        traceback.print_exc(file=sys.stderr)
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of raising (used by `main` and the tests)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        _register_commands(argv)
        command = typer.main.get_command(app)
        tidy_help(command)
        argv = _fill_optional_values(argv)
        result = command.main(args=_hoist_global_flags(command, argv), prog_name="animator", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return _fail("interrupted", 130)
    except _click.ClickException as exc:  # usage errors: one line, like every other error
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        return _fail(f"{exc.format_message()}{hint}", exc.exit_code)
    except BaseException as exc:  # one policy (animator_cli.errors.classify): Ctrl-C, ours, OOM, disk full, bugs
        if isinstance(exc, SystemExit):
            raise
        failure = classify(exc, settings.device)
        if failure.silent:
            return failure.exit_code
        internal = failure.kind == "internal" and not settings.verbose
        hint = " (rerun with --verbose for the traceback)" if internal else ""
        return _fail(failure.cli_message + hint, failure.exit_code)


def main() -> None:
    sys.exit(run())


__all__ = ["app", "context", "main", "run"]
