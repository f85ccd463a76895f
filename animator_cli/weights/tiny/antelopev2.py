"""Tiny ONNX stand-ins for insightface's antelopev2 pack (`models/antelopev2/*.onnx`).

insightface's model router (`model_zoo.ModelRouter.get_model`) tells the five files apart only by
their graph signature, so each stand-in copies the real model's input/output names, ranks and counts:

- `scrfd_10g_bnkps.onnx`: input `input.1` (1, 3, ?, ?); 9 outputs (scores, boxes, 5 keypoints for
  strides 8/16/32, two anchors per cell) → routed to SCRFD (≥ 5 outputs).
- `glintr100.onnx`: input `input.1` (N, 3, 112, 112) → `1333` (N, 512) → routed to ArcFaceONNX.
- `2d106det.onnx` (N, 3, 192, 192) → (N, 212) and `1k3d68.onnx` → (N, 3309): Landmark.
- `genderage.onnx` (N, 3, 96, 96) → (N, 3): Attribute.

Behaviour, chosen so tests can check real logic through insightface's own code:

- The detector finds one square face centred on the brightness centroid of the (letterboxed) input,
  its side proportional to the spread of that brightness, with the five ArcFace template keypoints
  placed inside the box; the face's score is 0.9 at best. An all-black image has no brightness and
  therefore no face, which is how the no-face path is tested honestly.
- With ``decoy=True`` it also finds a small face (score 0.99) near the top-left corner of the
  detector input, so the "largest face, not the most confident one" rule can be tested end to end.
- The recognition model is a fixed seeded random projection of the 7×7 average-pooled face crop:
  deterministic, sensitive to the crop and to its channel order, not L2-normalised (like glintr100).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
DETECTOR = "scrfd_10g_bnkps.onnx"
RECOGNITION = "glintr100.onnx"
# ArcFace's canonical 5-point template in a 112×112 crop (eyes, nose, mouth corners).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
_STRIDES = (8, 16, 32)
_FACE_STRIDE = 16  # the level that carries the main face
_BOX_SCALE = 0.75  # half side of the face box, in standard deviations of the brightness
_DECOY_CENTRE, _DECOY_HALF = 64.0, 20.0  # detector-input pixels


class _Graph:
    """A few helpers over onnx.helper so the detector reads like the maths it computes."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: float | list | np.ndarray, dtype=np.float32) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def add(self, a: str, b: str) -> str:
        return self.op("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.op("Div", a, b)

    def total(self, x: str) -> str:
        """Sum over every axis, keeping rank 4 so it broadcasts against maps."""
        return self.op("ReduceSum", x, self.const([1, 2, 3], np.int64), keepdims=1)

    def grid(self, ones: str, axis: int, stride: float, offset: float) -> str:
        """Pixel coordinate of each cell of a (1, 1, h, w) map along ``axis`` (3: x, 2: y)."""
        index = self.op("CumSum", ones, self.const(axis, np.int64))
        return self.mul(self.add(index, self.const(offset - 1.0)), self.const(stride))


def _face_fields(g: _Graph, ax: str, ay: str, stride: int, face: tuple[str, str, str], gate: str,
                 peak: float) -> tuple[str, list[str], list[str]]:
    """SCRFD head outputs for one face (centre x, centre y, half side): a score peaked on the anchors
    nearest the centre, and box/keypoint distances (in strides) that decode to that face from any anchor."""
    fx, fy, fh = face
    s = g.const(float(stride))
    dx, dy = g.sub(ax, fx), g.sub(ay, fy)
    dist2 = g.add(g.mul(dx, dx), g.mul(dy, dy))
    score = g.mul(g.mul(g.op("Exp", g.div(dist2, g.const(-2.0 * stride * stride))), gate), g.const(peak))
    box = [g.div(g.sub(ax, g.sub(fx, fh)), s), g.div(g.sub(ay, g.sub(fy, fh)), s),
           g.div(g.sub(g.add(fx, fh), ax), s), g.div(g.sub(g.add(fy, fh), ay), s)]
    kps = []
    for u, v in (ARCFACE_TEMPLATE / 112.0) * 2.0 - 1.0:  # the template in [-1, 1] box units
        kps.append(g.div(g.sub(g.add(fx, g.mul(fh, g.const(float(u)))), ax), s))
        kps.append(g.div(g.sub(g.add(fy, g.mul(fh, g.const(float(v)))), ay), s))
    return score, box, kps


def _detector(decoy: bool) -> onnx.ModelProto:
    g = _Graph()
    # Brightness in [0, 2]: the input is (pixel - 127.5) / 128, so letterbox padding (0) maps to 0.
    bright = g.add(g.op("ReduceMean", "input.1", axes=[1], keepdims=1), g.const(127.5 / 128.0))
    cells = g.op("AveragePool", bright, kernel_shape=[8, 8], strides=[8, 8])
    ones = g.add(g.mul(cells, g.const(0.0)), g.const(1.0))
    cell_x, cell_y = g.grid(ones, 3, 8.0, 0.5), g.grid(ones, 2, 8.0, 0.5)
    mass = g.total(cells)
    safe_mass = g.add(mass, g.const(1e-6))
    cx = g.div(g.total(g.mul(cells, cell_x)), safe_mass)
    cy = g.div(g.total(g.mul(cells, cell_y)), safe_mass)

    def variance(coord: str, centre: str) -> str:
        d = g.sub(coord, centre)
        return g.div(g.total(g.mul(cells, g.mul(d, d))), safe_mass)

    spread = g.op("Sqrt", g.op("Sqrt", g.mul(variance(cell_x, cx), variance(cell_y, cy))))
    half = g.add(g.mul(spread, g.const(_BOX_SCALE)), g.const(1.0))
    gate = g.op("Clip", mass, g.const(0.0), g.const(1.0))  # no brightness, no face

    outputs: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    for stride in _STRIDES:
        pooled = g.op("AveragePool", bright, kernel_shape=[stride, stride], strides=[stride, stride])
        level_ones = g.add(g.mul(pooled, g.const(0.0)), g.const(1.0))
        ax, ay = g.grid(level_ones, 3, stride, 0.0), g.grid(level_ones, 2, stride, 0.0)

        if stride == _FACE_STRIDE:
            score, box, kps = _face_fields(g, ax, ay, stride, (cx, cy, half), gate, 0.9)
        elif stride == 8 and decoy:
            c, h = g.const(_DECOY_CENTRE), g.const(_DECOY_HALF)
            score, box, kps = _face_fields(g, ax, ay, stride, (c, c, h), gate, 0.99)
        else:  # no face at this level: zero scores, boxes of one stride around the anchor
            score, box, kps = g.mul(level_ones, g.const(0.0)), [level_ones] * 4, [level_ones] * 10
        for key, fields in (("score", [score]), ("bbox", box), ("kps", kps)):
            stacked = g.op("Concat", *fields, axis=1) if len(fields) > 1 else fields[0]
            rows = g.op("Reshape", g.op("Transpose", stacked, perm=[0, 2, 3, 1]),
                        g.const([-1, len(fields)], np.int64))
            # Two anchors per cell, interleaved: rows (cell0, a0), (cell0, a1), (cell1, a0), ...
            twice = g.op("Reshape", g.op("Concat", rows, rows, axis=1), g.const([-1, len(fields)], np.int64))
            outputs[key].append(twice)

    # The real model's output names, in SCRFD's order: scores 8/16/32, boxes 8/16/32, keypoints 8/16/32.
    names = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
    widths = [1, 1, 1, 4, 4, 4, 10, 10, 10]
    produced = outputs["score"] + outputs["bbox"] + outputs["kps"]
    for node_out, name in zip(produced, names, strict=True):
        g.nodes.append(helper.make_node("Identity", [node_out], [name], name=f"out_{name}"))
    graph = helper.make_graph(
        g.nodes, "scrfd_10g_bnkps_tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [f"n{n}", w]) for n, w in zip(names, widths, strict=True)],
        g.inits,
    )
    return _model(graph)


def _pooled_projection(graph_name: str, input_name: str, size: int, output_name: str, width: int,
                       pool: int, rng: np.random.Generator, squash: bool = False) -> onnx.ModelProto:
    """(N, 3, size, size) → average pool → flatten → fixed random projection → (N, width)."""
    features = 3 * (size // pool) ** 2
    weight = (rng.standard_normal((features, width)) / np.sqrt(features)).astype(np.float16)
    inits = [numpy_helper.from_array(weight, "weight")]
    nodes = [
        helper.make_node("AveragePool", [input_name], ["pooled"], name="pool",
                         kernel_shape=[pool, pool], strides=[pool, pool]),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Cast", ["weight"], ["weight32"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["flat", "weight32"], ["projected" if squash else output_name], name="project"),
    ]
    if squash:  # landmark heads predict coordinates in [-1, 1]
        nodes.append(helper.make_node("Tanh", ["projected"], [output_name], name="squash"))
    graph = helper.make_graph(
        nodes, graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["None", 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["None", width])],
        inits,
    )
    return _model(graph)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="animator-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write(root: Path, seed: int = 0, decoy: bool = False) -> Path:
    """Write the five stand-ins into ``<root>/models/antelopev2`` and return that folder."""
    from animator_cli.weights.home import WeightsHome

    folder = WeightsHome(Path(root)).antelopev2_dir
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    models = {
        DETECTOR: _detector(decoy),
        RECOGNITION: _pooled_projection("glintr100_tiny", "input.1", 112, "1333", 512, 16, rng),
        "2d106det.onnx": _pooled_projection("2d106det_tiny", "data", 192, "fc1", 212, 96, rng, squash=True),
        "1k3d68.onnx": _pooled_projection("1k3d68_tiny", "data", 192, "fc1", 3309, 96, rng, squash=True),
        "genderage.onnx": _pooled_projection("genderage_tiny", "data", 96, "fc1", 3, 32, rng),
    }
    for name, model in models.items():
        onnx.save(model, str(folder / name))
    return folder
