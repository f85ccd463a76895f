"""The identity guard and the drift lock in a render: the pipeline's windows as `identity.Repairable`, and the
step between sampling and encoding that runs them.

The frames are decoded chunk by chunk and scored (guard) and measured (lock) as they come; the repairs then change
latents, and the frames go to the encoder with the lock's corrections. A video whose frames fit
HELD_FRAMES_BUDGET is held decoded in between; a longer one is decoded again for the encoder, so memory does not
grow with its length (the latents aside), and gives the same bytes: a repair changes its window's frames only, and
the frames it does not change but shares a decoder call with keep the pixels they had (`DecodedFrames`). The
models stay loaded between the render and its repairs: a video that needs no repair costs the scoring only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from animator_cli.errors import InputError
from animator_cli.guard.drift import BackgroundMeasure, correct, frame_corrections
from animator_cli.guard.identity import Attempt, GuardRecord, Scorer, escalation, guard_video
from animator_cli.hjb import FaceRefiner
from animator_cli.options import FaceOptOptions, GenerateOptions, GuardOptions
from animator_cli.progress import stage
from animator_cli.sampling.flops import UNetWork
from animator_cli.sampling.pipeline import AnimationPipeline, FrameSink, PoseSource, SampledVideo
from animator_cli.sampling.repair import WindowPass, free_slots, resample_window
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")

RefinerLoader = Callable[[], "FaceRefiner | None"]  # the whole video's face refiner, None when it cannot be built
# The HJB lever refines the faces' neighbourhood only (--face-opt-margin 1): about 1.6× a render's compute instead
# of 9.7× for whole frames at 512×512 (docs/hjb.md, Cost), so one repaired window stays within the guard's budget.
HJB_LEVER = FaceOptOptions(margin=1)
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
            for frame, before in zip(frames, self.video.latents[0, frames].to("cpu", copy=True), strict=True):
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


class PipelineRepair:
    """A sampled video's windows, sampled again by its pipeline (`sampling.repair`); ``refiner`` gives the face
    refiner the HJB lever restricts to one window; a kept attempt's pixels go to ``frames`` and ``kept``."""

    def __init__(self, pipeline: AnimationPipeline, video: SampledVideo, refiner: RefinerLoader,
                 frames: DecodedFrames, kept: Callable[[list[int], np.ndarray], None]) -> None:
        self.pipeline, self.video, self.refiner, self.frames, self.kept = pipeline, video, refiner, frames, kept
        self.windows = video.windows
        self.work: list[UNetWork] = []  # the UNet work of every pass

    def window_refiner(self, index: int) -> FaceRefiner | None:
        """The HJB refiner of window ``index``'s own frames (`sampling.repair.free_slots`), None without one."""
        refiner = self.refiner()
        return None if refiner is None else refiner.for_frames(self.windows[index], free_slots(self.windows, index))

    def resample(self, index: int, attempt: Attempt) -> torch.Tensor:
        refine = self.window_refiner(index) if attempt.hjb else None
        latents = resample_window(self.pipeline, self.video, index, WindowPass(attempt.id_scale, attempt.seed, refine))
        self.work.append(self.pipeline.work)
        return latents

    def pixels(self, index: int, latents: torch.Tensor) -> np.ndarray:
        window = self.windows[index]
        kept = self.video.latents[:, window].clone()
        self.video.latents[:, window] = latents  # decoded in place, then put back: no copy of the whole video
        try:
            return self.pipeline.decode_frames(self.video.latents, self.changed(index), self.frames.chunk)
        finally:
            self.video.latents[:, window] = kept

    def commit(self, index: int, latents: torch.Tensor, pixels: np.ndarray) -> None:
        self.frames.commit(self.changed(index), pixels)
        self.kept(self.changed(index), pixels)
        self.video.latents[:, self.windows[index]] = latents

    def changed(self, index: int) -> list[int]:
        """The frames a repair of window ``index`` changes: all of its frames but frame 0."""
        return [frame for frame in self.windows[index] if frame != 0]


