"""A run folder belongs to one config: another config is refused (exit 2), --force starts over and keeps the old."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from animator_cli.errors import InputError
from animator_cli.training.config import load_config
from animator_cli.training.run_folder import check_run_folder, start_run

TINY = "presets/tiny-cpu.yaml"


def _config(run_dir: Path, *overrides: str):
    return load_config(TINY, [f"output={run_dir}", *overrides])


def test_a_new_folder_takes_the_run_and_records_its_config(tmp_path: Path) -> None:
    config = _config(tmp_path / "run")
    check_run_folder(tmp_path / "run", config)
    (tmp_path / "run").mkdir()
    assert start_run(tmp_path / "run", config) is None
    assert load_config(tmp_path / "run" / "config.yaml") == config


def test_resuming_may_change_how_long_how_often_and_where(tmp_path: Path) -> None:
    start_run(tmp_path, _config(tmp_path))
    check_run_folder(tmp_path, _config(tmp_path, "max_steps=99", "validation.every=7", "data.path=/elsewhere",
                                       "data.num_workers=0", "model.compile=true"), resume="latest")


def test_another_config_is_refused_and_its_record_kept(tmp_path: Path) -> None:
    start_run(tmp_path, _config(tmp_path))
    before = (tmp_path / "config.yaml").read_text()
    with pytest.raises(InputError, match=r"optim.learning_rate 0\.001 → 0\.003.*resuming needs the same config"):
        check_run_folder(tmp_path, _config(tmp_path, "optim.learning_rate=3e-3"), resume="latest")
    with pytest.raises(InputError, match="and 1 more"):
        check_run_folder(tmp_path, _config(tmp_path, "seed=1", "data.stride=3", "optim.warmup_steps=3",
                                           "ema.enabled=true"))
    (tmp_path / "config.yaml").write_text("seed: [not, a, number]")
    with pytest.raises(InputError, match="cannot be read"):
        check_run_folder(tmp_path, _config(tmp_path))
    (tmp_path / "config.yaml").write_text(before)
    with pytest.raises(InputError, match="--force starts a new run and --resume continues one"):
        check_run_folder(tmp_path, _config(tmp_path), force=True, resume="latest")


def test_force_moves_the_previous_run_aside_and_nothing_else(tmp_path: Path) -> None:
    old = _config(tmp_path)
    start_run(tmp_path, old)
    for name in ("checkpoint-10", ".checkpoint-20.partial", "logs", "validation", "init"):
        (tmp_path / name).mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "checkpoint-best").mkdir()  # not a name a run writes
    new = _config(tmp_path, "optim.learning_rate=3e-3")
    check_run_folder(tmp_path, new, force=True)
    aside = start_run(tmp_path, new, force=True)
    assert aside is not None and aside.parent == tmp_path and aside.name.startswith("old-")
    assert sorted(p.name for p in aside.iterdir()) == [".checkpoint-20.partial", "checkpoint-10", "config.yaml",
                                                       "init", "logs", "metrics.jsonl", "validation"]
    assert load_config(aside / "config.yaml") == old and load_config(tmp_path / "config.yaml") == new
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint-best", "config.yaml", aside.name, "notes.txt"}
    again = start_run(tmp_path, new, force=True)  # a second restart in the same second gets its own folder
    assert again != aside and sorted(p.name for p in again.iterdir()) == ["config.yaml"]


def test_cli_refuses_before_any_work(cli, tiny_home, tmp_path: Path) -> None:
    run_dir, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    run_dir.mkdir()
    start_run(run_dir, _config(run_dir, f"data.path={data}"))
    recorded = (run_dir / "config.yaml").read_text()
    result = cli("--weights", tiny_home.root, "train", "--config", TINY, "--data", data, "--output", run_dir,
                 "--resume", "latest", "optim.learning_rate=3e-3")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "was made with another config" in error_lines[0] and "--force" in error_lines[0]
    assert (run_dir / "config.yaml").read_text() == recorded and yaml.safe_load(recorded)["optim"]["learning_rate"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
