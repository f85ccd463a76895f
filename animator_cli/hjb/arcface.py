"""The differentiable ArcFace of the face optimisation: glintr100 as a frozen torch iresnet, and face crops.

Weights: ``checkpoints/Animation/glintr100_torch.pth`` (the release's file, loaded strictly with
``weights_only=True``), else an exact conversion of antelopev2's ``glintr100.onnx``, which the face stage already
needs, so no extra download is required (the reference shipped the same network twice, spec §7).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from animator_cli.errors import WeightsError
from animator_cli.face.analyzer import FIX
from animator_cli.hjb.iresnet import INPUT_SIZE, IResNet, iresnet_from_state_dict
from animator_cli.hjb.onnx_convert import NotIResNet, state_dict_from_onnx
from animator_cli.models.loading import read_state_dict
from animator_cli.weights.home import ARCFACE_TORCH_FILE as TORCH_FILE
from animator_cli.weights.home import WeightsHome

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end exclusive


def load_arcface(weights: WeightsHome, device: str | torch.device = "cpu") -> IResNet:
    """The frozen glintr100 iresnet (eval mode, no parameter requires grad) in fp32 on ``device``.

    One copy per file version and device is kept, so `animator batch` runs many `--face-opt` jobs on one network
    and no render moves another's.
    """
    torch_file, onnx_file = weights.arcface_files()
    for source in (torch_file, onnx_file):
        if source.is_file():
            return _on_device(source, source.stat().st_mtime_ns, str(torch.device(device)))
    raise WeightsError(f"--face-opt needs ArcFace weights: neither {torch_file} nor {onnx_file} exists",
                       f"run `{FIX}`, or copy the release's {TORCH_FILE} into {torch_file.parent}")


@functools.lru_cache(maxsize=4)
def _on_device(source: Path, mtime_ns: int, device: str) -> IResNet:
    network = _load(source, mtime_ns)
    return network if device == "cpu" else copy.deepcopy(network).to(device)


@functools.lru_cache(maxsize=2)
def _load(source: Path, mtime_ns: int) -> IResNet:
    if source.suffix == ".onnx":
        try:
            return iresnet_from_state_dict(state_dict_from_onnx(source))
        except (NotIResNet, KeyError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"{source} cannot be converted to a torch iresnet ({exc})",
                               f"install {TORCH_FILE} into the weights home's checkpoints/Animation/") from exc
    state = read_state_dict(source)  # weights_only; damaged or code-running pickles are WeightsErrors
    try:
        return iresnet_from_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{source} is not an arcface_torch iresnet state dict ({exc})",
                           "delete it to use antelopev2's glintr100.onnx, or reinstall it") from exc


def face_crops(pixels: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
    """(N, 3, 112, 112) bilinear resizes (align_corners=False) of ``boxes`` cut from ``pixels`` (N, 3, H, W),
    differentiable with respect to the pixels."""
    crops = [F.interpolate(frame[None, :, y0:y1, x0:x1], size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                           align_corners=False) for frame, (x0, y0, x1, y1) in zip(pixels, boxes, strict=True)]
    return torch.cat(crops)


def identity_distance(embeddings: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-face 1 − cos(e_f, e_ref) (the reference's abs() is dropped: the value is never negative)."""
    return 1 - F.cosine_similarity(embeddings, reference.expand_as(embeddings), dim=-1)
