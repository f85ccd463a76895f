"""`generate --checkpoint` takes a run's checkpoint folder, the run itself, or RUN/latest."""

from __future__ import annotations

from pathlib import Path

import pytest

from animator_cli.errors import WeightsError
from animator_cli.models.loading import checkpoint_paths
from animator_cli.weights.home import WeightsHome


def _checkpoint(run: Path, step: int) -> Path:
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in ("pose_net", "face_encoder", "unet"):
        (folder / f"{name}.pth").write_bytes(b"x")
    return folder


def test_run_folder_and_latest_pick_the_newest_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _checkpoint(run, 200)
    newest = _checkpoint(run, 1000)  # 1000 > 200 numerically, though "checkpoint-1000" < "checkpoint-200" as text
    home = WeightsHome(tmp_path / "home")
    assert checkpoint_paths(home, run)["unet"] == newest / "unet.pth"
    assert checkpoint_paths(home, run / "latest")["unet"] == newest / "unet.pth"
    assert checkpoint_paths(home, run / "checkpoint-200")["unet"] == run / "checkpoint-200" / "unet.pth"


def test_run_without_checkpoints_is_a_weights_error(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(WeightsError, match="not found"):
        checkpoint_paths(WeightsHome(tmp_path / "home"), tmp_path / "run" / "latest")
