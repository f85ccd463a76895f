"""Usage errors, input errors and fully cached reruns answer without importing torch and its friends (help and
`--version`: tests/test_cli.py).

Each case runs `animator` in a fresh interpreter and reads `sys.modules` at exit: a check on what is imported,
not a timing (benchmarks/startup.py measures the time).
"""

from __future__ import annotations

import os
from pathlib import Path

from fresh_process import run_fresh
from media import clip_with_audio


def test_usage_errors_import_no_heavy_module() -> None:
    for args in (["gen"], ["generate", "a.png", "p", "-o", "o.mp4", "--steps", "0"],
                 ["animate", "a.png", "d.mp4", "-o", "o.mp4", "--align", "sideways"],
                 ["generate", "a.png", "p", "-o", "o.mp4", "--dtype", "fp8"]):
        done = run_fresh(*args)
        assert done.code == 2 and done.heavy == [], (args, done.stderr)


def test_missing_inputs_import_no_heavy_module(tmp_path: Path, astronaut_path: Path) -> None:
    missing = tmp_path / "missing"
    cases = {
        ("generate", missing / "ref.png", tmp_path, "-o", tmp_path / "o.mp4"): "reference image",
        ("generate", astronaut_path, missing, "-o", tmp_path / "o.mp4"): "pose folder",
        ("animate", astronaut_path, missing / "d.mp4", "-o", tmp_path / "o.mp4"): "driving video",
        ("batch", missing / "jobs.yaml"): "jobs file",
        ("extract-pose", missing / "d.mp4"): "driving video",
        ("face", missing / "ref.png"): "reference image",
        ("prepare-data", missing, "-o", tmp_path / "ds"): "not a folder of videos",
        ("train", "--data", missing): "dataset folder",
    }
    for args, message in cases.items():
        done = run_fresh(*args)
        assert done.code == 2 and done.heavy == [] and message in done.stderr, (args, done.stderr)


def test_missing_weights_import_no_heavy_module(tmp_path: Path, astronaut_path: Path) -> None:
    clip = clip_with_audio(tmp_path / "d.mp4", frames=3, fps=10)
    done = run_fresh("--weights", tmp_path / "empty-home", "animate", astronaut_path, clip, "-o", tmp_path / "o.mp4")
    assert done.code == 3 and done.heavy == [] and "weights missing" in done.stderr


def test_cached_animate_rerun_imports_no_heavy_module(cli, tiny_home, tmp_path: Path, t1_path: Path) -> None:
    """The rerun finds the pose, face and generate stages cached from their keys (file hashes and parameters)."""
    clip = clip_with_audio(tmp_path / "drive.mp4", frames=4, fps=10)
    args = ["--weights", tiny_home.root, "--device", "cpu", "--json", "animate", t1_path, clip, "-o",
            tmp_path / "out.mp4", "--width", "64", "--height", "64", "--steps", "1"]
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    (tmp_path / "out.mp4").unlink()
    done = run_fresh(*args, env={"ANIMATOR_CACHE": os.environ["ANIMATOR_CACHE"]})
    assert done.code == 0 and done.heavy == [], done.stderr
    assert (tmp_path / "out.mp4").is_file() and "generation cached" in done.stderr
