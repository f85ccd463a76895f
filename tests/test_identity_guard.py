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
    """Mechanism scorer: the render (its first ``frames`` frames scored, in the decoder's chunks) scores HIGH
    except window 1's own frames (16-24), LOW; every later call (one attempt's frames) scores the next value of
    ``attempts``."""

    def __init__(self, attempts: list[float], frames: int = FRAMES) -> None:
        self.attempts, self.frames, self.seen, self.attempt_calls = list(attempts), frames, 0, 0

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if self.seen < self.frames:
            numbers = np.arange(self.seen, self.seen + len(frames))
            self.seen += len(frames)
            return np.where((numbers >= 16) & (numbers <= 24), LOW, HIGH)
        self.attempt_calls += 1
        return np.full(len(frames), self.attempts.pop(0))


HIGH, LOW, THRESHOLD = 0.8, 0.2, 0.6


@pytest.fixture
def scripted(monkeypatch):
    """Install a `Scripted` scorer in place of the timeline's ArcFace scorer; returns a function setting its
    attempt scores."""
    holder = {}

    def install(attempts: list[float], frames: int = FRAMES) -> Scripted:
        holder["scorer"] = Scripted(attempts, frames)
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


@pytest.fixture(params=["held", "decoded again"])
def frames_kept(request, monkeypatch):
    """Both ways a render keeps its frames for the repairs: held decoded, or (a budget of 0 bytes, as for a long
    video) decoded again for the encoder."""
    if request.param == "decoded again":
        monkeypatch.setattr("animator_cli.guard.frames.HELD_FRAMES_BUDGET", 0)
    return request.param


def test_mechanism_only_the_low_window_is_rendered_again_and_every_other_frame_is_bit_identical(
        cli, tiny_home, astronaut_path, plain, scripted, tmp_path, frames_kept):
    """Frame 12 shares a decoder call with the changed frames 13-15 and still keeps its bytes."""
    poses, before = plain
    scorer = scripted([0.5, 0.3])  # attempt 1 beats the render but stays below the threshold; attempt 2 is worse
    record, after = _cli_frames(cli, tiny_home, astronaut_path, poses, tmp_path, "--identity-guard", THRESHOLD)
    guard = record["identity_guard"]
    assert [len(w["attempts"]) for w in guard["windows"]] == [0, 2, 0]  # K = 2 attempts, window 1 only
    assert guard["windows"][1]["kept"] == "attempt 1 (id_scale)"  # the tiny pose folder has no face boxes: no HJB
    assert [a["score"] for a in guard["windows"][1]["attempts"]] == [0.5, 0.3]
    assert guard["rendered_again"] == guard["repaired"] == 1 and scorer.attempt_calls == 2
    assert record["unet_calls"] == 6 + 2 * 2  # 3 windows × 2 steps, then 2 one-window passes of 2 steps
    outside = [f for f in range(FRAMES) if not 13 <= f <= 27]
    assert all(np.array_equal(after[f], before[f]) for f in outside)
    assert not any(np.array_equal(after[f], before[f]) for f in range(16, 25))  # the window's own frames changed


