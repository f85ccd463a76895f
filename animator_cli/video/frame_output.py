"""Where a render's decoded frames go as they are decoded: the mp4 encoder, and optionally a folder of PNGs.

Frames arrive a chunk at a time (`AnimationPipeline`'s sink), so none is kept once written. The result still
appears complete or not at all: the mp4 is written under a temporary name, and the PNGs into a hidden folder
inside ``frames_dir`` that are moved into place only once the video is complete, so a failed render leaves the
folder as it was (never frames of two renders mixed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from animator_cli.fileio import ensure_writable_dir
from animator_cli.progress import stage
from animator_cli.video.frames import write_frame
from animator_cli.video.writer import VideoWriter


@contextlib.contextmanager
def frame_output(video: Path, fps: float, crf: int,
                 frames_dir: Path | None = None) -> Iterator[Callable[[np.ndarray], None]]:
    """A sink for chunks (n, H, W, 3) of uint8 frames: each frame is encoded into ``video`` (and written as
    frame_<i>.png for ``frames_dir``) as it arrives; finished when the block ends without an error."""
    staging = None if frames_dir is None else Path(tempfile.mkdtemp(prefix=".frames-", dir=ensure_writable_dir(
        frames_dir)))
    writer = VideoWriter(video, fps, crf)

    def sink(chunk: np.ndarray) -> None:
        for frame in chunk:
            if staging is not None:
                write_frame(staging, writer.frames_written, frame)
            writer.write(frame)

    try:
        yield sink
        with stage("writing"):
            writer.close()
        for frame in sorted(staging.iterdir()) if staging is not None else []:
            os.replace(frame, Path(frames_dir) / frame.name)
    except BaseException:
        writer.abort()
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
