"""Video and image I/O: round trips, audio muxing, streaming memory, bad files."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
from media import clip_with_audio
from PIL import Image

from animator_cli.errors import InputError
from animator_cli.video import (
    VideoWriter,
    iter_frames,
    list_frames,
    load_image,
    mux_audio,
    probe,
    write_frame,
    write_video,
)


def _gradient_frames(count: int, height: int = 64, width: int = 96) -> list[np.ndarray]:
    """Smooth frames (H.264-friendly) whose mean brightness encodes the index."""
    yy, xx = np.mgrid[0:height, 0:width]
    return [np.stack([(xx * 2 + i * 6) % 256, (yy * 3) % 256, np.full_like(xx, 40 + i * 6)], -1).astype(np.uint8)
            for i in range(count)]


def _clip_with_audio(path: Path, seconds: float = 3.0, fps: int = 25) -> Path:
    return clip_with_audio(path, int(seconds * fps), fps, sample_rate=44100)


def test_round_trip_keeps_frames_fps_and_size(tmp_path: Path) -> None:
    frames = _gradient_frames(30)
    out = write_video(tmp_path / "clip.mp4", frames, fps=24, crf=10)
    info = probe(out)
    assert (info.width, info.height, info.fps, info.frame_count) == (96, 64, 24.0, 30)
    assert info.has_audio is False and info.rotation == 0
    decoded = list(iter_frames(out))
    assert len(decoded) == 30
    for original, got in zip(frames, decoded, strict=True):
        assert got.shape == original.shape
        assert np.abs(got.astype(int) - original.astype(int)).mean() < 3.0  # lossy but close at crf 10


def test_non_integer_fps_and_odd_size(tmp_path: Path) -> None:
    out = write_video(tmp_path / "ntsc.mp4", _gradient_frames(10, 63, 95), fps=29.97)
    info = probe(out)
    assert info.fps == pytest.approx(29.97, abs=1e-3)
    assert (info.width, info.height) == (96, 64)  # yuv420p needs even sides: padded by one row/column


def test_mux_audio_trims_to_video_length(tmp_path: Path) -> None:
    source = _clip_with_audio(tmp_path / "source.mp4", seconds=3.0)
    video = write_video(tmp_path / "gen.mp4", _gradient_frames(25), fps=25)
    out = mux_audio(video, source, tmp_path / "with_audio.mp4")
    info = probe(out)
    assert info.has_audio and info.frame_count == 25
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        audio_seconds = float(stream.duration * stream.time_base)
    assert abs(audio_seconds - 25 / 25) <= 1 / 25


def test_write_video_with_audio_from(tmp_path: Path) -> None:
    source = _clip_with_audio(tmp_path / "source.mp4", seconds=2.0)
    out = write_video(tmp_path / "out.mp4", _gradient_frames(12), fps=12, audio_from=source)
    assert probe(out).has_audio
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "source.mp4"]  # no temporaries left


def test_streaming_decode_keeps_memory_flat(tmp_path: Path) -> None:
    frames = _gradient_frames(1, 256, 256) * 400
    clip = write_video(tmp_path / "long.mp4", frames, fps=25, crf=30)
    frame_bytes = 256 * 256 * 3
    tracemalloc.start()
    count = 0
    for frame in iter_frames(clip):
        count += frame.shape[0] > 0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 400
    assert peak < 20 * frame_bytes, f"peak {peak / frame_bytes:.1f} frames held; the clip has 400"


def test_interrupted_writer_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")
    with pytest.raises(RuntimeError), VideoWriter(target, fps=25) as writer:
        writer.write(_gradient_frames(1)[0])
        raise RuntimeError("killed mid-run")
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_frame_folder_sorted_numerically(tmp_path: Path) -> None:
    frames = _gradient_frames(12)
    for i, frame in enumerate(frames):
        write_frame(tmp_path, i, frame)
    names = [p.name for p in list_frames(tmp_path)]
    assert names == [f"frame_{i}.png" for i in range(12)]  # frame_10 after frame_9, not after frame_1
    back = list(iter_frames(tmp_path))
    assert all(np.array_equal(a, b) for a, b in zip(frames, back, strict=True))


@pytest.mark.parametrize("bad", ["missing.mp4", "text.mp4", "truncated.mp4", "folder"])
def test_bad_video_inputs_raise_input_error(tmp_path: Path, bad: str) -> None:
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    good = write_video(tmp_path / "good.mp4", _gradient_frames(30), fps=25)
    (tmp_path / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError):
        list(iter_frames(tmp_path / bad))


def test_load_image_modes(tmp_path: Path, astronaut_path: Path) -> None:
    rgb = load_image(astronaut_path)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    grey16 = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 31)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    loaded = load_image(tmp_path / "g16.png")
    assert loaded.shape == (32, 64, 3)
    assert np.array_equal(loaded[..., 0], np.round(grey16 / 257).astype(np.uint8))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top opaque red, bottom transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    loaded = load_image(tmp_path / "rgba.png")
    assert tuple(loaded[0, 0]) == (200, 0, 0) and tuple(loaded[7, 7]) == (255, 255, 255)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.jpg")
    assert load_image(tmp_path / "grey.jpg").shape == (512, 512, 3)


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = (255, 0, 0)  # left half red
    pil = Image.fromarray(image)
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pil.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = load_image(tmp_path / "phone.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[2, 10, 0] > 200 and upright[-3, 10, 0] < 60  # the red half is now on top


def test_load_image_rejects_non_images(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(InputError, match="not a readable image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_rotated_phone_video_is_decoded_upright(tmp_path: Path) -> None:
    """Phones store portrait clips as landscape plus a display matrix; frames must come out as shown."""
    path = tmp_path / "phone.mp4"
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:, :32] = (255, 0, 0)  # stored left half red
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)
        for i in range(5):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    info = probe(path)
    assert info.rotation == 90 and (info.width, info.height) == (32, 64)
    upright = next(iter_frames(path))
    assert upright.shape == (64, 32, 3)
    # 90° counter-clockwise display rotation moves the stored left half to the bottom.
    assert upright[-5, 16, 0] > 200 and upright[5, 16, 0] < 60


def test_truncated_faststart_video_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the index at the front (faststart), a cut file still opens; the missing frames must not pass silently."""
    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i, rgb in enumerate(_gradient_frames(100, 64, 64)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with caplog.at_level("WARNING", logger="animator"):
        count = sum(1 for _ in iter_frames(cut))
    assert count < 100 and "ended after" in caplog.text and "truncated" in caplog.text
