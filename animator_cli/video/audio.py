"""Put the audio of a source video under a generated video, trimmed to the video's length.

The audio is re-encoded to AAC so it can be cut at the exact sample where the video ends and so
any source codec works in mp4; the video stream is copied untouched.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import av

from animator_cli.errors import InputError
from animator_cli.fileio import atomic_path
from animator_cli.video.probe import open_video

log = logging.getLogger("animator")


def _open_audio_source(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio source {path} does not exist")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        raise InputError(f"audio source {path} is not a readable media file ({exc.strerror or exc})") from exc


def _video_duration(stream: av.video.stream.VideoStream) -> float:
    frames = stream.frames
    rate = stream.average_rate or stream.guessed_rate
    if frames and rate:
        return frames / float(rate)
    return float(stream.duration * stream.time_base)


def mux_audio(video: Path, audio_source: Path, output: Path, bitrate: int = 192_000) -> Path:
    """Write ``output``: the video stream of ``video`` plus ``audio_source``'s first audio track.

    A source without audio gives a plain copy of ``video`` (logged), so `animate` works on silent clips.
    """
    source = _open_audio_source(audio_source)
    try:
        if not source.streams.audio:
            log.info("%s has no audio; writing the video without sound", audio_source)
            with atomic_path(output) as tmp:
                shutil.copyfile(video, tmp)
            return Path(output)
        with open_video(video) as vin, atomic_path(output) as tmp:
            _remux(vin, source, tmp, bitrate)
    finally:
        source.close()
    return Path(output)


def _remux(vin: av.container.InputContainer, source: av.container.InputContainer, tmp: Path, bitrate: int) -> None:
    vstream = vin.streams.video[0]
    ain = source.streams.audio[0]
    end = _video_duration(vstream)
    rate = ain.codec_context.sample_rate or 48_000
    layout = ain.codec_context.layout.name if ain.codec_context.layout else "stereo"
    with av.open(str(tmp), mode="w", format="mp4") as out:
        vout = out.add_stream_from_template(vstream)
        aout = out.add_stream("aac", rate=rate, layout=layout)
        aout.bit_rate = bitrate
        for packet in vin.demux(vstream):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)

        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        fifo = av.AudioFifo()
        remaining = int(round(end * rate))  # samples still wanted
        for frame in source.decode(ain):
            for chunk in resampler.resample(frame):
                chunk.pts = None
                fifo.write(chunk)
            remaining = _drain(fifo, aout, out, remaining, final=False)
            if remaining <= 0:
                break
        for chunk in resampler.resample(None):
            chunk.pts = None
            fifo.write(chunk)
        _drain(fifo, aout, out, remaining, final=True)
        out.mux(aout.encode(None))


def _drain(fifo: av.AudioFifo, stream: av.audio.stream.AudioStream, out: av.container.OutputContainer,
           remaining: int, final: bool) -> int:
    """Encode whole encoder frames from the fifo, never past ``remaining`` samples; returns what is left."""
    size = stream.codec_context.frame_size or 1024
    while remaining > 0 and (fifo.samples >= size or (final and fifo.samples > 0)):
        frame = fifo.read(min(size, remaining, fifo.samples))
        remaining -= frame.samples
        out.mux(stream.encode(frame))
    return remaining
