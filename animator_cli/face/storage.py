"""On-disk form of a FaceIdentity: `identity.npz` (arrays), `face_mask.png` (uint8), `meta.json` (summary)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from animator_cli.errors import InputError
from animator_cli.face.identity import FaceIdentity

IDENTITY_FILE = "identity.npz"
MASK_FILE = "face_mask.png"
META_FILE = "meta.json"


def save_identity(folder: Path, identity: FaceIdentity, meta: dict[str, Any]) -> list[Path]:
    """Write the three files into ``folder`` (a scratch directory: atomicity is the caller's)."""
    folder = Path(folder)
    np.savez(folder / IDENTITY_FILE, embedding=identity.embedding, box=identity.box,
             landmarks=identity.landmarks, det_score=np.float32(identity.det_score))
    Image.fromarray(identity.mask, mode="L").save(folder / MASK_FILE)
    summary = dict(meta, found=identity.found, det_score=identity.det_score, box=identity.box.tolist(),
                   landmarks=identity.landmarks.tolist(), image_size=list(identity.mask.shape))
    (folder / META_FILE).write_text(json.dumps(summary, indent=2))
    return [folder / IDENTITY_FILE, folder / MASK_FILE, folder / META_FILE]


def load_identity(folder: Path | str) -> FaceIdentity:
    """Read a folder written by the face stage (`animator face`)."""
    folder = Path(folder)
    arrays_path, mask_path = folder / IDENTITY_FILE, folder / MASK_FILE
    if not arrays_path.is_file() or not mask_path.is_file():
        raise InputError(f"{folder} is not a face-stage folder ({IDENTITY_FILE} or {MASK_FILE} missing)",
                         "run `animator face REF.png` and pass the folder it prints")
    try:
        with np.load(arrays_path) as data:
            embedding, box, landmarks = data["embedding"], data["box"], data["landmarks"]
            det_score = float(data["det_score"])
        with Image.open(mask_path) as image:
            mask = np.asarray(image.convert("L"), dtype=np.uint8)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{folder}: unreadable face-stage files ({exc})", "rerun `animator face --force`") from exc
    return FaceIdentity(embedding.astype(np.float32), box.astype(np.float32), landmarks.astype(np.float32),
                        mask, det_score)
