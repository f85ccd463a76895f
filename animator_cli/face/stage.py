"""The cached face stage: reference image → identity folder (`identity.npz`, `face_mask.png`, `meta.json`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from animator_cli import fileio
from animator_cli.cache import StageCache
from animator_cli.errors import require_file
from animator_cli.face.analyzer import DET_SIZE, model_signature
from animator_cli.face.identity import extract_identity
from animator_cli.face.storage import IDENTITY_FILE, MASK_FILE, META_FILE, save_identity
from animator_cli.progress import stage
from animator_cli.weights.home import WeightsHome


def face_stage(
    image: Path,
    weights: WeightsHome,
    cache: StageCache,
    *,
    legacy_rgb: bool = False,
    allow_no_face: bool = False,
    force: bool = False,
    device: str | None = None,
) -> tuple[Path, bool]:
    """Run (or reuse) the face stage for ``image``; returns the entry folder and whether it was cached."""
    image = require_file(Path(image), "reference image")
    weights.require_components(["antelopev2"])
    params = {"legacy_rgb": legacy_rgb, "allow_no_face": allow_no_face, "det_size": list(DET_SIZE),
              "models": model_signature(weights)}
    entry = cache.entry("face", [image], params)
    if entry.done and not force:
        return entry.path, True
    with stage("face"):
        identity = extract_identity(image, weights, legacy_rgb=legacy_rgb, allow_no_face=allow_no_face,
                                    device=device)
    with entry.writing(replace=force) as tmp:
        save_identity(tmp, identity, {"image": str(image), "legacy_rgb": legacy_rgb,
                                      "models": str(weights.antelopev2_dir)})
    return entry.path, False


EXPORT_FILES = (IDENTITY_FILE, MASK_FILE, META_FILE)


def export_stage(folder: Path, output: Path) -> Path:
    """Copy a face-stage folder's files into ``output``, each written atomically; returns ``output``."""
    fileio.ensure_writable_dir(output)
    for name in EXPORT_FILES:
        with fileio.atomic_path(output / name) as tmp:
            shutil.copyfile(folder / name, tmp)
    return output