def test_long_videos_are_decoded_again_with_the_same_bytes_and_nothing_held(cli, tiny_home, astronaut_path, plain,
                                                                           scripted, tmp_path, monkeypatch):
    """Past HELD_FRAMES_BUDGET the repairs hold no decoded frame, only the latents the repair replaced, and the
    guard with the drift lock gives the bytes of the held path (frame 12 shares a decoder call with the repaired
    frames 13-15)."""
    from animator_cli.guard.frames import DecodedFrames

    poses, _ = plain
    kept: dict[str, list] = {}
    emit = DecodedFrames.emit

    def counting(self, out):
        kept["held"], kept["replaced"] = self.held, sorted(self.replaced)
        return emit(self, out)

    monkeypatch.setattr(DecodedFrames, "emit", counting)
    outputs = []
    for budget, folder in ((1 << 30, tmp_path / "held"), (0, tmp_path / "again")):
        monkeypatch.setattr("animator_cli.guard.frames.HELD_FRAMES_BUDGET", budget)
        scripted([0.9])
        record, frames = _cli_frames(cli, tiny_home, astronaut_path, poses, folder, "--identity-guard", THRESHOLD,
                                     "--drift-lock")
        assert record["identity_guard"]["repaired"] == 1 and len(record["drift_lock"]) == 3
        outputs.append((record["drift_lock"], frames))
    assert kept == {"held": None, "replaced": list(range(13, 28))}  # the latents of the repaired frames only
    assert outputs[0][0] == outputs[1][0]  # the same corrections
    assert all(np.array_equal(a, b) for a, b in zip(outputs[0][1], outputs[1][1], strict=True))


class _MixingDecoder:
    """Mechanism stand-in for the pipeline's decoding: each call's frames depend on all the call's latents (as the
    VAE's temporal layers make them), 2×2 latent cells → 16×16 pixels."""

    def __init__(self) -> None:
        from animator_cli.sampling.flops import UNetWork

        self.work = UNetWork()

    def decode_calls(self, calls):
        for latents in calls:
            mixed = latents[:, :3] + 0.7 * latents[:, :3].mean(0, keepdim=True)
            pixels = (mixed.repeat_interleave(8, -1).repeat_interleave(8, -2) * 60 + 128).round().clamp(0, 255)
            yield pixels.byte().permute(0, 2, 3, 1).numpy().copy()

    def decode(self, latents, chunk, sink):
        for pixels in self.decode_calls(latents[0, i:i + chunk] for i in range(0, latents.shape[1], chunk)):
            sink(pixels)

    def decode_frames(self, latents, frames, chunk):
        starts = sorted({frame - frame % chunk for frame in frames})
        decoded = {start + i: image for start in starts
                   for i, image in enumerate(next(self.decode_calls([latents[0, start:start + chunk]])))}
        return np.stack([decoded[frame] for frame in frames])


