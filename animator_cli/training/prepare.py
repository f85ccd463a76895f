"""``animator prepare-data``: a folder of videos → a training dataset in the reference layout.

For every video ``<name>.<ext>`` the clip folder ``DATASET/<name>/`` gets:

* ``images/frame_<i>.png``: every decoded frame (display rotation applied), at the video's resolution;
* ``poses/frame_<i>.png``: skeletons from the pose stage (:func:`extract_pose`), UNALIGNED (no reference), drawn
  at the frame size, as the reference's ``training_skeleton_extraction.py`` does;
* ``faces/frame_<i>.png``: a uint8 mask with a filled 255 rectangle for EVERY face the face stage's detector
  (antelopev2 SCRFD via :func:`load_analyzer`) finds, as the reference's ``face_mask_extraction.py``. Unlike
  the reference, a frame without a face gets an all-zero mask (the reference filled the whole frame, which
  weights the entire frame as "face");
* ``identities.npz``: ``embeddings`` (L, 512), the ArcFace embedding of the largest face of every frame (zeros
  where none is found) and ``found`` (L,). The loader picks its reference frame among those with a face and
  takes that frame's row, so insightface runs once per frame here instead of in every data-loader call (spec §7)
  and a faceless frame is not used as the reference when the clip has others. insightface is given BGR, as the
  reference's training code did and as our inference does, at the frame's own resolution (the reference first
  stretched the frame to the training W×H).

Clips are built under a temporary name and renamed when complete, so an interrupted run resumes by skipping
finished clips. Videos run in parallel worker processes; any error in one (a decoder, OpenCV or ONNX Runtime
error, or a worker process that dies) marks that video failed and the others go on. The list files are rewritten
at the end: ``video_rec_path.txt`` (landscape/square clips, trained at 512×512) and ``video_vec_path.txt``
(portrait clips, height ≥ 1.5 × width, trained at 576×1024), one clip folder per line relative to the dataset
folder.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from animator_cli.errors import AnimatorError, InputError
from animator_cli.face.analyzer import largest_face, load_analyzer
from animator_cli.face.identity import EMBEDDING_DIM, box_mask, to_detector_input
from animator_cli.fileio import atomic_dir, check_output_path, ensure_writable_dir, write_text_atomic
from animator_cli.pose import extract_pose
from animator_cli.pose.backend import resolve_backend
from animator_cli.video import iter_frames, list_frames, load_image, probe
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")

IDENTITY_FILE = "identities.npz"  # not the face stage's identity.npz: one embedding per frame, another layout
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
LIST_FILES = {"rec": "video_rec_path.txt", "vec": "video_vec_path.txt"}
PORTRAIT_RATIO = 1.5


@dataclass
class PrepareResult:
    dataset: Path
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete
    failed: dict[str, str] = field(default_factory=dict)  # clip → reason
    list_files: list[Path] = field(default_factory=list)


def find_videos(videos_dir: Path) -> list[Path]:
    """Video files directly in ``videos_dir``, sorted by name."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise InputError(f"{videos_dir} is not a folder of videos")
    videos = sorted(p for p in videos_dir.iterdir()
                    if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
    if not videos:
        raise InputError(f"no videos in {videos_dir}", f"expected files ending in {', '.join(sorted(VIDEO_SUFFIXES))}")
    names = [v.stem for v in videos]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InputError(f"two videos in {videos_dir} are named {duplicate}.*", "rename one: clip folders use the stem")
    return videos


def face_annotations(frames: list[Path], weights: WeightsHome, device: str | None = None) -> tuple[
        list[np.ndarray], np.ndarray, np.ndarray]:
    """(masks, embeddings (L, 512), found (L,)) for frame files, with one detector pass per frame."""
    analyzer = load_analyzer(weights, device)
    masks, embeddings, found = [], np.zeros((len(frames), EMBEDDING_DIM), np.float32), np.zeros(len(frames), bool)
    for index, path in enumerate(frames):
        rgb = load_image(path)
        bgr = to_detector_input(rgb)
        faces = analyzer.faces(bgr)  # every face goes into the mask; ArcFace runs on the largest only
        mask = np.zeros(rgb.shape[:2], np.uint8)
        for face in faces:
            mask |= box_mask(rgb.shape[:2], np.asarray(face.bbox, np.float32))
        masks.append(mask)
        main = largest_face(faces)
        if main is not None:
            embeddings[index] = np.asarray(analyzer.embed(bgr, main).embedding, np.float32).reshape(EMBEDDING_DIM)
            found[index] = True
    return masks, embeddings, found


def build_clip(video: Path, clip_dir: Path, weights: WeightsHome, pose_backend: str = "auto",
               device: str | None = None) -> Path:
    """Write one complete clip folder for ``video`` (atomically: it appears whole or not at all)."""
    with atomic_dir(clip_dir) as tmp:
        images = tmp / "images"
        images.mkdir()
        count = 0
        for count, rgb in enumerate(iter_frames(video), start=1):
            # OpenCV's fast PNG level: the same pixels as Pillow's default, written ~5× faster (large clips)
            if not cv2.imwrite(str(images / f"frame_{count - 1}.png"), rgb[..., ::-1]):
                raise AnimatorError(f"cannot write {images / f'frame_{count - 1}.png'}")
        if count == 0:
            raise InputError(f"{video} has no decodable frames")
        fps = probe(video).fps or None
        extract_pose(images, tmp / "poses", reference=None, align="none", backend=pose_backend, fps=fps,
                     weights=weights, device=device)
        frames = list_frames(images)
        masks, embeddings, found = face_annotations(frames, weights, device)
        (tmp / "faces").mkdir()
        for path, mask in zip(frames, masks, strict=True):
            if not cv2.imwrite(str(tmp / "faces" / path.name), mask):
                raise AnimatorError(f"cannot write {tmp / 'faces' / path.name}")
        np.savez(tmp / IDENTITY_FILE, embeddings=embeddings, found=found)
    return clip_dir


def _build_worker(video: Path, clip_dir: Path, weights_root: Path, pose_backend: str, device: str | None) -> str:
    """Process-pool entry point; returns "" on success or the one-line reason of the failure.

    Any exception fails only this video: a bad video can make cv2, PyAV or ONNX Runtime raise their own errors."""
    try:
        build_clip(video, clip_dir, WeightsHome(weights_root), pose_backend, device)
        return ""
    except AnimatorError as exc:
        return str(exc)
    except Exception as exc:
        log.debug("prepare-data: %s failed", video, exc_info=True)
        return f"{type(exc).__name__}: {exc}"


def _pool_outcomes(futures: dict[Future, Path]) -> Iterator[tuple[Path, str]]:
    """(video, error) as the workers finish; when the pool breaks (a worker killed, e.g. out of memory), the
    videos it had not finished fail and those already built are kept."""
    for future in as_completed(futures):
        try:
            yield futures[future], future.result()
        except BrokenProcessPool as exc:
            yield futures[future], f"BrokenProcessPool: {exc}"


def write_list_files(dataset: Path) -> list[Path]:
    """Rewrite the list files from the complete clip folders (portrait clips go to the 576×1024 list)."""
    groups: dict[str, list[str]] = {"rec": [], "vec": []}
    for clip in sorted(p for p in dataset.iterdir() if p.is_dir() and not p.name.startswith(".")):
        frames = clip / "images"
        if not frames.is_dir():
            continue
        height, width = load_image(list_frames(frames)[0]).shape[:2]
        groups["vec" if height >= PORTRAIT_RATIO * width else "rec"].append(clip.name)
    written = []
    for group, clips in groups.items():
        path = dataset / LIST_FILES[group]
        write_text_atomic(path, "".join(f"{c}\n" for c in clips))
        written.append(path)
    return written


def _collect(outcomes: Iterator[tuple[Path, str]], result: PrepareResult, done: int, total: int,
             progress: Callable[[str, int, int], None] | None) -> None:
    for video, error in outcomes:
        if error:
            result.failed[video.stem] = error
            log.warning("prepare-data: %s failed: %s", video.name, error)
        else:
            result.built.append(video.stem)
        done += 1
        if progress:
            progress(video.stem, done, total)


def prepare_dataset(videos_dir: Path, dataset: Path, weights: WeightsHome, *, workers: int = 1,
                    pose_backend: str = "auto", device: str | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> PrepareResult:
    """Build every missing clip of ``videos_dir`` into ``dataset``; finished clips are kept (resumable)."""
    videos = find_videos(videos_dir)
    weights.require_components(["antelopev2", *(["dwpose"] if pose_backend == "dwpose" else [])])
    resolve_backend(pose_backend, weights)
    check_output_path(Path(dataset), [videos_dir], folder=True)  # clip folders replace what they meet
    dataset = ensure_writable_dir(Path(dataset))
    result = PrepareResult(dataset)
    todo = []
    for video in videos:
        if (dataset / video.stem / IDENTITY_FILE).is_file():
            result.skipped.append(video.stem)
        else:
            todo.append(video)
    for partial in dataset.glob(".*.tmp"):  # leftovers of an interrupted run
        shutil.rmtree(partial, ignore_errors=True)
    done = len(result.skipped)
    if progress:
        progress("", done, len(videos))
    jobs = [(video, dataset / video.stem, weights.root, pose_backend, device) for video in todo]
    if workers <= 1:  # in-process: no start-up cost, and nothing forked under ONNX Runtime's threads
        outcomes = ((job[0], _build_worker(*job)) for job in jobs)
        _collect(outcomes, result, done, len(videos), progress)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_build_worker, *job): job[0] for job in jobs}
            _collect(_pool_outcomes(futures), result, done, len(videos), progress)
    result.list_files = write_list_files(dataset)
    return result
