"""The one-command GPU benchmark suite: what a session lent a GPU for a few minutes runs first.

    python benchmarks/gpu_suite.py                          # CUDA, full-size random models, ≤ 8 min, no download
    python benchmarks/gpu_suite.py --parts generate,profile --variants default,cudnn-benchmark-off
    python benchmarks/gpu_suite.py --tiny                   # every part on make-tiny-sized models, on the CPU
    python benchmarks/gpu_suite.py --list                   # the jobs it would run, in order

Each job (a part, a variant, a size, a dtype) runs in a process of its own (benchmarks/gpu_parts.py) under a
wall-clock limit: a hung CUDA call is killed with its process and the next job goes on; each job has a fresh
allocator, its own peak and its own random models. Every row is printed and appended to the report (``--output``,
Markdown) the moment the job measures it, so a suite stopped at any point keeps its rows. Jobs run most important
first; once the time budget is spent the rest are listed as skipped. At the end the targets of issue 19 are
appended, met or missed with their margin.

Columns: cold s — a fresh process's first whole call (encoders, 25 steps, decoding; what a CLI user pays beyond
start-up and loading); warm s — the second call; s/step — the warm loop per step (steps 2..N on the device clock,
CUDA events, no host synchronisation inside the loop); outside s — the warm call's time outside that loop; UNet —
the UNet calls' share of the loop; TFLOP/s and % of peak over the loop (UNet FLOPs counted on the meta device);
peak GiB — allocated (warm call; the cold call's in the note) and reserved.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets; the first name found in the device name
# wins, so "H100 PCIe" precedes "H100" (SXM).
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
               ("L4", 121.0), ("A10", 125.0))
TOTAL_BUDGET_S = 450.0  # with the machine's start and the transfers, the suite stays under 8 minutes

# Runtime overrides of each variant (benchmarks/gpu_parts.py passes them to `Runtime`).
VARIANTS: dict[str, dict] = {
    "default": {},
    "cudnn-benchmark-off": {"cudnn_benchmark": False},
    "channels-last-3d": {"channels_last_3d": True},
    "temporal-conv-2d": {"temporal_conv_2d": True},
    "attention-cudnn": {"attention": "cudnn"},
    "attention-flash": {"attention": "flash"},
    "attention-efficient": {"attention": "efficient"},
    "fp8": {"fp8": True},
    "compile": {"compile": True},
    "compile-max-autotune": {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"},
    "compile-cudagraphs": {"compile": True, "compile_mode": "reduce-overhead"},
    "window-batch-auto": {"window_batch": None},
}
# SamplingOptions overrides of the fewer/cheaper-step variants (docs/speed.md; benchmarks/fewer_steps.py compares
# their output with the default's on the tiny home). They change the output.
SAMPLING_VARIANTS: dict[str, dict] = {
    "ays-10": {"schedule": "ays", "steps": 10},
    "ays-10-reuse-2": {"schedule": "ays", "steps": 10, "reuse_features": 2},
    "ays-10-reuse-3": {"schedule": "ays", "steps": 10, "reuse_features": 3},
}


@dataclass(frozen=True)
class Planned:
    """One job of the plan: what gpu_parts.py gets, its time limit, and the inductor cache it shares (compile)."""

    job: dict
    limit_s: float
    cache: str | None = None  # name of the inductor cache folder: the second job naming it finds it warm

    @property
    def label(self) -> str:
        j = self.job
        return f"{j['part']} / {j.get('variant', 'default')} / {j['width']}×{j['height']} {j['dtype']}"


def plan(tiny: bool, peak: float | None) -> list[Planned]:
    """Every job, most important first: what the suite runs when nothing is selected."""
    big, small = ((128, 64), (64, 64)) if tiny else ((576, 1024), (512, 512))
    frames, steps = (4, 3) if tiny else (16, 25)
    scale = 2.0 if tiny else 1.0  # the CPU is slower at the tiny sizes than the GPU at full size

    def job(part: str, variant: str = "default", size=small, dtype: str = "bf16", limit: float = 60,
            cache: str | None = None, **extra) -> Planned:
        if tiny and dtype == "fp16":
            dtype = "fp32"  # CPUs have no fast fp16 kernels: the code path, not the dtype, is what --tiny checks
        sampling = SAMPLING_VARIANTS.get(variant, {})
        spec = {"part": part, "variant": variant, "width": size[0], "height": size[1], "dtype": dtype,
                "frames": frames, "steps": sampling.get("steps", steps), "runtime": VARIANTS.get(variant, {}),
                "sampling": sampling, "tiny": tiny, "peak_tflops": peak}
        return Planned({**spec, **extra}, limit * scale, cache)

    lever = {"steps": 10}  # lever rows compare per step, outside the loop and cold − warm: 10 steps suffice
    return [
        job("attention", limit=40), job("attention", size=big, limit=40),
        job("generate"), job("profile", limit=90), job("memory", limit=60, steps=3),
        job("generate", dtype="fp16"), job("generate", "cudnn-benchmark-off", **lever),
        job("generate", "temporal-conv-2d", **lever), job("generate", "channels-last-3d", **lever),
        job("compile", "compile", limit=180, cache="default"), job("compile", "compile", limit=90, cache="default"),
        job("generate", "attention-cudnn", **lever), job("fp8", "fp8", limit=90), job("generate", size=big, limit=75),
        job("generate", "ays-10"), job("generate", "ays-10-reuse-2"), job("generate", "ays-10-reuse-3"),
        job("face-opt", dtype="fp16", limit=90), job("train", dtype="fp32", limit=90),
        job("window-batch", "window-batch-auto", limit=90, frames=4 * frames, **lever),
        job("generate", size=big, dtype="fp16", limit=75), job("generate", "attention-flash", **lever),
        job("generate", "attention-efficient", **lever),
        job("generate", "cudnn-benchmark-off", size=big, limit=75, **lever),
        job("compile", "compile-max-autotune", limit=300, cache="max-autotune"),
        job("compile", "compile-cudagraphs", limit=240, cache="cudagraphs"),
    ]


COLUMNS = (("part", "part"), ("variant", "variant"), ("setting", "setting"), ("cold_s", "cold s"),
           ("warm_s", "warm s"), ("step_s", "s/step"), ("outside_s", "outside s"), ("unet_share", "UNet"),
           ("tflops", "TFLOP/s"), ("peak_share", "% of peak"), ("peak_alloc_gib", "peak GiB"),
           ("peak_reserved_gib", "reserved GiB"), ("note", "note"))


def cell(key: str, value: object) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        if key in ("unet_share", "peak_share"):
            return f"{value:.1%}"
        digits = 3 if key == "step_s" else 2
        return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.3g}"
    return str(value).replace("|", "/")


def table_line(row: dict) -> str:
    return "| " + " | ".join(cell(key, row.get(key)) for key, _ in COLUMNS) + " |"


class Report:
    """The Markdown report, appended line by line (flushed and synced: a killed suite keeps every line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def add(self, *lines: str, echo: bool = True) -> None:
        with open(self.path, "a") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        if echo:
            print("\n".join(lines), flush=True)


@dataclass
class Runner:
    """Runs planned jobs one at a time in their own process group, copying their rows into the report as they
    come."""

    report: Report
    workdir: Path
    deadline: float
    rows: list[dict] = field(default_factory=list)
    caches: dict[str, Path] = field(default_factory=dict)

    def run(self, planned: Planned) -> None:
        left = self.deadline - time.monotonic()
        if left < 5:
            self._add({**_identity(planned.job), "note": "skipped: the suite's time budget is spent"})
            return
        limit = min(planned.limit_s, left)
        rows_file = self.workdir / "rows.jsonl"
        seen = rows_file.stat().st_size if rows_file.exists() else 0
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if planned.cache:
            cache = self.caches.setdefault(planned.cache, Path(tempfile.mkdtemp(prefix=f"inductor-{planned.cache}-")))
            env["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
        started = time.monotonic()
        with open(self.workdir / "suite.log", "a") as log:
            log.write(f"\n=== {planned.label}\n")
            log.flush()
            process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "gpu_parts.py"),
                                        json.dumps(planned.job), str(rows_file)], cwd=ROOT, env=env,
                                       stdout=log, stderr=log, start_new_session=True)
            while process.poll() is None:
                seen = self._copy_rows(rows_file, seen)
                if time.monotonic() - started > limit:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    seen = self._copy_rows(rows_file, seen)
                    self._add({**_identity(planned.job), "cold_s": time.monotonic() - started,
                               "note": f"killed at its {limit:.0f} s limit (rows above were kept)"})
                    return
                time.sleep(0.2)
        self._copy_rows(rows_file, seen)
        if process.returncode:
            self._add({**_identity(planned.job), "cold_s": time.monotonic() - started,
                       "note": f"FAILED (exit {process.returncode}): {_last_error(self.workdir / 'suite.log')}"})

    def _copy_rows(self, rows_file: Path, seen: int) -> int:
        if not rows_file.exists():
            return seen
        with open(rows_file) as f:
            f.seek(seen)
            text = f.read()
        complete = text[:text.rfind("\n") + 1]
        for line in complete.splitlines():
            self._add(json.loads(line))
        return seen + len(complete.encode())

    def _add(self, row: dict) -> None:
        self.rows.append(row)
        self.report.add(table_line(row))


