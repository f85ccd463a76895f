"""PoseNet features served window by window, computed in fixed chunks of frames and kept only while needed.

PoseNet always runs on the same chunks, frames ``[k·c, (k+1)·c)``, whichever windows ask for them: a different
batch grouping may round differently on some kernels, so keeping the grouping keeps the features, and the video,
bit-identical between the two ways of serving them:

- all at once (``keep_all``): every chunk computed before the denoising loop and kept, as the pipeline always did;
  nothing is computed or copied from the host inside the loop. For videos whose features fit a budget.
- on demand: a chunk is computed when a window first needs it and dropped once the window being denoised no
  longer does (chunk 0 stays: frame 0 is every window's anchor). Memory holds a few chunks whatever the length;
  PoseNet then runs once per step instead of once per video: 2.5 GFLOP a 512×512 frame, 0.1 % of a UNet step's
  2.54 TFLOP (full-size models, FLOP counter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

# (start, stop) → the features (stop − start, C, h, w) of those frames, on the device they are kept on.
ComputeChunk = Callable[[int, int], torch.Tensor]


class PoseFeatures:
    """The features of any window's frames; see the module docstring for the two modes."""

    def __init__(self, compute: ComputeChunk, num_frames: int, chunk: int, keep_all: bool) -> None:
        self.compute, self.num_frames, self.chunk = compute, num_frames, chunk
        self.kept: dict[int, torch.Tensor] = {}
        self.whole = torch.cat([self._chunk(k) for k in range(self._count())]) if keep_all else None

    def _count(self) -> int:
        return -(-self.num_frames // self.chunk)

    def _chunk(self, k: int) -> torch.Tensor:
        return self.compute(k * self.chunk, min((k + 1) * self.chunk, self.num_frames))

    def window(self, frames: Sequence[int], index: torch.Tensor) -> torch.Tensor:
        """Features (len(frames), C, h, w) of ``frames``, whose indices ``index`` also holds (on the device)."""
        if self.whole is not None:
            return self.whole[index.to(self.whole.device)]
        needed = {frame // self.chunk for frame in frames} | {0}
        for k in [k for k in self.kept if k not in needed]:  # dropped before the next chunks are computed
            del self.kept[k]
        for k in sorted(needed - self.kept.keys()):
            self.kept[k] = self._chunk(k)
        return torch.cat([self.kept[k][first:stop] for k, first, stop in _runs(frames, self.chunk)])


def _runs(frames: Sequence[int], chunk: int) -> Iterator[tuple[int, int, int]]:
    """(chunk, first row, row after the last) of each run of consecutive frames within one chunk, in order."""
    start = 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or frames[i] != frames[i - 1] + 1 or frames[i] % chunk == 0:
            yield frames[start] // chunk, frames[start] % chunk, frames[i - 1] % chunk + 1
            start = i
