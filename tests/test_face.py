"""The face/ID stage on real photos with the tiny antelopev2 stand-ins, through insightface's own code."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from animator_cli.errors import InputError, WeightsError
from animator_cli.face import (
    aligned_crop,
    arcface_embed,
    extract_identity,
    largest_face,
    load_analyzer,
    load_identity,
)
from animator_cli.video import load_image
from animator_cli.weights.home import ANTELOPEV2_FILES, WeightsHome
from animator_cli.weights.tiny import antelopev2


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def decoy_home(tmp_path_factory: pytest.TempPathFactory) -> WeightsHome:
    """antelopev2 stand-ins whose detector also reports a small, more confident face top-left."""
    root = tmp_path_factory.mktemp("decoy-home")
    antelopev2.write(root, seed=0, decoy=True)
    return WeightsHome(root)


@pytest.fixture
def black_png(tmp_path: Path) -> Path:
    path = tmp_path / "black.png"
    Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(path)
    return path


def test_stand_ins_are_routed_like_the_real_files(tiny_home: WeightsHome) -> None:
    from insightface.model_zoo import model_zoo

    expected = {"scrfd_10g_bnkps.onnx": "detection", "glintr100.onnx": "recognition",
                "2d106det.onnx": "landmark_2d_106", "1k3d68.onnx": "landmark_3d_68", "genderage.onnx": "genderage"}
    assert set(expected) == set(ANTELOPEV2_FILES)
    for name, task in expected.items():
        path = tiny_home.antelopev2_dir / name
        assert path.stat().st_size < 200_000
        model = model_zoo.get_model(str(path), providers=["CPUExecutionProvider"])
        assert model.taskname == task


def test_identity_on_a_real_photo(tiny_home: WeightsHome, tom_hanks_path: Path) -> None:
    rgb = load_image(tom_hanks_path)
    identity = extract_identity(tom_hanks_path, tiny_home)
    assert identity.embedding.shape == (512,) and identity.embedding.dtype == np.float32
    assert np.linalg.norm(identity.embedding) > 0
    x0, y0, x1, y1 = identity.box
    assert 0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0]
    assert identity.landmarks.shape == (5, 2)
    assert np.all((identity.landmarks >= [x0, y0]) & (identity.landmarks <= [x1, y1]))
    assert identity.mask.shape == rgb.shape[:2] and identity.mask.dtype == np.uint8
    assert set(np.unique(identity.mask)) == {0, 255}
    inside = identity.mask[int(np.ceil(y0)):int(y1), int(np.ceil(x0)):int(x1)]
    assert inside.min() == 255  # the whole box is covered, and at most one extra pixel on each side
    assert (x1 - x0) * (y1 - y0) <= identity.mask.sum() / 255 <= (x1 - x0 + 2) * (y1 - y0 + 2)
    assert 0.5 <= identity.det_score <= 1.0 and identity.found


def test_embedding_is_arcface_of_the_aligned_rgb_crop(tiny_home: WeightsHome, astronaut_path: Path) -> None:
    """insightface is fed BGR (as in training), so the network sees the RGB crop: same as arcface_embed."""
    rgb = load_image(astronaut_path)
    identity = extract_identity(rgb, tiny_home)
    by_hand = arcface_embed([aligned_crop(rgb, identity.landmarks)], tiny_home)[0]
    np.testing.assert_allclose(identity.embedding, by_hand, rtol=1e-4, atol=1e-5)


def test_legacy_rgb_reproduces_the_channel_swap(tiny_home: WeightsHome, t1_path: Path) -> None:
    rgb = load_image(t1_path)
    fixed = extract_identity(rgb, tiny_home)
    legacy = extract_identity(rgb, tiny_home, legacy_rgb=True)
    # The released scripts handed insightface the RGB array where it expects BGR.
    swapped = extract_identity(np.ascontiguousarray(rgb[..., ::-1]), tiny_home)
    np.testing.assert_allclose(legacy.embedding, swapped.embedding, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fixed.embedding, legacy.embedding, atol=1e-3)
    np.testing.assert_allclose(fixed.box, legacy.box, atol=1e-3)  # the stand-in detector is colour-blind


def test_different_faces_give_different_embeddings(tiny_home: WeightsHome, t1_path: Path,
                                                    tom_hanks_path: Path, astronaut_path: Path) -> None:
    embeddings = [extract_identity(p, tiny_home).embedding for p in (t1_path, tom_hanks_path, astronaut_path)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert _cosine(embeddings[i], embeddings[j]) < 0.99
    again = extract_identity(tom_hanks_path, tiny_home).embedding
    np.testing.assert_array_equal(again, embeddings[1])


def test_largest_face_wins_over_the_most_confident(tiny_home: WeightsHome, decoy_home: WeightsHome,
                                                   astronaut_path: Path) -> None:
    rgb = load_image(astronaut_path)
    faces = load_analyzer(decoy_home).faces(rgb[..., ::-1])
    assert len(faces) == 2
    areas = [(f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) for f in faces]
    assert faces[0].det_score > faces[1].det_score and areas[0] < areas[1]  # the decoy comes first
    chosen = extract_identity(rgb, decoy_home)
    np.testing.assert_allclose(chosen.box, faces[1].bbox)
    np.testing.assert_allclose(chosen.box, extract_identity(rgb, tiny_home).box, atol=1e-3)


def test_largest_face_rule() -> None:
    small = SimpleNamespace(bbox=np.array([0, 0, 10, 10.0]))
    wide = SimpleNamespace(bbox=np.array([0, 0, 40, 5.0]))
    tall = SimpleNamespace(bbox=np.array([5, 5, 20, 30.0]))
    assert largest_face([small, wide, tall]) is tall
    assert largest_face([]) is None


def test_no_face_is_an_input_error(tiny_home: WeightsHome, black_png: Path) -> None:
    with pytest.raises(InputError, match="no face found"):
        extract_identity(black_png, tiny_home)


def test_missing_weights(tmp_path: Path, tom_hanks_path: Path) -> None:
    with pytest.raises(WeightsError, match="--only antelopev2"):
        extract_identity(tom_hanks_path, WeightsHome(tmp_path))
    with pytest.raises(WeightsError, match="glintr100"):
        arcface_embed([np.zeros((112, 112, 3), np.uint8)], WeightsHome(tmp_path))


def test_cli_face_is_cached_and_chains(cli, tiny_home: WeightsHome, astronaut_path: Path, tmp_path: Path) -> None:
    first = cli("--weights", tiny_home.root, "face", astronaut_path)
    assert first.exit_code == 0, first.stderr
    folder = Path(first.stdout.strip())
    assert {p.name for p in folder.iterdir()} >= {"identity.npz", "face_mask.png", "meta.json", "manifest.json"}
    identity = load_identity(folder)
    np.testing.assert_array_equal(identity.embedding, extract_identity(astronaut_path, tiny_home).embedding)

    mtime = (folder / "identity.npz").stat().st_mtime_ns
    second = cli("--weights", tiny_home.root, "--json", "face", astronaut_path)
    result = json.loads(second.stdout)
    assert second.exit_code == 0 and result["cached"] is True and Path(result["face"]) == folder
    assert (folder / "identity.npz").stat().st_mtime_ns == mtime

    forced = json.loads(cli("--weights", tiny_home.root, "--json", "face", astronaut_path, "--force").stdout)
    assert forced["cached"] is False

    legacy = cli("--weights", tiny_home.root, "face", astronaut_path, "--legacy-rgb-id")
    assert Path(legacy.stdout.strip()) != folder  # a different cache entry
    assert not np.allclose(load_identity(Path(legacy.stdout.strip())).embedding, identity.embedding, atol=1e-3)

    out = tmp_path / "ref-face"
    exported = cli("--weights", tiny_home.root, "face", astronaut_path, "-o", out)
    assert exported.exit_code == 0 and Path(exported.stdout.strip()) == out
    np.testing.assert_array_equal(load_identity(out).embedding, identity.embedding)
    assert json.loads((out / "meta.json").read_text())["found"] is True


def test_cli_no_face(cli, tiny_home: WeightsHome, black_png: Path) -> None:
    result = cli("--weights", tiny_home.root, "face", black_png)
    assert result.exit_code == 2
    assert "no face found" in result.stderr and "--allow-no-face" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_allow_no_face(cli, tiny_home: WeightsHome, black_png: Path) -> None:
    result = cli("--weights", tiny_home.root, "face", black_png, "--allow-no-face")
    assert result.exit_code == 0
    assert "no face found" in result.stderr  # the warning
    identity = load_identity(Path(result.stdout.strip()))
    assert not identity.found and identity.embedding.shape == (512,)
    assert not identity.embedding.any() and not identity.mask.any()


def test_cli_missing_weights(cli, tmp_path: Path, tom_hanks_path: Path) -> None:
    result = cli("--weights", tmp_path / "empty", "face", tom_hanks_path)
    assert result.exit_code == 3
    assert "animator weights download --only antelopev2" in result.stderr


def test_cli_corrupt_weights(cli, tmp_path: Path, tiny_home: WeightsHome, tom_hanks_path: Path) -> None:
    home = WeightsHome(tmp_path / "home")
    antelopev2.write(home.root, seed=0)
    (home.antelopev2_dir / "glintr100.onnx").write_bytes(b"not an onnx file")
    result = cli("--weights", home.root, "face", tom_hanks_path)
    assert result.exit_code == 3
    assert "could not be loaded" in result.stderr and "--only antelopev2" in result.stderr


def test_load_identity_rejects_other_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a face-stage folder"):
        load_identity(tmp_path)


def test_cuda_provider_on_the_requested_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ONNX model (face and pose) runs on the GPU that --device names, and only when ORT offers CUDA."""
    import onnxruntime

    from animator_cli.onnx_session import providers

    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: both)
    assert providers() == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert providers("cuda:1") == ["CPUExecutionProvider"]
