"""Per-frame image metrics, computed as in the DisCo protocol that StableAnimator's Table 1 follows.

All functions take two RGB uint8 frames of the same size. See docs/evaluation.md for every choice and
how each figure relates to the numbers printed in the papers.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def resize_like(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` resized to ``size`` = (height, width): area averaging when shrinking, bicubic when enlarging."""
    height, width = size
    if frame.shape[:2] == (height, width):
        return frame
    shrinking = height * width < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _unit(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float64) / 255.0


def l1(generated: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error over pixels and channels, on [0, 1] values."""
    return float(np.mean(np.abs(_unit(generated) - _unit(truth))))


def psnr(generated: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB with data range 1 (the same as 255 on uint8), over all channels; inf when identical."""
    mse = float(np.mean((_unit(generated) - _unit(truth)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def ssim(generated: np.ndarray, truth: np.ndarray) -> float:
    """SSIM of the uint8 greyscale images (ITU-R 601 luma, as cv2), scikit-image defaults:
    7×7 uniform window, sample covariance, K1 0.01, K2 0.03, data range 255 (DisCo's settings)."""
    from skimage.metrics import structural_similarity  # here: scikit-image and SciPy take ~0.5 s to import

    grey_gen = cv2.cvtColor(generated, cv2.COLOR_RGB2GRAY)
    grey_truth = cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY)
    return float(structural_similarity(grey_gen, grey_truth, data_range=255))


def lpips_unavailable() -> str | None:
    """Why LPIPS cannot run here, or None when the `lpips` package imports."""
    try:
        import lpips  # noqa: F401
    except ImportError as exc:
        return (f"lpips is not installed ({exc.msg}); install `lpips` (it requires torchvision, "
                "which this project does not ship) to compute LPIPS")
    return None


class Lpips:
    """LPIPS-VGG through the `lpips` package (only constructed when `lpips_unavailable()` is None)."""

    def __init__(self, device: str = "cpu") -> None:
        import lpips
        import torch

        self._torch = torch
        self.device = device
        self.net = lpips.LPIPS(net="vgg", verbose=False).to(device).eval()

    def __call__(self, generated: np.ndarray, truth: np.ndarray) -> float:
        def tensor(frame: np.ndarray):
            return self._torch.from_numpy(_unit(frame)).permute(2, 0, 1)[None].float().to(self.device)

        with self._torch.no_grad():  # normalize=True maps [0, 1] inputs to the [-1, 1] LPIPS expects
            return float(self.net(tensor(generated), tensor(truth), normalize=True).item())
