"""The identity guard and the drift lock in a render: the pipeline's windows as `identity.Repairable`, and the
step between sampling and encoding that runs them.

The frames are decoded chunk by chunk and scored (guard) and measured (lock) as they come; the repairs then change
latents, and the frames go to the encoder with the lock's corrections (`frames.DecodedFrames` holds them in
between, or decodes them again for a long video, with the same bytes). The models stay loaded between the render
and its repairs: a video that needs no repair costs the scoring only.
"""

from __future__ import annotations

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
from animator_cli.guard.frames import DecodedFrames
from animator_cli.guard.identity import Attempt, GuardRecord, Scorer, escalation, guard_video
from animator_cli.hjb import FaceRefiner
from animator_cli.options import FaceOptOptions, GenerateOptions, GuardOptions
from animator_cli.sampling.flops import UNetWork
from animator_cli.sampling.pipeline import AnimationPipeline, FrameSink, PoseSource, SampledVideo
from animator_cli.sampling.repair import WindowPass, free_slots, resample_window
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")

RefinerLoader = Callable[[], "FaceRefiner | None"]  # the whole video's face refiner, None when it cannot be built
# The HJB lever refines the faces' neighbourhood only (--face-opt-margin 1): about 1.6× a render's compute instead
# of 9.7× for whole frames at 512×512 (docs/hjb.md, Cost), so one repaired window stays within the guard's budget.
HJB_LEVER = FaceOptOptions(margin=1)
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
    HJB is a lever when the render did not use it, it is not a draft, and the window's own frames have a face box
    to refine; a render that used it keeps it in every pass."""
    guard = options.identity_guard or GuardOptions()

    def plan(window: int) -> list[Attempt]:
        refiner = repair.window_refiner(window) if options.face_opt is None and guard.hjb else None
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
