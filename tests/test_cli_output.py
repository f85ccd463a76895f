"""What the CLI prints on stderr: global flags after the command, quiet third-party loggers, stage and step lines."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from media import clip_with_audio
from rich.console import Console

from animator_cli.cli import stage_display as display
from animator_cli.device import cuda_available, device_type
from animator_cli.options import Runtime
from animator_cli.progress import stage
from animator_cli.video import write_frame


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return clip_with_audio(tmp_path / "clip.mp4", frames=3, fps=10)


def test_global_flags_after_the_command(cli, clip: Path, tmp_path: Path, monkeypatch) -> None:
    result = cli("video", "info", clip, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["frame_count"] == 3
    result = cli("video", "frames", clip, "-o", tmp_path / "f", "-q", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["frames"] == 3
    monkeypatch.chdir(tmp_path)  # an option's value that looks like a flag stays the value
    result = cli("video", "frames", clip, "-o", "--json")
    assert result.exit_code == 0 and (tmp_path / "--json" / "frame_0.png").is_file()
    assert result.stdout.strip() == "--json"


def test_verbose_keeps_third_party_debug_logs_out(cli, tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    for i in range(3):
        write_frame(tmp_path / "frames", i, np.full((64, 64, 3), 40 * i, np.uint8))
    result = cli("-v", "video", "encode", tmp_path / "frames", "-o", tmp_path / "o.mp4")
    assert result.exit_code == 0
    assert "STREAM" not in result.stderr  # Pillow's PNG chunk debug lines
    assert logging.getLogger("PIL").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("animator").getEffectiveLevel() == logging.DEBUG


def test_generate_without_a_terminal_prints_stages_and_steps(cli, tiny_home, tmp_path: Path,
                                                             astronaut_path: Path) -> None:
    poses = tmp_path / "poses"
    poses.mkdir()
    for i in range(2):
        write_frame(poses, i, np.zeros((64, 64, 3), np.uint8))
    result = cli("--weights", tiny_home.root, "--device", "cpu", "generate", astronaut_path, poses, "-o",
                 tmp_path / "o.mp4", "--width", 64, "--height", 64, "--steps", 2)
    assert result.exit_code == 0, result.stderr
    order = ["face ...", "face: done in", "loading models ...", "loading models: done in", "denoising ...",
             "denoising: 2/2", "denoising: done in", "decoding ...", "decoding: done in", "writing ..."]
    positions = [result.stderr.find(text) for text in order]
    assert -1 not in positions and positions == sorted(positions), result.stderr
    assert "None" not in result.stderr


def test_terminal_bar_follows_the_stages(monkeypatch) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    monkeypatch.setattr(display, "stderr", console)
    logging.getLogger("animator").setLevel(logging.INFO)
    with display.stage_display("generate") as progress:
        bar = next(h for h in logging.getLogger("animator").handlers if isinstance(h, display._StageFollower))
        task = bar.bar.tasks[0]
        with stage("loading models"):
            assert task.description == "generate: loading models" and task.fields["count"] == ""
        with stage("denoising"):
            progress(3, 25)
            assert task.description == "generate: denoising" and task.fields["count"] == "3/25"
    assert not any(isinstance(h, display._StageFollower) for h in logging.getLogger("animator").handlers)


@pytest.mark.parametrize("runtime", [Runtime(), Runtime(device="cpu", dtype="bf16"), Runtime(device="cuda:1"),
                                     Runtime(device="cuda", dtype="fp32")])
def test_cache_key_device_and_dtype_match_torchs(runtime: Runtime) -> None:
    """The torch-free names the generation cache key uses are the ones torch gave before (same keys)."""
    assert cuda_available() == torch.cuda.is_available()
    assert device_type(runtime.device_name()) == runtime.torch_device().type
    assert f"torch.{runtime.dtype_name()}" == str(runtime.torch_dtype())