@pytest.mark.parametrize(("frames", "tile", "overlap", "chunk", "low"), [
    (40, 16, 4, 4, (1,)),
    (40, 16, 4, 3, (0, 1, 2)),  # every window, a chunk that does not divide the stride
    (53, 16, 4, 7, (0, 2, 3, 4)),  # a short last call
    (29, 8, 2, 16, (0, 1, 2, 3, 4)),  # calls spanning several windows
    (40, 8, 3, 5, (1, 2, 3, 5, 6, 7)),  # frames in three windows
])
def test_mechanism_decoded_again_equals_held_whatever_is_repaired(monkeypatch, frames, tile, overlap, chunk, low):
    """Repairs in sequence, windows sharing frames and decoder calls: decoding again gives the held path's bytes
    and drift corrections, holding no frame."""
    import types

    from animator_cli.guard import run
    from animator_cli.options import GenerateOptions, GuardOptions, SamplingOptions
    from animator_cli.sampling.windows import window_indices

    windows = window_indices(frames, tile, overlap)
    low_frames = {frame for index in low for frame in windows[index] if frame}

    class Scorer:
        def __init__(self) -> None:
            self.seen, self.rng = 0, np.random.default_rng(0)

        def __call__(self, pixels):
            if self.seen < frames:
                numbers = range(self.seen, self.seen + len(pixels))
                self.seen += len(pixels)
                return np.array([0.1 if n in low_frames else 0.9 for n in numbers])
            return self.rng.uniform(0.2, 0.7, len(pixels))

    def resample(pipeline, video, index, how):  # new latents for the window, frame 0 kept
        noise = torch.randn(1, len(windows[index]), 4, 2, 2, generator=torch.Generator().manual_seed(index))
        new = video.latents[:, windows[index]] + noise
        new[:, 0] = video.latents[:, 0]
        return new

    class Poses:
        def __getitem__(self, part):
            return np.stack([np.pad(np.full((4, 4, 3), 200, np.uint8), ((2 + f % 5, 10 - f % 5), (5, 7), (0, 0)))
                             for f in range(part.start, part.stop)])

    monkeypatch.setattr(run, "resample_window", resample)
    options = GenerateOptions(sampling=SamplingOptions(tile=tile, overlap=overlap, decode_chunk=chunk),
                              identity_guard=GuardOptions(0.5, 2), drift_lock=True)
    outputs = []
    for budget in (1 << 30, 0):
        monkeypatch.setattr("animator_cli.guard.frames.HELD_FRAMES_BUDGET", budget)
        monkeypatch.setattr("animator_cli.check.timeline.IdentityScorer", lambda *a, **k: Scorer())
        latents = torch.randn(1, frames, 4, 2, 2, generator=torch.Generator().manual_seed(1))
        video = types.SimpleNamespace(latents=latents, windows=windows)
        decoder, out = _MixingDecoder(), []
        _, record = run.repaired_render(decoder, video, options, out.append, reference=None, skeletons=Poses(),
                                        weights=None, device=None, refiner=lambda face_opt: None)
        outputs.append((np.concatenate(out), record["drift_lock"], record["identity_guard"]["repaired"]))
    (held, held_drift, repaired), (again, again_drift, again_repaired) = outputs
    assert repaired == again_repaired >= 1
    assert np.array_equal(held, again) and held_drift == again_drift


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
        self.frames = np.zeros((FRAMES, 2, 2, 3), np.uint8)

    def resample(self, index, attempt):
        self.resampled.append(index)
        return index

    def pixels(self, index, latents):
        return np.full((len(self.windows[index]) - 1, 2, 2, 3), len(self.resampled), np.uint8)

    def commit(self, index, latents, pixels):
        self.committed.append(index)
        self.frames[self.windows[index][1:]] = pixels


@pytest.mark.parametrize(("retries", "attempts", "tried", "kept"), [
    (3, [0.3, 0.4, 0.45], 3, 2),  # never reaches the threshold: K attempts, the best kept
    (3, [0.3, 0.7, 0.9], 2, 1),  # stops at the first attempt that reaches it
    (1, [0.1], 1, None),  # K = 1; worse than the render: nothing kept
])
def test_mechanism_at_most_k_attempts_and_the_best_kept(retries, attempts, tried, kept):
    from animator_cli.guard.identity import escalation, guard_video
    from animator_cli.options import GuardOptions

    video, score = _FakeVideo(), Scripted(attempts)
    plan = functools.partial(escalation, retries, hjb=True, id_scale=1.0, seed=3)
    record = guard_video(score(video.frames), video, score, GuardOptions(THRESHOLD, retries),
                         lambda window: plan(window=window))
    assert video.resampled == [1] * tried and len(record.windows[1].attempts) == tried
    assert record.windows[1].kept == kept
    assert video.committed == ([] if kept is None else [1])
    assert (video.frames[13:28] == (0 if kept is None else kept + 1)).all() and not video.frames[:13].any()


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


