"""`generate`, `animate`, `batch` end to end on the tiny weights home, on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from media import clip_with_audio

import animator_cli.generate as generation
from animator_cli.cache import StageCache
from animator_cli.errors import InputError
from animator_cli.generate import generate, load_pipeline
from animator_cli.options import GenerateOptions, Runtime, SamplingOptions, generate_options
from animator_cli.sampling.conditioning import reference_latent, to_tensor
from animator_cli.sampling.fit import fit_image
from animator_cli.sampling.pipeline import AnimationPipeline
from animator_cli.video import iter_frames, load_image, probe

FAST = dict(width=64, height=64, steps=1)


def _skeletons(folder: Path, count: int, fps: float | None = 12.0, size: tuple[int, int] = (64, 96)) -> Path:
    """A pose folder: a stick figure whose arm swings, drawn on black like DWPose skeletons."""
    folder.mkdir(parents=True)
    w, h = size
    for i in range(count):
        image = np.zeros((h, w, 3), np.uint8)
        cv2.line(image, (w // 2, h // 5), (w // 2, h * 3 // 5), (255, 0, 85), 3)
        angle = i * 0.4
        cv2.line(image, (w // 2, h // 3), (int(w / 2 + 20 * np.cos(angle)), int(h / 3 + 20 * np.sin(angle))),
                 (0, 255, 0), 3)
        cv2.circle(image, (w // 2, h // 6), 5, (0, 0, 255), -1)
        cv2.imwrite(str(folder / f"frame_{i}.png"), image)
    if fps is not None:
        (folder / "meta.json").write_text(json.dumps({"fps": fps}))
    return folder


def _driving_clip(path: Path, frames: int = 6, fps: int = 10) -> Path:
    return clip_with_audio(path, frames, fps)


@pytest.fixture(scope="module")
def pipeline(tiny_home) -> AnimationPipeline:
    return load_pipeline(tiny_home, Runtime(device="cpu"))


@pytest.fixture
def cache(tmp_path: Path) -> StageCache:
    return StageCache(tmp_path / "cache")


def _frames(path: Path) -> np.ndarray:
    return np.stack(list(iter_frames(path)))


@pytest.mark.parametrize("count", [5, 16, 40])
def test_generate_writes_one_frame_per_pose(tiny_home, pipeline, cache, tmp_path, astronaut_path, count):
    """5 frames (shorter than a window: the reference crashed), one window, and three windows."""
    poses = _skeletons(tmp_path / "poses", count)
    calls = []
    unet_forward = pipeline.models.unet.forward
    pipeline.models.unet.forward = lambda *a, **k: calls.append(a[0].shape) or unet_forward(*a, **k)
    try:
        result = generate(astronaut_path, poses, tmp_path / "out.mp4", generate_options(**FAST), weights=tiny_home,
                          cache=cache, pipeline=lambda: pipeline)
    finally:
        del pipeline.models.unet.forward
    info = probe(tmp_path / "out.mp4")
    assert (info.frame_count, info.width, info.height, info.fps) == (count, 64, 64, 12.0)
    assert not info.has_audio and result.frames == count and not result.cached
    # one batched (uncond + cond) UNet call per window and step: 1, 1 and 3 windows
    windows = {5: 1, 16: 1, 40: 3}[count]
    assert [shape[:3] for shape in calls] == [(2, min(count, 16), 8)] * windows


def test_cli_generate_fps_audio_and_cache(cli, tiny_home, tmp_path, astronaut_path):
    poses = _skeletons(tmp_path / "poses", 6, fps=None)
    clip = _driving_clip(tmp_path / "music.mp4")
    out = tmp_path / "out.mp4"
    args = ["--weights", tiny_home.root, "--json", "generate", astronaut_path, poses, "-o", out,
            "--resolution", "512x512", "--width", 64, "--height", 64, "--steps", 1, "--audio-from", clip]
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    info = probe(out)
    assert info.has_audio and info.frame_count == 6 and info.fps == 25.0  # no meta.json, no --fps: 25
    assert json.loads(first.stdout)["cached"] is False
    second = cli(*args, "--fps", 8)
    assert second.exit_code == 0 and probe(out).fps == 8.0
    frames = _frames(out)
    third = cli(*args, "--fps", 8)
    assert json.loads(third.stdout)["cached"] is True
    np.testing.assert_array_equal(_frames(out), frames)


def test_cli_generate_frames_dir_and_defaults(cli, tiny_home, tmp_path, astronaut_path):
    poses = _skeletons(tmp_path / "poses", 3)
    result = cli("--weights", tiny_home.root, "generate", astronaut_path, poses, "-o", tmp_path / "o.mp4",
                 "--width", 64, "--height", 128, "--steps", 1, "--crf", 0, "--frames-dir", tmp_path / "frames")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "o.mp4")
    pngs = sorted((tmp_path / "frames").glob("frame_*.png"))
    assert len(pngs) == 3 and load_image(pngs[0]).shape == (128, 64, 3)
    video = _frames(tmp_path / "o.mp4")
    assert video.shape == (3, 128, 64, 3)
    pictures = np.stack([load_image(p) for p in pngs]).astype(int)
    error = np.abs(video.astype(int)[:, None] - pictures[None]).mean(axis=(2, 3, 4))  # video frame × png
    assert (error.argmin(axis=1) == [0, 1, 2]).all() and error.diagonal().max() < 10  # yuv420p chroma loss


@pytest.mark.parametrize("args", [
    ("--width", 100), ("--height", 32), ("--resolution", "640x480"), ("--dtype", "fp8"), ("--overlap", 16),
    ("--noise-aug", -1),
    ("--width", 0), ("--height", 0), ("--width", 6400000, "--height", 6400000), ("--width", 4160),
    ("--fps", "inf"), ("--fps", "1e12"), ("--fps", "nan"), ("--fps", 0),
    ("--seed", -1), ("--seed", "99999999999999999999999"), ("--seed", 2**63),
    ("--steps", "99999999999999999999"), ("--steps", 1001),
    ("--guidance", "nan"), ("--guidance", "inf"), ("--min-guidance", "nan"), ("--noise-aug", "nan"),
    ("--id-scale", "nan"), ("--id-scale", "-inf"), ("--face-opt", "--face-opt-steps", "0:0", "--face-opt-lr", "nan"),
    ("--motion-bucket", -1)])
def test_cli_bad_options_exit_2(cli, tiny_home, tmp_path, astronaut_path, args, monkeypatch):
    """Every bad value is one line and exit 2, before any model is loaded (none were: QA found 0 → 512 wide,
    inf/huge values → OverflowError exit 1, 6400000² → killed by the kernel, NaN → accepted)."""
    monkeypatch.setattr(generation, "load_pipeline", lambda *_: pytest.fail("models loaded for a bad option"))
    poses = _skeletons(tmp_path / "poses", 3)
    result = cli("--weights", tiny_home.root, "generate", astronaut_path, poses, "-o", tmp_path / "o.mp4",
                 "--steps", 1, *args)
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o.mp4").exists()


def test_options_limits_are_checked_in_the_library():
    """Python callers and batch jobs get the same checks as the CLI; 0 is a value, not "unset". The library names
    the option as Python spells it (the CLI prints its flag: tests/test_api.py)."""
    with pytest.raises(InputError, match="^width 0"):
        generate_options(width=0)
    with pytest.raises(InputError, match="4096"):
        generate_options(width=8192, height=64)
    face_opt_nan = {"face_opt": True, "face_opt_steps": "0:0", "face_opt_lr": float("nan")}
    for bad in ({"fps": float("inf")}, {"fps": 10**400}, {"seed": 2**63}, {"steps": "3"}, {"guidance": "nan"},
                {"motion_bucket": -1}, {"id_scale": float("nan")}, face_opt_nan):
        with pytest.raises(InputError):
            generate_options(**{**FAST, **bad})
    assert generate_options(width=4096, height=64, seed=2**63 - 1, steps=1000).width == 4096
    with pytest.raises(InputError, match="^fps inf"):
        GenerateOptions(fps=float("inf")).validate()


def test_cli_missing_inputs_exit_2(cli, tiny_home, tmp_path, astronaut_path):
    poses = _skeletons(tmp_path / "poses", 3)
    missing = cli("--weights", tiny_home.root, "generate", tmp_path / "nope.png", poses, "-o", tmp_path / "o.mp4")
    assert missing.exit_code == 2 and "nope.png" in missing.stderr
    no_poses = cli("--weights", tiny_home.root, "generate", astronaut_path, tmp_path / "none", "-o", tmp_path / "o.mp4")
    assert no_poses.exit_code == 2 and "none" in no_poses.stderr
    no_weights = cli("--weights", tmp_path / "empty", "generate", astronaut_path, poses, "-o", tmp_path / "o.mp4",
                     "--width", 64, "--height", 64)
    assert no_weights.exit_code == 3, no_weights.stderr


def test_same_seed_same_video_and_seed_matters(pipeline):
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    poses = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    identity = rng.standard_normal(512).astype(np.float32)
    options = SamplingOptions(steps=1)

    def run(seed: int, **changes) -> np.ndarray:
        args = dict(reference=reference, poses=poses, identity=identity, options=options)
        args.update(changes)
        return pipeline(generator=torch.Generator().manual_seed(seed), **args)

    first = run(1)
    np.testing.assert_array_equal(first, run(1))
    assert not np.array_equal(first, run(2))
    # the pose, the identity and the ID strength all reach the output
    assert not np.array_equal(first, run(1, poses=poses[::-1].copy()))
    assert not np.array_equal(first, run(1, identity=-identity))
    assert not np.array_equal(first, run(1, options=SamplingOptions(steps=1, id_scale=0.0)))


def test_batched_guidance_equals_two_calls_and_offload(pipeline):
    models = pipeline.models
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    poses = rng.integers(0, 255, (10, 64, 64, 3), dtype=np.uint8)
    identity = rng.standard_normal(512).astype(np.float32)
    options = SamplingOptions(steps=1, min_guidance=1.5, max_guidance=3.0, tile=6, overlap=2, decode_chunk=10)
    outputs = []
    for kwargs in ({}, {"batch_cfg": False}, {"offload": True, "vae_on_cpu": True}):
        pipe = AnimationPipeline(models, "cpu", torch.float32, **kwargs)
        outputs.append(pipe(reference, poses, identity, options, torch.Generator().manual_seed(3)).astype(int))
    assert np.abs(outputs[0] - outputs[1]).max() <= 1
    assert np.abs(outputs[0] - outputs[2]).max() <= 1


def test_unguided_run_skips_the_unconditional_branch(pipeline):
    calls = []
    unet_forward = pipeline.models.unet.forward
    pipeline.models.unet.forward = lambda *a, **k: calls.append(a[0].shape[0]) or unet_forward(*a, **k)
    try:
        frames = pipeline(np.zeros((64, 64, 3), np.uint8), np.zeros((3, 64, 64, 3), np.uint8),
                          np.zeros(512, np.float32), SamplingOptions(steps=2, min_guidance=1, max_guidance=1),
                          torch.Generator().manual_seed(0))
    finally:
        del pipeline.models.unet.forward
    assert calls == [1, 1] and frames.shape == (3, 64, 64, 3)


def test_random_draws_follow_the_reference_order(pipeline, astronaut_path):
    """Noise augmentation draws randn(1, 3, H, W) first, then the initial latents randn(1, tile, 4, h, w),
    from the same generator, as the released pipeline does; checked on the UNet's first input."""
    reference = fit_image(load_image(astronaut_path), 64, 64)
    poses = np.zeros((5, 64, 64, 3), np.uint8)
    seen = []
    unet_forward = pipeline.models.unet.forward
    pipeline.models.unet.forward = lambda *a, **k: seen.append(a[0].clone()) or unet_forward(*a, **k)
    try:
        pipeline(reference, poses, np.ones(512, np.float32), SamplingOptions(steps=1, noise_aug=0.05),
                 torch.Generator().manual_seed(23123134))
    finally:
        del pipeline.models.unet.forward
    generator = torch.Generator().manual_seed(23123134)
    latent = reference_latent(pipeline.models.vae, to_tensor(reference), 0.05, generator)
    noise = torch.randn(1, 16, 4, 8, 8, generator=generator)[:, :5]
    # the released pipeline's first UNet input: the noise × init_noise_sigma, scaled by diffusers' scheduler
    scheduler = type(pipeline.models.scheduler).from_config(pipeline.models.scheduler.config)
    scheduler.set_timesteps(1)
    first_input = scheduler.scale_model_input(noise * scheduler.init_noise_sigma, scheduler.timesteps[0])
    first = seen[0]
    torch.testing.assert_close(first[1:, :, :4], first_input, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first[1:, :, 4:], latent[:, None].expand(-1, 5, -1, -1, -1), rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(first[:1, :, 4:]) == 0  # the unconditional branch has no reference latent


def test_interrupted_generation_leaves_no_video(tiny_home, pipeline, cache, tmp_path, astronaut_path):
    poses = _skeletons(tmp_path / "poses", 3)

    def interrupt(step: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(astronaut_path, poses, tmp_path / "out" / "o.mp4", generate_options(**FAST), weights=tiny_home,
                 cache=cache, pipeline=lambda: pipeline, progress=interrupt)
    assert not (tmp_path / "out" / "o.mp4").exists()
    assert not list(cache.root.glob("generate/*/manifest.json"))


def test_cli_animate_real_photo_with_audio_then_cached(cli, tiny_home, tmp_path, t1_path, monkeypatch):
    clip = _driving_clip(tmp_path / "driving.mp4", frames=6, fps=10)
    out = tmp_path / "animated.mp4"
    args = ["--weights", tiny_home.root, "--json", "animate", t1_path, clip, "-o", out, "--width", 64,
            "--height", 64, "--steps", 1]
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    info = probe(out)
    assert (info.frame_count, info.fps, info.has_audio) == (6, 10.0, True)
    assert json.loads(first.stdout)["cached"] is False
    frames = _frames(out)
    out.unlink()

    def no_models(*_args, **_kwargs):
        raise AssertionError("a cached animate must not load the models")

    monkeypatch.setattr(generation, "load_pipeline", no_models)
    second = cli(*args)
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["cached"] is True
    np.testing.assert_array_equal(_frames(out), frames)
    assert probe(out).has_audio


def test_cli_batch_loads_models_once_and_reports_failures(cli, tiny_home, tmp_path, astronaut_path, t1_path,
                                                          monkeypatch):
    _skeletons(tmp_path / "poses", 4)
    _driving_clip(tmp_path / "drive.mp4", frames=5, fps=10)
    jobs = {
        "defaults": {"width": 64, "height": 64, "steps": 1},
        "jobs": [
            {"reference": str(astronaut_path), "poses": "poses", "output": "out/a.mp4", "seed": 5},
            {"reference": "missing.png", "poses": "poses", "output": "out/b.mp4"},
            {"reference": str(t1_path), "driving": "drive.mp4", "output": "out/c.mp4", "noise-aug": 0.0},
            {"reference": str(astronaut_path), "poses": "poses", "output": "out/d.mp4", "bogus": 1},
        ],
    }
    (tmp_path / "jobs.yaml").write_text(json.dumps(jobs))  # JSON is YAML
    loads = []
    real_load = generation.load_pipeline
    monkeypatch.setattr(generation, "load_pipeline", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    result = cli("--weights", tiny_home.root, "batch", tmp_path / "jobs.yaml")
    assert result.exit_code == 2  # the first failed job's own code: bad input
    assert (tmp_path / "out/a.mp4").exists() and (tmp_path / "out/c.mp4").exists()
    assert not (tmp_path / "out/b.mp4").exists() and not (tmp_path / "out/d.mp4").exists()
    assert probe(tmp_path / "out/c.mp4").has_audio and probe(tmp_path / "out/a.mp4").frame_count == 4
    assert "missing.png" in result.stderr and "bogus" in result.stderr and "2 of 4 jobs failed" in result.stderr
    assert len(loads) == 1

    # shard 1/2 runs jobs 1 and 3 only (both fail); RANK/WORLD_SIZE give the same split
    shard = cli("--weights", tiny_home.root, "--json", "batch", tmp_path / "jobs.yaml", "--shard", "1/2")
    assert shard.exit_code == 2 and [j["index"] for j in json.loads(shard.stdout)["jobs"]] == [1, 3]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    env = cli("--weights", tiny_home.root, "--json", "batch", tmp_path / "jobs.yaml")
    assert env.exit_code == 0 and [j["index"] for j in json.loads(env.stdout)["jobs"]] == [0, 2]
    assert all(j["cached"] for j in json.loads(env.stdout)["jobs"])
    assert cli("--weights", tiny_home.root, "batch", tmp_path / "jobs.yaml", "--shard", "2/2").exit_code == 2


def test_options_defaults_match_the_release():
    options = GenerateOptions()
    assert (options.width, options.height, options.seed) == (512, 512, 23123134)
    s = options.sampling
    assert (s.steps, s.min_guidance, s.max_guidance, s.tile, s.overlap, s.noise_aug, s.motion_bucket, s.cond_fps,
            s.decode_chunk) == (25, 3.0, 3.0, 16, 4, 0.02, 127, 7, 4)
    portrait = generate_options(resolution="576x1024")
    assert (portrait.width, portrait.height) == (576, 1024)


@torch.no_grad()
def _reference_loop(models, reference, poses, identity, steps, tile, overlap, min_g, max_g, noise_aug, seed):
    """The released pipeline's algorithm (spec §2), written the straightforward way: diffusers' scheduler
    step, PoseNet inside the window loop, two batch-1 UNet calls, list-indexed windows."""
    from animator_cli.sampling.conditioning import clip_pixels

    generator = torch.Generator().manual_seed(seed)
    image = to_tensor(reference)
    augmented = image + noise_aug * torch.randn(image.shape, generator=generator)
    latent = models.vae.encode(augmented).latent_dist.mode()
    clip = models.image_encoder(pixel_values=clip_pixels(image)).image_embeds[:, None]
    context = torch.cat([clip, models.face_encoder(torch.from_numpy(identity)[None], clip)], dim=1)
    frames = len(poses)
    scheduler = models.scheduler
    scheduler.set_timesteps(steps)
    latents = torch.randn(1, tile, 4, 8, 8, generator=generator)
    latents = latents.repeat(1, frames // tile + 1, 1, 1, 1)[:, :frames] * scheduler.init_noise_sigma
    image_latents = torch.cat([torch.zeros_like(latent), latent]).unsqueeze(1).repeat(1, frames, 1, 1, 1)
    time_ids = torch.tensor([[6.0, 127.0, noise_aug]])
    indices = [[0, *range(i + 1, min(i + tile, frames))] for i in range(0, frames - tile + 1, tile - overlap)]
    if indices[-1][-1] < frames - 1:
        indices.append([0, *range(frames - tile + 1, frames)])
    pose_pixels = torch.from_numpy(poses).float().div(127.5).sub(1).permute(0, 3, 1, 2)
    weight = (torch.arange(tile) + 0.5) * 2 / tile
    weight = torch.minimum(weight, 2 - weight)[:, None, None, None]
    scale = torch.linspace(min_g, max_g, frames)[None, :, None, None, None]
    for t in scheduler.timesteps:
        model_input = torch.cat([scheduler.scale_model_input(torch.cat([latents] * 2), t), image_latents], dim=2)
        prediction = torch.zeros_like(image_latents)
        count = torch.zeros(frames)
        for idx in indices:
            pose = models.pose_net(pose_pixels[idx])
            prediction[:1, idx] += models.unet(model_input[:1, idx], t, torch.zeros_like(context), time_ids) * weight
            prediction[1:, idx] += models.unet(model_input[1:, idx], t, context, time_ids, pose_latents=pose) * weight
            count[idx] += weight.flatten()
        prediction /= count[:, None, None, None]
        uncond, cond = prediction.chunk(2)
        latents = scheduler.step(uncond + scale * (cond - uncond), t, latents, return_dict=False)[0]
    decoded = [models.vae.decode(chunk, num_frames=len(chunk)).sample for chunk in (latents[0] / 0.18215).split(4)]
    return ((torch.cat(decoded) / 2 + 0.5).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def test_pipeline_equals_the_reference_algorithm(pipeline, astronaut_path):
    """Same seed, same models: our pipeline (PoseNet once, batched CFG, k-diffusion step, precomputed windows)
    gives the frames of the released pipeline's loop, here for 20 frames in 4 windows of 8."""
    reference = fit_image(load_image(astronaut_path), 64, 64)
    rng = np.random.default_rng(4)
    poses = rng.integers(0, 255, (20, 64, 64, 3), dtype=np.uint8)
    identity = rng.standard_normal(512).astype(np.float32)
    options = SamplingOptions(steps=3, min_guidance=1.5, max_guidance=3.0, tile=8, overlap=3, noise_aug=0.02)
    ours = pipeline(reference, poses, identity, options, torch.Generator().manual_seed(11))
    theirs = _reference_loop(pipeline.models, reference, poses, identity, 3, 8, 3, 1.5, 3.0, 0.02, 11)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def _trained_checkpoint(release: Path, folder: Path, seed: int) -> Path:
    """A checkpoint folder like a training run writes: the release's pose_net/face_encoder/unet with every float
    weight scaled by 1 + 0.1·N(0, 1) (seeded), as if trained."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    for name in ("pose_net", "face_encoder", "unet"):
        state = torch.load(release / f"{name}.pth", map_location="cpu", weights_only=True)
        torch.save({key: value * (1 + 0.1 * torch.randn(value.shape, generator=generator))
                    if value.is_floating_point() else value for key, value in state.items()}, folder / f"{name}.pth")
    return folder


def _home_with(tiny_home, checkpoint: Path, root: Path):
    """A weights home holding ``checkpoint``'s pose_net/face_encoder/unet as its released ones; everything else is
    linked to ``tiny_home``."""
    from animator_cli.weights.home import WeightsHome

    animation = root / "checkpoints" / "Animation"
    animation.mkdir(parents=True)
    for entry in tiny_home.root.rglob("*"):
        if entry.is_file() and entry.parent != tiny_home.animation_dir:
            target = root / entry.relative_to(tiny_home.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(entry)
    for entry in tiny_home.animation_dir.iterdir():
        source = checkpoint / entry.name if (checkpoint / entry.name).exists() else entry
        (animation / entry.name).symlink_to(source)
    return WeightsHome(root)


def _checkpoint_renders(cli, tiny_home, tmp_path, astronaut_path, checkpoint: Path, *checkpoint_args: Path) -> dict:
    """Frames of the release, of `--checkpoint ARG` for each argument, and of a home whose released weights are
    ``checkpoint``'s. The first checkpoint render must not come from the cache (the release's video must not stand
    in for it); later ones are forced, so that each one loads its checkpoint rather than copying the video of an
    argument that names the same checkpoint."""
    poses = _skeletons(tmp_path / "poses", 2)
    args = ["--json", "generate", astronaut_path, poses, "--width", 64, "--height", 64, "--steps", 1, "--crf", 0]
    renders = {}
    for name, extra in (("release", ()), *((str(a), ("--checkpoint", a)) for a in checkpoint_args)):
        out = tmp_path / f"{len(renders)}.mp4"
        force = ("--force",) if len(renders) > 1 else ()
        result = cli("--weights", tiny_home.root, *args, "-o", out, *extra, *force)
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["cached"] is False
        renders[name] = _frames(out)
    home = _home_with(tiny_home, checkpoint, tmp_path / "trained-home")
    result = cli("--weights", home.root, *args, "-o", tmp_path / "trained.mp4", "--force")
    assert result.exit_code == 0, result.stderr
    renders["trained"] = _frames(tmp_path / "trained.mp4")
    assert not np.array_equal(renders["trained"], renders["release"])  # the changed weights change the video
    return renders


def test_cli_checkpoint_folder(cli, tiny_home, tmp_path, astronaut_path):
    """--checkpoint reads pose_net/face_encoder/unet from a training run's folder: the video is the one the same
    weights give as the home's released ones, not the release's."""
    checkpoint = _trained_checkpoint(tiny_home.animation_dir, tmp_path / "run", seed=1)
    renders = _checkpoint_renders(cli, tiny_home, tmp_path, astronaut_path, checkpoint, checkpoint)
    np.testing.assert_array_equal(renders[str(checkpoint)], renders["trained"])
    args = ["--weights", tiny_home.root, "generate", astronaut_path, tmp_path / "poses", "--width", 64, "--height", 64,
            "--steps", 1]
    (checkpoint / "unet.pth").unlink()
    missing = cli(*args, "-o", tmp_path / "bad.mp4", "--checkpoint", checkpoint)
    assert missing.exit_code == 3 and "unet" in missing.stderr and not (tmp_path / "bad.mp4").exists()
    assert cli(*args, "-o", tmp_path / "bad.mp4", "--checkpoint", tmp_path / "nowhere").exit_code == 2


def test_cli_bad_tiling_fails_before_loading_models(cli, tiny_home, tmp_path, astronaut_path, monkeypatch):
    def no_models(*_):
        raise AssertionError("models must not load for an invalid --tile/--overlap")

    monkeypatch.setattr(generation, "load_pipeline", no_models)
    poses = _skeletons(tmp_path / "poses", 3)
    result = cli("--weights", tiny_home.root, "generate", astronaut_path, poses, "-o", tmp_path / "o.mp4",
                 "--tile", 8, "--overlap", 8)
    assert result.exit_code == 2 and "--overlap 8 must be between 1 and tile - 1" in result.stderr


def test_cache_key_follows_vae_precision(cli, tiny_home, tmp_path, astronaut_path):
    """--vae-on-cpu runs the VAE in fp32, which changes pixels: it must not reuse a video made without it."""
    poses = _skeletons(tmp_path / "poses", 2)
    args = ["--weights", tiny_home.root, "--json", "generate", astronaut_path, poses, "-o", tmp_path / "o.mp4",
            "--width", 64, "--height", 64, "--steps", 1]
    assert json.loads(cli(*args).stdout)["cached"] is False
    assert json.loads(cli(*args).stdout)["cached"] is True
    assert json.loads(cli(*args, "--vae-on-cpu").stdout)["cached"] is False


def test_cli_checkpoint_latest_of_a_run(cli, tiny_home, tmp_path, astronaut_path):
    """RUN/latest and RUN take the run's newest checkpoint by step number (20 > 5, though "checkpoint-5" sorts
    after "checkpoint-20" as text); checkpoint-5 is another trained state."""
    run = tmp_path / "run"
    _trained_checkpoint(tiny_home.animation_dir, run / "checkpoint-5", seed=2)
    newest = _trained_checkpoint(tiny_home.animation_dir, run / "checkpoint-20", seed=1)
    renders = _checkpoint_renders(cli, tiny_home, tmp_path, astronaut_path, newest, run / "latest", run)
    np.testing.assert_array_equal(renders[str(run / "latest")], renders["trained"])
    np.testing.assert_array_equal(renders[str(run)], renders["trained"])


def test_cache_follows_a_run_s_newest_checkpoint(cli, tiny_home, tmp_path, astronaut_path):
    """`--checkpoint RUN/latest` is keyed by the checkpoint it stands for: a checkpoint saved after a render is
    rendered anew, not served the older checkpoint's video from the cache."""
    run = tmp_path / "run"
    _trained_checkpoint(tiny_home.animation_dir, run / "checkpoint-5", seed=2)
    poses = _skeletons(tmp_path / "poses", 2)
    args = ["--weights", tiny_home.root, "--json", "generate", astronaut_path, poses, "--width", 64, "--height", 64,
            "--steps", 1, "--crf", 0, "--checkpoint", run / "latest"]
    first = cli(*args, "-o", tmp_path / "first.mp4")
    assert first.exit_code == 0 and json.loads(first.stdout)["cached"] is False, first.stderr
    assert json.loads(cli(*args, "-o", tmp_path / "again.mp4").stdout)["cached"] is True
    _trained_checkpoint(tiny_home.animation_dir, run / "checkpoint-20", seed=1)
    later = cli(*args, "-o", tmp_path / "later.mp4")
    assert later.exit_code == 0 and json.loads(later.stdout)["cached"] is False, later.stderr
    direct = cli(*args[:-1], run / "checkpoint-20", "-o", tmp_path / "direct.mp4")
    assert json.loads(direct.stdout)["cached"] is True  # the same checkpoint, named directly: the same entry
    np.testing.assert_array_equal(_frames(tmp_path / "later.mp4"), _frames(tmp_path / "direct.mp4"))
    assert not np.array_equal(_frames(tmp_path / "later.mp4"), _frames(tmp_path / "first.mp4"))
