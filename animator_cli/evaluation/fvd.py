"""Fréchet Video Distance with the Kinetics-400 I3D TorchScript detector used by StyleGAN-V and DisCo-style code.

The detector file (`i3d_torchscript.pt`) is not downloaded automatically: it must be placed at
`<weights home>/evaluation/i3d_torchscript.pt`; without it FVD is skipped with a message.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from animator_cli.errors import WeightsError
from animator_cli.weights.home import WeightsHome

I3D_FILE = "i3d_torchscript.pt"
I3D_SOURCE = ("the StyleGAN-V / common FVD release of the Kinetics-400 I3D TorchScript model "
              "(https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt)")
CLIP_FRAMES = 16


def i3d_path(weights: WeightsHome) -> Path:
    return weights.root / "evaluation" / I3D_FILE


def i3d_missing(weights: WeightsHome) -> str | None:
    """Why FVD cannot run with this weights home, or None."""
    path = i3d_path(weights)
    if path.is_file():
        return None
    return f"{path} not found; download {I3D_SOURCE} and place it there to compute FVD"


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N, D) features."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½), with eps·I added when the product is singular."""
    from scipy import linalg  # here, not at the top: `animator --help` imports this module

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # numerical error leaves a negligible imaginary part
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


class I3DFeatures:
    """400-d I3D features of 16-frame clips: (1, 3, T, H, W) float in [0, 255], the detector
    rescales to [-1, 1] and resizes to 224×224 itself (StyleGAN-V's `rescale=True, resize=True`)."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import torch

        self._torch = torch
        self.device = device
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format the detector ships in
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            raise WeightsError(f"{path} is not a loadable TorchScript I3D model: {exc}",
                               f"replace it with {I3D_SOURCE}") from exc

    def __call__(self, clip: list[np.ndarray]) -> np.ndarray:
        video = np.stack(clip).astype(np.float32)  # (T, H, W, 3)
        tensor = self._torch.from_numpy(video).permute(3, 0, 1, 2)[None].to(self.device)
        with self._torch.no_grad():
            features = self.model(tensor, rescale=True, resize=True, return_features=True)
        return features.detach().cpu().numpy().reshape(-1)


class ClipCollector:
    """Groups a stream of frames into 16-frame clips and keeps only each clip's feature vector.

    A last partial clip is padded by repeating its final frame (as DisCo does); a video shorter than
    one clip still gives one padded clip.
    """

    def __init__(self, extractor: I3DFeatures) -> None:
        self.extractor = extractor
        self.features: list[np.ndarray] = []
        self._clip: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        self._clip.append(frame)
        if len(self._clip) == CLIP_FRAMES:
            self._flush()

    def finish(self) -> None:
        if self._clip:
            self._clip += [self._clip[-1]] * (CLIP_FRAMES - len(self._clip))
            self._flush()

    def _flush(self) -> None:
        self.features.append(self.extractor(self._clip))
        self._clip = []


def fvd(generated: Iterable[np.ndarray], truth: Iterable[np.ndarray]) -> float:
    """FVD between two sets of clip features (one row per clip)."""
    gen, real = np.asarray(list(generated)), np.asarray(list(truth))
    return frechet_distance(*gaussian_stats(gen), *gaussian_stats(real))