def _identity(job: dict) -> dict:
    return {"part": job["part"], "variant": job.get("variant", "default"),
            "setting": f"{job['frames']} frames × {job['steps']} steps, {job['width']}×{job['height']}, {job['dtype']}"}


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text().splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:200]


@dataclass
class Target:
    name: str
    value: float | None
    limit: float
    unit: str
    at_least: bool

    def line(self) -> str:
        if self.value is None or not math.isfinite(self.value):
            return f"| {self.name} | not measured | — | — |"
        margin = self.value - self.limit if self.at_least else self.limit - self.value
        return (f"| {self.name} | {self.value:.2f} {self.unit} | {'met' if margin >= 0 else 'MISSED'} | "
                f"{margin:+.2f} {self.unit} |")


def targets(rows: list[dict], small: str, big: str) -> list[Target]:
    """Issue 19's targets from the measured rows (``small``/``big``: the sizes as "W×H")."""
    def find(part: str, size: str, dtype: str | None = None, variant: str = "default") -> dict | None:
        return next((r for r in rows if r["part"] == part and r.get("variant") == variant and size in r["setting"]
                     and (dtype is None or r["setting"].endswith(dtype)) and r.get("warm_s")), None)

    def loop(row: dict) -> float:
        steps = int(row["setting"].split(" steps")[0].split("× ")[-1])
        return row["step_s"] * steps

    out = []
    for dtype in ("bf16", "fp16"):
        row = find("generate", small, dtype)
        out.append(Target(f"{small} {dtype}: cold whole call − loop", row and row["cold_s"] - loop(row), 1.5, "s",
                          False))
        out.append(Target(f"{small} {dtype}: warm whole call / loop", row and row["warm_s"] / loop(row), 1.15, "×",
                          False))
    lossless = [r for r in rows if r["part"] in ("generate", "compile") and small in r["setting"]
                and r["setting"].endswith("bf16") and r.get("peak_share")]
    best = max(lossless, key=lambda r: r["peak_share"], default=None)
    out.append(Target(f"{small} loop share of the dense bf16 peak, lossless (best: {best and best['variant']})",
                      best and best["peak_share"] * 100, 35, "%", True))
    fp8 = find("fp8", small, variant="fp8")
    out.append(Target(f"{small} loop share of the bf16 peak with --fp8 (bf16-equivalent)",
                      fp8 and fp8.get("peak_share") and fp8["peak_share"] * 100, 50, "%", True))
    for size, limit in ((small, 8), (big, 12)):
        for dtype in ("bf16", "fp16"):
            row = find("generate", size, dtype)
            peak = row and max(row.get("peak_alloc_gib") or 0, row.get("cold_peak_alloc_gib") or 0)
            out.append(Target(f"{size} {dtype}: peak allocated (cold or warm call)", peak, limit, "GiB", False))
    face, basic = find("face-opt", small, "fp16"), find("generate", small, "fp16")
    out.append(Target("--face-opt time / basic time (warm, fp16)",
                      face and basic and face["warm_s"] / basic["warm_s"], 2, "×", False))
    out.append(Target("--face-opt peak allocated", face and face.get("peak_alloc_gib"), 24, "GiB", False))
    return out


