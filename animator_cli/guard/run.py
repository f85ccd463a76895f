"""The identity guard and the drift lock in a render: the pipeline's windows as `identity.Repairable`, and the
step between sampling and encoding that runs them.

With either on, the video's frames are held in memory (F×H×W×3 bytes) until the guard and the lock are done, then
encoded; without them the render streams as before. The models stay loaded between the render and its repairs:
a video that needs no repair costs the scoring only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from animator_cli.errors import InputError
from animator_cli.guard.drift import drift_lock
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
    refiner the HJB lever restricts to one window."""

    def __init__(self, pipeline: AnimationPipeline, video: SampledVideo, refiner: RefinerLoader) -> None:
        self.pipeline, self.video, self.refiner = pipeline, video, refiner
        self.windows = video.windows
        self.work: list[UNetWork] = []  # the UNet work of every pass

    def resample(self, index: int, attempt: Attempt) -> torch.Tensor:
        refiner = self.refiner() if attempt.hjb else None
        refine = None if refiner is None else refiner.for_frames(self.windows[index], free_slots(self.windows, index))
        latents = resample_window(self.pipeline, self.video, index, WindowPass(attempt.id_scale, attempt.seed, refine))
        self.work.append(self.pipeline.work)
        return latents

    def pixels(self, index: int, latents: torch.Tensor) -> np.ndarray:
        window = self.windows[index]
        kept = self.video.latents[:, window].clone()
        self.video.latents[:, window] = latents  # decoded in place, then put back: no copy of the whole video
        try:
            return self.pipeline.decode_frames(self.video.latents, [f for f in window if f != 0],
                                               self.video.options.decode_chunk)
        finally:
            self.video.latents[:, window] = kept

    def commit(self, index: int, latents: torch.Tensor) -> None:
        self.video.latents[:, self.windows[index]] = latents


def run_guard(pipeline: AnimationPipeline, video: SampledVideo, frames: np.ndarray, options: GenerateOptions,
              score: Scorer, refiner: RefinerLoader) -> tuple[GuardRecord, list[UNetWork]]:
    """The identity guard on a sampled video and its decoded ``frames`` (both updated in place); returns its record
    and the UNet work of its passes. HJB is a lever when the render did not use it and a refiner builds; a render
    that used it keeps it in every pass."""
    repair = PipelineRepair(pipeline, video, functools.cache(refiner))
    guard = options.identity_guard or GuardOptions()

    def plan(window: int) -> list[Attempt]:
        attempts = escalation(guard.retries, hjb=options.face_opt is None and repair.refiner() is not None,
                              id_scale=options.sampling.id_scale, seed=options.seed, window=window)
        for attempt in attempts:  # a render with HJB is sampled again with it
            attempt.hjb |= options.face_opt is not None
        return attempts

    return guard_video(frames, repair, score, guard, plan), repair.work


def repaired_render(pipeline: AnimationPipeline, video: SampledVideo, options: GenerateOptions, sink: FrameSink, *,
                    reference: Path, skeletons: PoseSource, weights: WeightsHome, device: str | None,
                    refiner: Callable[[FaceOptOptions], FaceRefiner]) -> tuple[UNetWork, dict[str, Any]]:
    """Decode the sampled ``video``, run the identity guard and the drift lock that ``options`` turn on, and hand
    the frames to ``sink``; returns the UNet work of the render and the guard's passes, and the repairs' record
    (`GenerateResult` fields). ``refiner(face_opt)`` builds the whole video's face refiner (the HJB lever)."""
    work = pipeline.work
    frames = pipeline.decode(video.latents, options.sampling.decode_chunk)
    record: dict[str, Any] = {}
    if options.identity_guard is not None:
        from animator_cli.check.timeline import IdentityScorer

        score = IdentityScorer(reference, weights=weights, device=device)
        guard, passes = run_guard(pipeline, video, frames, options, score,
                                  guard_refiner(functools.partial(refiner, options.face_opt or HJB_LEVER)))
        work = sum(passes, work)
        record["identity_guard"] = guard.as_dict()
    if options.drift_lock:
        corrections = drift_lock(frames, video.windows, lambda index: np.stack([skeletons[f:f + 1][0] for f in index]))
        record["drift_lock"] = [{"window": index, "gain": c.gain.tolist(), "offset": c.offset.tolist()}
                                for index, c in enumerate(corrections)]
        log.info("drift lock: %d window(s) matched to the first's colours", len(corrections) - 1)
    sink(frames)
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
