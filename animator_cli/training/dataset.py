"""The training dataset: clips in the reference layout, checked up front, sampled as the paper trains.

Layout (what ``animator prepare-data`` writes, and what the reference's scripts produce plus one file)::

    DATASET/<clip>/images/frame_<i>.png   video frames
    DATASET/<clip>/poses/frame_<i>.png    unaligned DWPose skeletons, same stems
    DATASET/<clip>/faces/frame_<i>.png    face masks (filled face boxes, 255 inside)
    DATASET/<clip>/identities.npz         ArcFace embedding of every frame (``embeddings`` (L, 512)) and
                                          whether a face was found in it (``found`` (L,))
    DATASET/video_rec_path.txt            clip folders (relative to DATASET, or absolute), one per line

A sample is n frames at stride r (span ``min(L, (n−1)·r + 1)``, uniformly placed, ``linspace`` indices) and a
reference frame drawn from the frames NOT sampled that have a face (any unsampled frame if none has one). Fixes of
the reference loader (spec §7):

* every clip is checked before training (:func:`check_dataset`): too few frames (fewer than n + 1, where the
  reference crashed with 1/0), missing folders/poses/identity cache, unreadable images → reported together,
  then skipped or fatal (``data.on_bad_clip``); nothing crashes mid-epoch (a frame that still fails to load
  makes the sample move to the next clip, with a warning);
* a missing face mask becomes an all-zero mask of the right shape (no face weighting) instead of a
  wrongly shaped tensor of ones;
* the reference identity comes from the cache written once per clip, not insightface in every loader call, and
  the reference frame is one with a face, so the model is not trained on the zero embedding of a faceless frame
  (a clip with no face at all is reported by the check);
* a sample that cannot be loaded in a DataLoader worker reaches the training loop as one clean error line,
  not the worker's wrapped traceback (:meth:`ClipDataset.__getitems__`, :func:`iter_batches`);
* images are fitted to W×H with the sampler's :func:`fit_image` (``cover`` by default) so training and
  inference see the same geometry; the reference stretched them (``data.fit: stretch`` reproduces that).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from animator_cli.errors import AnimatorError, InputError
from animator_cli.face.identity import EMBEDDING_DIM
from animator_cli.sampling.fit import Fit, fit_image
from animator_cli.training.preflight import require_dataset_dir
from animator_cli.training.prepare import IDENTITY_FILE
from animator_cli.video import list_frames, load_image

log = logging.getLogger("animator")



@dataclass(frozen=True)
class Clip:
    path: Path
    frames: tuple[Path, ...]  # images/, numeric order


@dataclass
class DataReport:
    """Result of the up-front data check."""

    clips: list[list[Clip]]  # usable clips per bucket
    problems: list[tuple[str, str]] = field(default_factory=list)  # (clip, why it cannot be used)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (clip, what is degraded)

    def summary(self) -> str:
        usable = sum(len(c) for c in self.clips)
        return f"{usable} usable clips, {len(self.problems)} unusable, {len(self.warnings)} with warnings"


def read_list_file(root: Path, list_file: str) -> list[Path]:
    """Clip folders listed in ``root/list_file``; relative entries are relative to ``root``."""
    path = root / list_file
    if not path.is_file():
        raise InputError(f"clip list {path} not found", "run `animator prepare-data` or fix data.buckets[].list_file")
    entries = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [Path(e) if Path(e).is_absolute() else root / e for e in entries]


def check_clip(clip_dir: Path, num_frames: int, verify_images: bool) -> tuple[Clip | None, list[str], list[str]]:
    """(clip or None, problems, warnings) for one clip folder."""
    images = clip_dir / "images"
    if not images.is_dir():
        return None, [f"no images/ folder in {clip_dir}"], []
    try:
        frames = list_frames(images)
    except InputError as exc:
        return None, [str(exc)], []
    problems, warnings = [], []
    if len(frames) < num_frames + 1:
        problems.append(f"only {len(frames)} frames; {num_frames + 1} needed ({num_frames} targets + a reference "
                        "outside them)")
    missing_poses = [f.name for f in frames if not (clip_dir / "poses" / f.name).is_file()]
    if missing_poses:
        problems.append(f"{len(missing_poses)} pose frames missing (first: poses/{missing_poses[0]})")
    missing_masks = [f.name for f in frames if not (clip_dir / "faces" / f.name).is_file()]
    if missing_masks:
        warnings.append(f"{len(missing_masks)} face masks missing (first: faces/{missing_masks[0]}): "
                        "those frames get no face weighting")
    identity_problems, identity_warnings = _check_identity(clip_dir / IDENTITY_FILE, len(frames))
    problems += identity_problems
    warnings += identity_warnings
    if verify_images:
        for path in [*frames, *(clip_dir / "poses" / f.name for f in frames if f.name not in missing_poses)]:
            try:
                with Image.open(path) as image:
                    image.verify()
            except Exception as exc:  # PIL raises many types for corrupt files
                problems.append(f"unreadable image {path.relative_to(clip_dir)}: {exc}")
                break
    return (None if problems else Clip(clip_dir, tuple(frames))), problems, warnings


def _check_identity(path: Path, frame_count: int) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a clip's identity cache."""
    if not path.is_file():
        return [f"no {IDENTITY_FILE} (reference identities); run `animator prepare-data` on the videos"], []
    try:
        with np.load(path) as data:
            shape, found = data["embeddings"].shape, np.asarray(data["found"], bool)
    except (OSError, KeyError, ValueError) as exc:
        return [f"unreadable {IDENTITY_FILE}: {exc}"], []
    if shape != (frame_count, EMBEDDING_DIM) or found.shape != (frame_count,):
        return [f"{IDENTITY_FILE} holds {shape} embeddings and {found.shape} face flags for {frame_count} frames"], []
    if not found.any():
        return [], ["no face found in any frame: every sample of this clip trains on a zero identity embedding"]
    return [], []


