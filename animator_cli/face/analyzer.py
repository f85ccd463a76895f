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


@dataclass
class FaceAnalyzer:
    """insightface's FaceAnalysis restricted to detection + ArcFace recognition."""

    app: Any
    folder: Path
    gpu: int | None  # the CUDA device index, None on the CPU

    def faces(self, image_bgr: np.ndarray) -> list[Any]:
        """Every detected face (insightface `Face`: bbox, kps, det_score, embedding), in detector order."""
        with warnings.catch_warnings():  # insightface calls a deprecated scikit-image API on every face
            warnings.simplefilter("ignore", FutureWarning)
            return self.app.get(np.ascontiguousarray(image_bgr))


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
