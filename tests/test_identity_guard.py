"""Identity guard: one window sampled again without seams (`sampling.repair`), and the guard loop around it.

Tests named ``mechanism`` drive the guard with an injected scorer (the tiny home's ArcFace scores are arbitrary):
they check what is re-rendered, kept and recorded, not that identity improves.
"""

from __future__ import annotations

import functools
from pathlib import Path

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


# --- the guard loop ------------------------------------------------------------------------------------------------

class Scripted:
    """Mechanism scorer: the render scores HIGH except window 1's own frames (16-24), LOW; every later call (one
    attempt's frames) scores the next value of ``attempts``."""

    def __init__(self, attempts: list[float]) -> None:
        self.attempts, self.calls = list(attempts), 0

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == 1:
            cosines = np.full(len(frames), HIGH)
            cosines[16:25] = LOW
            return cosines
        return np.full(len(frames), self.attempts.pop(0))


HIGH, LOW, THRESHOLD = 0.8, 0.2, 0.6


@pytest.fixture
def scripted(monkeypatch):
    """Install a `Scripted` scorer in place of the timeline's ArcFace scorer; returns a function setting its
    attempt scores."""
    holder = {}

    def install(attempts: list[float]) -> Scripted:
        holder["scorer"] = Scripted(attempts)
        return holder["scorer"]

    monkeypatch.setattr("animator_cli.check.timeline.IdentityScorer", lambda *a, **k: holder["scorer"])
    return install


def _cli_frames(cli, home, reference, poses, folder: Path, *options) -> tuple[dict, list[np.ndarray]]:
    """Run `animator --json generate` with --frames-dir; its JSON result and the PNG frames (lossless)."""
    import json

    result = cli("--weights", home.root, "--device", "cpu", "--json", "generate", reference, poses,
                 "-o", folder / "out.mp4", "--width", 64, "--height", 64, "--steps", 2, "--seed", 3,
                 "--frames-dir", folder / "frames", *options)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), [load_image(folder / "frames" / f"frame_{i}.png") for i in range(FRAMES)]


@pytest.fixture(scope="module")
def plain(tiny_home, astronaut_path, tmp_path_factory):
    """The pose folder and the frames of the same render without the guard."""
    from animator_cli.cli.app import run

    folder = tmp_path_factory.mktemp("plain")
    poses = _skeletons(folder / "poses", FRAMES)
    code = run([str(a) for a in ("--weights", tiny_home.root, "--device", "cpu", "--cache-dir", folder / "cache",
                                 "generate", astronaut_path, poses, "-o", folder / "out.mp4", "--width", 64,
                                 "--height", 64, "--steps", 2, "--seed", 3, "--frames-dir", folder / "frames")])
    assert code == 0
    return poses, [load_image(folder / "frames" / f"frame_{i}.png") for i in range(FRAMES)]


def test_mechanism_only_the_low_window_is_rendered_again_and_every_other_frame_is_bit_identical(
        cli, tiny_home, astronaut_path, plain, scripted, tmp_path):
    poses, before = plain
    scorer = scripted([0.5, 0.3])  # attempt 1 beats the render but stays below the threshold; attempt 2 is worse
    record, after = _cli_frames(cli, tiny_home, astronaut_path, poses, tmp_path, "--identity-guard", THRESHOLD)
    guard = record["identity_guard"]
    assert [len(w["attempts"]) for w in guard["windows"]] == [0, 2, 0]  # K = 2 attempts, window 1 only
    assert guard["windows"][1]["kept"] == "attempt 1 (id_scale)"  # the tiny pose folder has no face boxes: no HJB
    assert [a["score"] for a in guard["windows"][1]["attempts"]] == [0.5, 0.3]
    assert guard["rendered_again"] == guard["repaired"] == 1 and scorer.calls == 3
    assert record["unet_calls"] == 6 + 2 * 2  # 3 windows × 2 steps, then 2 one-window passes of 2 steps
    outside = [f for f in range(FRAMES) if not 13 <= f <= 27]
    assert all(np.array_equal(after[f], before[f]) for f in outside)
    assert not any(np.array_equal(after[f], before[f]) for f in range(16, 25))  # the window's own frames changed


