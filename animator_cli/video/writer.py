"""H.264 (yuv420p) mp4 encoding, written under a temporary name and renamed when complete."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from animator_cli.errors import DiskFullError, InputError, is_disk_full
from animator_cli.fileio import check_output_path, temp_sibling
from animator_cli.options import check_fps


@functools.cache
def has_avx512() -> bool:
    """Whether the CPU (and OS) offer the AVX-512 subsets libx264 uses (F, CD, BW, DQ, VL: numpy's AVX512_SKX)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy moved its CPU table: assume none, x264 then picks its own code as before
        return False
    return bool(__cpu_features__.get("AVX512_SKX"))


def x264_options(crf: int, preset: str) -> dict[str, str]:
    """libx264's options. Its AVX-512 routines read uninitialised memory in the lookahead (mbtree), so identical
    frames encoded differently (up to ~20 levels in a frame) depending on what the process had allocated before.
    Where x264 would pick them, the CPU set it detects minus AVX-512 is named instead: its AVX2 code gives the
    same bits every run. Elsewhere x264 detects as usual (a named set is not checked: AVX2 on a CPU without it
    would crash)."""
    options = {"crf": str(crf), "preset": preset}
    if has_avx512():
        options["x264-params"] = "asm=avx2"
    return options


def fps_fraction(fps: float) -> Fraction:
    """29.97 → 2997/100, 25 → 25: an exact rate the muxer accepts."""
    return Fraction(check_fps(fps)).limit_denominator(1001)


def _even(rgb: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: replicate the last row/column when a side is odd."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return rgb


class VideoWriter:
    """Encode RGB uint8 frames to ``path``; the file appears only when the writer closes cleanly.

    >>> with VideoWriter("out.mp4", fps=25) as writer:
    ...     for frame in frames:
    ...         writer.write(frame)
    """

    def __init__(self, path: Path, fps: float, crf: int = 18, preset: str = "medium") -> None:
        if not 0 <= crf <= 51:
            raise InputError(f"invalid --crf {crf}", "use 0 (lossless) to 51 (worst); 18 is visually lossless")
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise InputError(f"output {self.path} must end in .mp4", "animator writes H.264 mp4 files")
        self.rate = fps_fraction(fps)
        self.crf, self.preset = crf, preset
        self.frames_written = 0
        self._tmp = temp_sibling(self.path, suffix=".mp4")
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        self._stream: av.video.stream.VideoStream | None = None

    def _open_stream(self, width: int, height: int) -> av.video.stream.VideoStream:
        stream = self._container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = x264_options(self.crf, self.preset)
        stream.codec_context.time_base = 1 / self.rate
        return stream

    def write(self, rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {rgb.dtype} {rgb.shape}")
        rgb = _even(rgb)
        if self._stream is None:
            self._stream = self._open_stream(rgb.shape[1], rgb.shape[0])
        elif (rgb.shape[1], rgb.shape[0]) != (self._stream.width, self._stream.height):
            raise InputError(f"frame {self.frames_written} is {rgb.shape[1]}×{rgb.shape[0]} but the video is "
                             f"{self._stream.width}×{self._stream.height}", "all frames must have one size")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file into place (on failure, drop the partial file)."""
        if self._stream is None:
            self.abort()
            raise InputError(f"no frames to write to {self.path}")
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            os.replace(self._tmp, self.path)
        except BaseException as exc:
            self.abort()
            if is_disk_full(exc):  # reported against the output path, not the temporary name
                raise DiskFullError(self.path) from exc
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial file; the target path is left untouched."""
        with contextlib.suppress(av.error.FFmpegError, OSError):  # a full disk fails the final flush again
            self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()
            if is_disk_full(exc):
                raise DiskFullError(self.path) from exc


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18,
                audio_from: Path | None = None) -> Path:
    """Encode ``frames`` to an mp4 at ``path``, optionally muxing the audio of ``audio_from``."""
    from animator_cli.video.audio import mux_audio

    path = Path(path)
    check_output_path(path, [audio_from])
    silent = path if audio_from is None else temp_sibling(path, suffix=".video.mp4")
    try:
        with VideoWriter(silent, fps, crf) as writer:
            for frame in frames:
                writer.write(frame)
        if audio_from is not None:
            mux_audio(silent, audio_from, path)
    finally:
        if silent != path:
            silent.unlink(missing_ok=True)
    return path
