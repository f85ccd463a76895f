"""HJB face optimisation: face boxes, the chunked refiner, and `--face-opt` through the sampler and the CLI."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from insightface.utils.face_align import arcface_dst, estimate_norm

from animator_cli.distributed import Ranks
from animator_cli.errors import InputError
from animator_cli.face import FaceIdentity
from animator_cli.generate import load_pipeline
from animator_cli.hjb import (
    FaceRefiner,
    build_refiner,
    fit_box,
    load_arcface,
    mask_face_boxes,
    memory,
    pose_face_boxes,
    reference_face_crop,
)
from animator_cli.hjb import refine as refine_module
from animator_cli.hjb.arcface import face_crops, identity_distance
from animator_cli.hjb.boxes import FIVE_FROM_68, five_points, template_box
from animator_cli.hjb.memory import DecodePlan
from animator_cli.hjb.refine import StepRecord, latent_window
from animator_cli.options import FaceOptOptions, Runtime, SamplingOptions, generate_options, parse_steps
from animator_cli.pose.draw import draw_pose
from animator_cli.pose.keypoints import FACE, NUM_POINTS, Pose, PoseTrack, save_keypoints
from animator_cli.sampling.conditioning import to_tensor
from animator_cli.sampling.fit import Fit, fit_image
from animator_cli.video import iter_frames, load_image, write_frame, write_video

FACE_BOX = (16, 8, 48, 40)  # a face box in 64×64 test frames


def _template_points(box: tuple[float, float, float, float]) -> np.ndarray:
    """ArcFace's five template points placed in ``box`` (x0, y0, x1, y1), as a detector would report them."""
    x0, y0, x1, y1 = box
    return np.asarray(arcface_dst) / 112 * (x1 - x0, y1 - y0) + (x0, y0)


def _face_pose(centre: tuple[float, float], half: tuple[float, float], visible: bool = True) -> Pose:
    """A pose whose 68 face points lie on an ellipse (normalised coordinates) around ``centre``, except the eyes,
    nose tip and mouth corners, which sit where ArcFace's template puts them in the box centre ± half."""
    points = np.zeros((NUM_POINTS, 2), np.float32)
    scores = np.zeros(NUM_POINTS, np.float32)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face = np.stack([centre[0] + half[0] * np.cos(angles), centre[1] + half[1] * np.sin(angles)], 1)
    five = _template_points((centre[0] - half[0], centre[1] - half[1], centre[0] + half[0], centre[1] + half[1]))
    for point, indices in zip(five, FIVE_FROM_68, strict=True):
        face[list(indices)] = point
    points[FACE] = face
    scores[FACE] = 0.9 if visible else 0.1
    return Pose(points, scores)


def pose_folder(folder: Path, poses: list[Pose], size: tuple[int, int]) -> Path:
    """A pose folder like `animator extract-pose` writes: skeleton PNGs, keypoints.npz, meta.json."""
    folder.mkdir(parents=True)
    for i, pose in enumerate(poses):
        write_frame(folder, i, draw_pose(pose, *size))
    track = PoseTrack.from_poses(poses, size, 12.0)
    save_keypoints(folder / "keypoints.npz", track, track)
    (folder / "meta.json").write_text(json.dumps({"fps": 12.0}))
    return folder


@pytest.fixture(scope="module")
def pipeline(tiny_home):
    return load_pipeline(tiny_home, Runtime(device="cpu"))


@pytest.fixture(scope="module")
def arcface(tiny_home):
    return load_arcface(tiny_home)


@pytest.fixture(scope="module")
def reference_crop(astronaut_path):
    return reference_face_crop(fit_image(load_image(astronaut_path), 64, 64), (20, 4, 40, 28))


