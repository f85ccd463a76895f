"""`animator video ...`: inspect a video, split it into frames, encode frames (no ffmpeg needed)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from animator_cli.cli.app import app
from animator_cli.cli.context import emit, settings, stderr
from animator_cli.fileio import atomic_dir, check_output_path
from animator_cli.video import iter_frames, list_frames, probe, write_frame, write_video

_FRAME = re.compile(r"frame_\d+\.png")
video_app = typer.Typer(help="Inspect, split and encode videos.", no_args_is_help=True)
app.add_typer(video_app, name="video")


@video_app.command("info")
def info(video: Annotated[Path, typer.Argument(help="Video file.")]) -> None:
    """Print size, fps, frame count, duration, rotation and audio presence."""
    record = dataclasses.asdict(probe(video))
    if settings.json:
        emit(record)
    else:  # the result itself, on stdout: `animator video info clip.mp4 | grep fps`
        for key, value in record.items():
            print(f"{key}: {value}")


@video_app.command("frames")
def frames(
    video: Annotated[Path, typer.Argument(help="Video file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for frame_<i>.png.")],
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Only the first N frames.")] = None,
) -> None:
    """Split a video into frame_<i>.png (the reference's layout), written atomically."""
    check_output_path(output, [video], folder=True)
    details = probe(video)
    total = min(details.frame_count, max_frames or details.frame_count)
    # An existing folder is replaced only if it holds nothing but frames (a previous run's output).
    previous_frames = output.is_dir() and all(_FRAME.fullmatch(p.name) for p in output.iterdir())
    with atomic_dir(output, replace=previous_frames) as tmp, Progress(console=stderr, transient=True) as progress:
        task = progress.add_task("frames", total=total)
        count = 0
        for count, frame in enumerate(iter_frames(video, max_frames), start=1):
            write_frame(tmp, count - 1, frame)
            progress.advance(task)
    emit({"output": str(output), "frames": count, "fps": details.fps}, [output])


@video_app.command("encode")
def encode(
    frames_dir: Annotated[Path, typer.Argument(help="Folder of frame_<i>.png.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .mp4.")],
    fps: Annotated[float, typer.Option("--fps", min=0.001, help="Frame rate of the video.")] = 25.0,
    crf: Annotated[int, typer.Option("--crf", min=0, max=51, help="H.264 quality, lower is better.")] = 18,
    audio_from: Annotated[Path | None, typer.Option("--audio-from", help="Take this video's audio.")] = None,
) -> None:
    """Encode a frame folder to H.264 mp4, optionally with another video's audio."""
    count = len(list_frames(frames_dir))
    write_video(output, iter_frames(frames_dir), fps, crf, audio_from)
    emit({"output": str(output), "frames": count, "fps": fps}, [output])
