"""Layout of the weights home, identical to the authors' release so an existing checkout works as is.

    <home>/checkpoints/SVD/                 diffusers folder of stable-video-diffusion-img2vid-xt
    <home>/checkpoints/Animation/           pose_net.pth, face_encoder.pth, unet.pth (+ .safetensors twins)
    <home>/checkpoints/DWPose/              yolox_l.onnx, dw-ll_ucoco_384.onnx
    <home>/models/antelopev2/               insightface antelopev2 (*.onnx)
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from animator_cli.errors import WeightsError

ANIMATION_CHECKPOINTS = ("pose_net", "face_encoder", "unet")
SVD_SUBFOLDERS = ("unet", "vae", "image_encoder", "scheduler", "feature_extractor")
DWPOSE_FILES = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")
ANTELOPEV2_FILES = (
    "1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx", "scrfd_10g_bnkps.onnx",
)
ARCFACE_TORCH_FILE = "glintr100_torch.pth"  # the release's torch ArcFace for --face-opt (optional, see arcface_files)
DOWNLOAD = "animator weights download"


def default_home() -> Path:
    """``$ANIMATOR_HOME``, else ``$XDG_CACHE_HOME/animator``, else ``~/.cache/animator``."""
    if env := os.environ.get("ANIMATOR_HOME"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "animator"


class ComponentStatus(str, Enum):
    PRESENT = "present"
    MISSING = "missing"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Component:
    """One downloadable unit of the weights home."""

    key: str  # its name for `animator weights download --only`
    name: str
    files: tuple[Path, ...]
    required: bool  # needed by `animator generate`
    fix: str  # the command that installs it
    purpose: str


def _readable_weight_file(path: Path) -> bool:
    """Cheap format sniffing, so `weights check` stays fast on multi-GB files."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    if not head:
        return False
    if path.suffix in (".pth", ".pt", ".bin"):
        return zipfile.is_zipfile(path)
    if path.suffix == ".safetensors":
        return len(head) == 8 and 0 < int.from_bytes(head, "little") < path.stat().st_size
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except (OSError, ValueError):
            return False
    return True


