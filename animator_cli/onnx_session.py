"""ONNX Runtime sessions for every ONNX model (DWPose, antelopev2): the GPU when there is one, quiet on CPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from animator_cli.errors import WeightsError


def gpu_index(device: str | None = None) -> int | None:
    """The CUDA device index ONNX Runtime should use for ``device`` (cuda, cuda:N, cpu, None = auto), or None
    for the CPU. Only when ONNX Runtime lists the CUDA provider, so CPU machines print no CUDA-library errors."""
    import onnxruntime as ort

    if (device or "").startswith("cpu") or "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    return int(device.split(":")[1]) if device and ":" in device else 0


def providers(device: str | None = None) -> list[Any]:
    """The `providers` argument of an InferenceSession: CUDA on the chosen GPU, then the CPU."""
    index = gpu_index(device)
    cpu = ["CPUExecutionProvider"]
    return cpu if index is None else [("CUDAExecutionProvider", {"device_id": index}), *cpu]


def open_session(path: Path, device: str | None = None, fix: str = "animator weights download"):
    """An InferenceSession for ``path`` on ``device``; a corrupt file becomes a WeightsError naming ``fix``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers(device))
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise WeightsError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}", f"rerun `{fix}`") from exc
