"""benchmarks/gpu_suite.py --tiny: the GPU suite's code path on make-tiny-sized models on the CPU, each job in a
process of its own, every row in the report the moment it is measured."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import gpu_suite

ROOT = Path(__file__).resolve().parents[1]
HEADER = [title for _, title in gpu_suite.COLUMNS]


def _rows(text: str) -> list[dict[str, str]]:
    """The rows of the report's measurement table."""
    lines = [line for line in text.splitlines() if line.startswith("| ") and line.count(" | ") == len(HEADER) - 1]
    return [dict(zip(HEADER, (c.strip() for c in line.strip("|").split(" | ")), strict=True)) for line in lines[1:]]


def _number(cell: str) -> float:
    return float(cell.rstrip("%"))


def test_tiny_suite_measures_and_profiles(tmp_path):
    """A generate job gives cold and warm calls, loop per step, UNet share and peak memory; the profile job writes
    its page with the regions of a cold call and the top kernels of a warm UNet call."""
    output = tmp_path / "RESULTS-gpu.md"
    gpu_suite.main(["--tiny", "--parts", "generate,profile", "--variants", "default", "--dtypes", "bf16",
                    "--output", str(output)])
    text = output.read_text()
    rows = _rows(text)
    generate = [r for r in rows if r["part"] == "generate" and r["setting"] == "4 frames × 3 steps, 64×64, bf16"]
    assert len(generate) == 1, rows
    row = generate[0]
    for column in ("cold s", "warm s", "s/step", "outside s", "UNet", "TFLOP/s", "peak GiB"):
        assert math.isfinite(_number(row[column])) and _number(row[column]) > 0, (column, row)
    assert _number(row["warm s"]) > 2 * _number(row["s/step"])  # the loop's 2 timed steps are inside the call
    assert "FAILED" not in text and "killed" not in text
    page = (tmp_path / "RESULTS-gpu-parts" / "profile.md").read_text()
    for region in ("UNet", "VAE decode", "CLIP image encoder", "PoseNet"):
        assert f"| {region} |" in page
    assert "Warm UNet call: top 15 kernels" in page and "device time by kind" in page
    assert "| target | value | result | margin |" in text


def test_a_job_past_its_limit_is_killed_and_the_next_runs(tmp_path):
    output = tmp_path / "r.md"
    started = time.monotonic()
    rows = gpu_suite.main(["--tiny", "--parts", "attention", "--limit-s", "1", "--output", str(output)])
    assert time.monotonic() - started < 30
    assert len(rows) == 2 and all(r["note"].startswith("killed at its 1 s limit") for r in rows)
    assert [r["part"] for r in _rows(output.read_text())] == ["attention", "attention"]


def test_rows_survive_the_suite_being_killed(tmp_path):
    """The report holds every row measured before the suite itself was killed (SIGKILL, no clean-up)."""
    output = tmp_path / "r.md"
    process = subprocess.Popen([sys.executable, "benchmarks/gpu_suite.py", "--tiny", "--parts", "attention",
                                "--output", str(output)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (output.exists() and _rows(output.read_text())) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    rows = _rows(output.read_text())
    assert rows and rows[0]["part"] == "attention" and "torch picks" in rows[0]["note"]
    assert "| target |" not in output.read_text()  # it was stopped before the end


def test_selection_and_listing(capsys):
    gpu_suite.main(["--tiny", "--parts", "compile", "--list"])
    listed = capsys.readouterr().out.splitlines()
    assert listed and all(line.startswith("compile / compile") for line in listed)
    jobs = gpu_suite.plan(False, 989.0)
    assert jobs[2].job == {**jobs[2].job, "part": "generate", "variant": "default", "width": 512, "height": 512,
                           "frames": 16, "steps": 25}
    # every lever and every fewer-steps setting is a variant of the plan
    assert {p.job["variant"] for p in jobs} == set(gpu_suite.VARIANTS) | set(gpu_suite.SAMPLING_VARIANTS)
    ays = next(p.job for p in jobs if p.job["variant"] == "ays-10-reuse-2")
    assert ays["steps"] == 10 and ays["sampling"]["reuse_features"] == 2
