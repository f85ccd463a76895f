"""Help, usage errors, input errors and fully cached reruns answer without importing torch and its friends.

Each case runs `animator` in a fresh interpreter and reads `sys.modules` at exit: a check on what is imported,
not a timing (benchmarks/startup.py measures the time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from media import clip_with_audio

HEAVY = ("torch", "diffusers", "transformers", "insightface", "mediapipe", "onnxruntime", "accelerate")
_PROBE = f"""
import json, sys
from animator_cli.cli.app import run
code = run(sys.argv[1:])
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.__stderr__)
"""


def _run(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    """(exit code, heavy modules imported, stderr) of `animator ARGS` in a new interpreter."""
    done = subprocess.run([sys.executable, "-c", _PROBE, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], report["heavy"], done.stderr


COMMANDS = [[], ["generate"], ["animate"], ["batch"], ["extract-pose"], ["face"], ["prepare-data"], ["train"],
            ["evaluate"], ["weights"], ["weights", "check"], ["weights", "make-tiny"], ["video"], ["video", "info"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "animator")
def test_help_imports_no_heavy_module(command: list[str]) -> None:
    code, heavy, _ = _run(*command, "--help")
    assert code == 0 and heavy == []


def test_usage_errors_import_no_heavy_module() -> None:
    for args in (["gen"], ["generate", "a.png", "p", "-o", "o.mp4", "--steps", "0"],
                 ["animate", "a.png", "d.mp4", "-o", "o.mp4", "--align", "sideways"],
                 ["generate", "a.png", "p", "-o", "o.mp4", "--dtype", "fp8"]):
        code, heavy, err = _run(*args)
        assert code == 2 and heavy == [], (args, err)


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
        code, heavy, err = _run(*args)
        assert code == 2 and heavy == [] and message in err, (args, err)


def test_missing_weights_import_no_heavy_module(tmp_path: Path, astronaut_path: Path) -> None:
    clip = clip_with_audio(tmp_path / "d.mp4", frames=3, fps=10)
    code, heavy, err = _run("--weights", tmp_path / "empty-home", "animate", astronaut_path, clip, "-o",
                            tmp_path / "o.mp4")
    assert code == 3 and heavy == [] and "weights missing" in err


def test_cached_animate_rerun_imports_no_heavy_module(cli, tiny_home, tmp_path: Path, t1_path: Path) -> None:
    """The rerun finds the pose, face and generate stages cached from their keys (file hashes and parameters)."""
    clip = clip_with_audio(tmp_path / "drive.mp4", frames=4, fps=10)
    args = ["--weights", tiny_home.root, "--device", "cpu", "--json", "animate", t1_path, clip, "-o",
            tmp_path / "out.mp4", "--width", "64", "--height", "64", "--steps", "1"]
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    (tmp_path / "out.mp4").unlink()
    code, heavy, err = _run(*args, env={"ANIMATOR_CACHE": os.environ["ANIMATOR_CACHE"]})
    assert code == 0 and heavy == [], err
    assert (tmp_path / "out.mp4").is_file() and "generation cached" in err
