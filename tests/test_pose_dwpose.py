"""DWPose pre/post-processing with the tiny ONNX stand-ins, checked against decodes computed by hand."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from animator_cli.pose.dwpose import (
    DWPoseBackend,
    box_to_center_scale,
    decode_simcc,
    decode_yolox,
    letterbox,
    person_boxes,
    to_layout,
)


@pytest.fixture(scope="module")
def backend(tiny_home):
    return DWPoseBackend(tiny_home.dwpose_dir)


def test_stand_ins_have_the_real_interfaces(tiny_home):
    det = onnx.load(tiny_home.dwpose_dir / "yolox_l.onnx").graph
    pose = onnx.load(tiny_home.dwpose_dir / "dw-ll_ucoco_384.onnx").graph

    def dims(value):
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]

    assert [(v.name, dims(v)) for v in det.input] == [("images", [1, 3, 640, 640])]
    assert [(v.name, dims(v)) for v in det.output] == [("output", [1, 8400, 85])]
    assert [(v.name, dims(v)) for v in pose.input] == [("input", ["batch", 3, 384, 288])]
    assert [(v.name, dims(v)) for v in pose.output] == [("simcc_x", ["batch", 133, 576]),
                                                        ("simcc_y", ["batch", 133, 768])]


def test_letterbox_top_left_pad_114():
    rgb = np.random.default_rng(0).integers(0, 255, (320, 480, 3), dtype=np.uint8)
    tensor, ratio = letterbox(rgb)
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert ratio == pytest.approx(4 / 3)  # min(640/320, 640/480)
    assert (tensor[0, :, 427:] == 114).all()  # resized to 640×426, padded below
    assert (tensor[0, :, 425] != 114).any()
    assert tensor[0, :, 0, 0].tolist() == rgb[0, 0].astype(np.float32).tolist()  # RGB order kept, no scaling


def test_yolox_grid_decode():
    raw = np.zeros((8400, 85), np.float32)
    # Row 8170 is stride 32 (rows 8000..8399), cell 170 → (x 10, y 8): centre ((10 + .5)·32, (8 + .5)·32).
    raw[8170, :4] = (0.5, 0.5, np.log(5), np.log(10))
    raw[8170, 4], raw[8170, 5] = 0.9, 0.5
    # Row 41 is stride 8, cell (41, 0).
    raw[41, :4] = (0.0, 0.25, 0.0, 0.0)
    boxes, scores = decode_yolox(raw)
    np.testing.assert_allclose(boxes[8170], [336 - 80, 272 - 160, 336 + 80, 272 + 160], rtol=1e-5)
    np.testing.assert_allclose(boxes[41], [328 - 4, 2 - 4, 328 + 4, 2 + 4], rtol=1e-5)
    assert scores[8170, 0] == pytest.approx(0.45)


def test_nms_and_person_cut_on_the_stand_in(backend):
    raw = backend.detector.run(None, {"images": np.zeros((1, 3, 640, 640), np.float32)})[0][0]
    boxes, scores = person_boxes(raw, ratio=2.0)
    # Planted: A 0.81 (kept), B 0.45 overlapping A at IoU 0.86 (suppressed), C 0.48 (kept), D 0.25 (< 0.3),
    # a bicycle (class 1), and noise below 0.04. Boxes come back in original pixels (÷ ratio), best first.
    np.testing.assert_allclose(boxes, np.array([[256, 112, 416, 432], [52, 420, 116, 548]]) / 2, rtol=1e-5)
    np.testing.assert_allclose(scores, [0.81, 0.48], rtol=1e-5)


def test_simcc_argmax_and_invalid_points():
    simcc_x = np.zeros((1, 2, 576), np.float32)
    simcc_y = np.zeros((1, 2, 768), np.float32)
    simcc_x[0, 0, 101], simcc_y[0, 0, 50] = 0.8, 0.6
    simcc_x[0, 1] -= 1.0  # all negative: invalid
    simcc_y[0, 1] -= 1.0
    locs, vals = decode_simcc(simcc_x, simcc_y)
    np.testing.assert_allclose(locs[0, 0], [50.5, 25.0])
    assert vals[0, 0] == pytest.approx(0.6)  # the smaller of the two peaks
    np.testing.assert_allclose(locs[0, 1], [-0.5, -0.5])  # -1 bins / split ratio


def test_box_padding_and_aspect():
    center, scale = box_to_center_scale(np.array([256, 112, 416, 432], np.float32), aspect=288 / 384)
    np.testing.assert_allclose(center, [336, 272])
    np.testing.assert_allclose(scale, [300, 400])  # 160×320 · 1.25 = 200×400, widened to w/h 0.75


def test_layout_neck_and_openpose_order():
    keypoints = np.stack([np.arange(133), np.zeros(133)], -1)[None].astype(np.float32)
    scores = np.full((1, 133), 0.9, np.float32)
    scores[0, 6] = 0.2
    points, values = to_layout(keypoints, scores)
    assert points.shape == (1, 134, 2)
    assert points[0, :18, 0].tolist() == [0, 5.5, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    assert values[0, 1] == 0.0  # neck score: both shoulders must be > 0.3
    assert points[0, 18, 0] == 17 and points[0, 24, 0] == 23 and points[0, 92, 0] == 91 and points[0, 133, 0] == 132


def _expected(box, keypoint, image_ratio=1.0):
    """Hand computation of the back-projection for one crop keypoint (crop pixels, 288×384 input)."""
    center, scale = box_to_center_scale(np.array(box, np.float32), 288 / 384)
    return (np.array(keypoint) / (288, 384) * scale + center - scale / 2)


def test_whole_pipeline_back_projection(backend):
    rgb = np.zeros((640, 640, 3), np.uint8)
    poses = backend.detect(rgb)
    assert len(poses) == 2  # both persons went through the pose model as one batch
    nose = poses[0].points[0] * 640
    np.testing.assert_allclose(nose, [336, 134.5], atol=1e-3)  # 144/0.96 + 186, 60/0.96 + 72
    np.testing.assert_allclose(poses[1].points[0] * 640, [84, 429], atol=1e-3)  # box C: 120×160 crop, ×2.4
    np.testing.assert_allclose(poses[0].points[1] * 640, _expected([256, 112, 416, 432], [144, 100]), atol=1e-3)
    np.testing.assert_allclose(poses[0].points[2] * 640, [302.6667, 176.1667], atol=1e-3)  # COCO 6 → OpenPose 2
    assert poses[0].scores[1] == 1.0 and poses[0].scores[13] == pytest.approx(0.2)  # neck; left ankle (COCO 15)
    np.testing.assert_allclose(poses[0].scores[24:92], 0.7, rtol=1e-6)


def test_non_square_image_and_unbatched_model(backend):
    rgb = np.zeros((480, 960, 3), np.uint8)  # letterbox ratio 2/3: everything maps ×1.5
    batched = backend.detect(rgb)
    nose = batched[0].points[0] * (960, 480)
    np.testing.assert_allclose(nose, [336 * 1.5, 134.5 * 1.5], atol=1e-3)
    backend.batched = False  # a model exported with a fixed batch of 1 runs one crop at a time
    try:
        single = backend.detect(rgb)
    finally:
        backend.batched = True
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.points, b.points)


def test_corrupt_model_is_a_weights_error(tmp_path, tiny_home):
    import shutil

    from animator_cli.errors import WeightsError

    folder = tmp_path / "DWPose"
    shutil.copytree(tiny_home.dwpose_dir, folder)
    (folder / "dw-ll_ucoco_384.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(WeightsError, match="dw-ll_ucoco_384.onnx"):
        DWPoseBackend(folder)