@pytest.mark.parametrize(("face_opt", "expected"), [
    ((), [("hjb", True, 1.0), ("id_scale", True, 1.5)]),  # HJB on the window first
    (("--face-opt",), [("id_scale", True, 1.5), ("seed", True, 1.5)]),  # the render had HJB: every pass keeps it
])
def test_mechanism_hjb_is_the_first_lever_when_the_poses_give_face_boxes(cli, tiny_home, astronaut_path, scripted,
                                                                          tmp_path, face_opt, expected, monkeypatch):
    """HJB is the first lever where face boxes exist (every lever's, after a render with it); a pass refines the
    window's own frames only (16-27: slots 4-15 of window 1), never those held to the neighbours (0, 13-15)."""
    import json

    from test_golden_latents import _moving_face

    from animator_cli.hjb import FaceRefiner

    poses = _moving_face(tmp_path / "poses", 28)  # keypoints.npz: face boxes for HJB; windows 0-15 and 12-27
    scripted([0.1, 0.1], frames=28)
    refined: list[tuple[int, int, int]] = []  # (frames in the pass, first, stop) of every refined group
    refine_group = FaceRefiner._refine_group

    def recording(self, vae, latents, frames, *rest):
        refined.append((len(self.boxes), frames.start, frames.stop))
        return refine_group(self, vae, latents, frames, *rest)

    monkeypatch.setattr(FaceRefiner, "_refine_group", recording)
    result = cli("--weights", tiny_home.root, "--device", "cpu", "--json", "generate", astronaut_path, poses,
                 "-o", tmp_path / "out.mp4", "--width", 64, "--height", 64, "--steps", 2, "--identity-guard", 0.5,
                 *face_opt, "--face-opt-steps", "0:1", "--face-opt-iters", 1)
    assert result.exit_code == 0, result.stderr
    attempts = json.loads(result.stdout)["identity_guard"]["windows"][1]["attempts"]
    assert [(a["action"], a["hjb"], a["id_scale"]) for a in attempts] == expected
    in_passes = {(first, stop) for frames, first, stop in refined if frames == 16}  # the render has 28 frames
    assert in_passes == {(4, 8), (8, 12), (12, 16)}  # chunks of 4 from slot 4, the first of the window's own


def test_mechanism_no_hjb_lever_for_a_window_without_frames_of_its_own():
    """29 frames: window 1 (0, 13-27) shares every frame with windows 0 and 2 (0, 14-28), so a pass may change
    none of its frames' faces through HJB: its first lever is the ID scale, not an HJB pass that refines nothing.
    A draft's guard has no HJB lever at all."""
    import types

    from animator_cli.guard.run import PipelineRepair, run_guard
    from animator_cli.options import GenerateOptions, GuardOptions
    from animator_cli.sampling.repair import free_slots
    from animator_cli.sampling.windows import window_indices

    windows = window_indices(29, 16, 4)
    assert free_slots(windows, 1) == range(0)
    refiner = types.SimpleNamespace(for_frames=lambda frames, span: types.SimpleNamespace(faces=len(span)))
    repair = PipelineRepair.__new__(PipelineRepair)
    repair.windows, repair.refiner = windows, lambda: refiner
    tried = []
    repair.resample = lambda index, attempt: tried.append((index, attempt.action))
    repair.pixels = lambda index, latents: np.zeros((len(windows[index]) - 1, 2, 2, 3), np.uint8)
    run_guard(repair, np.full(29, 0.1), 0.0, GenerateOptions(identity_guard=GuardOptions(0.5, 1)),
              lambda frames: np.full(len(frames), 0.05))
    assert tried == [(0, "hjb"), (1, "id_scale"), (2, "hjb")]
    tried.clear()  # a draft's guard (GuardOptions.hjb False): no HJB lever anywhere
    run_guard(repair, np.full(29, 0.1), 0.0, GenerateOptions(identity_guard=GuardOptions(0.5, 1, hjb=False)),
              lambda frames: np.full(len(frames), 0.05))
    assert tried == [(0, "id_scale"), (1, "id_scale"), (2, "id_scale")]


# --- options, cache key, faults --------------------------------------------------------------------------------------

def test_the_cache_key_holds_the_repairs_only_when_they_are_on():
    from dataclasses import asdict

    from animator_cli.generate import cache_options

    plain = cache_options(generate_options())
    assert "identity_guard" not in plain and "drift_lock" not in plain
    assert plain == {k: v for k, v in asdict(generate_options()).items() if k not in ("identity_guard", "drift_lock")}
    guarded = cache_options(generate_options(identity_guard=0.4, guard_retries=3, drift_lock=True))
    assert guarded["identity_guard"] == {"threshold": 0.4, "retries": 3, "hjb": True} and guarded["drift_lock"] is True
    assert cache_options(generate_options(identity_guard=True))["identity_guard"]["threshold"] is None


