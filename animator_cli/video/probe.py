"""What a video file holds: size, frame rate, length, rotation, audio."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av

from animator_cli.errors import InputError


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int  # as displayed, i.e. after rotation
    height: int
    fps: float
    frame_count: int  # from the container header; estimated from the duration when the header has none
    duration: float  # seconds
    rotation: int  # degrees counter-clockwise applied on display (0, 90, 180, 270)
    has_audio: bool


@contextlib.contextmanager
def open_video(path: Path) -> Iterator[av.container.InputContainer]:
    """Open ``path`` for reading with one-line errors for missing, unreadable and non-video files."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a video file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise InputError(f"{path} is not a readable video ({exc.strerror or exc})",
                         "check that the file is complete and is a video") from exc
    try:
        if container.format.name.endswith("_pipe") or container.format.name.startswith("image2"):
            raise InputError(f"{path} is a still image, not a video", "pass a video file or a folder of frames")
        if not container.streams.video:
            raise InputError(f"{path} has no video stream")
        yield container
    finally:
        container.close()


def _rotation(stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> int:
    """Display rotation from the first decoded frame's display matrix (PyAV exposes it per frame)."""
    try:
        for frame in container.decode(stream):
            return int(round(frame.rotation)) % 360
    except av.error.FFmpegError:
        return 0
    return 0


def probe(path: Path) -> VideoInfo:
    with open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise InputError(f"{path} has no frame rate", "pass --fps")
        fps = float(rate)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames = stream.frames or int(round(duration * fps))
        rotation = _rotation(stream, container)
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(Path(path), width, height, fps, frames, duration, rotation, bool(container.streams.audio))
