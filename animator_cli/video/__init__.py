"""Video and image I/O on PyAV and Pillow: streaming decode, H.264 encode, audio muxing, frame folders."""

from animator_cli.video.audio import AudioPlan, mux_audio, plan_audio
from animator_cli.video.frames import iter_frames, list_frames, write_frame
from animator_cli.video.images import MAX_PIXELS, MIN_SIDE, check_min_size, load_image
from animator_cli.video.probe import VideoInfo, probe
from animator_cli.video.writer import VideoWriter, check_fps, write_video

__all__ = [
    "MAX_PIXELS", "MIN_SIDE", "AudioPlan", "VideoInfo", "VideoWriter", "check_fps", "check_min_size",
    "iter_frames", "list_frames", "load_image", "mux_audio", "plan_audio", "probe",
    "write_frame", "write_video",
]