@pytest.mark.parametrize(("value", "message"), [
    ("x", "--identity-guard 'x' is not a threshold"), ("1.5", "--identity-guard 1.5 is not a cosine"),
])
def test_cli_rejects_a_bad_threshold(cli, value, message, tmp_path, astronaut_path):
    result = cli("generate", astronaut_path, tmp_path, "-o", tmp_path / "o.mp4", f"--identity-guard={value}")
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_a_bare_identity_guard_flag_means_the_video_s_own_threshold():
    from animator_cli.cli.app import _fill_optional_values

    assert _fill_optional_values(["generate", "--identity-guard", "--drift-lock"]) == [
        "generate", "--identity-guard", "auto", "--drift-lock"]
    assert _fill_optional_values(["generate", "--identity-guard", "-0.2"]) == ["generate", "--identity-guard", "-0.2"]
    assert _fill_optional_values(["generate", "--identity-guard"]) == ["generate", "--identity-guard", "auto"]


def test_an_empty_threshold_is_refused_as_a_threshold(cli, tmp_path, astronaut_path):
    result = cli("generate", astronaut_path, tmp_path, "-o", tmp_path / "o.mp4", "--identity-guard", "")
    assert result.exit_code == 2 and "--identity-guard '' is not a threshold" in result.stderr, result.stderr


@pytest.mark.parametrize(("options", "message"), [
    ({"drift_lock": "no"}, "drift_lock 'no' is not true or false"),
    ({"face_opt": "false"}, "face_opt 'false' is not true or false"),
    ({"legacy_rgb_id": 1}, "legacy_rgb_id 1 is not true or false"),
    ({"identity_guard": 0.3, "guard_retries": True}, "guard_retries True must be a whole number"),
])
def test_switches_take_true_or_false_only(options, message):
    """From a job file or Python, a string such as "no" must not switch a repair (or HJB) on."""
    from animator_cli.errors import InputError
    from animator_cli.options import generate_options, runtime_options

    with pytest.raises(InputError, match=message):
        generate_options(**options)
    with pytest.raises(InputError, match="offload 'yes' is not true or false"):
        runtime_options(offload="yes")


def test_a_batch_job_with_a_string_for_a_switch_fails_alone(tiny_home, tmp_path, astronaut_path):
    import yaml

    from animator_cli.batch import run_batch
    from animator_cli.cache import StageCache

    _skeletons(tmp_path / "poses", 3)
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump({"defaults": {"width": 64, "height": 64, "steps": 1}, "jobs": [
        {"reference": str(astronaut_path), "poses": "poses", "output": "a.mp4", "drift-lock": "no"},
        {"reference": str(astronaut_path), "poses": "poses", "output": "b.mp4", "drift-lock": False}]}))
    bad, good = run_batch(tmp_path / "jobs.yaml", Runtime(device="cpu"), weights=tiny_home,
                          cache=StageCache(tmp_path / "cache"))
    assert not bad.ok and "drift-lock 'no' is not true or false" in str(bad.error) and good.ok, (bad.error, good.error)
    assert not (tmp_path / "a.mp4").exists() and (tmp_path / "b.mp4").exists()


def test_the_guard_skips_a_window_of_frame_0_alone(cli, tiny_home, astronaut_path, tmp_path):
    """A one-frame pose folder: its only window holds frame 0, which a repair never changes; nothing to re-render."""
    import json

    poses = _skeletons(tmp_path / "poses", 1)
    result = cli("--weights", tiny_home.root, "--device", "cpu", "--json", "generate", astronaut_path, poses,
                 "-o", tmp_path / "out.mp4", "--width", 64, "--height", 64, "--steps", 1, "--identity-guard", 1.0,
                 "--drift-lock")
    assert result.exit_code == 0, result.stderr
    guard = json.loads(result.stdout)["identity_guard"]
    assert guard["rendered_again"] == 0 and len(guard["windows"]) == 1


