"""Weights home: layout, `weights check`, and `weights download` up to the network call."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from animator_cli.weights import download as downloader
from animator_cli.weights.home import ANTELOPEV2_FILES, WeightsHome


def test_check_on_empty_home_exits_3_with_fixes(cli, tmp_path: Path) -> None:
    result = cli("--weights", tmp_path / "empty", "--json", "weights", "check")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["ready"] is False
    fixes = {c["component"].split()[0]: c["fix"] for c in report["components"]}
    assert fixes["SVD"] == "animator weights download --only svd"
    assert fixes["DWPose"] == "animator weights download --only dwpose"
    assert "missing" in result.stderr  # the table goes to stderr


def test_check_reports_unreadable_files(cli, tmp_path: Path) -> None:
    home = WeightsHome(tmp_path)
    home.animation_dir.mkdir(parents=True)
    for name in ("pose_net", "face_encoder", "unet"):
        (home.animation_dir / f"{name}.pth").write_text("<html>rate limited</html>")
    result = cli("--weights", tmp_path, "--json", "weights", "check")
    states = {c["component"]: c["status"] for c in json.loads(result.stdout)["components"]}
    assert states["StableAnimator checkpoints"] == "unreadable"


def test_env_var_selects_home(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANIMATOR_HOME", str(tmp_path / "from-env"))
    result = cli("--json", "weights", "check")
    assert json.loads(result.stdout)["weights"] == str(tmp_path / "from-env")


def test_release_layout_with_nested_svd_folder(tmp_path: Path) -> None:
    nested = tmp_path / "checkpoints" / "SVD" / "stable-video-diffusion-img2vid-xt"
    nested.mkdir(parents=True)
    (nested / "model_index.json").write_text("{}")
    assert WeightsHome(tmp_path).svd_dir == nested


def test_download_calls_hub_with_release_layout(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(downloader, "_snapshot",
                        lambda repo, local_dir, patterns, token: calls.append((repo, Path(local_dir), patterns, token)))
    result = cli("--weights", tmp_path, "weights", "download", "--only", "animation", "--only", "svd",
                 "--token", "hf_x")
    assert result.exit_code == 0, result.stderr
    assert calls == [
        ("FrancisRing/StableAnimator", tmp_path / "checkpoints", ["Animation/*"], "hf_x"),
        ("stabilityai/stable-video-diffusion-img2vid-xt", tmp_path / "checkpoints" / "SVD",
         downloader.SVD_PATTERNS, "hf_x"),
    ]
    assert cli("weights", "download", "--only", "everything").exit_code == 2


def test_antelopev2_nested_zip_is_flattened(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """insightface's zip holds `antelopev2/`, so it unpacks to models/antelopev2/antelopev2/ (spec §6.9)."""
    from insightface.utils import storage

    def fake_download_file(url: str, path: str, overwrite: bool = False) -> None:
        assert url.endswith("antelopev2.zip")
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # as insightface's download_file does
        with zipfile.ZipFile(path, "w") as zf:
            for name in ANTELOPEV2_FILES:
                zf.writestr(f"antelopev2/{name}", b"onnx")

    monkeypatch.setattr(storage, "download_file", fake_download_file)
    result = cli("--weights", tmp_path, "weights", "download", "--only", "antelopev2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path)  # insightface's own prints are kept off stdout
    home = WeightsHome(tmp_path)
    assert sorted(p.name for p in home.antelopev2_dir.iterdir()) == sorted(ANTELOPEV2_FILES)
    assert not (tmp_path / ".antelopev2-download").exists()


def test_incomplete_antelopev2_is_a_weights_error(tmp_path: Path) -> None:
    from animator_cli.errors import WeightsError

    (tmp_path / "staging" / "antelopev2").mkdir(parents=True)
    (tmp_path / "staging" / "antelopev2" / "glintr100.onnx").write_bytes(b"x")
    with pytest.raises(WeightsError, match="scrfd_10g_bnkps.onnx"):
        downloader.flatten_antelopev2(tmp_path / "staging", tmp_path / "target")