def check_dataset(root: Path, list_files: list[str], num_frames: int, verify_images: bool = False) -> DataReport:
    """Check every listed clip once, before training starts."""
    root = require_dataset_dir(root)
    report = DataReport(clips=[])
    for list_file in list_files:
        usable = []
        for clip_dir in read_list_file(root, list_file):
            clip, problems, warnings = check_clip(clip_dir, num_frames, verify_images)
            report.problems += [(str(clip_dir), p) for p in problems]
            report.warnings += [(str(clip_dir), w) for w in warnings]
            if clip is not None:
                usable.append(clip)
        report.clips.append(usable)
    return report


def sample_indices(length: int, num_frames: int, stride: int, rng: np.random.Generator,
                   has_face: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(target frame indices, reference index): n frames at ``stride`` and a reference outside them, one with a
    face (``has_face`` (L,) bool) when any of those has one."""
    if length < num_frames + 1:
        raise ValueError(f"a clip needs at least {num_frames + 1} frames, got {length}")
    span = min(length, (num_frames - 1) * stride + 1)
    start = int(rng.integers(0, length - span + 1))
    indices = np.linspace(start, start + span - 1, num_frames, dtype=int)
    outside = np.setdiff1d(np.arange(length), indices)
    if has_face is not None and has_face[outside].any():
        outside = outside[has_face[outside]]
    return indices, int(rng.choice(outside))


@dataclass(frozen=True)
class SampleKey:
    """What the batch plan asks the dataset for: a clip of a bucket, with the seed of its random choices."""

    bucket: int
    clip: int
    seed: int


class ClipDataset(torch.utils.data.Dataset):
    """Map-style dataset addressed by :class:`SampleKey` (the batch plan decides order and randomness)."""

    def __init__(self, clips: list[list[Clip]], sizes: list[tuple[int, int]], num_frames: int, stride: int,
                 fit: Fit = Fit.COVER, max_retries: int = 8) -> None:
        self.clips, self.sizes = clips, sizes
        self.num_frames, self.stride, self.fit, self.max_retries = num_frames, stride, fit, max_retries

    def __len__(self) -> int:
        return sum(len(c) for c in self.clips)

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        bucket = self.clips[key.bucket]
        for attempt in range(self.max_retries):
            clip = bucket[(key.clip + attempt) % len(bucket)]
            try:
                return self.load(clip, *self.sizes[key.bucket], np.random.default_rng(key.seed))
            except (InputError, OSError, ValueError, KeyError) as exc:
                log.warning("skipping clip %s for this sample: %s", clip.path, exc)
        raise AnimatorError(f"{self.max_retries} clips in a row failed to load (last: {clip.path})",
                            "run with data.verify_images=true to find the broken files")

    def __getitems__(self, keys: list[SampleKey]) -> list[dict[str, torch.Tensor]] | AnimatorError:
        """The DataLoader's batch fetch: a load error is returned, not raised, so that it crosses the worker
        boundary as itself (a raised one arrives as a multi-line "Caught ... in DataLoader worker" error)."""
        try:
            return [self[key] for key in keys]
        except AnimatorError as exc:
            return exc

    def load(self, clip: Clip, width: int, height: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        with np.load(clip.path / IDENTITY_FILE) as data:
            embeddings, found = data["embeddings"], np.asarray(data["found"], bool)
        indices, ref = sample_indices(len(clip.frames), self.num_frames, self.stride, rng, found)
        frames = np.stack([self._image(clip.frames[i], width, height) for i in indices])
        poses = np.stack([self._image(clip.path / "poses" / clip.frames[i].name, width, height, pose=True)
                          for i in indices])
        masks = np.stack([self._mask(clip.path / "faces" / clip.frames[i].name, width, height) for i in indices])
        identity = np.asarray(embeddings[ref], dtype=np.float32)
        return {
            "pixel_values": _to_unit(frames),
            "reference": _to_unit(self._image(clip.frames[ref], width, height)[None])[0],
            "pose_pixels": _to_unit(poses),
            "face_masks": torch.from_numpy(masks).float()[:, None] / 255,
            "identity": torch.from_numpy(identity),
        }

    def _image(self, path: Path, width: int, height: int, pose: bool = False) -> np.ndarray:
        return fit_image(load_image(path), width, height, self.fit, pose=pose)

    def _mask(self, path: Path, width: int, height: int) -> np.ndarray:
        if not path.is_file():
            return np.zeros((height, width), np.uint8)
        return fit_image(load_image(path), width, height, self.fit, pose=True)[..., 0]


def collate(batch: list[dict[str, torch.Tensor]] | AnimatorError) -> dict[str, torch.Tensor] | AnimatorError:
    """The DataLoader's ``collate_fn``: stacks samples, passes a load error through to :func:`iter_batches`."""
    return batch if isinstance(batch, AnimatorError) else torch.utils.data.default_collate(batch)


def iter_batches(loader: torch.utils.data.DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    """The loader's batches; a load error from any worker is raised here, in the main process, as itself."""
    for batch in loader:
        if isinstance(batch, AnimatorError):
            raise batch
        yield batch


def _to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1)


class BatchPlan:
    """Which clips each rank loads at each micro-batch: seeded, shared by all ranks, resumable without loading.

    Epoch e shuffles each bucket's clips and the order of the (bucket, global batch) list with
    ``seed + e``; every rank computes the same plan (so all ranks use the same resolution at the same step,
    unlike the reference's per-rank choice) and takes its own slice of each global batch. Incomplete global
    batches are dropped, so a bucket with fewer clips than one global batch is never trained on: rank 0 logs a
    warning naming it (``bucket_names``, e.g. its list file). Per-sample seeds mix (seed, micro-batch, rank, slot),
    so ranks draw different frames.
    """

    def __init__(self, bucket_sizes: list[int], batch_size: int, world_size: int, rank: int, seed: int,
                 bucket_names: list[str] | None = None) -> None:
        self.bucket_sizes, self.batch_size = bucket_sizes, batch_size
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = sum(size // self.global_batch for size in bucket_sizes)
        self._epoch_cache: tuple[int, list[tuple[int, np.ndarray]]] | None = None
        if self.batches_per_epoch == 0:
            raise InputError(f"no complete batch: {max(bucket_sizes, default=0)} usable clips in the largest bucket, "
                             f"{self.global_batch} needed per step (batch size × processes)",
                             "add clips or lower data.batch_size")
        names = bucket_names or [f"bucket {i}" for i in range(len(bucket_sizes))]
        for name, size in zip(names, bucket_sizes, strict=True):
            if size < self.global_batch and rank == 0:
                log.warning("%s: %d usable clips, fewer than one global batch of %d (batch size × processes): "
                            "its clips are not trained on", name, size, self.global_batch)

    def epoch(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """The (bucket, clip indices of one global batch) list of ``epoch``, in training order."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for bucket, size in enumerate(self.bucket_sizes):
            order = rng.permutation(size)
            batches += [(bucket, order[i:i + self.global_batch])
                        for i in range(0, size - self.global_batch + 1, self.global_batch)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._epoch_cache = (epoch, batches)
        return batches

    def keys(self, micro_batch: int) -> list[SampleKey]:
        """This rank's samples for global micro-batch number ``micro_batch``."""
        epoch, position = divmod(micro_batch, self.batches_per_epoch)
        bucket, clips = self.epoch(epoch)[position]
        mine = clips[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return [SampleKey(bucket, int(clip), _mix(self.seed, micro_batch, self.rank, slot))
                for slot, clip in enumerate(mine)]

    def iterate(self, start: int = 0, repeat: bool = False) -> Iterator[list[SampleKey]]:
        """Endless batches of keys from micro-batch ``start`` on (resume skips without loading anything);
        ``repeat``: micro-batch 0 over and over (overfitting one batch, for debugging)."""
        micro_batch = start
        while True:
            yield self.keys(0 if repeat else micro_batch)
            micro_batch += 1


def _mix(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1, np.uint64)[0] >> 1)
