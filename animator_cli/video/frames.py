"""Frame sources: decode a video lazily, or read a folder of `frame_<i>.png` in numeric order."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from animator_cli.errors import InputError
from animator_cli.fileio import atomic_path
from animator_cli.video.images import IMAGE_SUFFIXES, load_image
from animator_cli.video.probe import open_video

log = logging.getLogger("animator")
_FRAME_NAME = re.compile(r"(frame_)?(\d+)")  # frame_<i> (the reference's layout) or a bare number
_LISTED = 5  # stray names named in the warning


def list_frames(folder: Path) -> list[Path]:
    """The frames of ``folder`` in frame-number order.

    A frame is an image named `frame_<i>.<ext>` or `<i>.<ext>` (i a whole number, zero padding allowed). Other
    images are ignored with one warning line; hidden files are skipped. Mixing the two schemes, or two files with
    one frame number (`frame_1.png` and `frame_01.png`), is an InputError: the order would be a guess.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of frames")
    numbered: dict[int, Path] = {}
    schemes, stray = set(), []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith(".") or not path.is_file():
            continue
        match = _FRAME_NAME.fullmatch(path.stem)
        if match is None:
            stray.append(path.name)
            continue
        number = int(match[2])
        if number in numbered:
            raise InputError(f"{folder} has two files for frame {number}: {numbered[number].name} and {path.name}",
                             "keep one file per frame number")
        numbered[number] = path
        schemes.add(match[1] or "")
    if len(schemes) > 1:
        raise InputError(f"{folder} mixes frame_<i> and bare-number file names", "use one naming scheme")
    if stray:
        more = f" and {len(stray) - _LISTED} more" if len(stray) > _LISTED else ""
        log.warning("%s: ignoring %d image(s) not named frame_<i> or <i>: %s%s", folder, len(stray),
                    ", ".join(stray[:_LISTED]), more)
    if not numbered:
        raise InputError(f"{folder} contains no image frames", "expected frame_0.png, frame_1.png, ...")
    return [numbered[number] for number in sorted(numbered)]


def write_frame(folder: Path, index: int, rgb: np.ndarray) -> Path:
    """Write ``rgb`` as ``folder/frame_<index>.png`` atomically."""
    target = Path(folder) / f"frame_{index}.png"
    with atomic_path(target) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG")
    return target


def _rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise) so frames look as players show them."""
    turns = (round(rotation) // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


def _decode(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    with open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        produced = 0
        try:
            for frame in container.decode(stream):
                yield _rotate(frame.to_ndarray(format="rgb24"), frame.rotation)
                produced += 1
                if max_frames is not None and produced >= max_frames:
                    return
        except av.error.FFmpegError as exc:
            raise InputError(f"{path} is truncated or corrupt after frame {produced}: {exc.strerror or exc}",
                             "re-export or re-download the video") from exc
        if produced == 0:
            raise InputError(f"{path} contains no decodable frames", "the file is truncated or corrupt")
        if stream.frames and produced < stream.frames:  # the header promised more
            log.warning("%s ended after %d of the %d frames its header lists; the file may be truncated",
                        path, produced, stream.frames)


def iter_frames(source: Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video file or a frame folder, one at a time (memory stays flat)."""
    source = Path(source)
    if source.is_dir():
        paths = list_frames(source)
        return (load_image(p) for p in paths[:max_frames])
    return _decode(source, max_frames)
