"""Test media written on the fly: short clips with a real audio track."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def clip_with_audio(path: Path, frames: int, fps: int, sample_rate: int = 16000, size: int = 64) -> Path:
    """An H.264 mp4 of a moving gradient with a 440 Hz mono AAC track as long as the video."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        audio = container.add_stream("aac", rate=sample_rate, layout="mono")
        yy, xx = np.mgrid[0:size, 0:size]
        for i in range(frames):
            rgb = np.stack([(xx * 3 + i * 9) % 256, (yy * 3) % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        n = sample_rate * frames // fps
        tone = (0.3 * np.sin(np.arange(n) * 2 * np.pi * 440 / sample_rate)).astype(np.float32)[None]
        for start in range(0, n, 1024):
            chunk = av.AudioFrame.from_ndarray(tone[:, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = sample_rate, start
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


def clip_with_pcm_audio(path: Path, layout: str, sample_rate: int, frames: int = 10, fps: int = 10,
                        codec: str = "pcm_s16le") -> Path:
    """A clip (H.264 video, a 16-bit PCM tone in ``layout`` at ``sample_rate``), e.g. as an .mkv or .mov."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream(codec, rate=sample_rate, layout=layout)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        channels = len(av.AudioLayout(layout).channels)
        n = sample_rate * frames // fps
        tone = (8000 * np.sin(np.arange(n) * 2 * np.pi * 440 / sample_rate)).astype(np.int16)
        for start in range(0, n, 1024):
            part = tone[start:start + 1024]
            chunk = av.AudioFrame.from_ndarray(np.repeat(part, channels)[None], format="s16", layout=layout)
            chunk.sample_rate, chunk.pts = sample_rate, start
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path
