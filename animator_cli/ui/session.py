"""What the web page does, without the web page: the same library calls as the CLI, on uploaded files.

Kept apart from the Gradio layout so it can be tested and reused without a browser. Every file it writes lives
under ``workdir`` (a temporary folder the server removes on exit), where uploads and results unused for ``keep``
seconds are removed (`WorkFolder`); the files a check or render reads or writes are kept while it runs.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from animator_cli.cache import StageCache
from animator_cli.check import AlignmentReport, check_alignment
from animator_cli.draft import draft_output
from animator_cli.errors import AnimatorError, InputError, classify
from animator_cli.generate import (
    GenerateResult,
    PipelineLoader,
    animate,
    check_weights,
    generate,
    lazy_pipeline,
    pose_frames,
)
from animator_cli.options import (
    DEFAULT_SEED,
    GenerateOptions,
    Runtime,
    SamplingOptions,
    generate_options,
    runtime_options,
)
from animator_cli.ui import KEEP_MINUTES
from animator_cli.ui.workfolder import WorkFolder
from animator_cli.video import load_image
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")

# (stage, done, total): a stage label, and the step counts while denoising (None otherwise).
StageProgress = Callable[[str, int | None, int | None], None]
POSE_FOLDER_FILES = (".png", ".jpg", ".jpeg", ".webp", ".json", ".npz")
_SAMPLING = SamplingOptions()
PREVIEW_FRAMES = 4


@dataclass(frozen=True)
class RenderSettings:
    """The page's generation controls; names and defaults are the CLI's (`generate_options`, `runtime_options`)."""

    resolution: str = "512x512"
    width: int | None = None  # None: the resolution preset's
    height: int | None = None
    seed: int = DEFAULT_SEED
    steps: int = _SAMPLING.steps
    face_opt: bool = False
    align: str = "global"
    pose_backend: str = "auto"
    check: str = "warn"  # animate's alignment preflight: warn, strict or off
    max_frames: int | None = None
    dtype: str | None = None  # None: fp16 on GPU, fp32 on CPU
    offload: bool = False
    vae_on_cpu: bool = False
    split_cfg: bool = False
    tile: int = _SAMPLING.tile
    decode_chunk: int = _SAMPLING.decode_chunk
    schedule: str = _SAMPLING.schedule
    reuse_features: int = _SAMPLING.reuse_features
    draft: bool = False  # the --draft preview preset (animator_cli.draft)
    identity_guard: bool | None = None  # True: --identity-guard with the video's own threshold (None: off)
    drift_lock: bool = False

    def options(self) -> GenerateOptions:
        return generate_options(resolution=self.resolution, width=self.width, height=self.height, seed=self.seed,
                                steps=self.steps, tile=self.tile, decode_chunk=self.decode_chunk,
                                face_opt=self.face_opt, schedule=self.schedule, reuse_features=self.reuse_features,
                                draft=self.draft, identity_guard=self.identity_guard, drift_lock=self.drift_lock)

    def runtime(self, device: str | None) -> Runtime:
        return runtime_options(device=device, dtype=self.dtype, offload=self.offload, vae_on_cpu=self.vae_on_cpu,
                               split_cfg=self.split_cfg)


def error_text(exc: BaseException, device: str | None = None) -> str:
    """The one line the CLI prints for ``exc`` (without its `error:` prefix), options by their names as the page
    labels them."""
    return classify(exc, device).message


class UiSession:
    """One server's state: where weights and cache are, the models loaded for the last runtime, the work folder."""

    def __init__(self, weights: WeightsHome, cache: StageCache, workdir: Path, device: str | None = None,
                 keep: float = KEEP_MINUTES * 60) -> None:
        self.weights, self.cache, self.device = weights, cache, device
        self.files = WorkFolder(workdir, keep)
        self._loaded: tuple[Runtime, PipelineLoader] | None = None

    def weights_problem(self) -> str | None:
        """What `animator animate` would say about this weights home (every missing component and the command
        that fetches them all), or None when a render can run."""
        try:
            check_weights(self.weights, Runtime(device=self.device), "auto")
        except AnimatorError as exc:
            return str(exc)
        return None

    def pipeline(self, runtime: Runtime) -> PipelineLoader:
        """The models for ``runtime``, loaded on first use and kept for the next press (one runtime at a time)."""
        if self._loaded is None or self._loaded[0] != runtime:
            self._loaded = None  # drop the old models before loading others
            self._loaded = (runtime, lazy_pipeline(self.weights, runtime))
        return self._loaded[1]

    def pose_folder(self, files: Sequence[str | Path]) -> Path:
        """An uploaded pose folder (its files arrive one by one) gathered back into one folder."""
        folder = self.files.new("poses")
        with self.files.using(*files, folder):
            for file in files:
                if Path(file).suffix.lower() in POSE_FOLDER_FILES:
                    shutil.copyfile(file, folder / Path(file).name)
        pose_frames(folder)  # an empty or foreign folder fails here, with the CLI's message
        return folder

    def pose_preview(self, poses: Path, count: int = PREVIEW_FRAMES) -> Path:
        """``count`` skeleton frames of a pose folder side by side, to look at before rendering."""
        with self.files.using(poses):
            paths = pose_frames(poses)
            picks = sorted({round(i) for i in np.linspace(0, len(paths) - 1, min(count, len(paths)))})
            frames = [load_image(paths[i]) for i in picks]
        if len({f.shape for f in frames}) > 1:
            raise InputError(f"the pose frames in {poses} have different sizes")
        path = self.files.new("previews") / "poses.png"
        Image.fromarray(np.concatenate(frames, 1)).save(path)
        return path

    def check(self, reference: Path, driving: Path, settings: RenderSettings) -> AlignmentReport:
        """`animator check`'s alignment findings for the pair, with its preview PNG (``report.preview``)."""
        with self.files.using(reference, driving):
            return check_alignment(reference, driving, weights=self.weights, cache=self.cache, align=settings.align,
                                   backend=settings.pose_backend, device=self.device, max_frames=settings.max_frames,
                                   preview=self.files.new("previews") / "preview.png")

    def render(self, reference: Path, settings: RenderSettings, *, driving: Path | None = None,
               poses: Path | None = None, progress: StageProgress | None = None) -> GenerateResult:
        """Animate ``reference`` with a driving video (`animator animate`) or a pose folder (`animator generate`).

        Every stage is cached, so a second press with the same inputs copies the cached video. The inputs and the
        result are kept until a while after it ends (`WorkFolder`), however long it takes.
        """
        if (driving is None) == (poses is None):
            raise InputError("give either a driving video or a pose folder", "upload one of them")
        report = progress or (lambda stage, done, total: None)
        options, runtime = settings.options(), settings.runtime(self.device)
        output = self.files.new("outputs") / f"{Path(reference).stem}-animated.mp4"
        output = draft_output(output) if settings.draft else output

        def step(done: int, total: int) -> None:
            report("denoising" if done < total else "writing the video", done, total)

        with self.files.using(reference, driving, poses, output):  # a fresh folder: no sweep takes it before
            report("poses, identity and models", None, None)
            common = {"weights": self.weights, "cache": self.cache, "pipeline": self.pipeline(runtime),
                      "progress": step}
            if driving is not None:
                return animate(reference, driving, output, options, runtime, align=settings.align,
                               pose_backend=settings.pose_backend, max_frames=settings.max_frames,
                               check=settings.check, **common)
            return generate(reference, poses, output, options, runtime, **common)
