"""Training building blocks: config validation, σ sampler, loss weighting, dropout bands, clip sampling, batch plan,
data check and loader fallbacks. All fast, no models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from animator_cli.errors import InputError
from animator_cli.training.config import ConditioningConfig, load_config
from animator_cli.training.dataset import IDENTITY_FILE, BatchPlan, ClipDataset, check_dataset, sample_indices
from animator_cli.training.loss import denoising_loss, edm_weight, latent_face_mask
from animator_cli.training.noise import sample_sigmas, sigmas_from_uniform, stratified_uniform
from animator_cli.training.step import dropout_masks

# --- config -----------------------------------------------------------------------------------------------------

def test_presets_load():
    tiktok = load_config("presets/tiktok.yaml")
    assert (tiktok.data.num_frames, tiktok.data.stride, tiktok.optim.learning_rate) == (16, 4, 1e-5)
    assert tiktok.optim.weight_decay == 0.01 and tiktok.model.gradient_checkpointing
    assert tiktok.mixed_precision == "fp16" and tiktok.optim.lr_scheduler == "constant_with_warmup"
    mixed = load_config("presets/tiktok-576x1024.yaml")
    assert [(b.width, b.height) for b in mixed.data.buckets] == [(512, 512), (576, 1024)]
    tiny = load_config("presets/tiny-cpu.yaml")
    assert tiny.cpu and tiny.mixed_precision == "no"


def test_overrides_are_typed_and_dotted():
    config = load_config("presets/tiktok.yaml", ["optim.learning_rate=3e-5", "data.num_frames=8", "ema.enabled=true"])
    assert config.optim.learning_rate == 3e-5 and config.data.num_frames == 8 and config.ema.enabled


@pytest.mark.parametrize(("override", "key"), [
    ("optim.lr=1", "optim.lr"),
    ("data.num_frames=many", "data.num_frames"),
    ("data.num_frames=2.5", "data.num_frames"),
    ("mixed_precision=fp8", "mixed_precision"),
    ("data.buckets=[{width: 500, height: 512}]", "data.buckets[0].width"),
    ("conditioning.drop_both=0.5", "conditioning.drop_both"),
    ("model.gradient_checkpointing=3", "model.gradient_checkpointing"),
])
def test_bad_override_names_the_key(override, key):
    with pytest.raises(InputError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config("presets/tiktok.yaml", [override])


@pytest.mark.parametrize(("text", "key"), [("optim:\n  learnig_rate: 1.0e-4\n", "optim.learnig_rate"),
                                           ("max_steps: ten\n", "max_steps")])
def test_cli_bad_config_exits_2_naming_the_key(cli, tmp_path, text, key):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = cli("train", "--config", config, "--data", tmp_path)
    assert result.exit_code == 2
    assert key in result.stderr and "Traceback" not in result.stderr


def test_cli_bad_override_exits_2(cli, tmp_path):
    result = cli("train", "--config", "presets/tiny-cpu.yaml", "--set", "data.stride=zero")
    assert result.exit_code == 2 and "data.stride" in result.stderr


# --- σ sampler --------------------------------------------------------------------------------------------------

def test_sigma_quantiles_match_the_reference():
    sigmas = sample_sigmas(200_000, torch.Generator().manual_seed(0)).double().numpy()
    quantiles = np.quantile(sigmas, [0.01, 0.10, 0.50, 0.90, 0.99])
    np.testing.assert_allclose(quantiles, [0.0099, 0.087, 0.71, 5.85, 58], rtol=0.03)
    assert sigmas.min() >= 0.002 - 1e-9 and sigmas.max() <= 700 + 1e-6


def test_sigma_range_ends_and_monotone():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    sigmas = sigmas_from_uniform(u)
    assert sigmas[0] == pytest.approx(700) and sigmas[-1] == pytest.approx(0.002)
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_stratified_draws_cover_every_stratum_across_ranks():
    u = torch.cat([stratified_uniform(8, torch.Generator().manual_seed(rank), rank, 4) for rank in range(4)])
    strata = torch.sort((u * 32).floor().long()).values
    assert strata.tolist() == list(range(32))


# --- loss ---------------------------------------------------------------------------------------------------------

def test_edm_weight():
    assert edm_weight(torch.tensor([2.0])).item() == pytest.approx(1.25)
    assert edm_weight(torch.tensor([0.5])).item() == pytest.approx(5.0)


def test_loss_on_hand_computed_tensors():
    sigma = torch.tensor([2.0])
    noisy = torch.ones(1, 1, 4, 2, 2)
    prediction = torch.full((1, 1, 4, 2, 2), 0.5)
    target = torch.zeros(1, 1, 4, 2, 2)
    # D = x/(σ²+1) − F·σ/√(σ²+1) = 0.2 − 0.5·2/√5; loss = λ·D² with λ = 5/4.
    denoised = 0.2 - 1 / 5 ** 0.5
    plain = 1.25 * denoised**2
    assert denoising_loss(prediction, noisy, target, sigma).item() == pytest.approx(plain, rel=1e-6)
    mask = torch.zeros(1, 1, 1, 16, 16)
    mask[..., :8] = 1  # left half of the frame is face → left latent column
    assert latent_face_mask(mask, (2, 2))[0, 0, 0].tolist() == [[1, 0], [1, 0]]
    assert denoising_loss(prediction, noisy, target, sigma, mask).item() == pytest.approx(plain * 1.5, rel=1e-6)
    assert denoising_loss(prediction.half(), noisy, target, sigma).dtype == torch.float32


def test_loss_is_mean_over_samples_of_each_samples_mean():
    """With x_σ = 0 and F = 0 the denoised estimate is 0, so each element's loss is λ(σ_b)·x0²: sample 0 (σ = 1,
    λ = 2, x0 = 1) has mean 2, sample 1 (σ = 3, λ = 10/9, x0 = 0, 1, 2 over its three frames) has mean
    10/9 · 5/3. Their mean is 52/27; a sum (104/27), σ given to the wrong sample (20/9) or broadcast along frames
    (B ≠ F: a shape error) give other results. (Every sample has as many elements as the others, so the mean over
    all elements is the same number: no input can tell those two apart.)"""
    sigma = torch.tensor([1.0, 3.0])
    target = torch.ones(2, 3, 4, 2, 2)
    target[1] = torch.tensor([0.0, 1.0, 2.0]).view(3, 1, 1, 1)
    zeros = torch.zeros_like(target)
    per_sample = [2.0 * 1.0, 10 / 9 * (0 + 1 + 4) / 3]
    assert denoising_loss(zeros, zeros, target, sigma).item() == pytest.approx(np.mean(per_sample), rel=1e-6)


# --- dropout ------------------------------------------------------------------------------------------------------

def test_dropout_rates_match_the_spec():
    r = torch.rand(400_000, generator=torch.Generator().manual_seed(0))
    drops = dropout_masks(r, ConditioningConfig())
    image, latent, pose = (m.float().mean().item() for m in (drops.image, drops.latent, drops.pose))
    both = (drops.image & drops.latent).float().mean().item()
    assert image == pytest.approx(0.2, abs=0.003) and latent == pytest.approx(0.2, abs=0.003)
    assert both == pytest.approx(0.1, abs=0.003) and pose == pytest.approx(both)
    assert not bool((drops.pose & ~(drops.image & drops.latent)).any())


def test_pose_kept_when_configured():
    drops = dropout_masks(torch.tensor([0.15]), ConditioningConfig(drop_pose_when_unconditional=False))
    assert bool(drops.image[0]) and bool(drops.latent[0]) and not bool(drops.pose[0])


# --- clip sampling and batch plan -------------------------------------------------------------------------------

def test_sample_indices_stride_and_reference_outside():
    rng = np.random.default_rng(0)
    for _ in range(200):
        indices, ref = sample_indices(100, 16, 4, rng)
        assert len(set(indices.tolist())) == 16 and np.all(np.diff(indices) == 4) and ref not in indices
    indices, ref = sample_indices(17, 16, 4, rng)  # shortest usable clip: every frame but one
    assert len(set(indices.tolist())) == 16 and ref not in indices
    with pytest.raises(ValueError):
        sample_indices(16, 16, 4, rng)  # the reference crashed with 1/0 here


def test_batch_plan_ranks_share_buckets_and_split_clips():
    plans = [BatchPlan([6, 4], batch_size=1, world_size=2, rank=rank, seed=3) for rank in range(2)]
    assert plans[0].batches_per_epoch == 5
    for micro in range(12):
        a, b = (plan.keys(micro) for plan in plans)
        assert a[0].bucket == b[0].bucket and a[0].clip != b[0].clip and a[0].seed != b[0].seed
    epoch = [plans[0].keys(m)[0] for m in range(5)] + [plans[1].keys(m)[0] for m in range(5)]
    assert sorted((k.bucket, k.clip) for k in epoch) == [(0, i) for i in range(6)] + [(1, i) for i in range(4)]


def test_batch_plan_resume_skips_without_replaying():
    plan = BatchPlan([5], batch_size=2, world_size=1, rank=0, seed=1)
    full = plan.iterate(0)
    expected = [next(full) for _ in range(9)]
    resumed = plan.iterate(6)
    assert [next(resumed) for _ in range(3)] == expected[6:]


def test_batch_plan_without_a_full_batch_is_an_input_error():
    with pytest.raises(InputError, match="no complete batch"):
        BatchPlan([1], batch_size=2, world_size=1, rank=0, seed=0)


# --- data check and loader ----------------------------------------------------------------------------------------

def _clip(root, name, frames, masks=True, poses=True, identity=True, found=None):
    clip = root / name
    for sub in ("images", "poses", "faces"):
        (clip / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(frames):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), np.uint8)).save(clip / "images" / f"frame_{i}.png")
        if poses:
            Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(clip / "poses" / f"frame_{i}.png")
        if masks:
            Image.fromarray(np.full((32, 48), 255, np.uint8)).save(clip / "faces" / f"frame_{i}.png")
    if identity:
        embeddings = np.repeat(np.arange(frames, dtype=np.float32)[:, None] + 1, 512, axis=1)  # row i holds i + 1
        found = np.ones(frames, bool) if found is None else np.asarray(found, bool)
        np.savez(clip / IDENTITY_FILE, embeddings=embeddings, found=found)
    return clip


def test_data_check_reports_every_problem_up_front(tmp_path):
    _clip(tmp_path, "good", 6)
    _clip(tmp_path, "short", 3)
    _clip(tmp_path, "nomasks", 6, masks=False)
    _clip(tmp_path, "noposes", 6, poses=False)
    _clip(tmp_path, "noid", 6, identity=False)
    corrupt = _clip(tmp_path, "corrupt", 6)
    (corrupt / "images" / "frame_2.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "list.txt").write_text("good\nshort\nnomasks\nnoposes\nnoid\ncorrupt\nmissing\n")
    report = check_dataset(tmp_path, ["list.txt"], num_frames=4, verify_images=True)
    assert sorted(c.path.name for c in report.clips[0]) == ["good", "nomasks"]
    problems = dict((p.rsplit("/", 1)[-1], why) for p, why in report.problems)
    assert set(problems) == {"short", "noposes", "noid", "corrupt", "missing"}
    assert "5 needed" in problems["short"] and "unreadable" in problems["corrupt"]
    assert [p.rsplit("/", 1)[-1] for p, _ in report.warnings] == ["nomasks"]


def test_loader_shapes_and_missing_mask_fallback(tmp_path):
    _clip(tmp_path, "nomasks", 6, masks=False)
    (tmp_path / "list.txt").write_text("nomasks\n")
    report = check_dataset(tmp_path, ["list.txt"], num_frames=4)
    dataset = ClipDataset(report.clips, [(64, 128)], num_frames=4, stride=1)
    sample = dataset.load(report.clips[0][0], 64, 128, np.random.default_rng(0))
    assert sample["pixel_values"].shape == (4, 3, 128, 64) and sample["reference"].shape == (3, 128, 64)
    assert sample["pose_pixels"].shape == (4, 3, 128, 64) and sample["identity"].shape == (512,)
    assert sample["face_masks"].shape == (4, 1, 128, 64) and float(sample["face_masks"].max()) == 0
    assert float(sample["pixel_values"].min()) >= -1 and float(sample["pixel_values"].max()) <= 1


def test_loader_moves_on_when_a_frame_breaks_mid_epoch(tmp_path, caplog):
    from animator_cli.training.dataset import SampleKey

    _clip(tmp_path, "a", 6)
    _clip(tmp_path, "b", 6)
    (tmp_path / "list.txt").write_text("a\nb\n")
    report = check_dataset(tmp_path, ["list.txt"], num_frames=4)
    for frame in (tmp_path / "a" / "images").iterdir():  # broken after the check
        frame.write_bytes(b"garbage")
    sample = ClipDataset(report.clips, [(64, 64)], 4, 1)[SampleKey(0, 0, 7)]
    assert sample["pixel_values"].shape == (4, 3, 64, 64)
    assert "skipping clip" in caplog.text


def test_resume_resolution(tmp_path):
    from animator_cli.training.checkpoint import STATE_FILE, resolve_resume

    assert resolve_resume(tmp_path, None) is None and resolve_resume(tmp_path, "latest") is None
    for step in (5, 40, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / STATE_FILE).write_text("{}")
    (tmp_path / "checkpoint-200").mkdir()  # incomplete: no trainer state
    (tmp_path / ".checkpoint-300.partial").mkdir()
    assert resolve_resume(tmp_path, "latest") == tmp_path / "checkpoint-100"
    with pytest.raises(InputError, match="not a complete training checkpoint"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-200"))


def test_cli_bad_clips_are_fatal_when_asked(cli, tiny_home, tmp_path):
    _clip(tmp_path, "good", 6)
    _clip(tmp_path, "short", 2)
    (tmp_path / "video_rec_path.txt").write_text("good\nshort\n")
    result = cli("--weights", tiny_home.root, "train", "--config", "presets/tiny-cpu.yaml", "--data", tmp_path,
                 "--output", tmp_path / "run", "data.on_bad_clip=error")
    assert result.exit_code == 2 and "1 clip cannot be used" in result.stderr and "short" in result.stderr
    report = json.loads((tmp_path / "run" / "data_check.json").read_text())
    assert [p.rsplit("/", 1)[-1] for p, _ in report["problems"]] == ["short"]


def test_identity_cache_is_not_the_face_stages_file():
    from animator_cli.face.storage import IDENTITY_FILE as FACE_STAGE_FILE

    assert IDENTITY_FILE == "identities.npz" and IDENTITY_FILE != FACE_STAGE_FILE


def test_reference_frame_has_a_face_when_an_unsampled_one_does():
    has_face = np.zeros(10, bool)
    has_face[[0, 9]] = True
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices, ref = sample_indices(10, 3, 1, rng, has_face)
        assert ref not in indices and (has_face[ref] or not has_face[np.setdiff1d(np.arange(10), indices)].any())
    refs = {sample_indices(5, 4, 1, rng, np.array([True, False, False, False, False]))[1] for _ in range(50)}
    assert refs == {0, 4}  # 0 when it is outside the targets; otherwise the faceless frame outside them


def test_loader_identity_comes_from_a_frame_with_a_face(tmp_path):
    _clip(tmp_path, "sparse", 8, found=[i in (0, 7) for i in range(8)])
    (tmp_path / "list.txt").write_text("sparse\n")
    report = check_dataset(tmp_path, ["list.txt"], num_frames=2)
    dataset = ClipDataset(report.clips, [(48, 32)], num_frames=2, stride=1)
    rows = {float(dataset.load(report.clips[0][0], 48, 32, np.random.default_rng(seed))["identity"][0]) - 1
            for seed in range(20)}
    assert rows <= {0, 7}


def test_data_check_warns_about_a_clip_without_any_face(tmp_path):
    _clip(tmp_path, "faceless", 6, found=[False] * 6)
    (tmp_path / "list.txt").write_text("faceless\n")
    report = check_dataset(tmp_path, ["list.txt"], num_frames=4)
    assert [c.path.name for c in report.clips[0]] == ["faceless"] and not report.problems
    assert len(report.warnings) == 1 and "no face found in any frame" in report.warnings[0][1]


def test_loader_worker_error_arrives_as_one_clean_line(tmp_path):
    from animator_cli.errors import AnimatorError
    from animator_cli.training.dataset import SampleKey, collate, iter_batches

    _clip(tmp_path, "a", 6)
    (tmp_path / "list.txt").write_text("a\n")
    report = check_dataset(tmp_path, ["list.txt"], num_frames=4)
    for frame in (tmp_path / "a" / "images").iterdir():  # broken after the check
        frame.write_bytes(b"garbage")
    dataset = ClipDataset(report.clips, [(64, 64)], 4, 1, max_retries=2)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[[SampleKey(0, 0, 1)]], num_workers=1,
                                         collate_fn=collate)
    with pytest.raises(AnimatorError) as caught:
        next(iter_batches(loader))
    assert str(caught.value.message).startswith("2 clips in a row failed to load") and "\n" not in str(caught.value)
    assert "verify_images" in caught.value.hint


def test_batch_plan_warns_about_a_bucket_smaller_than_one_global_batch(caplog):
    plan = BatchPlan([8, 3], batch_size=1, world_size=4, rank=0, seed=0,
                     bucket_names=["video_rec_path.txt", "video_vec_path.txt"])
    assert plan.batches_per_epoch == 2
    assert "video_vec_path.txt: 3 usable clips" in caplog.text and "video_rec_path.txt" not in caplog.text


# --- prepare-data failures --------------------------------------------------------------------------------------

def test_prepare_data_keeps_going_after_any_error_and_exits_2(cli, tiny_home, tmp_path, monkeypatch):
    """A cv2/ONNX Runtime error in one video fails that video only; the command reports it and exits 2."""
    from animator_cli.training import prepare

    def fake_build(video, clip_dir, *args):
        if video.stem == "bad":
            raise RuntimeError("onnxruntime exploded")
        (clip_dir / "images").mkdir(parents=True)
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(clip_dir / "images" / "frame_0.png")
        (clip_dir / IDENTITY_FILE).write_bytes(b"")
        return clip_dir

    monkeypatch.setattr(prepare, "build_clip", fake_build)
    (tmp_path / "in").mkdir()
    for name in ("bad.mp4", "good.mp4"):
        (tmp_path / "in" / name).write_bytes(b"")
    result = cli("--weights", tiny_home.root, "--json", "prepare-data", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "1 of 2 videos failed" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["built"] == ["good"] and summary["failed"] == {"bad": "RuntimeError: onnxruntime exploded"}
    assert (tmp_path / "out" / "video_rec_path.txt").read_text().split() == ["good"]


def test_a_broken_process_pool_fails_the_unfinished_videos_only(tmp_path):
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from animator_cli.training.prepare import _pool_outcomes

    done, lost = Future(), Future()
    done.set_result("")
    lost.set_exception(BrokenProcessPool("a child process terminated abruptly"))
    outcomes = dict(_pool_outcomes({done: tmp_path / "a.mp4", lost: tmp_path / "b.mp4"}))
    assert outcomes == {tmp_path / "a.mp4": "", tmp_path / "b.mp4": "BrokenProcessPool: a child process terminated "
                        "abruptly"}
