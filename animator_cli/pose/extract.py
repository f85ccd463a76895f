"""The pose stage: a driving video (or frame folder) → a folder of skeleton images aligned to the reference.

Output folder:
    frame_<i>.png    one skeleton per driving frame, drawn as StableAnimator draws them (draw.py), at the
                     reference image's size when a reference is given, else at the video's size
    keypoints.npz    the drawn poses (normalised to the canvas) and the tracked source poses (keypoints.py)
    meta.json        source, fps, frame count, backend, alignment parameters
    preview.mp4      (optional) the skeleton over the driving video, the aligned skeleton beside it
The folder is built under a temporary name and appears complete or not at all. Without ``out_dir`` it is an entry
of the stage cache keyed by the input files' contents and the options, so a rerun returns at once.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from animator_cli.cache import StageCache
from animator_cli.errors import InputError, option_error
from animator_cli.fileio import atomic_dir, check_output_path
from animator_cli.pose import credible
from animator_cli.pose.align import ALIGN_MODES, Alignment, align_track
from animator_cli.pose.backend import PoseBackend, open_backend, resolve_backend
from animator_cli.pose.draw import draw_pose, overlay
from animator_cli.pose.keypoints import KEYPOINTS_FILE, Pose, PoseTrack, save_keypoints
from animator_cli.pose.smooth import one_euro
from animator_cli.pose.track import MainPersonTracker, fill_gaps, largest
from animator_cli.progress import stage
from animator_cli.video import VideoWriter, check_fps, check_min_size, iter_frames, list_frames, load_image, probe
from animator_cli.weights.home import WeightsHome

STAGE = "pose"
FOLDER_FPS = 25.0  # frame folders carry no rate
MAX_GAP_SECONDS = 0.5  # detection gaps up to this long are interpolated
log = logging.getLogger("animator")
Progress = Callable[[int, int], None]


class NoPersonError(InputError):
    """No frame of the driving video shows a person (pose/credible.py); ``track`` is its empty track, so that
    `animator check` can still judge the rest of the pair."""

    def __init__(self, source: Path, track: PoseTrack) -> None:
        super().__init__(f"no person found in any frame of {source}",
                         "the driving video must show a person: shoulders and face, or a body standing on its legs")
        self.track = track


def _source_info(source: Path, fps: float | None) -> tuple[tuple[int, int], float, int]:
    """(width, height), fps and the expected frame count of a video file or frame folder."""
    if source.is_dir():
        frames = list_frames(source)
        height, width = load_image(frames[0]).shape[:2]
        check_min_size(source, "driving frames", width, height)
        return (width, height), fps or FOLDER_FPS, len(frames)
    info = probe(source)
    check_min_size(source, "driving video", info.width, info.height)
    return (info.width, info.height), fps or info.fps, info.frame_count


def is_pose_output(folder: Path) -> bool:
    """True for a folder written by `extract_pose`: a pose meta.json (it names the backend) and keypoints.npz."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "backend" in meta and (folder / "keypoints.npz").is_file()


def detect_track(source: Path, backend: PoseBackend, size: tuple[int, int], fps: float,
                 max_frames: int | None = None, total: int = 0, progress: Progress | None = None) -> PoseTrack:
    """Detect every frame and keep the main person (None where nobody is found)."""
    tracker = MainPersonTracker(size)
    poses: list[Pose | None] = []
    for index, frame in enumerate(iter_frames(source, max_frames)):
        poses.append(tracker.update(backend.detect(frame, video=True)))
        if progress:
            progress(index + 1, total)
    return PoseTrack.from_poses(poses, size, fps)


def reference_pose(reference: Path, backend: PoseBackend) -> tuple[Pose, tuple[int, int]]:
    """The reference image's main person and the image's (width, height)."""
    rgb = load_image(reference)
    pose = largest(backend.detect(rgb), (rgb.shape[1], rgb.shape[0]))
    if pose is None:
        raise InputError(f"no person found in the reference image {reference}",
                         "use a photo showing the person's upper body, or --align none")
    return pose, (rgb.shape[1], rgb.shape[0])


def _write_skeletons(folder: Path, track: PoseTrack) -> None:
    """frame_<i>.png for every frame (black where there is no pose), drawn on two threads (cv2 frees the GIL)."""
    width, height = track.size
    used = track.present | track.filled

    def render(index: int) -> None:
        rgb = draw_pose(track.pose(index) if used[index] else None, width, height)
        if not cv2.imwrite(str(folder / f"frame_{index}.png"), rgb[..., ::-1]):
            raise InputError(f"cannot write {folder / f'frame_{index}.png'}")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(render, range(len(track))))


