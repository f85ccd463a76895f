"""Test media written on the fly: short clips with a real audio track."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


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


def full_body_figure(astronaut: np.ndarray) -> np.ndarray:
    """A 512×512 full-body figure MediaPipe detects head to ankles: skimage's astronaut (head and torso, scaled
    to 0.4) with legs pasted below it, cut from her orange suit and slanted apart, and dark shoes."""
    import cv2

    canvas = np.full((700, 512, 3), 150, np.uint8)
    top = cv2.resize(astronaut[:500, 10:360], (140, 200), interpolation=cv2.INTER_AREA)
    x0, hip_y = (512 - 140) // 2, 210
    centre, width, foot_y = x0 + 80, 30, 660
    suit = astronaut[300:500, 40:120]
    length = foot_y - hip_y
    leg = cv2.resize(suit, (width, length))
    for sign in (-1, 1):
        top_x = centre + sign * 18 - width // 2
        source = np.float32([[0, 0], [width, 0], [0, length]])
        target = np.float32([[top_x, hip_y - 20], [top_x + width, hip_y - 20], [top_x + sign * 40, foot_y - 20]])
        matrix = cv2.getAffineTransform(source, target)
        warped = cv2.warpAffine(leg, matrix, (512, 700))
        mask = cv2.warpAffine(np.full(leg.shape[:2], 255, np.uint8), matrix, (512, 700)) > 0
        canvas[mask] = warped[mask]
        cv2.ellipse(canvas, (top_x + sign * 40 + width // 2 + sign * 15, foot_y - 30), (30, 18), 0, 0, 360,
                    (30, 30, 30), -1)
    canvas[10:210, x0:x0 + 140] = top
    square = np.full((700, 700, 3), 150, np.uint8)
    square[:, 94:606] = canvas
    return cv2.resize(square, (512, 512), interpolation=cv2.INTER_AREA)


def drifting_clip(path: Path, image: np.ndarray, frames: int, fps: int = 25, step: int = 3) -> Path:
    """A video of ``image`` sliding sideways by ``step`` pixels a frame, back and forth (edges wrap)."""
    from animator_cli.video import write_video

    shifts = [((i * step) % 24) - 12 for i in range(frames)]
    write_video(path, [np.roll(image, s, axis=1) for s in shifts], fps=fps)
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


def stick_poses(folder: Path, count: int = 3) -> Path:
    """A pose folder of skeleton-like frames (black with a few coloured lines)."""
    folder.mkdir(parents=True)
    for i in range(count):
        image = np.zeros((96, 64, 3), np.uint8)
        image[20:70, 30:34] = (255, 0, 85)
        image[30:34, 10 + i * 4:54] = (0, 255, 0)
        Image.fromarray(image).save(folder / f"frame_{i}.png")
    return folder
