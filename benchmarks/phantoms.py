"""How often the pose stage sees a person where there is none, and keeps the people that are there (MediaPipe).

Run: .venv/bin/python benchmarks/phantoms.py
Clips of 10 frames at 256×256, 10 fps, tracked exactly as `extract-pose` does (`detect_track`):
- no person: windows panning across packaged photos without people (skimage's coffee, brick, grass, gravel, color,
  rocket, cat, motorcycle; gradio's lion, tower, cheetah) at several sizes, steps and heights, and one of noise;
- people: skimage's astronaut and the tests' full-body figure drifting sideways, rotated up to 45°, placed small,
  blurred and cropped; the cameraman; Grace Hopper (matplotlib); crops of insightface's t1.jpg.
Prints, per kind, the clips with any frame detected and the frames detected. docs/pose.md quotes the result.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from media import full_body_figure  # noqa: E402

from animator_cli.pose.extract import detect_track  # noqa: E402
from animator_cli.pose.mediapipe_backend import MediaPipeBackend  # noqa: E402
from animator_cli.video import load_image, write_video  # noqa: E402

FRAMES, SIDE = 10, 256


def _pans(image: np.ndarray, windows: tuple[int, ...], steps: tuple[int, ...]) -> Iterator[list[np.ndarray]]:
    height, width = image.shape[:2]
    for window in (w for w in windows if w <= min(height, width)):
        for step in (s for s in steps if (FRAMES - 1) * s + window <= width):
            for top in (0, (height - window) // 2, height - window):
                yield [cv2.resize(np.ascontiguousarray(image[top:top + window, i * step:i * step + window]),
                                  (SIDE, SIDE)) for i in range(FRAMES)]


def no_people() -> Iterator[list[np.ndarray]]:
    import gradio
    import skimage

    skimage_data, gradio_data = Path(skimage.__file__).parent / "data", Path(gradio.__file__).parent / "media_assets"
    yield from _pans(load_image(skimage_data / "coffee.png"), (180, 224, 288, 360), (15, 22, 26))
    for name in ("brick.png", "grass.png", "gravel.png", "color.png", "rocket.jpg", "chelsea.png",
                 "motorcycle_left.png"):
        yield from _pans(load_image(skimage_data / name), (200, 300), (12, 25))
    for name in ("lion.jpg", "tower.jpg", "cheetah.jpg"):
        yield from _pans(load_image(gradio_data / "images" / name), (220, 330), (14,))
    yield list(np.random.default_rng(7).integers(0, 256, (FRAMES, SIDE, SIDE, 3), dtype=np.uint8))


def _drift(image: np.ndarray) -> list[np.ndarray]:
    return [np.roll(image, 5 * i, axis=1) for i in range(FRAMES)]


def _rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderValue=(128, 128, 128))


def _placed(image: np.ndarray, scale: float, top: int | None = None) -> np.ndarray:
    canvas = np.full((512, 512, 3), 120, np.uint8)
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    height, width = small.shape[:2]
    top = 512 - height if top is None else top
    canvas[top:top + height, 100:100 + width] = small[:512 - top, :412]
    return canvas


def people() -> Iterator[list[np.ndarray]]:
    import insightface
    import matplotlib
    import skimage

    data = Path(skimage.__file__).parent / "data"
    astronaut, camera = load_image(data / "astronaut.png"), load_image(data / "camera.png")
    figure = full_body_figure(astronaut)
    grace = load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    group = load_image(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")
    for degrees in (15, 30, 45, -30):
        yield _drift(_rotated(astronaut, degrees))
        yield _drift(_rotated(figure, degrees))
    for scale in (0.7, 0.85):
        yield _drift(_placed(astronaut, scale))
        yield _drift(_placed(figure, scale, 20))
    yield _drift(_placed(figure, 0.6, 100))
    yield from (_drift(np.ascontiguousarray(crop)) for crop in (astronaut[:300], astronaut[:, :380],
                                                                 camera[50:450, 50:450], camera[:, ::-1],
                                                                 grace[100:500, 50:450]))
    yield _drift(_placed(grace, 0.5, 200))
    yield from (_drift(np.ascontiguousarray(group[100:800, x:x + 330])) for x in (200, 450, 700, 950))
    yield _drift(cv2.resize(figure[0:330, 100:412], (512, 512)))
    yield _drift(np.clip(figure.astype(int) * 1.3, 0, 255).astype(np.uint8))
    yield _drift(cv2.GaussianBlur(figure, (0, 0), 2))


def detected(frames: list[np.ndarray], folder: Path) -> int:
    clip = folder / "clip.mp4"
    write_video(clip, frames, fps=10)
    backend = MediaPipeBackend()
    try:
        return int(detect_track(clip, backend, frames[0].shape[1::-1], 10.0).present.sum())
    finally:
        backend.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for kind, clips in (("no person", no_people()), ("people", people())):
            counts = [detected(frames, Path(tmp)) for frames in clips]
            print(f"{kind}: {len(counts)} clips, {sum(c > 0 for c in counts)} with a detection, "
                  f"{sum(counts)} of {FRAMES * len(counts)} frames detected", flush=True)


if __name__ == "__main__":
    main()
