"""Fitting the reference image and the pose frames to the output size W×H without distorting them.

The released scripts stretch every image to W×H, which squashes people whose photo does not have the output's
aspect ratio. Here the default, ``cover``, scales the image uniformly until it covers W×H and crops the
centre; ``contain`` scales it to fit inside and pads (the reference by repeating its border pixels, skeleton
frames with black, their background); ``stretch`` is the reference's behaviour. The reference and the poses
always use the same mode, so poses aligned to the reference stay aligned after fitting.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
from PIL import Image


class Fit(str, Enum):
    COVER = "cover"
    CONTAIN = "contain"
    STRETCH = "stretch"


def fit_image(rgb: np.ndarray, width: int, height: int, mode: Fit = Fit.COVER, *, pose: bool = False) -> np.ndarray:
    """Resize uint8 H×W×3 ``rgb`` to ``height``×``width``; Lanczos for photos, bicubic for skeleton frames."""
    resample = Image.Resampling.BICUBIC if pose else Image.Resampling.LANCZOS
    image = Image.fromarray(rgb)
    if mode is Fit.STRETCH or (image.width * height == image.height * width):
        return np.asarray(image.resize((width, height), resample))
    grow = max if mode is Fit.COVER else min
    scale = grow(width / image.width, height / image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    scaled = np.asarray(image.resize((w, h), resample))
    if mode is Fit.COVER:
        top, left = (h - height) // 2, (w - width) // 2
        return scaled[top:top + height, left:left + width]
    top, left = (height - h) // 2, (width - w) // 2
    pad = ((top, height - h - top), (left, width - w - left), (0, 0))
    return np.pad(scaled, pad, mode="constant") if pose else np.pad(scaled, pad, mode="edge")
