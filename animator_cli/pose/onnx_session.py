"""ONNX Runtime sessions that use the GPU when there is one and stay quiet on CPU-only machines."""

from __future__ import annotations

from pathlib import Path

from animator_cli.errors import WeightsError


def open_session(path: Path, device: str | None = None):
    """An InferenceSession on CUDA (``device`` cuda:N picks the GPU) when ONNX Runtime offers it, else on the CPU.

    Only providers that `get_available_providers()` lists are requested, and the log severity is set to errors,
    so a CPU machine does not print CUDA-library warnings. A corrupt file becomes a WeightsError.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers: list = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and not (device or "").startswith("cpu"):
        index = int(device.split(":")[1]) if device and ":" in device else 0
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise WeightsError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}",
                           "re-download it with `animator weights download --only dwpose`") from exc