@pytest.mark.parametrize("mode", list(Fit))
@pytest.mark.parametrize("size", [(96, 64), (64, 128), (32, 32)])
def test_fit_box_follows_fit_image(mode, size):
    """A white rectangle fitted with fit_image lands inside fit_box's box, touching its edges (±1 px)."""
    w, h = size
    box = (w // 4, h // 3, w * 3 // 4, h * 2 // 3)
    image = np.zeros((h, w, 3), np.uint8)
    image[box[1]:box[3], box[0]:box[2]] = 255
    fitted = fit_image(image, 64, 64, mode, pose=True)[..., 0] > 127
    rows, cols = np.flatnonzero(fitted.any(1)), np.flatnonzero(fitted.any(0))
    x0, y0, x1, y1 = fit_box(box, size, 64, 64, mode)
    assert abs(cols[0] - x0) <= 1 and abs(cols[-1] + 1 - x1) <= 1
    assert abs(rows[0] - y0) <= 1 and abs(rows[-1] + 1 - y1) <= 1


def test_fit_box_outside_the_crop_is_none():
    assert fit_box((0, 0, 10, 64), (128, 64), 64, 64, Fit.COVER) is None  # the cover crop drops x < 32
    assert fit_box((0, 0, 10, 64), (128, 64), 64, 64, Fit.STRETCH) == (0, 0, 5, 64)


def test_template_box():
    """The template's own points give the 112 px square; a scaled and shifted face gives the scaled, shifted
    square; with fewer than 3 visible points there is no box."""
    np.testing.assert_allclose(template_box(arcface_dst), (0, 0, 112, 112), atol=1e-9)
    np.testing.assert_allclose(template_box(arcface_dst * 0.5 + (10, 20)), (10, 20, 66, 76), atol=1e-9)
    visible = np.array([True, False, True, False, True])
    np.testing.assert_allclose(template_box(arcface_dst * 2, visible), (0, 0, 224, 224), atol=1e-9)
    assert template_box(arcface_dst, np.array([True, True, False, False, False])) is None
    assert template_box(np.zeros((5, 2))) is None  # all points at one place: no scale


def test_five_points_from_the_68():
    """Eye centres are the means of the visible contour points; a group with none visible is not visible."""
    face, scores = np.arange(136, dtype=float).reshape(68, 2), np.full(68, 0.9)
    scores[36:39] = scores[54] = 0.1
    points, visible = five_points(face, scores)
    np.testing.assert_allclose(points[0], face[39:42].mean(0))
    np.testing.assert_allclose(points[1:4], [face[42:48].mean(0), face[30], face[48]])
    assert visible.tolist() == [True, True, True, True, False]


def test_boxes_from_a_known_skeleton(tmp_path):
    """A face whose five points fill the template square x 48..72, y 12..36 of a 96×64 canvas; cover-fitted to
    64×64 the crop drops 16 px on the left; the second frame's face is invisible."""
    poses = [_face_pose((60 / 96, 24 / 64), (12 / 96, 12 / 64)), _face_pose((0.5, 0.5), (0.1, 0.1), visible=False)]
    folder = pose_folder(tmp_path / "poses", poses, (96, 64))
    boxes = pose_face_boxes(folder, 2, 64, 64, Fit.COVER)
    assert boxes[1] is None
    np.testing.assert_allclose(boxes[0], (48 - 16, 12, 72 - 16, 36), atol=1)
    np.testing.assert_allclose(pose_face_boxes(folder, 2, 96, 64, Fit.COVER)[0], (48, 12, 72, 36), atol=1)
    with pytest.raises(InputError, match="3 poses"):
        pose_face_boxes(folder, 3, 64, 64, Fit.COVER)
    (folder / "keypoints.npz").unlink()
    with pytest.raises(InputError, match="^face_opt needs face boxes.*or give face_masks"):
        pose_face_boxes(folder, 2, 64, 64, Fit.COVER)


def test_boxes_from_masks_and_an_empty_mask(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    first = np.zeros((128, 128, 3), np.uint8)
    first[20:60, 40:80] = 255
    write_frame(masks, 0, first)
    write_frame(masks, 1, np.zeros((128, 128, 3), np.uint8))  # empty: the reference divided by zero
    assert mask_face_boxes(masks, 2, 64, 64, Fit.COVER) == [(20, 10, 40, 30), None]
    with pytest.raises(InputError, match="2 masks for 3"):
        mask_face_boxes(masks, 3, 64, 64, Fit.COVER)


def test_parse_and_validate_options():
    assert parse_steps("0:20") == (0, 20)
    for bad in ("3", "a:b", "1:2:3"):
        with pytest.raises(InputError):
            parse_steps(bad)
    for bad in (FaceOptOptions(iters=0), FaceOptOptions(start=5, end=2), FaceOptOptions(lr=-1)):
        with pytest.raises(InputError):
            bad.validate()


def _latents(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, frames, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_identity_loss_decreases_within_a_step(pipeline, arcface, reference_crop):
    refiner = FaceRefiner(arcface, reference_crop, [FACE_BOX] * 3, FaceOptOptions(iters=4, lr=0.05), 25, 4)
    latents = _latents(3)
    refined = refiner(pipeline.models.vae, latents, 0)
    losses = refiner.records[0].losses
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert refined.shape == latents.shape and not torch.equal(refined, latents)
    # the network stays frozen and the sampler's no_grad state and the VAE's settings are restored
    assert all(p.grad is None for p in arcface.parameters())
    assert all(p.grad is None for p in pipeline.models.vae.parameters())


def test_frames_and_chunks_without_a_face(pipeline, arcface, reference_crop):
    """Frames 0-3 (chunk 0) have no face: untouched; frame 4 has none but shares chunk 1 with a face frame."""
    boxes = [None, None, None, None, None, FACE_BOX]
    refiner = FaceRefiner(arcface, reference_crop, boxes, FaceOptOptions(iters=2), 25, 4)
    latents = _latents(6)
    refined = refiner(pipeline.models.vae, latents, 3)
    assert torch.equal(refined[:, :4], latents[:, :4])
    assert not torch.equal(refined[:, 4:], latents[:, 4:])
    assert refiner.records[0].lr == pytest.approx(0.1 * (1 - 3 / 25))
    nobody = FaceRefiner(arcface, reference_crop, [None] * 6, FaceOptOptions(), 25, 4)
    assert not nobody.active(0)  # nothing to refine: the sampler never calls it


def test_chunked_refinement_equals_the_joint_optimisation(pipeline, arcface, reference_crop):
    """Chunks of 2 frames optimised independently equal one Adam over all frames on the spec's joint loss (mean
    over the face frames, decoded 2 frames at a time as the sampler decodes): the per-chunk normalisation by
    all face frames gives every element the joint gradient, and Adam is element-wise."""
    vae = pipeline.models.vae
    boxes = [FACE_BOX, None, FACE_BOX, FACE_BOX]
    latents = _latents(4, seed=5)
    refiner = FaceRefiner(arcface, reference_crop, boxes, FaceOptOptions(iters=2, lr=0.05), 25, 2)
    chunked = refiner(vae, latents, 0)
    # the joint optimisation written out: one Adam over all of z, loss = mean over the face frames
    z = latents[0].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=0.05)
    for _ in range(2):
        optimizer.zero_grad()
        distances = []
        for first in (0, 2):
            pixels = vae.decode(z[first:first + 2] / vae.config.scaling_factor, num_frames=2).sample.clamp(-1, 1)
            for i in (0, 1):
                if boxes[first + i] is not None:
                    x0, y0, x1, y1 = boxes[first + i]
                    crop = torch.nn.functional.interpolate(pixels[i:i + 1, :, y0:y1, x0:x1], size=(112, 112),
                                                           mode="bilinear", align_corners=False)
                    distances.append(1 - torch.cosine_similarity(arcface(crop), refiner.reference, dim=-1))
        torch.cat(distances).mean().backward()
        optimizer.step()
    torch.testing.assert_close(chunked[0], z.detach(), rtol=1e-5, atol=1e-6)


def test_decoder_backward_is_checkpointed(pipeline, arcface, reference_crop):
    """Every decoder resnet's first conv runs twice per decode (forward, then the recomputation in backward) while
    refining, and once outside (the patch is removed). (Pre-hooks: the recomputation stops as soon as the needed
    activations exist, before the post-hooks.)"""
    vae = pipeline.models.vae
    resnets = [m for m in vae.decoder.modules() if type(m).__name__ in ("ResnetBlock2D", "TemporalResnetBlock")]
    calls = []
    handles = [m.conv1.register_forward_pre_hook(lambda *_: calls.append(1)) for m in resnets]
    try:
        refiner = FaceRefiner(arcface, reference_crop, [FACE_BOX] * 2, FaceOptOptions(iters=1), 25, 4)
        refiner(vae, _latents(2), 0)
        assert len(calls) == 2 * len(resnets) > 0
        calls.clear()
        vae.decode(_latents(2)[0], num_frames=2)
        assert len(calls) == len(resnets)
    finally:
        for handle in handles:
            handle.remove()


def test_diffusers_decoder_checkpointing_works_in_eval_mode(pipeline):
    """diffusers 0.42's own switch also checkpoints (per block) in eval mode while grad is enabled."""
    vae = pipeline.models.vae
    calls = []
    handle = vae.decoder.mid_block.register_forward_pre_hook(lambda *_: calls.append(1))
    vae.enable_gradient_checkpointing()
    try:
        latent = _latents(2)[0].requires_grad_(True)
        with torch.enable_grad():
            vae.decode(latent, num_frames=2).sample.sum().backward()
    finally:
        vae.disable_gradient_checkpointing()
        handle.remove()
    assert not vae.training and len(calls) == 2


def _inputs(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), rng.integers(0, 255, (frames, 64, 64, 3), np.uint8),
            rng.standard_normal(512).astype(np.float32))


class _Recorder:
    """Active at every step: records the x̂0 it is given and passes it to ``refiner`` where that is active."""

    def __init__(self, refiner: FaceRefiner) -> None:
        self.refiner, self.inputs = refiner, {}

    def active(self, step: int) -> bool:
        return True

    def __call__(self, vae: torch.nn.Module, denoised: torch.Tensor, step: int) -> torch.Tensor:
        self.inputs[step] = denoised.clone()
        return self.refiner(vae, denoised, step) if self.refiner.active(step) else denoised


def test_learning_rate_zero_equals_basic_generation(pipeline, arcface, reference_crop):
    reference, poses, identity = _inputs(6)
    options = SamplingOptions(steps=3)
    basic = pipeline(reference, poses, identity, options, torch.Generator().manual_seed(4))
    refiner = FaceRefiner(arcface, reference_crop, [FACE_BOX] * 6, FaceOptOptions(lr=0.0), 3, 4)
    frozen = pipeline(reference, poses, identity, options, torch.Generator().manual_seed(4), refine=refiner)
    assert [r.step for r in refiner.records] == [0, 1, 2]  # it ran, through the decoder and ArcFace
    np.testing.assert_array_equal(frozen, basic)
    refiner = FaceRefiner(arcface, reference_crop, [FACE_BOX] * 6, FaceOptOptions(lr=0.1), 3, 4)
    moved = pipeline(reference, poses, identity, options, torch.Generator().manual_seed(4), refine=refiner)
    assert not np.array_equal(moved, basic)


def test_only_steps_in_the_range_are_refined(pipeline, arcface, reference_crop):
    """Range 1:2 of 4 steps: x̂0 at steps 0 and 1 is what basic generation computes (nothing refined before
    START), it differs from step 2 on, and the refiner runs at steps 1 and 2 only."""
    reference, poses, identity = _inputs(5, seed=1)
    options = SamplingOptions(steps=4)
    runs = {}
    for name, face_opt in (("basic", FaceOptOptions(lr=0.0, start=0, end=3)), ("hjb", FaceOptOptions(start=1, end=2))):
        recorder = _Recorder(FaceRefiner(arcface, reference_crop, [FACE_BOX] * 5, face_opt, 4, 4))
        pipeline(reference, poses, identity, options, torch.Generator().manual_seed(2), refine=recorder)
        runs[name] = recorder
    assert [r.step for r in runs["hjb"].refiner.records] == [1, 2]
    for step in (0, 1):
        torch.testing.assert_close(runs["hjb"].inputs[step], runs["basic"].inputs[step], rtol=0, atol=0)
    for step in (2, 3):
        assert not torch.equal(runs["hjb"].inputs[step], runs["basic"].inputs[step])


def _cli_args(home, reference: Path, poses: Path, out: Path, *extra) -> list:
    return ["--weights", home.root, "--json", "generate", reference, poses, "-o", out, "--width", 64, "--height", 64,
            "--steps", 2, *extra]


def _built_refiners(monkeypatch: pytest.MonkeyPatch) -> list[FaceRefiner]:
    """Every refiner the CLI builds from now on (its ArcFace, reference embedding and frame boxes)."""
    import animator_cli.hjb as hjb

    built, build = [], hjb.build_refiner
    monkeypatch.setattr(hjb, "build_refiner", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    return built


def _face_cosines(video: Path, refiner: FaceRefiner) -> torch.Tensor:
    """cos(ArcFace(face crop), ArcFace(reference crop)) of each frame of ``video`` with a face box, measured as the
    refiner measures its loss (its crops, network and reference embedding)."""
    frames = np.stack(list(iter_frames(video)))
    faces = [i for i, box in enumerate(refiner.boxes) if box is not None]
    with torch.no_grad():
        embeddings = refiner.arcface(face_crops(to_tensor(frames[faces]), [refiner.boxes[i] for i in faces]))
    return 1 - identity_distance(embeddings.float(), refiner.reference)


def test_cli_face_opt_forty_frames(cli, tiny_home, tmp_path, astronaut_path, monkeypatch):
    """40 frames = 3 windows of 16 and 10 refiner chunks of 4; the face leaves the frame in frames 20-24. One
    refined step moves every face of the final video towards the reference identity: each face frame's ArcFace
    cosine to the reference is higher than with --face-opt-lr 0 (which renders the unrefined video)."""
    poses = [_face_pose((0.3 + 0.01 * i, 0.3), (0.1, 0.12), visible=not 20 <= i < 25) for i in range(40)]
    folder = pose_folder(tmp_path / "poses", poses, (64, 64))
    refiners = _built_refiners(monkeypatch)
    face_opt = ("--face-opt", "--face-opt-steps", "0:0", "--face-opt-iters", 1)
    frozen = cli(*_cli_args(tiny_home, astronaut_path, folder, tmp_path / "frozen.mp4", *face_opt, "--face-opt-lr", 0))
    assert frozen.exit_code == 0, frozen.stderr
    result = cli(*_cli_args(tiny_home, astronaut_path, folder, tmp_path / "hjb.mp4", *face_opt))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["cached"] is False  # the face-opt options are in the cache key
    assert len(refiners) == 2 and sum(box is not None for box in refiners[1].boxes) == 35
    before, after = (_face_cosines(tmp_path / name, refiners[1]) for name in ("frozen.mp4", "hjb.mp4"))
    assert bool((after > before).all()), (before, after)
    assert np.stack(list(iter_frames(tmp_path / "hjb.mp4"))).shape == (40, 64, 64, 3)
    again = cli(*_cli_args(tiny_home, astronaut_path, folder, tmp_path / "hjb.mp4", *face_opt))
    assert json.loads(again.stdout)["cached"] is True
    other_lr = cli(*_cli_args(tiny_home, astronaut_path, folder, tmp_path / "hjb.mp4", *face_opt,
                              "--face-opt-lr", 0.05))
    assert json.loads(other_lr.stdout)["cached"] is False


def test_cli_face_masks_and_bad_input(cli, tiny_home, tmp_path, astronaut_path):
    folder = pose_folder(tmp_path / "poses", [_face_pose((0.5, 0.3), (0.1, 0.1))] * 3, (64, 64))
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(3):
        mask = np.zeros((64, 64, 3), np.uint8)
        if i != 1:  # frame 1: an empty mask is skipped, not a crash
            mask[10:40, 20:44] = 255
        write_frame(masks, i, mask)
    ok = cli(*_cli_args(tiny_home, astronaut_path, folder, tmp_path / "m.mp4", "--face-opt", "--face-masks",
                        masks, "--face-opt-steps", "1:1", "--face-opt-margin", 1))
    assert ok.exit_code == 0, ok.stderr
    (folder / "keypoints.npz").unlink()
    for extra, message in ((("--face-opt",), "keypoints.npz"), (("--face-opt-steps", "1-2", "--face-opt"), "START"),
                           (("--face-opt", "--face-opt-steps", "2:3"), "--face-opt-steps 2:3 starts after"),
                           (("--face-masks", masks), "needs face_opt and must be a folder")):
        bad = cli(*_cli_args(tiny_home, astronaut_path, folder, tmp_path / "bad.mp4", *extra))
        assert bad.exit_code == 2 and message in bad.stderr, (extra, bad.stderr)
        assert "Traceback" not in bad.stderr and not (tmp_path / "bad.mp4").exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_decoder_follows_fp32(pipeline, arcface, reference_crop, dtype):
    """The decoder in half precision (fp16 with the constant loss scale) gives the fp32 losses and x̂0 closely,
    and the optimised latent stays fp32."""
    vae = pipeline.models.vae
    latents = _latents(3, seed=2)
    weights = {key: value.clone() for key, value in vae.state_dict().items()}
    results = []
    for vae_dtype in (torch.float32, dtype):
        vae.to(vae_dtype)
        try:
            refiner = FaceRefiner(arcface, reference_crop, [FACE_BOX] * 3, FaceOptOptions(iters=3, lr=0.05), 25, 4)
            results.append((refiner(vae, latents, 0), refiner.records[0].losses))
        finally:
            vae.to(torch.float32)
            vae.load_state_dict(weights)  # the round trip through half precision rounded them; the fixture is shared
    (full, full_losses), (half, half_losses) = results
    assert half.dtype == torch.float32
    np.testing.assert_allclose(half_losses, full_losses, atol=0.02)
    assert (half - full).abs().mean() < 0.1 * (full - latents).abs().mean()


def test_reference_box_follows_the_reference_fit(tiny_home, tmp_path):
    """The face stage's keypoints and box are in the original reference's pixels; the refiner's reference crop is
    cut from the fitted reference at the fitted box (here a 128×64 reference, cover-fitted to 64×64: x shifts by
    -32): the template square of the five keypoints with pose boxes, the detector box with --face-masks."""
    rng = np.random.default_rng(3)
    original = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    face = FaceIdentity(np.ones(512, np.float32), np.array([38, 4, 82, 54], np.float32),
                        _template_points((40, 10, 80, 50)).astype(np.float32), np.zeros((64, 128), np.uint8), 0.9)
    folder = pose_folder(tmp_path / "poses", [_face_pose((0.5, 0.3), (0.1, 0.1))] * 2, (64, 64))
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(2):
        write_frame(masks, i, np.full((64, 64, 3), 255, np.uint8))
    fitted = fit_image(original, 64, 64, Fit.COVER)
    for frame_masks, box in ((None, (8, 10, 48, 50)), (masks, (6, 4, 50, 54))):
        refiner = build_refiner(fitted, (128, 64), face, folder, 2, FaceOptOptions(), fit=Fit.COVER, steps=4,
                                chunk=4, weights=tiny_home, masks=frame_masks)
        with torch.no_grad():
            expected = refiner.arcface(reference_face_crop(fitted, box)[None])
        torch.testing.assert_close(refiner.reference, expected)
        assert refiner.boxes[0] is not None and refiner.faces == 2
    with pytest.raises(InputError, match="outside"):  # a face cropped away by the fit
        build_refiner(fitted, (128, 64), FaceIdentity(face.embedding, np.array([0, 0, 20, 20], np.float32),
                                                      _template_points((0, 0, 20, 20)), face.mask, 0.9),
                      folder, 2, FaceOptOptions(), fit=Fit.COVER, steps=4, chunk=4, weights=tiny_home)
    with pytest.raises(InputError, match="needs a face"):
        build_refiner(fitted, (128, 64), FaceIdentity(face.embedding, face.box, face.landmarks, face.mask, 0.0),
                      folder, 2, FaceOptOptions(), fit=Fit.COVER, steps=4, chunk=4, weights=tiny_home)


def test_reference_and_frame_crops_share_one_convention(tiny_home, tmp_path, astronaut_path):
    """On a real photo (MediaPipe's landmarks; its five points stand in for insightface's detector keypoints,
    the same anatomical points, as no detector weights are available here): the reference crop of the photo and
    the crop of a frame whose pose is the photo's own (its skeleton drawn on a half-size canvas, boxes from the
    68 face points) frame the same square, and that square is the one ArcFace's own alignment (insightface's
    norm_crop) cuts, up to its small rotation."""
    pytest.importorskip("mediapipe")
    from animator_cli.pose.mediapipe_backend import MediaPipeBackend

    photo = load_image(astronaut_path)  # 512×512
    backend = MediaPipeBackend()
    try:
        (pose,) = backend.detect(photo)
    finally:
        backend.close()
    keypoints, visible = five_points(pose.points[FACE] * 512, pose.scores[FACE])
    assert visible.all()
    face = FaceIdentity(np.ones(512, np.float32), np.zeros(4, np.float32), keypoints.astype(np.float32),
                        np.zeros((512, 512), np.uint8), 0.9)
    folder = pose_folder(tmp_path / "poses", [pose], (256, 256))
    fitted = fit_image(photo, 128, 128)
    refiner = build_refiner(fitted, (512, 512), face, folder, 1, FaceOptOptions(), fit=Fit.COVER, steps=4, chunk=4,
                            weights=tiny_home)
    reference_box = fit_box(template_box(keypoints), (512, 512), 128, 128, Fit.COVER)
    frame_box = refiner.boxes[0]
    np.testing.assert_allclose(frame_box, reference_box, atol=1)
    crops = [reference_face_crop(fitted, box) for box in (reference_box, frame_box)]
    assert (crops[0] - crops[1]).abs().mean() < 0.05  # [-1, 1] pixels: the same face, framed alike
    with torch.no_grad():
        torch.testing.assert_close(refiner.reference, refiner.arcface(crops[0][None]))
    # ArcFace's aligned crop: the square its similarity transform maps onto 112×112, in photo pixels.
    inverse = np.linalg.inv(np.vstack([estimate_norm(keypoints.astype(np.float32), 112), [0, 0, 1]]))
    corners = (inverse @ np.array([[0, 112, 0, 112], [0, 0, 112, 112], [1, 1, 1, 1]]))[:2].T
    x0, y0, x1, y1 = template_box(keypoints)
    side = x1 - x0
    np.testing.assert_allclose(((x0 + x1) / 2, (y0 + y1) / 2), corners.mean(0), atol=0.03 * side)
    assert abs(np.linalg.norm(corners[1] - corners[0]) - side) < 0.1 * side


def test_latent_window():
    boxes = [(16, 8, 48, 40), (20, 4, 50, 30)]
    assert latent_window(boxes, (8, 8), None) == (0, 0, 8, 8)
    assert latent_window(boxes, (8, 8), 0) == (2, 0, 7, 5)  # x 16..50 → cells 2..7, y 4..40 → 0..5
    assert latent_window(boxes, (8, 8), 1) == (1, 0, 8, 6)
    assert latent_window(boxes, (8, 8), 10) == (0, 0, 8, 8)


def test_face_region_decoding(pipeline, arcface, reference_crop):
    """With a margin only the faces' latent window is optimised (the rest is untouched); a margin covering the
    whole latent is the full decode exactly."""
    vae, latents = pipeline.models.vae, _latents(2, seed=7)
    box = (24, 24, 40, 40)  # latent cells 3..5
    outputs = {}
    for margin in (None, 1, 8):
        refiner = FaceRefiner(arcface, reference_crop, [box] * 2, FaceOptOptions(iters=2, margin=margin), 25, 4)
        outputs[margin] = (refiner(vae, latents, 0), refiner.records[0].losses)
    region, _ = outputs[1]
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 2:6] = True
    assert torch.equal(region[..., ~inside], latents[..., ~inside])
    assert (region[..., inside] != latents[..., inside]).float().mean() > 0.9
    torch.testing.assert_close(outputs[8][0], outputs[None][0], rtol=0, atol=0)
    assert outputs[8][1] == outputs[None][1]


def test_cli_animate_face_opt(cli, tiny_home, tmp_path, astronaut_path, monkeypatch):
    """animate: the pose stage's keypoints.npz gives the boxes; the refined video's faces are closer to the
    reference identity (ArcFace cosine) than those of --face-opt-lr 0. MediaPipe finds the real face (the tiny
    DWPose stand-in's random face points would give no template box)."""
    pytest.importorskip("mediapipe")
    image = cv2.resize(load_image(astronaut_path), (256, 256), interpolation=cv2.INTER_AREA)
    write_video(tmp_path / "drive.mp4", [np.roll(image, 4 * i, axis=1) for i in range(4)], fps=10)
    refiners = _built_refiners(monkeypatch)
    for name, lr in (("frozen", 0), ("hjb", 0.1)):
        result = cli("--weights", tiny_home.root, "animate", astronaut_path, tmp_path / "drive.mp4", "-o",
                     tmp_path / f"{name}.mp4", "--width", 64, "--height", 64, "--steps", 2, "--pose-backend",
                     "mediapipe", "--face-opt", "--face-opt-steps", "0:1", "--face-opt-lr", lr)
        assert result.exit_code == 0, result.stderr
    assert np.stack(list(iter_frames(tmp_path / "hjb.mp4"))).shape == (4, 64, 64, 3)
    assert len(refiners) == 2 and refiners[1].faces > 0
    before, after = (_face_cosines(tmp_path / f"{name}.mp4", refiners[1]) for name in ("frozen", "hjb"))
    assert bool((after > before).all()), (before, after)


def test_make_options_face_opt():
    """The CLI's and batch jobs' names map onto FaceOptOptions; off by default."""
    assert generate_options().face_opt is None
    options = generate_options(steps=10, face_opt=True, face_opt_iters=2, face_opt_steps="3:7", face_opt_lr=0.05,
                           face_opt_margin=4)
    assert options.face_opt == FaceOptOptions(iters=2, start=3, end=7, lr=0.05, margin=4)
    assert asdict(options)["face_opt"] == {"iters": 2, "start": 3, "end": 7, "lr": 0.05, "margin": 4}
    assert generate_options(steps=3, face_opt=True).face_opt.end == 20  # steps past the last one are simply not reached
    with pytest.raises(InputError, match="^face_opt_steps .* starts after the last of"):
        generate_options(steps=3, face_opt=True, face_opt_steps="5:6")
    with pytest.raises(InputError, match="must not be negative"):
        generate_options(face_opt=True, face_opt_margin=-1)


def test_decode_plan_follows_free_memory(pipeline, monkeypatch):
    """On the CPU the earlier rule (checkpoint above a quarter of the latent, one chunk per call); with a device
    memory count, no checkpointing and as many chunks per call as the counted bytes allow, checkpointing only
    when one chunk's full backward does not fit."""
    vae = pipeline.models.vae
    full, layered = memory.decode_backward_bytes(vae, 4, (8, 8), torch.float32)
    assert 0 < layered < full
    assert memory.decode_backward_bytes(vae, 8, (8, 8), torch.float32)[0] == pytest.approx(2 * full, rel=0.02)
    assert memory.decode_backward_bytes(vae, 4, (8, 8), torch.float16)[0] == pytest.approx(full / 2, rel=0.02)
    assert memory.plan_decode(vae, 4, (8, 8), (8, 8), 3) == DecodePlan(checkpoint=True, chunks_per_call=1)
    assert memory.plan_decode(vae, 4, (4, 4), (8, 8), 3) == DecodePlan(checkpoint=False, chunks_per_call=1)
    for free, plan in ((memory.MEMORY_FACTOR * full * 2.5, DecodePlan(False, 2)),
                       (memory.MEMORY_FACTOR * full * 9, DecodePlan(False, 3)),
                       (memory.MEMORY_FACTOR * (full + layered) / 2, DecodePlan(True, 1)),
                       (memory.MEMORY_FACTOR * layered * 2.2, DecodePlan(True, 2)),  # < full: checkpoint
                       (0, DecodePlan(True, 1))):
        monkeypatch.setattr(memory, "free_bytes", lambda device, free=free: int(free) + memory.RESERVE_BYTES)
        assert memory.plan_decode(vae, 4, (8, 8), (8, 8), 3) == plan, free


@pytest.mark.parametrize("margin", [None, 1])
def test_every_decode_plan_gives_the_same_refinement(pipeline, arcface, reference_crop, monkeypatch, margin):
    """Chunks batched into one decoder call, with or without checkpointing, give the result of one checkpointed
    chunk per call (the earlier behaviour) to fp32 rounding: 13 frames in chunks of 2 (the last one short), a
    chunk without a face, a chunk whose face region differs (so it cannot share a call with its neighbours)."""
    vae = pipeline.models.vae
    boxes = [FACE_BOX] * 3 + [None] + [None] * 2 + [FACE_BOX] * 2 + [(0, 0, 24, 24)] * 2 + [FACE_BOX] * 3
    boxes[7] = None
    latents = _latents(13, seed=11)
    calls = []
    handle = vae.decoder.register_forward_pre_hook(lambda *_: calls.append(1))
    results = {}
    try:
        for plan in (DecodePlan(True, 1), DecodePlan(False, 1), DecodePlan(False, 99), DecodePlan(True, 99)):
            monkeypatch.setattr(refine_module, "plan_decode", lambda *args, plan=plan: DecodePlan(
                plan.checkpoint, min(plan.chunks_per_call, args[-1])))
            calls.clear()
            refiner = FaceRefiner(arcface, reference_crop, boxes, FaceOptOptions(iters=2, lr=0.05, margin=margin),
                                  25, 2)
            results[plan] = (refiner(vae, latents, 0), refiner.records[0].losses, len(calls))
    finally:
        handle.remove()
    (today, today_losses, today_calls), *others = results.values()
    assert today_calls == 6 * 2  # 6 chunks with a face, 2 iterations
    # whole frames: chunks 0-1 | 3-5 | 6 (short); face regions: 0-1 | 3 | 4 (another region) | 5 | 6
    assert results[DecodePlan(False, 99)][2] == 2 * (3 if margin is None else 5)
    assert torch.equal(today[:, 4:6], latents[:, 4:6]) and not torch.equal(today[:, 6:8], latents[:, 6:8])
    for refined, losses, _ in others:
        np.testing.assert_allclose(losses, today_losses, rtol=1e-5)
        # Adam's step m/(√v + ε) does not shrink with the gradient: an element whose gradient is at the rounding floor
        # moves by up to the learning rate whichever way its rounding falls, and batched chunks round differently
        # (AVX-512 CPUs: 31 of 3,328 values moved by up to 7e-4 while the losses agreed to 5e-8). The losses above
        # hold the computation to 1e-5; the latents are held to it on all but such elements, and on average.
        difference = (refined - today).abs()
        assert difference.mean() <= 1e-5 and (difference > 1e-5).float().mean() <= 0.02


def test_refiner_only_touches_the_chunks_it_owns(pipeline, arcface, reference_crop):
    """Ranks split a video's chunks between refiners (processes); together they give the single refiner's
    result, and the losses sum to its losses."""
    vae, latents = pipeline.models.vae, _latents(6, seed=3)
    whole = FaceRefiner(arcface, reference_crop, [FACE_BOX] * 6, FaceOptOptions(iters=2), 25, 2)
    expected = whole(vae, latents, 0)
    merged, losses = latents.clone(), np.zeros(2)
    for rank in (0, 1):
        part = FaceRefiner(arcface, reference_crop, [FACE_BOX] * 6, FaceOptOptions(iters=2), 25, 2,
                           ranks=Ranks(rank, 2))
        record = StepRecord(0, part.learning_rate(0), [0.0, 0.0])
        refined = part.refine_owned(vae, latents, record)
        owned = [i for index in sorted(part.owned) for i in range(2 * index, 2 * index + 2)]
        merged[:, owned] = refined[:, owned]
        untouched = [i for i in range(6) if i not in owned]
        assert torch.equal(refined[:, untouched], latents[:, untouched])
        losses += record.losses
    assert (merged - expected).abs().max() <= 1e-5
    np.testing.assert_allclose(losses, whole.records[0].losses, rtol=1e-5)


class _SummedLater(Ranks):
    """Two ranks in one process: `all_reduce` is left to the test, which sums the ranks' outputs itself."""

    def all_reduce(self, tensor: torch.Tensor) -> None:
        pass


def test_a_refiner_for_a_span_refines_those_frames_only(pipeline, arcface, reference_crop):
    """`for_frames(frames, span)` (the identity guard's window pass): frames outside the span keep their values
    exactly, the span is refined as a refiner of its own frames would refine it (chunks counted from its start),
    and with two ranks the frames outside it come from rank 0 alone."""
    vae, latents = pipeline.models.vae, _latents(8, seed=5)
    video = FaceRefiner(arcface, reference_crop, [FACE_BOX] * 10, FaceOptOptions(iters=2), 25, 2)
    part = video.for_frames(list(range(2, 10)), range(3, 7))
    refined = part(vae, latents, 0)
    assert [(c.start, c.stop) for c in part.chunks] == [(3, 5), (5, 7)] and part.faces == 4
    assert torch.equal(refined[:, :3], latents[:, :3]) and torch.equal(refined[:, 7:], latents[:, 7:])
    alone = FaceRefiner(arcface, reference_crop, [FACE_BOX] * 4, FaceOptOptions(iters=2), 25, 2)
    assert (refined[:, 3:7] - alone(vae, latents[:, 3:7], 0)).abs().max() <= 1e-6
    summed = sum(FaceRefiner(arcface, reference_crop, [FACE_BOX] * 10, FaceOptOptions(iters=2), 25, 2,
                             ranks=_SummedLater(rank, 2)).for_frames(list(range(2, 10)), range(3, 7))(vae, latents, 0)
                 for rank in (0, 1))
    assert (summed - refined).abs().max() <= 1e-6
