"""Tiny stand-ins for DWPose's `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` with the real models' interfaces.

The real files (YOLOX's `export_onnx.py` defaults, mmdeploy's SimCC export) have
    yolox_l.onnx:          input `images` float32 (1, 3, 640, 640) → output `output` float32 (1, 8400, 85)
                           (raw box offsets, sigmoid objectness, 80 sigmoid class scores; decoded by the caller)
    dw-ll_ucoco_384.onnx:  input `input` float32 (N, 3, 384, 288) → `simcc_x` (N, 133, 576), `simcc_y` (N, 133, 768)
The stand-ins ignore the pixels and return fixed, known predictions, so tests can check the whole decode
(letterbox ratio, grid decode, NMS, person cut, affine crop and back-projection, SimCC argmax) against hand
computation: the detector plants the rows in ``PLANTED`` over low-score noise (seeded), the pose model puts one
SimCC peak per keypoint at ``CROP_KEYPOINTS`` (crop pixels) with height ``CROP_SCORES``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NUM_ANCHORS, NUM_CLASSES, NUM_KEYPOINTS = 8400, 80, 133
POSE_W, POSE_H, SPLIT = 288, 384, 2

# (row, raw tx, raw ty, box w, box h, objectness, class, class score); see yolox_grid for the row order.
PLANTED = (
    (8170, 0.5, 0.5, 160, 320, 0.9, 0, 0.9),  # stride 32 cell (10, 8): person (256, 112, 416, 432), 0.81
    (7101, 0.5, 0.5, 160, 320, 0.5, 0, 0.9),  # stride 16 cell (21, 17): overlaps the first, IoU 0.86, 0.45
    (4810, 0.5, 0.5, 64, 128, 0.6, 0, 0.8),   # stride 8 cell (10, 60): person (52, 420, 116, 548), 0.48
    (870, 0.5, 0.5, 64, 64, 0.5, 0, 0.5),     # stride 8 cell (70, 10): person at 0.25, under the 0.3 cut
    (7605, 0.5, 0.5, 96, 96, 0.9, 1, 0.9),    # stride 16 cell (5, 30): a bicycle, not a person
)
_STRIDE_OF = ((6400, 8), (8000, 16), (8400, 32))


def _body_crop_points() -> np.ndarray:
    """A person facing the camera in the 288×384 crop, COCO-WholeBody order (x, y) in crop pixels."""
    body = [(144, 60), (152, 52), (136, 52), (162, 58), (126, 58), (176, 100), (112, 100), (188, 150), (100, 150),
            (192, 196), (96, 196), (162, 200), (126, 200), (164, 270), (124, 270), (166, 340), (122, 340)]
    feet = [(172, 356), (178, 352), (162, 346), (116, 356), (110, 352), (126, 346)]
    face = [(144 + 14 * math.cos(a), 66 + 18 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 68, endpoint=False)]
    fingers = [(0, 0)] + [(dx, 4 + 4 * j) for dx in (-8, -4, 0, 4, 8) for j in range(4)]
    left = [(192 + dx, 200 + dy) for dx, dy in fingers]
    right = [(96 + dx, 200 + dy) for dx, dy in fingers]
    return np.array(body + feet + face + left + right, np.float32)


CROP_KEYPOINTS = np.round(_body_crop_points() * SPLIT) / SPLIT  # on the SimCC bin grid
CROP_SCORES = np.full(NUM_KEYPOINTS, 0.9, np.float32)
CROP_SCORES[15] = 0.2  # left ankle: below the 0.3 keypoint threshold
CROP_SCORES[23:91] = 0.7  # face
CROP_SCORES[91:] = 0.8  # hands


def _detector_output(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((1, NUM_ANCHORS, 5 + NUM_CLASSES), np.float32)
    out[0, :, :2] = rng.random((NUM_ANCHORS, 2))
    out[0, :, 4:] = rng.random((NUM_ANCHORS, 1 + NUM_CLASSES)) * 0.2  # obj × cls < 0.04: below every cut
    for row, tx, ty, width, height, obj, cls, cls_score in PLANTED:
        stride = next(s for end, s in _STRIDE_OF if row < end)
        out[0, row, :4] = (tx, ty, math.log(width / stride), math.log(height / stride))
        out[0, row, 4] = obj
        out[0, row, 5 + cls] = cls_score
    return out


def _simcc(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    simcc_x = (rng.random((1, NUM_KEYPOINTS, POSE_W * SPLIT)) * 0.05).astype(np.float32)
    simcc_y = (rng.random((1, NUM_KEYPOINTS, POSE_H * SPLIT)) * 0.05).astype(np.float32)
    bins = (CROP_KEYPOINTS * SPLIT).astype(int)
    k = np.arange(NUM_KEYPOINTS)
    simcc_x[0, k, bins[:, 0]] = CROP_SCORES
    simcc_y[0, k, bins[:, 1]] = CROP_SCORES
    return simcc_x, simcc_y


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="animator-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def _detector_graph(seed: int) -> onnx.GraphProto:
    # output = mean(images) * 0 + planted: the image stays an input of the graph, as in the real model.
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "planted"], ["output"]),
    ]
    inits = [numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
             numpy_helper.from_array(_detector_output(seed), "planted")]
    return helper.make_graph(
        nodes, "yolox_l_tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, NUM_ANCHORS, 5 + NUM_CLASSES])], inits)


def _pose_graph(seed: int) -> onnx.GraphProto:
    simcc_x, simcc_y = _simcc(seed)
    nodes = [
        helper.make_node("Shape", ["input"], ["input_shape"], start=0, end=1),
        helper.make_node("Concat", ["input_shape", "x_tail"], ["x_shape"], axis=0),
        helper.make_node("Concat", ["input_shape", "y_tail"], ["y_shape"], axis=0),
        helper.make_node("Expand", ["peaks_x", "x_shape"], ["simcc_x"]),
        helper.make_node("Expand", ["peaks_y", "y_shape"], ["simcc_y"]),
    ]
    inits = [numpy_helper.from_array(simcc_x, "peaks_x"), numpy_helper.from_array(simcc_y, "peaks_y"),
             numpy_helper.from_array(np.array([NUM_KEYPOINTS, POSE_W * SPLIT], np.int64), "x_tail"),
             numpy_helper.from_array(np.array([NUM_KEYPOINTS, POSE_H * SPLIT], np.int64), "y_tail")]
    return helper.make_graph(
        nodes, "dw_ll_ucoco_384_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, POSE_H, POSE_W])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, ["batch", NUM_KEYPOINTS, POSE_W * SPLIT]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, ["batch", NUM_KEYPOINTS, POSE_H * SPLIT])],
        inits)


def write(root: Path, seed: int = 0) -> None:
    """Write `checkpoints/DWPose/yolox_l.onnx` and `dw-ll_ucoco_384.onnx` under the weights home ``root``."""
    folder = Path(root) / "checkpoints" / "DWPose"
    _save(_detector_graph(seed), folder / "yolox_l.onnx")
    _save(_pose_graph(seed), folder / "dw-ll_ucoco_384.onnx")
