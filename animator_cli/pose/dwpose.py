"""DWPose (YOLOX-L person detector + RTMPose-L SimCC whole-body model) on ONNX Runtime, as the reference runs it.

Pre- and post-processing follow spec §5: a top-left 640×640 letterbox padded with 114, YOLOX grid decoding over
strides 8/16/32, score = objectness × class, NMS at IoU 0.45 above 0.1, persons kept above 0.3; each person box is
padded ×1.25, fixed to the pose model's aspect ratio, affinely cropped to its input size (288×384), normalised with
ImageNet statistics, and the SimCC argmax (split ratio 2) is projected back. The detector sees RGB, as in the
reference. Unlike the reference, the models load lazily from the weights home on GPU *or* CPU, and all person
crops of a frame go through the pose model in one batch (one at a time if the ONNX file has a fixed batch of 1).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from animator_cli.onnx_session import open_session
from animator_cli.pose.keypoints import Pose

DWPOSE_FIX = "animator weights download --only dwpose"
DETECTOR_FILE, POSE_FILE = "yolox_l.onnx", "dw-ll_ucoco_384.onnx"
DETECTOR_SIZE = 640
PAD_VALUE = 114
STRIDES = (8, 16, 32)
NMS_IOU = 0.45
SCORE_THRESHOLD = 0.1
PERSON_THRESHOLD = 0.3
BBOX_PADDING = 1.25
SIMCC_SPLIT = 2.0
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)

# COCO-WholeBody body indices moved into OpenPose order once the neck is inserted at 17 (spec §5).
_FROM_COCO = (17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3)
_TO_OPENPOSE = (1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17)


def letterbox(rgb: np.ndarray, size: int = DETECTOR_SIZE) -> tuple[np.ndarray, float]:
    """(1, 3, size, size) float32 detector input with the image resized into the top-left corner, and the ratio."""
    height, width = rgb.shape[:2]
    ratio = min(size / height, size / width)
    resized = cv2.resize(rgb, (int(width * ratio), int(height * ratio)), interpolation=cv2.INTER_LINEAR)
    padded = np.full((size, size, 3), PAD_VALUE, np.uint8)
    padded[: resized.shape[0], : resized.shape[1]] = resized
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None], np.float32), ratio


def yolox_grid(size: int = DETECTOR_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Cell (x, y) and stride of each of the 8400 YOLOX predictions, stride 8 rows first, row-major within."""
    grids, strides = [], []
    for stride in STRIDES:
        cells = size // stride
        ys, xs = np.mgrid[:cells, :cells]
        grids.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((cells * cells, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode_yolox(raw: np.ndarray, size: int = DETECTOR_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Raw (8400, 5 + C) head output → xyxy boxes in letterbox pixels and (8400, C) scores = obj × cls."""
    grid, stride = yolox_grid(size)
    centers = (raw[:, :2] + grid) * stride
    sizes = np.exp(raw[:, 2:4]) * stride
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], 1)
    return boxes, raw[:, 4:5] * raw[:, 5:]


def person_boxes(raw: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (xyxy, original image pixels) and scores, best first, after NMS and the 0.3 person cut."""
    boxes, scores = decode_yolox(raw)
    person = scores[:, 0]
    keep = person > SCORE_THRESHOLD
    boxes, person = boxes[keep] / ratio, person[keep]
    if not len(boxes):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    kept = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), person.tolist(), SCORE_THRESHOLD, NMS_IOU), int).reshape(-1)
    kept = kept[np.argsort(-person[kept])]
    kept = kept[person[kept] > PERSON_THRESHOLD]
    return boxes[kept].astype(np.float32), person[kept].astype(np.float32)