def test_a_draft_s_guard_has_no_hjb_lever():
    from animator_cli.options import generate_options

    assert generate_options(identity_guard=True).identity_guard.hjb
    assert not generate_options(identity_guard=True, draft=True).identity_guard.hjb


def test_no_face_in_the_reference_skips_the_guard_or_stops_it_under_strict(tiny_home, tmp_path, caplog):
    from animator_cli.cache import StageCache
    from animator_cli.errors import InputError
    from animator_cli.generate import render
    from animator_cli.video import write_frame

    write_frame(tmp_path, 0, np.zeros((128, 128, 3), np.uint8))  # black: the tiny detector finds no face
    poses = _skeletons(tmp_path / "poses", 3)
    options = generate_options(width=64, height=64, steps=1, allow_no_face=True, identity_guard=True)
    common = dict(weights=tiny_home, cache=StageCache(tmp_path / "cache"))
    with pytest.raises(InputError, match="identity_guard needs a face in the reference"):
        render(tmp_path / "frame_0.png", poses, options, Runtime(device="cpu"), check="strict", **common)
    rendered = render(tmp_path / "frame_0.png", poses, options, Runtime(device="cpu"), **common)
    assert [r.message for r in caplog.records].count(
        "identity guard skipped: no face in the reference image to compare the frames with") == 1
    assert rendered.result.identity_guard is None and rendered.options.identity_guard is None


def test_an_interrupted_guard_leaves_no_output_and_no_cache_entry(cli, tiny_home, astronaut_path, tmp_path,
                                                                  monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("animator_cli.check.timeline.IdentityScorer", interrupt)
    poses = _skeletons(tmp_path / "poses", 20)
    result = cli("--weights", tiny_home.root, "--device", "cpu", "generate", astronaut_path, poses,
                 "-o", tmp_path / "out.mp4", "--width", 64, "--height", 64, "--steps", 1, "--identity-guard")
    assert result.exit_code == 130
    assert not (tmp_path / "out.mp4").exists()
    entries = list((tmp_path / "stage-cache" / "generate").glob("*"))
    assert not [e for e in entries if (e / "video.mp4").exists()]


def test_mechanism_batch_and_api_take_the_guard_by_name(tiny_home, tmp_path, astronaut_path, scripted):
    import yaml

    from animator_cli import Animator
    from animator_cli.batch import run_batch
    from animator_cli.cache import StageCache

    poses = _skeletons(tmp_path / "poses", 28)
    scripted([0.9], frames=28)
    video = Animator(tiny_home.root, device="cpu", cache=tmp_path / "api").generate(
        astronaut_path, poses, width=64, height=64, steps=1, identity_guard=THRESHOLD, guard_retries=1)
    assert video.result.identity_guard["repaired"] == 1
    scripted([0.9], frames=28)
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump({"jobs": [
        {"reference": str(astronaut_path), "poses": "poses", "output": "b.mp4", "width": 64, "height": 64,
         "steps": 1, "identity-guard": THRESHOLD, "drift-lock": True}]}))
    [outcome] = run_batch(tmp_path / "jobs.yaml", Runtime(device="cpu"), weights=tiny_home,
                          cache=StageCache(tmp_path / "batch"))
    assert outcome.ok, outcome.error
    assert outcome.result.identity_guard["repaired"] == 1 and len(outcome.result.drift_lock) == 2


# --- drift lock ------------------------------------------------------------------------------------------------------

