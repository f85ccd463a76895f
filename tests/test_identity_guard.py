"""Identity guard: one window sampled again without seams (`sampling.repair`), and the guard loop around it.

Tests named ``mechanism`` drive the guard with an injected scorer (the tiny home's ArcFace scores are arbitrary):
they check what is re-rendered, kept and recorded, not that identity improves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_generate import _skeletons

from animator_cli.generate import load_pipeline, pose_frames
from animator_cli.options import Runtime, generate_options
from animator_cli.sampling.fit import fit_image
from animator_cli.sampling.pose_frames import FittedPoses
from animator_cli.sampling.repair import WindowPass, held_slots, resample_window
from animator_cli.video import load_image

FRAMES = 40  # windows 0-15, 12-27 (real frames 13-27), 24-39 (real frames 25-39) with frame 0 in each
SEAM_TOLERANCE = 0.02  # max |Δ| of an overlap frame's latent (latents of magnitude ~1-3), see sampling/repair.py


@pytest.fixture(scope="module")
def sampled(tiny_home, astronaut_path, tmp_path_factory):
    """The tiny pipeline and a 40-frame, 64×64, 4-step video sampled with it."""
    pipeline = load_pipeline(tiny_home, Runtime(device="cpu"))
    options = generate_options(width=64, height=64, steps=4)
    poses = _skeletons(tmp_path_factory.mktemp("guard") / "poses", FRAMES)
    reference = fit_image(load_image(astronaut_path), 64, 64, options.fit)
    skeletons = FittedPoses(pose_frames(poses), 64, 64, options.fit)
    video = pipeline.sample(reference, skeletons, np.ones(512, np.float32), options.sampling,
                            torch.Generator().manual_seed(1))
    return pipeline, video


@pytest.mark.parametrize("seed", [None, 5])
def test_a_resampled_window_leaves_other_frames_alone_and_its_overlaps_close(sampled, seed):
    pipeline, video = sampled
    before = video.latents.clone()
    window = video.windows[1]
    new = resample_window(pipeline, video, 1, WindowPass(id_scale=1.0, seed=seed))
    assert torch.equal(video.latents, before)  # the video itself is not changed by a pass
    change = (new - before[:, window]).abs().amax(dim=(0, 2, 3, 4))
    held = held_slots(video.windows, 1)
    assert [window[slot] for slot in held] == [0, 13, 14, 15, 25, 26, 27]
    assert change[0] == 0  # frame 0, every window's anchor
    assert change[held[1:]].max() <= SEAM_TOLERANCE  # overlap frames end close to the neighbours' final ones
    free = [slot for slot in range(len(window)) if slot not in held]
    assert change[free].min() > 5 * SEAM_TOLERANCE  # the window's own frames were sampled again


def test_decode_frames_gives_the_full_decode_s_pixels(sampled):
    pipeline, video = sampled
    whole = np.concatenate(list(pipeline._decode(video.latents, 4)))
    frames = [5, 13, 14, 30]
    assert np.array_equal(pipeline.decode_frames(video.latents, frames, 4), whole[frames])
