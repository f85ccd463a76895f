"""Load any still image as RGB uint8: RGBA, greyscale, palette, 16-bit PNG, JPEG with EXIF rotation.

Images above ``MAX_PIXELS`` (100 megapixels, e.g. 10000×10000) are refused before they are decoded: a small
file can expand to gigabytes (a "decompression bomb"), and nothing animator makes needs that many pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from animator_cli.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
MAX_PIXELS = 100_000_000
MIN_SIDE = 32  # smaller images hold no detectable person and give a degenerate canvas


def check_min_size(path: Path, what: str, width: int, height: int) -> None:
    """InputError when an image (a reference, driving frames) is under ``MIN_SIDE`` pixels on a side."""
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{what} {path} is {width}×{height} pixels",
                         f"use images at least {MIN_SIDE} pixels on each side")


def _too_large(path: Path, size: str) -> InputError:
    return InputError(f"{path} is {size}, above the limit of {MAX_PIXELS // 1_000_000} megapixels",
                      "scale the image down first")


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
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image")
    try:
        with warnings.catch_warnings():  # MAX_PIXELS below, not Pillow's warning, decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as image:
            if image.width * image.height > MAX_PIXELS:
                raise _too_large(path, f"{image.width}×{image.height} pixels")
            image = ImageOps.exif_transpose(image)
            return _to_rgb8(image)
    except Image.DecompressionBombError as exc:
        raise _too_large(path, "too large to open") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable image ({exc})") from exc
