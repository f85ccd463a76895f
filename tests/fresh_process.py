"""Run `animator ARGS` in a new interpreter and report which heavy modules it imported (read from `sys.modules`
at exit: a check on what is imported, not a timing)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers", "insightface", "mediapipe", "onnxruntime", "accelerate")
_PROBE = f"""
import json, sys
from animator_cli.cli.app import run
code = run(sys.argv[1:])
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.__stderr__)
"""


@dataclasses.dataclass
class FreshRun:
    code: int
    heavy: list[str]  # the modules of HEAVY that were imported
    stdout: str
    stderr: str


def run_fresh(*args: str | Path, env: dict[str, str] | None = None) -> FreshRun:
    """`animator ARGS` in a new Python process, with ``env`` added to this one's environment."""
    done = subprocess.run([sys.executable, "-c", _PROBE, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return FreshRun(report["code"], report["heavy"], done.stdout, done.stderr)
