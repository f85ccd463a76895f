"""`--help` pages: every option documented, panels, choices, flags without a value, one meaning per short flag."""

from __future__ import annotations

import importlib
from collections import defaultdict

import pytest
import typer

from animator_cli.cli import help as layout
from animator_cli.cli.app import COMMAND_MODULES, app
from animator_cli.cli.help import tidy_help

PANELS = {layout.OUTPUT, layout.SAMPLING, layout.IDENTITY, layout.MEMORY, layout.POSE}


@pytest.fixture(scope="module")
def commands() -> dict[str, typer.core.TyperCommand]:
    """Every leaf command by its path, e.g. "weights check", as `animator` builds them."""
    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(f"animator_cli.cli.{module}")
    root = typer.main.get_command(app)
    tidy_help(root)
    found = {"": root}

    def walk(group, prefix: str) -> None:
        for name, sub in group.commands.items():
            found[f"{prefix}{name}"] = sub
            if hasattr(sub, "commands"):
                walk(sub, f"{prefix}{name} ")

    walk(root, "")
    return found


def test_every_option_is_documented_without_pointing_at_source(commands) -> None:
    for path, command in commands.items():
        assert ".py" not in (command.help or ""), path
        for param in command.params:
            assert param.help, f"{path}: {param.name} has no help"
            assert ".py" not in param.help, f"{path}: {param.name}"


def test_one_meaning_per_short_flag(commands) -> None:
    meanings = defaultdict(set)
    for command in commands.values():
        for param in (p for p in command.params if p.param_type_name == "option"):
            shorts = [o for o in param.opts + param.secondary_opts if not o.startswith("--")]
            longs = [o for o in param.opts if o.startswith("--")]
            for short in shorts:
                meanings[short].add(longs[0])
    assert {short: longs for short, longs in meanings.items() if len(longs) > 1} == {}
    assert meanings["-r"] == {"--reference"} and meanings["-o"] == {"--output"}


@pytest.mark.parametrize("name", ["generate", "animate"])
def test_generate_options_sit_in_panels(commands, name: str) -> None:
    options = [p for p in commands[name].params if p.param_type_name == "option"]
    assert {p.rich_help_panel for p in options} <= PANELS
    assert all(p.rich_help_panel for p in options), [p.name for p in options if not p.rich_help_panel]


@pytest.mark.parametrize(("args", "shown"), [
    (["animate", "--help"], ["global|limbs|none", "auto|dwpose|mediapipe", "fp16|bf16|fp32", "cover|contain|stretch",
                             "512x512|576x1024|1024x576", layout.POSE, layout.MEMORY, layout.IDENTITY]),
    (["generate", "--help"], ["fp16|bf16|fp32", "cover|contain|stretch", layout.OUTPUT, layout.SAMPLING]),
    (["extract-pose", "--help"], ["global|limbs|none", "auto|dwpose|mediapipe"]),
    (["prepare-data", "--help"], ["auto|dwpose|mediapipe"]),
])
def test_help_lists_choices_and_panels(cli, monkeypatch, args: list[str], shown: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = cli(*args)
    assert result.exit_code == 0
    for text in shown:
        assert text in result.stdout, text


def test_no_help_page_shows_a_value_for_flags(cli, commands, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    for path in commands:
        result = cli(*path.split(), "--help")
        assert result.exit_code == 0 and "<bool>" not in result.stdout, path


def test_enumerated_values_are_checked_by_the_parser(cli) -> None:
    result = cli("generate", "ref.png", "poses", "-o", "o.mp4", "--dtype", "fp8")
    assert result.exit_code == 2 and "fp16" in result.stderr
