"""Frames per second of `extract-pose` with the MediaPipe backend on a 512×512 clip (body + face + hands).

Run: .venv/bin/python benchmarks/pose_extract.py [--frames N]
The clip is generated: the middle person of insightface's t1.jpg (face and a raised hand visible) drifting a few
pixels per frame. Reported: the whole stage (decode, detection, tracking, smoothing, drawing, PNG writing, npz),
and detection / drawing on their own. The machine's other load is printed too, since it skews the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from animator_cli.cache import StageCache
from animator_cli.pose import extract_pose
from animator_cli.pose.draw import draw_pose
from animator_cli.pose.mediapipe_backend import MediaPipeBackend
from animator_cli.video import iter_frames, load_image, write_video
from animator_cli.weights.home import WeightsHome


def make_clip(path: Path, frames: int) -> None:
    import insightface

    photo = load_image(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")
    person = cv2.resize(photo[150:700, 300:750], (512, 512), interpolation=cv2.INTER_AREA)
    write_video(path, [np.roll(person, (i % 20) - 10, axis=1) for i in range(frames)], fps=25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames)
        print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")

        start = time.perf_counter()
        folder = extract_pose(clip, backend="mediapipe", weights=WeightsHome(Path(tmp) / "no-weights"),
                              cache=StageCache(Path(tmp) / "cache"))
        total = time.perf_counter() - start
        print(f"extract-pose (whole stage, {args.frames} frames 512x512): {args.frames / total:.1f} frames/s "
              f"({total:.2f} s)")

        frames = list(iter_frames(clip))
        backend = MediaPipeBackend()
        backend.detect(frames[0], video=True)  # model loading is not per-frame cost
        start = time.perf_counter()
        poses = [backend.detect(f, video=True) for f in frames]
        detect = time.perf_counter() - start
        found = [p[0] for p in poses if p]
        hands = sum(bool(p.scores[92:].any()) for p in found)
        faces = sum(bool(p.scores[24:92].any()) for p in found)
        print(f"  detection only: {len(frames) / detect:.1f} frames/s "
              f"(person in {len(found)}, face in {faces}, a hand in {hands} of {len(frames)} frames)")
        start = time.perf_counter()
        for pose in found:
            cv2.imwrite(str(Path(tmp) / "draw.png"), draw_pose(pose, 512, 512)[..., ::-1])
        draw = time.perf_counter() - start
        print(f"  drawing + PNG (one thread): {len(found) / draw:.1f} frames/s")
        print(f"load average after: {os.getloadavg()[0]:.2f}; output {len(list(folder.glob('frame_*.png')))} frames")


if __name__ == "__main__":
    main()
