"""insightface antelopev2, loaded from the weights home only (never the CWD or ~/.insightface, never downloaded).

The reference hard-codes `FaceAnalysis(name='antelopev2', root='.')` on CPU (spec §1.6, §7). Here the
folder comes from `WeightsHome.antelopev2_dir`, and ONNX Runtime's CUDA provider is used whenever it is
available and the device is not forced to CPU.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from animator_cli.errors import WeightsError
from animator_cli.onnx_session import gpu_index, providers
from animator_cli.weights.home import WeightsHome

DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
RECOGNITION_FILE = "glintr100.onnx"
DET_SIZE = (640, 640)  # the reference's det_size
FIX = "animator weights download --only antelopev2"


def require_model(weights: WeightsHome, filename: str) -> Path:
    """The path of one antelopev2 file, or a WeightsError naming it and the download command."""
    return weights.require(weights.antelopev2_dir / filename, f"antelopev2 model {filename}", FIX)


def model_signature(weights: WeightsHome) -> dict[str, list[int]]:
    """Size and mtime of the files we run, so cached results follow a change of weights."""
    signature = {}
    for name in (DETECTOR_FILE, RECOGNITION_FILE):
        stat = require_model(weights, name).stat()
        signature[name] = [stat.st_size, stat.st_mtime_ns]
    return signature


def largest_face(faces: list[Any]) -> Any | None:
    """The face with the largest box area (the reference's rule), not the most confident one."""
    if not faces:
        return None
    return max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))


@dataclass
class FaceAnalyzer:
    """insightface's FaceAnalysis restricted to detection + ArcFace recognition."""

    app: Any
    folder: Path
    gpu: int | None  # the CUDA device index, None on the CPU

    def faces(self, image_bgr: np.ndarray) -> list[Any]:
        """Every detected face (insightface `Face`: bbox, kps, det_score), in detector order, without embeddings."""
        from insightface.app.common import Face

        boxes, keypoints = self.app.det_model.detect(np.ascontiguousarray(image_bgr), max_num=0, metric="default")
        return [Face(bbox=box[:4], kps=None if keypoints is None else keypoints[i], det_score=box[4])
                for i, box in enumerate(boxes)]

    def embed(self, image_bgr: np.ndarray, face: Any) -> Any:
        """Add the ArcFace ``embedding`` to ``face`` (the aligned crop through glintr100), as `app.get` does."""
        with warnings.catch_warnings():  # insightface calls a deprecated scikit-image API on every face
            warnings.simplefilter("ignore", FutureWarning)
            self.app.models["recognition"].get(np.ascontiguousarray(image_bgr), face)
        return face

    def largest(self, image_bgr: np.ndarray) -> Any | None:
        """The face with the largest box (the reference's rule) and its embedding; ArcFace runs on it alone,
        not on every face in a crowd as `app.get` would."""
        face = largest_face(self.faces(image_bgr))
        return None if face is None else self.embed(image_bgr, face)


@functools.lru_cache(maxsize=4)
def _load(folder: Path, gpu: int | None) -> FaceAnalyzer:
    from insightface.app import FaceAnalysis

    device = "cpu" if gpu is None else f"cuda:{gpu}"
    try:
        # A directory passed as `name` is used as is: no lookup under `root`, no download.
        app = FaceAnalysis(name=str(folder), allowed_modules=["detection", "recognition"],
                           providers=providers(device))
        app.prepare(ctx_id=-1 if gpu is None else gpu, det_size=DET_SIZE)
    except Exception as exc:  # onnxruntime/onnx/insightface raise their own types for unusable files
        raise WeightsError(f"antelopev2 models in {folder} could not be loaded: {exc}", f"rerun `{FIX}`") from exc
    if "recognition" not in app.models:
        raise WeightsError(f"no ArcFace recognition model recognised in {folder}", f"rerun `{FIX}`")
    return FaceAnalyzer(app, folder, gpu)


def load_analyzer(weights: WeightsHome, device: str | None = None) -> FaceAnalyzer:
    """The (cached) analyzer for this weights home; raises WeightsError if a model file is missing."""
    for name in (DETECTOR_FILE, RECOGNITION_FILE):
        require_model(weights, name)
    return _load(weights.antelopev2_dir.resolve(), gpu_index(device))