def run_guard(repair: PipelineRepair, cosines: np.ndarray, scoring_s: float, options: GenerateOptions,
              score: Scorer) -> GuardRecord:
    """The identity guard on a sampled video whose frames scored ``cosines`` (updated in place with what was kept).
    HJB is a lever when the render did not use it and the window's own frames have a face box to refine; a render
    that used it keeps it in every pass."""
    guard = options.identity_guard or GuardOptions()

    def plan(window: int) -> list[Attempt]:
        refiner = repair.window_refiner(window) if options.face_opt is None else None
        attempts = escalation(guard.retries, hjb=refiner is not None and refiner.faces > 0,
                              id_scale=options.sampling.id_scale, seed=options.seed, window=window)
        for attempt in attempts:  # a render with HJB is sampled again with it
            attempt.hjb |= options.face_opt is not None
        return attempts

    return guard_video(cosines, repair, score, guard, plan, scoring_s)


def repaired_render(pipeline: AnimationPipeline, video: SampledVideo, options: GenerateOptions, sink: FrameSink, *,
                    reference: Path, skeletons: PoseSource, weights: WeightsHome, device: str | None,
                    refiner: Callable[[FaceOptOptions], FaceRefiner]) -> tuple[UNetWork, dict[str, Any]]:
    """Decode the sampled ``video``, run the identity guard and the drift lock that ``options`` turn on, and hand
    the frames to ``sink`` chunk by chunk; returns the UNet work of the render and the guard's passes, and the
    repairs' record (`GenerateResult` fields). ``refiner(face_opt)`` builds the whole video's face refiner (the
    HJB lever)."""
    frames = DecodedFrames(pipeline, video, options.sampling.decode_chunk)
    count = video.latents.shape[1]
    measure = BackgroundMeasure(count) if options.drift_lock else None
    score: Scorer | None = None
    if options.identity_guard is not None:
        from animator_cli.check.timeline import IdentityScorer

        score = IdentityScorer(reference, weights=weights, device=device)
    scores: list[np.ndarray] = []
    scoring_s = 0.0

    def measured(index: list[int], pixels: np.ndarray) -> None:
        if measure is not None:
            measure.add(index, pixels, np.stack([skeletons[f:f + 1][0] for f in index]))

    def look(first: int, pixels: np.ndarray) -> None:
        nonlocal scoring_s
        if score is not None:
            started = time.perf_counter()
            scores.append(score(pixels))
            scoring_s += time.perf_counter() - started
        measured(list(range(first, first + len(pixels))), pixels)

    frames.decode(look)
    work, record = pipeline.work, {}
    if score is not None:
        repair = PipelineRepair(pipeline, video, functools.cache(guard_refiner(
            functools.partial(refiner, options.face_opt or HJB_LEVER))), frames, measured)
        guard = run_guard(repair, np.concatenate(scores), scoring_s, options, score)
        work = sum(repair.work, work)
        record["identity_guard"] = guard.as_dict()
    per_frame = None
    if measure is not None:
        corrections = measure.corrections(video.windows)
        per_frame = frame_corrections(corrections, video.windows, count)
        record["drift_lock"] = [{"window": index, "gain": c.gain.tolist(), "offset": c.offset.tolist()}
                                for index, c in enumerate(corrections)]
        log.info("drift lock: %d window(s) matched to the first's colours", len(corrections) - 1)

    def out(first: int, pixels: np.ndarray) -> None:
        if per_frame is not None:
            correct(pixels, per_frame[first:first + len(pixels)])
        sink(pixels)

    frames.emit(out)
    return work, record


def guard_refiner(build: Callable[[], FaceRefiner]) -> RefinerLoader:
    """``build`` the HJB refiner, or None (one warning) when the pose folder gives no face boxes."""

    def load() -> FaceRefiner | None:
        try:
            return build()
        except InputError as exc:
            log.warning("identity guard: no HJB lever (%s); escalating with the ID scale and seeds", exc.message)
            return None

    return load