def test_mechanism_a_worse_attempt_is_never_kept(cli, tiny_home, astronaut_path, plain, scripted, tmp_path):
    poses, before = plain
    scripted([0.1, 0.15])  # both below the render's 0.2
    record, after = _cli_frames(cli, tiny_home, astronaut_path, poses, tmp_path, "--identity-guard", THRESHOLD)
    window = record["identity_guard"]["windows"][1]
    assert window["kept"] == "render" and len(window["attempts"]) == 2
    assert record["identity_guard"]["repaired"] == 0
    assert all(np.array_equal(a, b) for a, b in zip(after, before, strict=True))


class _FakeVideo:
    """Mechanism stand-in for `PipelineRepair`: records which windows were sampled again."""

    windows = [[0, *range(1, 16)], [0, *range(13, 28)], [0, *range(25, 40)]]

    def __init__(self) -> None:
        self.resampled: list[int] = []
        self.committed: list[int] = []

    def resample(self, index, attempt):
        self.resampled.append(index)
        return index

    def pixels(self, index, latents):
        return np.full((len(self.windows[index]) - 1, 2, 2, 3), len(self.resampled), np.uint8)

    def commit(self, index, latents):
        self.committed.append(index)


@pytest.mark.parametrize(("retries", "attempts", "tried", "kept"), [
    (3, [0.3, 0.4, 0.45], 3, 2),  # never reaches the threshold: K attempts, the best kept
    (3, [0.3, 0.7, 0.9], 2, 1),  # stops at the first attempt that reaches it
    (1, [0.1], 1, None),  # K = 1; worse than the render: nothing kept
])
def test_mechanism_at_most_k_attempts_and_the_best_kept(retries, attempts, tried, kept):
    from animator_cli.guard.identity import escalation, guard_video
    from animator_cli.options import GuardOptions

    video, frames = _FakeVideo(), np.zeros((FRAMES, 2, 2, 3), np.uint8)
    plan = functools.partial(escalation, retries, hjb=True, id_scale=1.0, seed=3)
    record = guard_video(frames, video, Scripted(attempts), GuardOptions(THRESHOLD, retries),
                         lambda window: plan(window=window))
    assert video.resampled == [1] * tried and len(record.windows[1].attempts) == tried
    assert record.windows[1].kept == kept
    assert video.committed == ([] if kept is None else [1])
    assert (frames[13:28] == (0 if kept is None else kept + 1)).all() and not frames[:13].any()


def test_escalation_adds_one_lever_per_attempt():
    from animator_cli.guard.identity import ID_SCALE_STEP, escalation

    attempts = escalation(4, hjb=True, id_scale=1.0, seed=3, window=1)
    assert [a.action for a in attempts] == ["hjb", "id_scale", "seed", "seed"]
    assert [a.hjb for a in attempts] == [True] * 4
    assert [a.id_scale for a in attempts] == [1.0] + [ID_SCALE_STEP] * 3
    assert attempts[0].seed is attempts[1].seed is None and attempts[2].seed != attempts[3].seed
    without_hjb = escalation(2, hjb=False, id_scale=2.0, seed=3, window=0)
    assert [(a.action, a.hjb, a.id_scale) for a in without_hjb] == [("id_scale", False, 3.0), ("seed", False, 3.0)]


def test_auto_threshold_is_the_median_minus_the_margin():
    from animator_cli.guard.identity import AUTO_MARGIN, auto_threshold

    assert auto_threshold(np.array([0.5, np.nan, 0.7, 0.6])) == pytest.approx(0.6 - AUTO_MARGIN)
