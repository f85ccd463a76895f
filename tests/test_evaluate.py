"""`animator evaluate` and the metric maths, checked against values computed by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from animator_cli.evaluation import evaluate, frechet_distance, gaussian_stats
from animator_cli.evaluation.fvd import CLIP_FRAMES
from animator_cli.face import extract_identity
from animator_cli.video import load_image, write_frame, write_video
from animator_cli.weights.home import WeightsHome

SIZE = 64


def _frames(path: Path, count: int, size: int = SIZE) -> list[np.ndarray]:
    """``count`` distinct frames: the photo shifted a little more each frame."""
    base = cv2.resize(load_image(path), (size, size), interpolation=cv2.INTER_AREA)
    return [np.roll(base, 2 * i, axis=1) for i in range(count)]


def _folder(path: Path, frames: list[np.ndarray]) -> Path:
    for i, frame in enumerate(frames):
        write_frame(path, i, frame)
    return path


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def clip(astronaut_path: Path) -> list[np.ndarray]:
    return _frames(astronaut_path, 6)


def test_identical_frames(cli, tmp_path: Path, clip: list[np.ndarray], tiny_home: WeightsHome) -> None:
    folder = _folder(tmp_path / "a", clip)
    out = _json(cli("--weights", tiny_home.root, "--json", "evaluate", folder, folder, "--metrics", "l1,psnr,ssim"))
    assert out["metrics"] == {"l1": 0.0, "psnr": "inf", "ssim": 1.0}
    assert out["cases"][0]["frames"] == 6 and out["warnings"] == [] and out["skipped"] == {}


def test_known_noise_gives_known_l1_and_psnr(tmp_path: Path, clip: list[np.ndarray], tiny_home: WeightsHome) -> None:
    rng = np.random.default_rng(7)
    noisy = [np.clip(f + rng.normal(0, 8, f.shape), 0, 255).round().astype(np.uint8) for f in clip]
    diffs = [(n.astype(np.float64) - f) / 255.0 for n, f in zip(noisy, clip, strict=True)]
    expected_psnr = np.mean([10 * math.log10(1.0 / np.mean(d ** 2)) for d in diffs])
    expected_l1 = np.mean([np.mean(np.abs(d)) for d in diffs])
    result = evaluate(_folder(tmp_path / "gen", noisy), _folder(tmp_path / "gt", clip), ["l1", "psnr", "ssim"],
                      tiny_home)
    assert result.metrics["psnr"] == pytest.approx(expected_psnr, rel=1e-9)
    assert result.metrics["l1"] == pytest.approx(expected_l1, rel=1e-9)
    assert 28 < result.metrics["psnr"] < 34  # σ = 8 grey levels ≈ 30 dB
    # More noise, lower SSIM; SSIM is symmetric in its arguments.
    noisier = [np.clip(f + rng.normal(0, 32, f.shape), 0, 255).astype(np.uint8) for f in clip]
    worse = evaluate(_folder(tmp_path / "gen2", noisier), tmp_path / "gt", ["ssim"], tiny_home).metrics["ssim"]
    swapped = evaluate(tmp_path / "gt", tmp_path / "gen", ["ssim"], tiny_home).metrics["ssim"]
    assert 0 < worse < result.metrics["ssim"] < 1 and swapped == pytest.approx(result.metrics["ssim"])


def test_video_against_frame_folder(tmp_path: Path, clip: list[np.ndarray], tiny_home: WeightsHome) -> None:
    video = tmp_path / "gen.mp4"
    write_video(video, clip, fps=8, crf=10)
    result = evaluate(video, _folder(tmp_path / "gt", clip), ["l1", "psnr"], tiny_home)
    assert result.cases[0]["frames"] == len(clip)
    assert result.metrics["psnr"] > 25 and result.metrics["l1"] < 0.05  # lossy H.264, same content


def test_mismatched_lengths_and_sizes(tmp_path: Path, clip: list[np.ndarray], tiny_home: WeightsHome) -> None:
    big_truth = [cv2.resize(f, (2 * SIZE, 2 * SIZE), interpolation=cv2.INTER_CUBIC) for f in clip[:4]]
    result = evaluate(_folder(tmp_path / "gen", clip), _folder(tmp_path / "gt", big_truth), ["l1", "psnr"],
                      tiny_home)
    assert [r["frame"] for r in result.per_frame] == [0, 1, 2, 3]
    assert any("generated video is longer" in w and "first 4 frames" in w for w in result.warnings)
    assert any("resized to the generated 64x64" in w for w in result.warnings)
    # Ground truth downscaled with area averaging before comparison.
    expected = np.mean([np.mean(np.abs(clip[i] / 255.0 - cv2.resize(big_truth[i], (SIZE, SIZE),
                                                                        interpolation=cv2.INTER_AREA) / 255.0))
                        for i in range(4)])
    assert result.metrics["l1"] == pytest.approx(expected)


def test_csim_equals_the_cosine_by_hand(tmp_path: Path, tiny_home: WeightsHome, astronaut_path: Path,
                                        t1_path: Path, tom_hanks_path: Path) -> None:
    gen = [load_image(p) for p in (astronaut_path, t1_path)]
    gen = [cv2.resize(g, (256, 256), interpolation=cv2.INTER_AREA) for g in gen]
    truth = [np.ascontiguousarray(g[:, ::-1]) for g in gen]  # mirrored: a different crop, same size

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    gen_emb = [extract_identity(g, tiny_home).embedding.astype(np.float64) for g in gen]
    ref_emb = extract_identity(tom_hanks_path, tiny_home).embedding.astype(np.float64)
    truth_emb = [extract_identity(t, tiny_home).embedding.astype(np.float64) for t in truth]

    gen_dir, truth_dir = _folder(tmp_path / "gen", gen), _folder(tmp_path / "gt", truth)
    with_ref = evaluate(gen_dir, truth_dir, ["csim"], tiny_home, reference=tom_hanks_path)
    assert [r["csim"] for r in with_ref.per_frame] == pytest.approx([cos(e, ref_emb) for e in gen_emb], abs=1e-6)
    against_truth = evaluate(gen_dir, truth_dir, ["csim"], tiny_home)
    by_hand = [cos(g, t) for g, t in zip(gen_emb, truth_emb, strict=True)]
    assert [r["csim"] for r in against_truth.per_frame] == pytest.approx(by_hand, abs=1e-6)
    assert against_truth.metrics["csim"] == pytest.approx(np.mean(by_hand), abs=1e-6)


def test_csim_leaves_out_frames_without_a_face(tmp_path: Path, clip: list[np.ndarray],
                                               tiny_home: WeightsHome) -> None:
    gen = [clip[0], np.zeros_like(clip[0]), clip[2]]
    result = evaluate(_folder(tmp_path / "gen", gen), _folder(tmp_path / "gt", clip[:3]), ["csim"], tiny_home)
    assert result.per_frame[1]["csim"] is None
    assert result.metrics["csim"] == pytest.approx(np.mean([result.per_frame[i]["csim"] for i in (0, 2)]))
    assert any("no face found in 1 frame" in w for w in result.warnings)


def test_missing_weights_are_skipped_cleanly(cli, tmp_path: Path, clip: list[np.ndarray]) -> None:
    folder = _folder(tmp_path / "a", clip)
    result = cli("--weights", tmp_path / "empty-home", "--json", "evaluate", folder, folder)
    out = _json(result)
    assert set(out["metrics"]) == {"l1", "psnr", "ssim"}
    assert "i3d_torchscript.pt" in out["skipped"]["fvd"] and "evaluation" in out["skipped"]["fvd"]
    assert "animator weights download --only antelopev2" in out["skipped"]["csim"]
    assert "lpips" in out["skipped"]["lpips"] and "torchvision" in out["skipped"]["lpips"]
    assert "fvd skipped" in result.stderr


def test_frechet_distance_on_hand_computed_gaussians() -> None:
    # 1-D: (0 - 2)² + 1 + 4 - 2·√(1·4) = 5.
    assert frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([2.0]), np.array([[4.0]])) == pytest.approx(5)
    # Diagonal: Σ (μ1 - μ2)² + (σ1 - σ2)² per axis; a common rotation leaves it unchanged.
    mu1, mu2 = np.array([1.0, -1.0, 0.5]), np.array([0.0, 2.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    rotated = frechet_distance(rotation @ mu1, rotation @ np.diag(s1) @ rotation.T,
                               rotation @ mu2, rotation @ np.diag(s2) @ rotation.T)
    assert rotated == pytest.approx(expected)
    # Same samples, zero distance; the stats are the mean and the unbiased covariance.
    samples = np.random.default_rng(1).normal(size=(50, 4))
    mu, sigma = gaussian_stats(samples)
    np.testing.assert_allclose(sigma, np.cov(samples.T))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-6)


class _TinyI3D(torch.nn.Module):
    """Same call signature as the StyleGAN-V I3D TorchScript detector; features = pooled pixels."""

    def forward(self, videos: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = videos / 127.5 - 1.0 if rescale else videos
        return torch.nn.functional.adaptive_avg_pool3d(x, (2, 2, 2)).flatten(1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_fvd_with_a_torchscript_detector(tmp_path: Path, astronaut_path: Path, tom_hanks_path: Path) -> None:
    home = WeightsHome(tmp_path / "home")
    (home.root / "evaluation").mkdir(parents=True)
    torch.jit.script(_TinyI3D()).save(str(home.root / "evaluation" / "i3d_torchscript.pt"))
    gen, truth = _frames(astronaut_path, 40), _frames(tom_hanks_path, 40)
    result = evaluate(_folder(tmp_path / "gen", gen), _folder(tmp_path / "gt", truth), ["fvd"], home)

    def features(frames: list[np.ndarray]) -> np.ndarray:
        clips = [frames[i:i + CLIP_FRAMES] for i in range(0, len(frames), CLIP_FRAMES)]
        clips[-1] = clips[-1] + [clips[-1][-1]] * (CLIP_FRAMES - len(clips[-1]))  # 40 = 16 + 16 + 8 padded
        video = [torch.from_numpy(np.stack(c).astype(np.float32)).permute(3, 0, 1, 2)[None] for c in clips]
        return np.stack([_TinyI3D()(v, True, True, True)[0].numpy() for v in video])

    expected = frechet_distance(*gaussian_stats(features(gen)), *gaussian_stats(features(truth)))
    assert result.metrics["fvd"] == pytest.approx(expected, rel=1e-4)
    assert result.metrics["fvd"] > 0
    same = evaluate(tmp_path / "gen", tmp_path / "gen", ["fvd"], home)
    assert same.metrics["fvd"] == pytest.approx(0, abs=1e-4)


def test_benchmark_folders_and_per_frame_csv(cli, tmp_path: Path, clip: list[np.ndarray],
                                             tiny_home: WeightsHome) -> None:
    gen_root, truth_root = tmp_path / "generated", tmp_path / "truth"
    _folder(gen_root / "case_a", clip[:3])
    _folder(truth_root / "case_a", clip[:3])
    noisy = [np.clip(f.astype(int) + 20, 0, 255).astype(np.uint8) for f in clip[:2]]
    write_video(gen_root / "case_b.mp4", noisy, fps=8, crf=0)
    _folder(truth_root / "case_b", clip[:2])
    _folder(gen_root / "case_c", clip[:2])  # no ground truth
    table = tmp_path / "frames.csv"
    result = cli("--weights", tiny_home.root, "--json", "evaluate", gen_root, truth_root, "--metrics", "l1,psnr",
                 "--per-frame", table)
    out = _json(result)
    assert [c["case"] for c in out["cases"]] == ["case_a", "case_b"]
    assert out["cases"][0]["l1"] == 0.0 and out["cases"][1]["l1"] > 0
    assert any("case_c has no ground truth" in w for w in out["warnings"])
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["case"], r["frame"]) for r in rows] == [("case_a", "0"), ("case_a", "1"), ("case_a", "2"),
                                                      ("case_b", "0"), ("case_b", "1")]
    assert rows[0]["psnr"] == "inf"
    l1_by_frame = [float(r["l1"]) for r in rows]
    assert out["metrics"]["l1"] == pytest.approx(np.mean(l1_by_frame))  # frame-weighted over all cases


def test_bad_usage(cli, tmp_path: Path, clip: list[np.ndarray], tiny_home: WeightsHome) -> None:
    folder = _folder(tmp_path / "a", clip)
    assert cli("--weights", tiny_home.root, "evaluate", folder, folder, "--metrics", "l1,fid").exit_code == 2
    missing = cli("--weights", tiny_home.root, "evaluate", folder, tmp_path / "nope")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
