"""The reference identity: the ArcFace embedding of the largest face in the reference image.

Fixes the reference's channel-order bug (spec §7): training fed insightface BGR, but the inference
scripts read BGR with cv2 and then applied `COLOR_RGB2BGR`, so insightface saw RGB. We give it BGR as
in training; `legacy_rgb=True` reproduces the released inference behaviour for comparisons.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animator_cli.errors import InputError
from animator_cli.face.analyzer import FaceAnalyzer, load_analyzer
from animator_cli.video import load_image
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")
EMBEDDING_DIM = 512


@dataclass(frozen=True)
class FaceIdentity:
    """One face: raw (not L2-normalised) ArcFace embedding, box (x0, y0, x1, y1) px, 5 keypoints, mask."""

    embedding: np.ndarray  # (512,) float32
    box: np.ndarray  # (4,) float32; zeros when no face was found
    landmarks: np.ndarray  # (5, 2) float32
    mask: np.ndarray  # (H, W) uint8, the box filled with 255; all 0 when no face was found
    det_score: float

    @property
    def found(self) -> bool:
        return self.det_score > 0


def box_mask(shape: tuple[int, int], box: np.ndarray) -> np.ndarray:
    """A uint8 (H, W) mask with the pixels covered by ``box`` set to 255, the box clipped to the image."""
    height, width = shape
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0 = (int(np.clip(np.floor(v), 0, lim)) for v, lim in ((box[0], width), (box[1], height)))
    x1, y1 = (int(np.clip(np.ceil(v), 0, lim)) for v, lim in ((box[2], width), (box[3], height)))
    mask[y0:y1, x0:x1] = 255
    return mask


def to_detector_input(image_rgb: np.ndarray, legacy_rgb: bool = False) -> np.ndarray:
    """What insightface is given: BGR (as in training), or RGB as the released inference scripts did."""
    return image_rgb if legacy_rgb else np.ascontiguousarray(image_rgb[..., ::-1])


def extract_identity(
    image: np.ndarray | Path | str,
    weights: WeightsHome | None = None,
    *,
    legacy_rgb: bool = False,
    allow_no_face: bool = False,
    device: str | None = None,
    analyzer: FaceAnalyzer | None = None,
) -> FaceIdentity:
    """Detect faces in an RGB image (array or file) and return the largest one's identity.

    No face raises InputError, unless ``allow_no_face``: then a zero embedding and an empty mask are
    returned and a warning is logged (the reference silently used zeros).
    """
    source = "the image" if isinstance(image, np.ndarray) else str(image)
    rgb = image if isinstance(image, np.ndarray) else load_image(Path(image))
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"{source}: expected an RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
    analyzer = analyzer or load_analyzer(weights or WeightsHome.resolve(), device)
    face = analyzer.largest(to_detector_input(rgb, legacy_rgb))
    if face is None:
        if not allow_no_face:
            raise InputError(f"no face found in {source}",
                             "use a reference photo with a clearly visible face, or pass --allow-no-face")
        log.warning("no face found in %s: using a zero identity embedding (the ID adapter gets no identity)", source)
        return FaceIdentity(np.zeros(EMBEDDING_DIM, np.float32), np.zeros(4, np.float32),
                            np.zeros((5, 2), np.float32), np.zeros(rgb.shape[:2], np.uint8), 0.0)
    box = np.asarray(face.bbox, dtype=np.float32)
    return FaceIdentity(
        embedding=np.asarray(face.embedding, dtype=np.float32).reshape(EMBEDDING_DIM),
        box=box,
        landmarks=np.asarray(face.kps, dtype=np.float32).reshape(5, 2),
        mask=box_mask(rgb.shape[:2], box),
        det_score=float(face.det_score),
    )
