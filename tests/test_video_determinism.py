"""The same frames encode to the same video whatever the process's heap holds.

libx264's AVX-512 routines read uninitialised memory in the lookahead, so on CPUs with AVX-512 the encoded
bits depended on earlier allocations: `animate --check warn` (more allocations first) and `--check off` wrote
different videos from identical frames. glibc's MALLOC_PERTURB_ fills fresh allocations with a chosen byte, which
makes that dependence reproducible: two processes with different fillings must write the same file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from animator_cli.video.writer import has_avx512

ENCODE = """
import sys
from pathlib import Path
import numpy as np
from animator_cli.video import write_video
for seed in range(8):  # noise clips like the tiny models' output; not every one touches the bad reads
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    write_video(Path(sys.argv[1]) / f"{seed}.mp4", frames, 25.0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not has_avx512(),
                    reason="the uninitialised reads are in libx264's AVX-512 code; MALLOC_PERTURB_ is glibc's")
def test_encoding_does_not_depend_on_heap_contents(tmp_path: Path) -> None:
    encoded = []
    for filling in ("1", "85", "170"):
        folder = tmp_path / f"perturb-{filling}"
        folder.mkdir()
        subprocess.run([sys.executable, "-c", ENCODE, str(folder)], check=True,
                       env={**os.environ, "MALLOC_PERTURB_": filling})
        encoded.append({video.name: video.read_bytes() for video in folder.glob("*.mp4")})
    assert len(encoded[0]) == 8
    assert encoded[0] == encoded[1] == encoded[2]