def box_to_center_scale(box: np.ndarray, aspect: float, padding: float = BBOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre and padded (w, h) of an xyxy box, widened or heightened to the pose model's w/h ``aspect``."""
    center = (box[:2] + box[2:]) / 2
    w, h = (box[2:] - box[:2]) * padding
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center.astype(np.float32), np.array([w, h], np.float32)


def crop_person(rgb: np.ndarray, center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Normalised (3, h, w) crop: the ``scale``-sized region around ``center`` mapped onto ``input_size`` (w, h)."""
    width, height = input_size
    factor = width / scale[0]
    matrix = np.array([[factor, 0, width / 2 - factor * center[0]],
                       [0, factor, height / 2 - factor * center[1]]], np.float32)
    crop = cv2.warpAffine(rgb, matrix, (width, height), flags=cv2.INTER_LINEAR)
    return ((crop.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split: float = SIMCC_SPLIT) -> tuple[np.ndarray, np.ndarray]:
    """SimCC argmax: (N, K, 2) crop-pixel locations and (N, K) scores = min of the two peak values.

    Points whose score is ≤ 0 get location -1, as mmpose does.
    """
    locs = np.stack([simcc_x.argmax(-1), simcc_y.argmax(-1)], -1).astype(np.float32)
    vals = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    locs[vals <= 0] = -1
    return locs / split, vals


def to_layout(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """133 COCO-WholeBody points → the 134-point layout: neck inserted at 17, then the body in OpenPose order."""
    neck = keypoints[:, [5, 6]].mean(1, keepdims=True)
    neck_score = ((scores[:, 5] > PERSON_THRESHOLD) & (scores[:, 6] > PERSON_THRESHOLD)).astype(np.float32)
    points = np.concatenate([keypoints[:, :17], neck, keypoints[:, 17:]], 1)
    values = np.concatenate([scores[:, :17], neck_score[:, None], scores[:, 17:]], 1)
    points[:, _TO_OPENPOSE] = points[:, _FROM_COCO]
    values[:, _TO_OPENPOSE] = values[:, _FROM_COCO]
    return points, values


class DWPoseBackend:
    """Whole-body poses of every person in an image from the two DWPose ONNX models."""

    name = "dwpose"

    def __init__(self, dwpose_dir: Path, device: str | None = None) -> None:
        self.detector = open_session(Path(dwpose_dir) / DETECTOR_FILE, device, DWPOSE_FIX)
        self.pose_model = open_session(Path(dwpose_dir) / POSE_FILE, device, DWPOSE_FIX)
        shape = self.pose_model.get_inputs()[0].shape
        self.input_size = (int(shape[3]), int(shape[2]))  # (w, h), read from the model as the reference does
        self.batched = not (isinstance(shape[0], int) and shape[0] == 1)

    def detect_boxes(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tensor, ratio = letterbox(rgb)
        raw = self.detector.run(None, {self.detector.get_inputs()[0].name: tensor})[0][0]
        return person_boxes(raw, ratio)

    def _simcc(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        name = self.pose_model.get_inputs()[0].name
        if self.batched:
            simcc_x, simcc_y = self.pose_model.run(None, {name: crops})[:2]
            return simcc_x, simcc_y
        outputs = [self.pose_model.run(None, {name: crop[None]})[:2] for crop in crops]
        return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])

    def detect(self, rgb: np.ndarray, video: bool = False) -> list[Pose]:
        """All persons, best detection first; with no box the whole image is one box, as in the reference.

        Every image is processed on its own, so ``video`` changes nothing.
        """
        height, width = rgb.shape[:2]
        boxes, _ = self.detect_boxes(rgb)
        if not len(boxes):
            boxes = np.array([[0, 0, width, height]], np.float32)
        aspect = self.input_size[0] / self.input_size[1]
        centers, scales = zip(*(box_to_center_scale(box, aspect) for box in boxes), strict=True)
        crops = np.stack([crop_person(rgb, c, s, self.input_size) for c, s in zip(centers, scales, strict=True)])
        locs, vals = decode_simcc(*self._simcc(np.ascontiguousarray(crops)))
        centers, scales = np.stack(centers)[:, None], np.stack(scales)[:, None]
        keypoints = locs / np.array(self.input_size, np.float32) * scales + centers - scales / 2
        points, scores = to_layout(keypoints, vals)
        points = points / np.array([width, height], np.float32)
        return [Pose(p.astype(np.float32), s.astype(np.float32)) for p, s in zip(points, scores, strict=True)]

    def close(self) -> None:
        """Release both ONNX sessions (and their GPU memory) before the next stage runs."""
        self.detector = self.pose_model = None
