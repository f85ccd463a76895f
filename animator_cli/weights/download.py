"""`animator weights download`: fetch every component into the weights home.

Hugging Face downloads are resumable (huggingface_hub keeps `.incomplete` files and continues
them). antelopev2 comes through insightface's own model-zoo download, whose zip holds an
`antelopev2/` folder and so lands one level too deep (`models/antelopev2/antelopev2/*.onnx`,
the bug the reference README warns about); we unpack into a staging folder and move the files up.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from animator_cli.errors import WeightsError
from animator_cli.weights.home import ANTELOPEV2_FILES, WeightsHome

log = logging.getLogger("animator")

SVD_REPO = "stabilityai/stable-video-diffusion-img2vid-xt"
ANIMATOR_REPO = "FrancisRing/StableAnimator"
# fp16 variants halve the download; the loader picks whichever variant is present.
SVD_PATTERNS = [
    "model_index.json", "scheduler/*", "feature_extractor/*",
    "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
    "image_encoder/config.json", "image_encoder/model.fp16.safetensors",
]
COMPONENTS = ("svd", "animation", "dwpose", "antelopev2")


def _snapshot(repo_id: str, local_dir: Path, patterns: list[str], token: str | None) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        snapshot_download(repo_id=repo_id, local_dir=local_dir, allow_patterns=patterns, token=token)
    except HfHubHTTPError as exc:
        hint = "accept the model licence on huggingface.co and pass --token" if "401" in str(exc) or "403" in str(
            exc) else "check your network or set HF_ENDPOINT"
        raise WeightsError(f"download of {repo_id} failed: {_first_line(exc)}", hint) from exc
    except OSError as exc:
        raise WeightsError(f"download of {repo_id} failed: {_first_line(exc)}",
                           "check your network and disk space") from exc


def _first_line(exc: BaseException) -> str:
    """huggingface_hub's messages run over several lines; the first one says what happened."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def flatten_antelopev2(staging: Path, target: Path) -> Path:
    """Move the antelopev2 ONNX files found anywhere under ``staging`` into ``target``."""
    found = {p.name: p for p in staging.rglob("*.onnx")}
    missing = [name for name in ANTELOPEV2_FILES if name not in found]
    if missing:
        raise WeightsError(f"antelopev2 download is incomplete: {', '.join(missing)} missing in {staging}",
                           "rerun `animator weights download --only antelopev2`")
    target.mkdir(parents=True, exist_ok=True)
    for name in ANTELOPEV2_FILES:
        shutil.move(str(found[name]), target / name)
    return target


def _antelopev2(home: WeightsHome, token: str | None) -> None:
    from insightface.utils import storage

    staging = home.root / ".antelopev2-download"
    try:
        with contextlib.redirect_stdout(sys.stderr):  # insightface prints progress; stdout is for results
            storage.download("models", "antelopev2", force=True, root=str(staging))
    except Exception as exc:  # insightface raises bare RuntimeError/requests errors
        log.warning("insightface download failed (%s); trying %s", exc, ANIMATOR_REPO)
        _snapshot(ANIMATOR_REPO, staging, ["antelopev2/*.onnx"], token)
    flatten_antelopev2(staging, home.antelopev2_dir)
    shutil.rmtree(staging, ignore_errors=True)


def download(home: WeightsHome, only: list[str] | None = None, token: str | None = None) -> list[str]:
    """Download the named components (all by default); returns the names fetched."""
    steps: dict[str, Callable[[], None]] = {
        "svd": lambda: _snapshot(SVD_REPO, home.root / "checkpoints" / "SVD", SVD_PATTERNS, token),
        "animation": lambda: _snapshot(ANIMATOR_REPO, home.root / "checkpoints", ["Animation/*"], token),
        "dwpose": lambda: _snapshot(ANIMATOR_REPO, home.root / "checkpoints", ["DWPose/*"], token),
        "antelopev2": lambda: _antelopev2(home, token),
    }
    names = only or list(COMPONENTS)
    for name in names:
        log.info("downloading %s into %s", name, home.root)
        steps[name]()
    return names
