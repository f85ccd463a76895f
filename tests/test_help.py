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


def _walk(group: typer.core.TyperGroup) -> dict[str, typer.core.TyperCommand]:
    """Every (sub)command of ``group`` by its path, e.g. "weights check"; the group itself is ""."""
    found = {"": group}

    def walk(parent, prefix: str) -> None:
        for name, sub in parent.commands.items():
            found[f"{prefix}{name}"] = sub
            if hasattr(sub, "commands"):
                walk(sub, f"{prefix}{name} ")

    walk(group, "")
    return found


@pytest.fixture(scope="module")
def commands() -> dict[str, typer.core.TyperCommand]:
    """Every leaf command by its path, e.g. "weights check", as `animator` builds them."""
    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(f"animator_cli.cli.{module}")
    root = typer.main.get_command(app)
    tidy_help(root)
    return _walk(root)


def test_every_option_is_documented_without_pointing_at_source(commands) -> None:
    for path, command in commands.items():
        assert ".py" not in (command.help or ""), path
        for param in command.params:
            assert param.help, f"{path}: {param.name} has no help"
            assert ".py" not in param.help, f"{path}: {param.name}"


# Parameter names that mean one thing (the first names the concept): whichever of them a command uses, its flag
# must be spelled the same.
SYNONYMS = (
    ("pose_backend", "backend"),
    ("output", "out", "out_dir", "output_dir"),
    ("reference", "ref", "reference_image"),
    ("max_frames", "frames", "num_frames"),
    ("force", "overwrite"),
    ("compiled", "compile"),
    ("weights", "weights_home", "home"),
    ("checkpoint", "checkpoint_dir"),
    ("fps", "frame_rate"),
)
# Hidden options that keep an old spelling readable: (command, old flag) → the option it stands for.
RENAMED = {("extract-pose", "--backend"): "--pose-backend"}


def _concept(name: str) -> str:
    return next((group[0] for group in SYNONYMS if name in group), name)


def _options(commands: dict[str, typer.core.TyperCommand]):
    for path, command in commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                yield path, param


def spelling_conflicts(commands: dict[str, typer.core.TyperCommand]) -> dict[str, set[tuple[str, ...]]]:
    """Concepts whose (visible) options are spelled differently in different commands."""
    spellings = defaultdict(set)
    for _, param in _options(commands):
        if not param.hidden:
            spellings[_concept(param.name)].add(tuple(o for o in param.opts + param.secondary_opts
                                                      if o.startswith("--")))
    return {concept: flags for concept, flags in spellings.items() if len(flags) > 1}


def short_flag_conflicts(commands: dict[str, typer.core.TyperCommand]) -> dict[str, set[str]]:
    """Short flags bound to different concepts in different commands."""
    meanings = defaultdict(set)
    for _, param in _options(commands):
        for short in (o for o in param.opts + param.secondary_opts if not o.startswith("--")):
            meanings[short].add(_concept(param.name))
    return {short: names for short, names in meanings.items() if len(names) > 1}


def test_one_spelling_per_option(commands) -> None:
    assert spelling_conflicts(commands) == {}
    hidden = {(path, param.opts[0]) for path, param in _options(commands) if param.hidden}
    assert hidden == set(RENAMED)  # a hidden option is an old spelling kept on purpose, nothing else
    for (path, _), new in RENAMED.items():
        assert any(new in param.opts for param in commands[path].params)


def test_one_meaning_per_short_flag(commands) -> None:
    assert short_flag_conflicts(commands) == {}
    shorts = {o: _concept(p.name) for _, p in _options(commands) for o in p.opts if not o.startswith("--")}
    assert shorts["-r"] == "reference" and shorts["-o"] == "output"


def test_the_rules_catch_two_names_and_two_meanings() -> None:
    """A command tree that breaks both rules, as extract-pose --backend beside check --pose-backend did."""
    broken = typer.Typer()

    @broken.command("one")
    def one(backend: str = typer.Option("auto", "--backend"), reference: str = typer.Option("", "-r")) -> None:
        """One."""

    @broken.command("two")
    def two(pose_backend: str = typer.Option("auto", "--pose-backend"),
            resolution: str = typer.Option("", "-r")) -> None:
        """Two."""

    tree = _walk(typer.main.get_command(broken))
    assert spelling_conflicts(tree) == {"pose_backend": {("--backend",), ("--pose-backend",)}}
    assert short_flag_conflicts(tree) == {"-r": {"reference", "resolution"}}


def test_old_backend_spelling_is_still_read(cli, tmp_path) -> None:
    result = cli("--weights", tmp_path / "empty-home", "extract-pose", tmp_path / "none.mp4", "--backend", "dwpose")
    assert result.exit_code == 2 and "does not exist" in result.stderr  # parsed, then the missing video named
    both = cli("extract-pose", tmp_path / "none.mp4", "--backend", "dwpose", "--pose-backend", "mediapipe")
    assert both.exit_code == 2 and "--backend is the old name of --pose-backend" in both.stderr
    assert "--backend" not in cli("extract-pose", "--help").stdout.replace("--pose-backend", "")


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
