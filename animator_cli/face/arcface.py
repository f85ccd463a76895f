"""ArcFace embeddings of face crops with antelopev2's glintr100.onnx, for identity metrics (CSIM).

The preprocessing is insightface's for this model: RGB, (pixel − 127.5) / 127.5, NCHW, 112×112 crops
aligned to the ArcFace 5-point template. Outputs are raw (not L2-normalised) 512-d vectors.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import cv2
import numpy as np

from animator_cli.errors import InputError
from animator_cli.face.analyzer import FIX, RECOGNITION_FILE, require_model
from animator_cli.onnx_session import open_session
from animator_cli.weights.home import WeightsHome

CROP_SIZE = 112


@functools.lru_cache(maxsize=2)
def _session(model: Path, device: str | None):
    return open_session(model, device, FIX)


def aligned_crop(image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112×112 ArcFace-aligned crop of the face whose 5 keypoints are ``landmarks``."""
    from insightface.utils import face_align

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return face_align.norm_crop(image_rgb, landmark=np.asarray(landmarks, np.float32), image_size=CROP_SIZE)


def arcface_embed(crops_rgb: np.ndarray | list[np.ndarray], weights: WeightsHome | None = None,
                  device: str | None = None) -> np.ndarray:
    """(N, 512) float32 embeddings of N RGB uint8 face crops (resized to 112×112 if needed)."""
    crops = [np.asarray(c) for c in (crops_rgb if isinstance(crops_rgb, list) else list(crops_rgb))]
    if not crops:
        return np.zeros((0, 512), np.float32)
    for crop in crops:
        if crop.ndim != 3 or crop.shape[2] != 3:
            raise InputError(f"face crops must be (H, W, 3) RGB images, got shape {crop.shape}")
    batch = np.stack([c if c.shape[:2] == (CROP_SIZE, CROP_SIZE)
                      else cv2.resize(c, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA) for c in crops])
    blob = ((batch.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    model = require_model(weights or WeightsHome.resolve(), RECOGNITION_FILE)
    session = _session(model.resolve(), device)
    spec = session.get_inputs()[0]
    step = 1 if spec.shape[0] == 1 else 32  # some exports fix the batch dimension to 1
    out = [session.run(None, {spec.name: blob[i:i + step]})[0] for i in range(0, len(blob), step)]
    return np.concatenate(out).astype(np.float32)