def _write_preview(path: Path, source: Path, tracked: PoseTrack, drawn: PoseTrack, aligned: bool,
                   max_frames: int | None) -> None:
    """The source-space skeleton over each driving frame, and the drawn (aligned) skeleton beside it."""
    used = tracked.present | tracked.filled
    with VideoWriter(path, tracked.fps) as writer:
        for index, frame in enumerate(iter_frames(source, max_frames)):
            height, width = frame.shape[:2]
            skeleton = draw_pose(tracked.pose(index) if used[index] else None, width, height)
            view = overlay(frame, skeleton)
            if aligned:
                side = draw_pose(drawn.pose(index) if used[index] else None, *drawn.size)
                side_width = max(2, round(drawn.size[0] * height / drawn.size[1]))
                view = np.concatenate([view, cv2.resize(side, (side_width, height))], 1)
            writer.write(np.ascontiguousarray(view))


def _build(folder: Path, *, source: Path, reference: Path | None, align: str, backend_name: str, smooth: bool,
           max_frames: int | None, preview: bool, fps: float | None, weights: WeightsHome, device: str | None,
           progress: Progress | None) -> None:
    """Detect, fill, smooth, align and draw the poses of ``source`` into ``folder`` (a temporary one, renamed into
    place by the caller)."""
    size, rate, expected = _source_info(source, fps)
    total = min(expected, max_frames) if max_frames else expected
    backend = open_backend(backend_name, weights, device)
    try:
        track = detect_track(source, backend, size, rate, max_frames, total, progress)
        if not track.present.any():
            raise NoPersonError(source, track)
        ref = reference_pose(reference, backend) if reference is not None and align != "none" else None
    finally:
        backend.close()
    track = fill_gaps(track, max(1, round(MAX_GAP_SECONDS * rate)))
    if smooth:
        track = one_euro(track)
    if ref is not None:
        drawn, alignment = align_track(track, align, *ref)
    elif reference is not None:  # --align none with a reference: unaligned, drawn at the reference's size
        drawn, alignment = align_track(track, "none", None, load_image(reference).shape[1::-1])
    else:
        drawn, alignment = track, Alignment("none")
    _write_skeletons(folder, drawn)
    save_keypoints(folder / KEYPOINTS_FILE, drawn, track)
    meta = {
        "source": str(source), "reference": str(reference) if reference else None, "fps": rate,
        "frame_count": len(track), "source_size": list(track.size), "canvas_size": list(drawn.size),
        "backend": backend.name, "smooth": smooth, "detected_frames": int(track.present.sum()),
        "filled_frames": int(track.filled.sum()), "alignment": alignment.as_dict(),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    if preview:
        _write_preview(folder / "preview.mp4", source, track, drawn, alignment.mode != "none", max_frames)


def extract_pose(source: Path, out_dir: Path | None = None, reference: Path | None = None, *,
                 align: str = "global", backend: str = "auto", smooth: bool = True, max_frames: int | None = None,
                 preview: bool = False, fps: float | None = None, weights: WeightsHome | None = None,
                 cache: StageCache | None = None, device: str | None = None, force: bool = False,
                 progress: Progress | None = None) -> Path:
    """Skeleton folder for the driving ``source`` (video file or frame folder), returned as a path.

    ``reference``: the person to animate; poses are aligned to it with ``align`` (global, limbs, none) and drawn
    at its size. ``backend``: auto, dwpose or mediapipe. With ``out_dir`` the folder is written there (an existing
    folder is replaced only if it is a previous pose output); otherwise it is the stage-cache entry, reused unless
    ``force``. ``progress(done, total)`` is called after every detected frame. The reference and the driving
    frames must be at least ``MIN_SIDE`` (32) pixels on each side.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"driving video {source} does not exist")
    if fps is not None:
        check_fps(fps)
    if max_frames is not None and max_frames < 1:
        raise option_error("max_frames", max_frames, "must be at least 1")
    if reference is not None:
        if not Path(reference).is_file():
            raise InputError(f"reference image {reference} does not exist")
        height, width = load_image(Path(reference)).shape[:2]
        check_min_size(Path(reference), "reference image", width, height)
    if align not in ALIGN_MODES:
        raise InputError(f"unknown alignment '{align}'", f"choose from {', '.join(ALIGN_MODES)}")
    weights = weights or WeightsHome.resolve()
    resolved = resolve_backend(backend, weights)
    build = functools.partial(_build, source=source, reference=Path(reference) if reference else None, align=align,
                              backend_name=resolved, smooth=smooth, max_frames=max_frames, preview=preview, fps=fps,
                              weights=weights, device=device, progress=progress)
    if out_dir is not None:
        out_dir = Path(out_dir)
        check_output_path(out_dir, [source, reference], folder=True)
        if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not is_pose_output(out_dir))):
            raise InputError(f"{out_dir} exists and is not a pose folder", "choose a new or empty -o folder")
        with atomic_dir(out_dir) as tmp, stage(STAGE):
            build(tmp)
        return out_dir
    params = {"align": align if reference else "none", "backend": resolved, "smooth": smooth,
              "max_frames": max_frames, "preview": preview, "fps": fps, "person": credible.RULE}
    entry = (cache or StageCache()).entry(STAGE, [source] + ([Path(reference)] if reference else []), params)
    if entry.done and not force:
        log.info("pose: reusing %s", entry.path)
        return entry.path
    with entry.writing(replace=force) as tmp, stage(STAGE):
        build(tmp)
    return entry.path
