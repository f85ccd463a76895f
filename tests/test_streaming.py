"""Memory that does not grow with the video's length: poses read lazily, PoseNet features per window, decoded
frames encoded chunk by chunk; and the video stays bit for bit the one of the whole-array path.

Held memory is counted, not timed: live pose arrays (weak references), PoseNet chunks kept, decoder calls made
before each chunk is written. The memory figures themselves come from benchmarks/memory_length.py.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from test_generate import _skeletons

from animator_cli.cache import StageCache
from animator_cli.errors import DiskFullError
from animator_cli.face import face_stage, load_identity
from animator_cli.generate import generate, load_pipeline
from animator_cli.options import Runtime, generate_options
from animator_cli.sampling.fit import fit_image
from animator_cli.sampling.pipeline import AnimationPipeline
from animator_cli.sampling.pose_features import PoseFeatures, _runs
from animator_cli.sampling.pose_frames import FittedPoses
from animator_cli.sampling.windows import group_windows, window_indices
from animator_cli.video import VideoWriter, iter_frames, list_frames, load_image, write_frame, write_video

FRAMES, TILE, OVERLAP = 52, 16, 4  # four windows; PoseNet chunks 0-15, 16-31, 32-47, 48-51


@pytest.mark.parametrize("batch", [1, 2])
def test_pose_features_per_window_equal_the_whole_computation(batch):
    """Windows one or two per UNet call; with one, three of the four chunks are ever held at once."""
    computed = []

    def compute(start: int, stop: int) -> torch.Tensor:
        computed.append((start, stop))
        return torch.arange(start, stop, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 2, 3, 3) * 10

    whole = PoseFeatures(compute, FRAMES, TILE, keep_all=True)
    assert computed == [(0, 16), (16, 32), (32, 48), (48, 52)]
    streamed, held = PoseFeatures(compute, FRAMES, TILE, keep_all=False), []
    for step in range(2):
        computed.clear()
        for group in group_windows(window_indices(FRAMES, TILE, OVERLAP), batch):
            frames = [i for window in group for i in window]
            index = torch.tensor(frames)
            assert torch.equal(streamed.window(frames, index), whole.window(frames, index))
            held.append(len(streamed.kept))
        if batch == 1:  # each chunk once per step; chunk 0, every window's anchor, once
            assert computed == [(0, 16)] * (step == 0) + [(16, 32), (32, 48), (48, 52)]
    assert max(held) == (3 if batch == 1 else 4)  # one window: chunk 0 and the window's chunks, never all four


def test_runs_split_frames_at_gaps_and_chunk_edges():
    assert list(_runs([0, 13, 14, 15, 16, 17, 27], 16)) == [(0, 0, 1), (0, 13, 16), (1, 0, 2), (1, 11, 12)]
    assert list(_runs([5], 4)) == [(1, 1, 2)]


def test_fitted_poses_read_only_the_frames_of_a_slice(tmp_path, monkeypatch):
    paths = list_frames(_skeletons(tmp_path / "poses", 5, size=(64, 96)))
    poses = FittedPoses(paths, 64, 64, generate_options().fit)
    read = []
    monkeypatch.setattr("animator_cli.sampling.pose_frames.load_image", lambda p: read.append(p) or load_image(p))
    assert len(poses) == 5 and poses[1:3].shape == (2, 64, 64, 3) and read == paths[1:3]
    np.testing.assert_array_equal(poses[4:5][0], fit_image(load_image(paths[4]), 64, 64, pose=True))
    assert poses[5:].shape == (0, 64, 64, 3)
    with pytest.raises(TypeError):
        poses[0]


@pytest.fixture(scope="module")
def pipeline(tiny_home) -> AnimationPipeline:
    return load_pipeline(tiny_home, Runtime(device="cpu"))


def test_generate_streams_and_equals_the_whole_array_path(tiny_home, pipeline, tmp_path, astronaut_path,
                                                          monkeypatch):
    """52 frames in four windows of 16 (overlap 4): the poses, the PoseNet features and the decoded frames go
    through chunk by chunk, and the mp4 and the --frames-dir PNGs equal what the whole-array path makes."""
    poses = _skeletons(tmp_path / "poses", FRAMES, size=(64, 96))
    options = generate_options(width=64, height=64, steps=1, tile=TILE, overlap=OVERLAP)
    cache = StageCache(tmp_path / "cache")

    # The whole-array path: every pose in one array, every feature computed up front, every frame returned.
    rgb = fit_image(load_image(astronaut_path), 64, 64, options.fit)
    every_pose = np.stack([fit_image(load_image(p), 64, 64, options.fit, pose=True) for p in list_frames(poses)])
    identity = load_identity(face_stage(astronaut_path, tiny_home, cache)[0]).embedding
    whole = pipeline(rgb, every_pose, identity, options.sampling, torch.Generator().manual_seed(options.seed))
    assert whole.shape == (FRAMES, 64, 64, 3)

    # The streamed path, counted: live pose arrays, PoseNet chunks kept, decoder calls before each written chunk.
    monkeypatch.setattr(pipeline, "pose_feature_budget", 0)
    live, most_live = [], []

    def lazy_slice(self, index, read=FittedPoses.__getitem__):
        frames = read(self, index)
        live.append(weakref.ref(frames))
        most_live.append(sum(len(f()) for f in live if f() is not None))
        return frames

    monkeypatch.setattr(FittedPoses, "__getitem__", lazy_slice)
    kept = []
    monkeypatch.setattr(PoseFeatures, "window", lambda self, *a, window=PoseFeatures.window: (
        kept.append(len(self.kept)), window(self, *a))[1])
    decoded, written = [], []
    vae_decode = pipeline.models.vae.decode
    monkeypatch.setattr(pipeline.models.vae, "decode", lambda *a, **k: decoded.append(1) or vae_decode(*a, **k))
    monkeypatch.setattr(VideoWriter, "write", lambda self, frame, write=VideoWriter.write: (
        written.append(len(decoded)), write(self, frame)))

    out = tmp_path / "out.mp4"
    generate(astronaut_path, poses, out, options, weights=tiny_home, cache=cache, pipeline=lambda: pipeline,
             frames_dir=tmp_path / "frames")
    assert max(most_live) == TILE  # one PoseNet chunk of poses at a time, never the 52
    assert max(kept) == 3  # PoseNet chunks held, of four
    assert written == [i // 4 + 1 for i in range(FRAMES)]  # each chunk of 4 encoded before the next is decoded

    np.testing.assert_array_equal(np.stack([load_image(p) for p in list_frames(tmp_path / "frames")]), whole)
    reference = write_video(tmp_path / "whole.mp4", whole, fps=12.0)
    np.testing.assert_array_equal(np.stack(list(iter_frames(out))), np.stack(list(iter_frames(reference))))


def test_a_failed_render_leaves_the_frames_folder_as_it_was(tiny_home, pipeline, tmp_path, astronaut_path,
                                                            monkeypatch):
    """Frames are written as they are decoded, but into a hidden folder moved into place at the end: a render
    failing on its last frame leaves no frame of it (and no video)."""
    poses, frames_dir = _skeletons(tmp_path / "poses", 5), tmp_path / "frames"
    earlier = write_frame(frames_dir, 0, np.full((64, 64, 3), 7, np.uint8)).read_bytes()

    def full_disk(self, frame, write=VideoWriter.write):
        if self.frames_written == 4:
            raise OSError(28, "No space left on device")
        write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", full_disk)
    with pytest.raises(DiskFullError, match="no space left on device"):
        generate(astronaut_path, poses, tmp_path / "out.mp4", generate_options(width=64, height=64, steps=1),
                 weights=tiny_home, cache=StageCache(tmp_path / "cache"), pipeline=lambda: pipeline,
                 frames_dir=frames_dir)
    assert [p.name for p in frames_dir.iterdir()] == ["frame_0.png"] and (frames_dir / "frame_0.png").read_bytes() \
        == earlier
    assert not (tmp_path / "out.mp4").exists() and not list((tmp_path / "cache").glob("generate/*/*.mp4"))
