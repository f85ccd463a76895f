"""One rank of a window-parallel test run: ``python rank_worker.py OUT FAULT ANIMATOR-ARGS...`` runs the real CLI.

Rank 0 saves the final latents (the decoder's input) to OUT/latents.pt. FAULT ``kill`` or ``oom`` makes rank 1
fail at its second denoising step: killed by SIGKILL (no chance to report), or a CUDA-style out-of-memory error.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

from animator_cli.cli.app import run
from animator_cli.sampling.pipeline import AnimationPipeline


def main() -> int:
    out, fault, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    torch.set_num_threads(1)
    decode, blend = AnimationPipeline._decode, AnimationPipeline._blend
    steps = []

    def saving_decode(self, latents, chunk):
        torch.save(latents.cpu(), out / "latents.pt")
        return decode(self, latents, chunk)

    def failing_blend(self, *blend_args):
        steps.append(len(steps))
        if len(steps) == 2:
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return blend(self, *blend_args)

    AnimationPipeline._decode = saving_decode
    if fault != "none" and os.environ["RANK"] == "1":
        AnimationPipeline._blend = failing_blend
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
