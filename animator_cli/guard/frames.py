"""A render's decoded frames between sampling and the encoder while the identity guard and the drift lock work
on them: held when they fit HELD_FRAMES_BUDGET, else decoded again for the encoder, with the same bytes, so a long
video's memory does not grow with its length (docs/hjb.md, Memory)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from animator_cli.progress import stage
from animator_cli.sampling.pipeline import AnimationPipeline, SampledVideo

HELD_FRAMES_BUDGET = 1 << 30  # bytes of decoded frames held between the render and the encoder (beyond: decoded again)
ChunkSink = Callable[[int, np.ndarray], None]  # (first frame, uint8 pixels (n, H, W, 3)) of one decoder call


class DecodedFrames:
    """A sampled video's frames between the render and the encoder, decoded in the pipeline's chunks: held when
    they fit HELD_FRAMES_BUDGET, else decoded again when they go out.

    A repair changes its window's frames, and the decoder mixes the frames of a call: decoded again from the final
    latents, a frame the repair left alone but that shares a call with its frames would change. So every frame
    goes out as it was decoded when it last changed (the first decode, or its repair's), as the held path keeps
    it: `commit` records the latents each repair replaces, on the CPU (its window's frames: a twelfth of their
    pixels' bytes), and `emit` decodes a call once per such state of its latents that one of its frames needs."""

    def __init__(self, pipeline: AnimationPipeline, video: SampledVideo, chunk: int) -> None:
        self.pipeline, self.video, self.chunk = pipeline, video, chunk
        _, count, _, height, width = video.latents.shape
        held = count * height * width * 3 * 64 <= HELD_FRAMES_BUDGET  # 8×8 pixels of 3 bytes per latent cell
        self.held: list[np.ndarray] | None = [] if held else None  # the decoder calls' frames
        self.repairs = 0  # repairs committed so far
        # decoded again: per frame a repair changed, (repair number, the latent it replaced) in order
        self.replaced: dict[int, list[tuple[int, torch.Tensor]]] = {}

    def decode(self, look: ChunkSink) -> None:
        """Decode the video once, showing each call's frames to ``look`` (and holding them when they fit)."""
        first = 0

        def take(pixels: np.ndarray) -> None:
            nonlocal first
            look(first, pixels)
            if self.held is not None:
                self.held.append(pixels)
            first += len(pixels)

        self.pipeline.decode(self.video.latents, self.chunk, sink=take)

    def commit(self, frames: list[int], pixels: np.ndarray) -> None:
        """A repair is about to give ``frames`` new latents, decoded to ``pixels`` (call before it does)."""
        if self.held is not None:
            for frame, image in zip(frames, pixels, strict=True):
                self.held[frame // self.chunk][frame % self.chunk] = image
        else:
            for frame, before in zip(frames, self.video.latents[0, frames].cpu(), strict=True):  # a copy: list index
                self.replaced.setdefault(frame, []).append((self.repairs, before))
        self.repairs += 1

    def emit(self, out: ChunkSink) -> None:
        """Every decoder call's frames, in order, as they are final."""
        if self.held is not None:
            for index, pixels in enumerate(self.held):
                out(index * self.chunk, pixels)
            return
        count = self.video.latents.shape[1]
        last = {frame: changes[-1][0] for frame, changes in self.replaced.items()}  # the last repair to change it
        calls = [(frames, [last.get(frame, -1) for frame in frames])
                 for frames in (range(first, min(first + self.chunk, count)) for first in range(0, count, self.chunk))]
        decoded = self.pipeline.decode_calls(self.latents_after(state, frames)
                                             for frames, last in calls for state in sorted(set(last)))
        with stage("decoding"), contextlib.closing(decoded):  # closed: the VAE goes back when offloading
            for frames, last in calls:
                pixels = next(decoded)  # as of the earliest state its frames need; later states' frames replaced
                for state in sorted(set(last))[1:]:
                    slots = [slot for slot, number in enumerate(last) if number == state]
                    pixels[slots] = next(decoded)[slots]
                out(frames.start, pixels)

    def latents_after(self, state: int, frames: range) -> torch.Tensor:
        """The latents (n, 4, h, w) of ``frames`` right after repair ``state`` (-1: before any): each frame's final
        latent, or the one that the first later repair to change it replaced."""
        call = self.video.latents[0, frames.start:frames.stop].clone()
        for slot, frame in enumerate(frames):
            earlier = next((before for number, before in self.replaced.get(frame, ()) if number > state), None)
            if earlier is not None:
                call[slot] = earlier.to(call.device)
        return call