@dataclass(frozen=True)
class WeightsHome:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    @classmethod
    def resolve(cls, root: Path | str | None = None) -> WeightsHome:
        return cls(Path(root).expanduser() if root else default_home())

    # --- locations -------------------------------------------------------------------------
    @property
    def svd_dir(self) -> Path:
        """The SVD diffusers folder; the release's extra `stable-video-diffusion-img2vid-xt/` level is accepted."""
        base = self.root / "checkpoints" / "SVD"
        nested = base / "stable-video-diffusion-img2vid-xt"
        if not (base / "model_index.json").exists() and (nested / "model_index.json").exists():
            return nested
        return base

    @property
    def animation_dir(self) -> Path:
        return self.root / "checkpoints" / "Animation"

    @property
    def dwpose_dir(self) -> Path:
        return self.root / "checkpoints" / "DWPose"

    @property
    def antelopev2_dir(self) -> Path:
        return self.root / "models" / "antelopev2"

    def animation_checkpoint(self, name: str) -> Path:
        """`<name>.safetensors` when present and not older than the `.pth` (faster, no pickle), else `<name>.pth`.

        A twin older than its `.pth` is stale (the `.pth` was re-downloaded or re-trained) and is ignored.
        """
        st, pth = self.animation_dir / f"{name}.safetensors", self.animation_dir / f"{name}.pth"
        if st.exists() and (not pth.exists() or st.stat().st_mtime >= pth.stat().st_mtime):
            return st
        return pth

    # --- inventory -------------------------------------------------------------------------
    def components(self) -> list[Component]:
        svd = self.svd_dir
        svd_files = [svd / "model_index.json"] + [svd / sub / _config_name(sub) for sub in SVD_SUBFOLDERS]
        return [
            Component("svd", "SVD (stable-video-diffusion-img2vid-xt)", tuple(svd_files), True,
                      f"{DOWNLOAD} --only svd", "video diffusion backbone"),
            Component("animation", "StableAnimator checkpoints",
                      tuple(self.animation_checkpoint(n) for n in ANIMATION_CHECKPOINTS), True,
                      f"{DOWNLOAD} --only animation", "PoseNet, face encoder, UNet"),
            Component("antelopev2", "antelopev2 (insightface)",
                      tuple(self.antelopev2_dir / f for f in ANTELOPEV2_FILES), True,
                      f"{DOWNLOAD} --only antelopev2", "face detection and ArcFace identity"),
            Component("dwpose", "DWPose", tuple(self.dwpose_dir / f for f in DWPOSE_FILES), False,
                      f"{DOWNLOAD} --only dwpose", "pose extraction (MediaPipe is used without it)"),
        ]

    def status(self, component: Component) -> tuple[ComponentStatus, Path | None]:
        """The component's status and the first offending file, if any."""
        for path in component.files:
            if not path.exists():
                return ComponentStatus.MISSING, path
        for path in component.files:
            if not _readable_weight_file(path):
                return ComponentStatus.UNREADABLE, path
        if component.name.startswith("SVD"):
            for sub in ("unet", "vae", "image_encoder"):
                if not _has_weights(self.svd_dir / sub):
                    return ComponentStatus.MISSING, self.svd_dir / sub / "diffusion_pytorch_model.safetensors"
        return ComponentStatus.PRESENT, None

    def can_generate(self) -> bool:
        return all(self.status(c)[0] is ComponentStatus.PRESENT for c in self.components() if c.required)

    def require_components(self, keys: list[str]) -> None:
        """Check the components ``keys`` (e.g. ``["svd", "antelopev2"]``) before any work: one WeightsError that
        lists every missing or unreadable one and the single download command that installs them all."""
        problems = []
        for component in self.components():
            if component.key in keys:
                status, path = self.status(component)
                if status is not ComponentStatus.PRESENT:
                    problems.append((component, f"{component.name}: {status.value} {path}"))
        if problems:
            fix = " ".join(f"--only {component.key}" for component, _ in problems)
            raise WeightsError(f"weights missing in {self.root}: {'; '.join(text for _, text in problems)}",
                               f"run `{DOWNLOAD} {fix}` or pass --weights DIR")

    def arcface_files(self) -> list[Path]:
        """Where --face-opt reads its ArcFace from, in order of preference: the release's torch file, else
        antelopev2's glintr100.onnx (converted exactly), so the antelopev2 component is all it needs."""
        return [self.animation_dir / ARCFACE_TORCH_FILE, self.antelopev2_dir / "glintr100.onnx"]

    def require(self, path: Path, what: str, fix: str = DOWNLOAD) -> Path:
        """Return ``path`` if it exists, else raise a WeightsError naming the file and the fix."""
        if not path.exists():
            raise WeightsError(f"{what} not found at {path}", f"run `{fix}` or pass --weights DIR")
        return path


def _config_name(subfolder: str) -> str:
    return {"scheduler": "scheduler_config.json", "feature_extractor": "preprocessor_config.json"}.get(
        subfolder, "config.json")


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def resolve_checkpoint_dir(path: Path) -> Path:
    """``RUN/checkpoint-N`` as given; ``RUN/latest`` or a training run folder ``RUN`` → its newest checkpoint.

    Training writes each checkpoint under a temporary name and renames it, so every ``checkpoint-N`` is complete.
    """
    run = path.parent if path.name == "latest" else path
    if path.name != "latest" and any((path / f"unet{ext}").exists() for ext in (".pth", ".safetensors")):
        return path
    numbered = [(int(p.name.split("-")[1]), p) for p in run.glob("checkpoint-*")
                if p.name.split("-")[1].isdigit() and p.is_dir()]
    return max(numbered)[1] if numbered else path
