"""Which pose estimator runs: DWPose when its weights are installed, else the embedded MediaPipe models."""

from __future__ import annotations

import importlib.util
import logging
from typing import Protocol

import numpy as np

from animator_cli.errors import InputError, WeightsError
from animator_cli.pose.keypoints import Pose
from animator_cli.weights.home import DWPOSE_FILES, WeightsHome

BACKENDS = ("auto", "dwpose", "mediapipe")
log = logging.getLogger("animator")


class PoseBackend(Protocol):
    name: str

    def detect(self, rgb: np.ndarray, video: bool = False) -> list[Pose]:
        """Every person found in an RGB uint8 image, most confident first; ``video``: the next frame of a clip."""

    def close(self) -> None: ...


def dwpose_installed(weights: WeightsHome) -> bool:
    return all((weights.dwpose_dir / name).is_file() for name in DWPOSE_FILES)


def resolve_backend(name: str, weights: WeightsHome) -> str:
    """The concrete backend for ``name``; `auto` is DWPose when its weights exist, else MediaPipe."""
    if name not in BACKENDS:
        raise InputError(f"unknown pose backend '{name}'", f"choose from {', '.join(BACKENDS)}")
    if name == "dwpose":
        weights.require_components([name])
        return name
    if name == "auto" and dwpose_installed(weights):
        return "dwpose"
    if importlib.util.find_spec("mediapipe") is None:
        raise WeightsError(
            f"no pose backend: mediapipe is not installed and the DWPose weights are not in {weights.dwpose_dir}",
            'pip install "animator-cli[pose]"  or  animator weights download --only dwpose')
    return "mediapipe"


def open_backend(name: str, weights: WeightsHome, device: str | None = None) -> PoseBackend:
    """Open the backend ``resolve_backend(name)`` picks."""
    resolved = resolve_backend(name, weights)
    if name == "auto":
        log.info("pose backend: %s%s", resolved, "" if resolved == "dwpose" else
                 " (DWPose weights not installed: `animator weights download --only dwpose`)")
    if resolved == "dwpose":
        from animator_cli.pose.dwpose import DWPoseBackend

        return DWPoseBackend(weights.dwpose_dir, device)
    from animator_cli.pose.mediapipe_backend import MediaPipeBackend

    return MediaPipeBackend()