def _drifted_video() -> tuple[np.ndarray, np.ndarray, list[list[int]], np.ndarray]:
    """40 frames 64×64 of a fixed textured background with a person-sized block that moves, their poses (a stick
    figure inside the block) and windows; then a copy where window 2 drifted: +24 red, −16 blue, its own frames in
    full and the shared ones by the window's overlap share, as a sampler's blend would spread it."""
    from animator_cli.sampling.repair import overlap_share
    from animator_cli.sampling.windows import window_indices

    rng = np.random.default_rng(0)
    background = rng.integers(40, 200, (64, 64, 3)).astype(np.uint8)
    frames, poses = np.repeat(background[None], FRAMES, 0), np.zeros((FRAMES, 64, 64, 3), np.uint8)
    for f in range(FRAMES):
        x = 20 + f % 8
        frames[f, 16:52, x:x + 16] = rng.integers(30, 220, (36, 16, 3))  # room for the drift: no clipping
        poses[f, 20:48, x + 8] = 255  # the trunk of the drawn skeleton
        poses[f, 30, x + 2:x + 14] = 255  # the arms
    windows = window_indices(FRAMES, 16, 4)
    share = overlap_share(windows, 2).numpy()
    drifted = frames.astype(np.float64)
    for slot, frame in enumerate(windows[2]):
        if frame:
            drifted[frame] += share[slot] * np.array([24.0, 0.0, -16.0])
    return frames, np.round(drifted).astype(np.uint8), windows, poses


def test_drift_lock_removes_an_injected_colour_shift_and_leaves_frames_without_drift_alone():
    from animator_cli.guard.drift import drift_lock

    clean, drifted, windows, poses = _drifted_video()
    locked = drifted.copy()
    corrections = drift_lock(locked, windows, lambda index: poses[index])
    assert np.allclose(corrections[2].offset, [-24, 0, 16], atol=0.5)  # the shift, measured outside the person
    assert np.array_equal(locked[:25], clean[:25])  # frames without drift: the same bytes
    error = np.abs(locked[25:].astype(int) - clean[25:].astype(int))
    assert error.max() <= 1  # the shift is gone, up to rounding
    assert np.abs(drifted[28:].astype(int) - clean[28:].astype(int)).max() >= 16  # it was there


def test_drift_lock_changes_nothing_in_a_video_without_drift():
    from animator_cli.guard.drift import drift_lock

    clean, _, windows, poses = _drifted_video()
    locked = clean.copy()
    drift_lock(locked, windows, lambda index: poses[index])
    assert np.array_equal(locked, clean)


def test_the_person_is_left_out_of_the_measure():
    from animator_cli.guard.drift import person_mask

    pose = np.zeros((64, 64, 3), np.uint8)
    pose[20:40, 30] = 255
    mask = person_mask(pose)
    assert mask[20:40, 30].all() and mask[15, 30] and not mask[0, 0] and not mask[30, 50]
    assert not person_mask(np.zeros((8, 8, 3), np.uint8)).any()


def test_report_and_json_record_the_guard_with_the_real_scorer(cli, tiny_home, astronaut_path, tmp_path):
    import json

    poses = _skeletons(tmp_path / "poses", 28)  # windows 0-15 and 12-27
    result = cli("--weights", tiny_home.root, "--device", "cpu", "--json", "generate", astronaut_path, poses,
                 "-o", tmp_path / "out.mp4", "--width", 64, "--height", 64, "--steps", 1, "--identity-guard", 1,
                 "--guard-retries", 1, "--report", tmp_path / "report")
    assert result.exit_code == 0, result.stderr
    guard = json.loads(result.stdout)["identity_guard"]
    assert guard["threshold"] == 1 and guard["rendered_again"] == 2  # every window is below a cosine of 1
    assert all(len(w["attempts"]) == 1 and w["kept"] in ("render", "attempt 1 (id_scale)") for w in guard["windows"])
    assert json.loads((tmp_path / "report" / "guard.json").read_text()) == guard
    assert (tmp_path / "report" / "identity.png").stat().st_size > 0
    assert "identity guard: threshold 1.000; 2 of 2 window(s) rendered again" in result.stderr
