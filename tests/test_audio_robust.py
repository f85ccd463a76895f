"""Audio that AAC will not take as it is gets resampled; audio that cannot be decoded is dropped with one
warning, known before generation starts."""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import clip_with_audio, clip_with_pcm_audio
from PIL import Image

from animator_cli.generate import generate
from animator_cli.options import generate_options
from animator_cli.video import mux_audio, plan_audio, probe, write_video


@pytest.fixture
def silent(tmp_path: Path) -> Path:
    """A 1-second generated video (10 frames at 10 fps), as generation leaves it in the cache."""
    return write_video(tmp_path / "silent.mp4", [np.full((64, 64, 3), 20 * i, np.uint8) for i in range(10)], 10)


def _audio(path: Path) -> tuple[str, int, str, float]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        context = stream.codec_context
        return context.name, context.sample_rate, context.layout.name, samples / context.sample_rate


def _garbage_audio(path: Path, codec: str = "aac", good_seconds: float = 0.0) -> Path:
    """An .mkv whose audio track is ``good_seconds`` of real ``codec`` audio, then packets of random bytes."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = out.add_stream(codec, rate=48_000, layout="stereo")
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        pts = 0
        tone = (0.3 * np.sin(np.arange(1024) * 2 * np.pi * 440 / 48_000)).astype(np.float32)
        while pts < good_seconds * 48_000:
            chunk = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            chunk.sample_rate, chunk.pts = 48_000, pts
            out.mux(audio.encode(chunk))
            pts += 1024
        packets = [p for p in audio.encode(None)]
        out.mux(packets)
        for _ in range(40):
            packet = av.Packet(rng.integers(0, 256, 301, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = audio, pts, pts, Fraction(1, 48_000)
            out.mux(packet)
            pts += 1024
    return path


@pytest.mark.parametrize(("layout", "rate", "expect_layout", "expect_rate"), [
    ("mono", 22_050, "mono", 22_050),  # .mkv keeps no channel order: "1 channels" is no AAC layout
    ("5.1", 44_100, "5.1", 44_100),  # 6 channels
    ("hexagonal", 48_000, "5.1", 48_000),  # an unusual 6-channel layout: stored as "6 channels"
    ("2.1", 48_000, "3.0", 48_000),
    ("octagonal", 44_100, "7.1", 44_100),
    ("mono", 37_000, "mono", 44_100),  # a rate AAC lacks: the next one up
    ("stereo", 192_000, "stereo", 96_000),  # above AAC's range: its highest
])
def test_pcm_mkv_audio_is_resampled_to_what_aac_takes(tmp_path: Path, silent: Path, layout, rate, expect_layout,
                                                     expect_rate) -> None:
    source = clip_with_pcm_audio(tmp_path / "source.mkv", layout, rate)
    plan = plan_audio(source)
    assert (plan.layout, plan.rate) == (expect_layout, expect_rate)
    mux_audio(silent, source, tmp_path / "out.mp4")
    codec, out_rate, out_layout, seconds = _audio(tmp_path / "out.mp4")
    assert (codec, out_rate, out_layout) == ("aac", expect_rate, expect_layout)
    assert seconds == pytest.approx(1.0, abs=0.05)  # trimmed to the video (plus AAC's priming)
    assert probe(tmp_path / "out.mp4").frame_count == 10


def test_undecodable_audio_is_dropped_with_one_warning(tmp_path: Path, silent: Path, caplog) -> None:
    source = _garbage_audio(tmp_path / "broken.mkv")
    with caplog.at_level(logging.INFO, logger="animator"):
        assert plan_audio(source) is None
        caplog.clear()
        mux_audio(silent, source, tmp_path / "out.mp4")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "cannot decode the audio of" in caplog.text and "without sound" in caplog.text
    info = probe(tmp_path / "out.mp4")
    assert not info.has_audio and info.frame_count == 10


def test_audio_damaged_midway_keeps_the_good_part(tmp_path: Path, silent: Path, caplog) -> None:
    source = _garbage_audio(tmp_path / "half.mkv", good_seconds=0.5)
    with caplog.at_level(logging.WARNING, logger="animator"):
        mux_audio(silent, source, tmp_path / "out.mp4")
    assert "is damaged after" in caplog.text
    _, _, _, seconds = _audio(tmp_path / "out.mp4")
    assert 0.4 < seconds < 0.8


def test_generate_knows_about_unusable_audio_before_generating(tiny_home, tmp_path: Path, astronaut_path: Path,
                                                               caplog) -> None:
    from animator_cli.cache import StageCache
    from animator_cli.generate import load_pipeline
    from animator_cli.options import Runtime

    poses = tmp_path / "poses"
    poses.mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 30 * i, np.uint8)).save(poses / f"frame_{i}.png")
    warned_before = []

    def loader():
        warned_before.append("cannot decode the audio" in caplog.text)
        return load_pipeline(tiny_home, Runtime(device="cpu"))

    with caplog.at_level(logging.INFO, logger="animator"):
        result = generate(astronaut_path, poses, tmp_path / "out.mp4", generate_options(width=64, height=64, steps=1),
                          Runtime(device="cpu"), weights=tiny_home, cache=StageCache(tmp_path / "cache"),
                          pipeline=loader, audio_from=_garbage_audio(tmp_path / "broken.mkv"))
    assert warned_before == [True] and result.audio_from is None
    assert caplog.text.count("cannot decode the audio") == 1
    assert not probe(tmp_path / "out.mp4").has_audio


def test_cli_generate_with_pcm_mkv_audio(cli, tiny_home, tmp_path: Path, astronaut_path: Path) -> None:
    poses = tmp_path / "poses"
    poses.mkdir()
    for i in range(4):
        Image.fromarray(np.full((64, 64, 3), 30 * i, np.uint8)).save(poses / f"frame_{i}.png")
    source = clip_with_pcm_audio(tmp_path / "talk.mkv", "5.1", 22_050)
    result = cli("--weights", tiny_home.root, "--json", "generate", astronaut_path, poses, "-o", tmp_path / "o.mp4",
                 "--width", 64, "--height", 64, "--steps", 1, "--fps", 10, "--audio-from", source)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["audio_from"] == str(source)
    assert _audio(tmp_path / "o.mp4")[:3] == ("aac", 22_050, "5.1")


def test_silent_driving_clip_still_logs_once(tmp_path: Path, silent: Path, caplog) -> None:
    clip = clip_with_audio(tmp_path / "with.mp4", 10, 10)
    assert plan_audio(clip) is not None
    with caplog.at_level(logging.INFO, logger="animator"):
        assert plan_audio(silent) is None
    assert "has no audio" in caplog.text
