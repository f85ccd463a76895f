"""Put the audio of a source video under a generated video, trimmed to the video's length.

The audio is re-encoded to AAC so it can be cut at the exact sample where the video ends and so
any source codec works in mp4; the video stream is copied untouched. Audio AAC cannot take as it is
(PCM in .mkv often has no channel order, rates such as 37 kHz or 192 kHz) is resampled to a layout and rate it
takes. `plan_audio` checks all this by decoding the start of the track, so callers can learn before hours of
generation that a track is unusable: then the video is written without sound, with one warning line.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import av

from animator_cli.errors import InputError
from animator_cli.fileio import atomic_path
from animator_cli.video.probe import open_video

log = logging.getLogger("animator")
_AAC_RATES = sorted(av.codec.Codec("aac", "w").audio_rates or [48_000])
# The usual layout for a channel count, for tracks that give a count but no channel order.
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


@dataclass(frozen=True)
class AudioPlan:
    """How a source's first audio track becomes AAC: the layout and sample rate the encoder is opened with."""

    layout: str
    rate: int


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


def _aac_opens(layout: str, rate: int) -> bool:
    context = av.CodecContext.create("aac", "w")
    try:
        context.layout, context.sample_rate, context.format = layout, rate, "fltp"
        context.open()
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def _target(context: av.audio.codeccontext.AudioCodecContext) -> AudioPlan:
    """The source's own layout and rate where AAC takes them, else the nearest it takes."""
    rate = context.sample_rate or 48_000
    if rate not in _AAC_RATES:
        rate = next((r for r in _AAC_RATES if r >= rate), _AAC_RATES[-1])
    channels = len(context.layout.channels) if context.layout else 2
    for layout in (context.layout.name if context.layout else "stereo", _DEFAULT_LAYOUTS.get(channels), "stereo"):
        if layout and _aac_opens(layout, rate):
            return AudioPlan(layout, rate)
    raise InputError(f"the AAC encoder accepts no stereo audio at {rate} Hz")  # a broken PyAV build


def _plan(source: av.container.InputContainer, path: Path) -> AudioPlan | None:
    if not source.streams.audio:
        log.info("%s has no audio; writing the video without sound", path)
        return None
    stream = source.streams.audio[0]
    try:
        decodes = next(iter(source.decode(stream)), None) is not None
    except av.error.FFmpegError as exc:
        log.warning("cannot decode the audio of %s (%s); writing the video without sound", path, exc.strerror or exc)
        return None
    if not decodes:
        log.warning("the audio track of %s holds no sound; writing the video without sound", path)
        return None
    return _target(stream.codec_context)


def plan_audio(audio_source: Path) -> AudioPlan | None:
    """How ``audio_source``'s audio will be muxed, checked by decoding its start; None (logged) without usable
    audio. Cheap: call it before generating, so an unusable track is reported at once."""
    source = _open_audio_source(audio_source)
    try:
        return _plan(source, Path(audio_source))
    finally:
        source.close()


def mux_audio(video: Path, audio_source: Path, output: Path, bitrate: int = 192_000) -> Path:
    """Write ``output``: the video stream of ``video`` plus ``audio_source``'s first audio track.

    A source without usable audio gives a plain copy of ``video`` (logged), so `animate` works on silent clips.
    """
    plan = plan_audio(audio_source)
    if plan is None:
        with atomic_path(output) as tmp:
            shutil.copyfile(video, tmp)
        return Path(output)
    source = _open_audio_source(audio_source)  # afresh: decoding starts exactly as it always has
    try:
        with open_video(video) as vin, atomic_path(output) as tmp:
            _remux(vin, source, tmp, plan, bitrate, Path(audio_source))
    finally:
        source.close()
    return Path(output)


def _remux(vin: av.container.InputContainer, source: av.container.InputContainer, tmp: Path, plan: AudioPlan,
           bitrate: int, path: Path) -> None:
    vstream = vin.streams.video[0]
    ain = source.streams.audio[0]
    end = _video_duration(vstream)
    rate, layout = plan.rate, plan.layout
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
        try:
            for frame in source.decode(ain):
                for chunk in resampler.resample(frame):
                    chunk.pts = None
                    fifo.write(chunk)
                remaining = _drain(fifo, aout, out, remaining, final=False)
                if remaining <= 0:
                    break
        except av.error.FFmpegError as exc:  # damaged further on: keep the sound decoded so far
            log.warning("the audio of %s is damaged after %.1f s (%s); the rest of the video is silent",
                        path, end - remaining / rate, exc.strerror or exc)
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