def peak_for(device_name: str) -> float | None:
    return next((tflops for name, tflops in PEAK_TFLOPS if name.lower() in device_name.lower()), None)


def select(jobs: list[Planned], parts: str | None = None, variants: str | None = None,
           dtypes: str | None = None) -> list[Planned]:
    """The jobs whose part, variant and dtype are among the comma-separated ones given (None: any)."""
    wanted = {key: set(names.split(",")) for key, names in (("part", parts), ("variant", variants),
                                                            ("dtype", dtypes)) if names}
    return [p for p in jobs if all(p.job[key] in names for key, names in wanted.items())]


def device_name(tiny: bool) -> str:
    """The GPU's name, asked in a child process (this one never initialises CUDA)."""
    if tiny:
        return "CPU, tiny models"
    code = "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    name = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    if not name:
        raise SystemExit("no CUDA device: run on a GPU, or pass --tiny to check the code path on the CPU")
    return name


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="make-tiny-sized models on the CPU (checks the code path)")
    parser.add_argument("--parts", help="comma-separated parts to run (default: all)")
    parser.add_argument("--variants", help="comma-separated variants to run (default: all)")
    parser.add_argument("--dtypes", help="comma-separated model dtypes to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the selected jobs and exit")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, TFLOP/s (default: table)")
    parser.add_argument("--budget-s", type=float, default=TOTAL_BUDGET_S, help="time budget of all jobs, seconds")
    parser.add_argument("--limit-s", type=float, help="every job's time limit, seconds (default: each its own)")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS-gpu.md"),
                        help="the Markdown report; the parts' pages and raw rows go to OUTPUT-parts/")
    args = parser.parse_args(argv)
    jobs = select(plan(args.tiny, args.peak_tflops), args.parts, args.variants, args.dtypes)
    if args.list:
        print("\n".join(f"{p.label} (limit {p.limit_s:.0f} s)" for p in jobs))
        return []
    name = device_name(args.tiny)
    peak = args.peak_tflops or (None if args.tiny else peak_for(name))
    jobs = [dataclasses.replace(p, job={**p.job, "peak_tflops": peak},
                                limit_s=args.limit_s or p.limit_s) for p in jobs]
    workdir = args.output.with_name(args.output.stem + "-parts")
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("rows.jsonl", "suite.log", "unet-tflop.json", "profile.md", "memory.md", "attention.md"):
        (workdir / stale).unlink(missing_ok=True)
    report = Report(args.output)
    command = " ".join(["python benchmarks/gpu_suite.py", *(sys.argv[1:] if argv is None else argv)])
    report.add(f"# GPU suite ({name})", "",
               f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; dense bf16 peak "
               f"{peak if peak else 'unknown (pass --peak-tflops)'} TFLOP/s; command: `{command}`; each job in a "
               f"process of its own; pages of the profile and memory parts in {workdir.name}/", "",
               "| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS))
    runner = Runner(report, workdir, time.monotonic() + args.budget_s)
    for planned in jobs:
        runner.run(planned)
    big, small = ("128×64", "64×64") if args.tiny else ("576×1024", "512×512")
    report.add("", "| target | value | result | margin |", "|---|---|---|---|",
               *(t.line() for t in targets(runner.rows, small, big)))
    return runner.rows


if __name__ == "__main__":
    main()
