"""Golden final latents: `animator generate` on the tiny weights home must keep denoising to the same numbers.

The final denoised latents (1, F, 4, h, w) fp32, the tensor the pipeline hands to its VAE decoder, were saved in
`tests/data/golden_latents/` from the code before the library refactor of issue 22 (see the README there). The
cases go through the public CLI so they outlive any rewrite of the Python internals; only the capture point, the
pipeline's decoder entry `AnimationPipeline._decode`, is internal, and it is wrapped, not replaced.

The inputs below are fixed: changing them (or the options) invalidates the saved files.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from insightface.utils.face_align import arcface_dst

from animator_cli.pose.draw import draw_pose
from animator_cli.pose.keypoints import FACE, NUM_POINTS, Pose, PoseTrack, save_keypoints
from animator_cli.sampling.pipeline import AnimationPipeline
from animator_cli.video import write_frame

GOLDEN = Path(__file__).parent / "data" / "golden_latents"
TOLERANCE = 1e-5  # max abs difference; the files hold fp32 latents of magnitude ~1


def _swinging_arm(folder: Path, count: int) -> Path:
    """Skeleton frames 64×64 on black: a trunk, a head and an arm that swings by 0.4 rad a frame."""
    folder.mkdir(parents=True)
    for i in range(count):
        image = np.zeros((64, 64, 3), np.uint8)
        cv2.line(image, (32, 12), (32, 38), (255, 0, 85), 3)
        end = (int(32 + 20 * np.cos(0.4 * i)), int(21 + 20 * np.sin(0.4 * i)))
        cv2.line(image, (32, 21), end, (0, 255, 0), 3)
        cv2.circle(image, (32, 10), 5, (0, 0, 255), -1)
        cv2.imwrite(str(folder / f"frame_{i}.png"), image)
    (folder / "meta.json").write_text(json.dumps({"fps": 12.0}))
    return folder


def _moving_face(folder: Path, count: int) -> Path:
    """A pose folder with keypoints.npz (for the face boxes of --face-opt): 68 face points on an ellipse whose
    eyes, nose tip and mouth corners sit on ArcFace's template in a box of half-size 0.1 × 0.12 that drifts
    right by 0.01 a frame."""
    folder.mkdir(parents=True)
    poses = []
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    # the five points' indices among the 68 (eye contours, nose tip, mouth corners)
    five = (range(36, 42), range(42, 48), [30], [48], [54])
    for i in range(count):
        cx, cy, hx, hy = 0.3 + 0.01 * i, 0.3, 0.1, 0.12
        face = np.stack([cx + hx * np.cos(angles), cy + hy * np.sin(angles)], 1)
        template = np.asarray(arcface_dst) / 112 * (2 * hx, 2 * hy) + (cx - hx, cy - hy)
        for point, indices in zip(template, five, strict=True):
            face[list(indices)] = point
        points, scores = np.zeros((NUM_POINTS, 2), np.float32), np.zeros(NUM_POINTS, np.float32)
        points[FACE], scores[FACE] = face, 0.9
        poses.append(Pose(points, scores))
        write_frame(folder, i, draw_pose(poses[-1], 64, 64))
    track = PoseTrack.from_poses(poses, (64, 64), 12.0)
    save_keypoints(folder / "keypoints.npz", track, track)
    (folder / "meta.json").write_text(json.dumps({"fps": 12.0}))
    return folder


# name: (pose folder builder, frames, extra CLI options)
CASES = {
    "basic": (_swinging_arm, 6, ("--steps", 3)),
    "windows": (_swinging_arm, 40, ("--steps", 2, "--tile", 16, "--overlap", 4)),  # windows 0-15, 12-27, 24-39
    "face_opt": (_moving_face, 4, ("--steps", 2, "--face-opt", "--face-opt-steps", "0:1", "--face-opt-iters", 2)),
}


def render_latents(cli, home, reference: Path, folder: Path, options: tuple, monkeypatch) -> np.ndarray:
    """Run `animator generate` and return the latents the decoder received (1, F, 4, h, w) fp32."""
    seen: list[torch.Tensor] = []
    decode = AnimationPipeline._decode

    def recording(self, latents: torch.Tensor, chunk: int):
        seen.append(latents.detach().to("cpu", copy=True))
        return decode(self, latents, chunk)

    monkeypatch.setattr(AnimationPipeline, "_decode", recording)
    result = cli("--weights", home.root, "--device", "cpu", "generate", reference, folder, "-o",
                 folder.parent / "out.mp4", "--width", 64, "--height", 64, "--seed", 7, "--force", *options)
    assert result.exit_code == 0, result.stderr
    assert len(seen) == 1, "one decode per render"
    return seen[0].float().numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_final_latents_equal_the_golden_files(cli, tiny_home, tmp_path, astronaut_path, monkeypatch, name):
    build, frames, options = CASES[name]
    latents = render_latents(cli, tiny_home, astronaut_path, build(tmp_path / "poses", frames), options, monkeypatch)
    golden = np.load(GOLDEN / f"{name}.npy")
    assert latents.shape == golden.shape == (1, frames, 4, 8, 8)
    assert np.abs(latents - golden).max() <= TOLERANCE
