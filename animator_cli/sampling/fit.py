"""Fitting the reference image and the pose frames to the output size W×H without distorting them.

The released scripts stretch every image to W×H, which squashes people whose photo does not have the output's
aspect ratio. Here the default, ``cover``, scales the image uniformly until it covers W×H and crops the
centre; ``contain`` scales it to fit inside and pads (the reference by repeating its border pixels, skeleton
frames with black, their background); ``stretch`` is the reference's behaviour. The reference and the poses
always use the same mode, so poses aligned to the reference stay aligned after fitting.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from animator_cli.options import Fit


def fit_geometry(size: tuple[int, int], width: int, height: int, mode: Fit) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where an image of ``size`` (w, h) goes in the ``width``×``height`` output: the size it is scaled to and the
    output position of its top-left corner (negative when ``cover`` crops it). Also maps boxes (the face boxes of
    `animator_cli.hjb`)."""
    w, h = size
    if mode is Fit.STRETCH or w * height == h * width:
        return (width, height), (0, 0)
    grow = max if mode is Fit.COVER else min
    scale = grow(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if mode is Fit.COVER:  # the centre crop of the scaled image
        return (new_w, new_h), (-((new_w - width) // 2), -((new_h - height) // 2))
    return (new_w, new_h), ((width - new_w) // 2, (height - new_h) // 2)  # padded around the scaled image


def fit_image(rgb: np.ndarray, width: int, height: int, mode: Fit = Fit.COVER, *, pose: bool = False) -> np.ndarray:
    """Resize uint8 H×W×3 ``rgb`` to ``height``×``width``; Lanczos for photos, bicubic for skeleton frames."""
    resample = Image.Resampling.BICUBIC if pose else Image.Resampling.LANCZOS
    image = Image.fromarray(rgb)
    (w, h), (left, top) = fit_geometry(image.size, width, height, mode)
    scaled = np.asarray(image.resize((w, h), resample))
    if mode is not Fit.CONTAIN or (w, h) == (width, height):
        return scaled[-top:-top + height, -left:-left + width]
    pad = ((top, height - h - top), (left, width - w - left), (0, 0))
    return np.pad(scaled, pad, mode="constant") if pose else np.pad(scaled, pad, mode="edge")
