"""Load any still image as RGB uint8: RGBA, greyscale, palette, 16-bit PNG, JPEG with EXIF rotation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from animator_cli.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit int) greyscale
        grey = np.asarray(image, dtype=np.float64)
        scale = 257.0 if grey.max(initial=0) > 255 else 1.0
        grey = np.clip(np.round(grey / scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent regions become white, the usual backdrop of cut-out photos.
        backdrop = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(backdrop, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_image(path: Path) -> np.ndarray:
    """The image at ``path`` as an (H, W, 3) uint8 RGB array, upright per its EXIF orientation."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return _to_rgb8(image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable image ({exc})") from exc
