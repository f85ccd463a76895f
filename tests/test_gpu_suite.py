"""benchmarks/gpu_suite.py --tiny: the GPU suite's code path on make-tiny-sized models on the CPU."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import gpu_suite  # noqa: E402

COLUMNS = ("part", "setting", "seconds", "s/step", "compile", "peak", "tflops", "share", "note")


def _table(text: str) -> list[dict[str, str]]:
    """The rows of the report's first Markdown table."""
    lines = [line for line in text.split("\n\n")[2].splitlines() if line.startswith("| ")][1:]
    return [dict(zip(COLUMNS, (cell.strip() for cell in line.strip("|").split(" | ")), strict=True))
            for line in lines]


def _positive(cell: str) -> bool:
    return math.isfinite(float(cell)) and float(cell) > 0


def test_tiny_suite_reports_every_part(tmp_path):
    """Every row is there with finite positive numbers; a failing part and one past its budget are reported and
    the parts after them still run; the report on stdout is the file written. (The --compile rows are skipped:
    inductor compiles the tiny models' blocks for minutes on a small CPU; on a GPU they are measured.)"""
    broken = gpu_suite.Part("broken part", 5, lambda: [1 / 0])
    slow = gpu_suite.Part("slow part", 0.2, lambda: [time.sleep(5)])
    output = tmp_path / "RESULTS-gpu.md"
    text = gpu_suite.main(["--tiny", "--no-compile", "--peak-tflops", "0.001", "--output", str(output)],
                          extra_parts=(broken, slow))
    assert output.read_text() == text
    rows = _table(text)
    assert [row["part"] for row in rows] == (
        ["broken part", "slow part", "build", "UNet FLOPs", "UNet FLOPs"] + ["generate"] * 4
        + ["generate --face-opt", "train step"] + ["generate --compile"] * 4)
    assert rows[0]["note"].startswith("FAILED (ZeroDivisionError)")
    assert rows[1]["note"].startswith("FAILED (PartTimeout)") and float(rows[1]["seconds"]) < 2
    settings = [row["setting"] for row in rows if row["part"] == "generate"]
    assert settings == [f"2 frames × 2 steps, {size}, {dtype}" for size in ("64×64", "64×128")
                        for dtype in ("bf16", "fp16")]
    assert all(row["note"] == "skipped: --no-compile" for row in rows if row["part"] == "generate --compile")
    for row in rows[2:-4]:
        assert "FAILED" not in row["note"], row
        assert _positive(row["seconds"]), row
        if row["part"] != "UNet FLOPs":
            assert _positive(row["peak"]), row
        if row["part"].startswith("generate"):
            assert _positive(row["s/step"]), row
        if row["part"] == "generate":
            assert _positive(row["tflops"]) and _positive(row["share"]), row
    targets = [line for line in text.split("\n\n")[3].splitlines() if line.startswith("| ")][1:]
    assert len(targets) == 4
    assert all(" met " in line or " MISSED " in line for line in targets), targets


def test_spent_budget_skips_the_remaining_parts(tmp_path):
    text = gpu_suite.main(["--tiny", "--budget-s", "0", "--output", str(tmp_path / "r.md")])
    rows = _table(text)
    assert len(rows) == 13 and all(row["note"].startswith("skipped") for row in rows)
    assert text.count("not measured") == 4
