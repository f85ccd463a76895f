"""The Python API: an `Animator` holds the weights, the device and the loaded models; each call returns a `Video`.

    from animator_cli import Animator

    animator = Animator(weights="~/animator-home")
    video = animator.animate("alice.png", "dance.mp4", steps=25, face_opt=True)
    video.save("alice.mp4")
    print(video.frames.shape, video.fps)

Options are keywords named as the CLI's flags (``min_guidance`` for ``--min-guidance``) with the CLI's defaults
(`animator_cli.options.generate_options`; runtime ones such as ``offload`` or ``compile`` go to the constructor,
`animator_cli.options.runtime_options`). Errors are `animator_cli.errors.AnimatorError`s whose ``kind`` says what
went wrong. The models load on the first render that needs them and stay loaded for the next calls; a result
already in the stage cache loads nothing. The CLI's `generate` and `animate` run the same functions
(`animator_cli.generate.render`, `driving_poses`, `export`).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from animator_cli.cache import StageCache
from animator_cli.generate import (
    GenerateResult,
    PipelineLoader,
    Rendered,
    driving_audio,
    driving_poses,
    export,
    lazy_pipeline,
    render,
    timeline_marks,
)
from animator_cli.options import GenerateOptions, Runtime, check_names, generate_options, runtime_options
from animator_cli.progress import Progress
from animator_cli.video import iter_frames
from animator_cli.weights.home import WeightsHome

if TYPE_CHECKING:
    from animator_cli.check.timeline import IdentityTimeline


@dataclass(frozen=True)
class Video:
    """A rendered video: ``path`` is its silent H.264 file in the stage cache, ``audio`` the file whose audio
    `save` muxes in (the driving video), ``identity`` the identity timeline when it was asked for."""

    path: Path
    fps: float
    audio: Path | None
    result: GenerateResult  # frames, size, cached or not, the UNet work counted
    identity: IdentityTimeline | None = None
    _keep: Any = field(default=None, repr=False, compare=False)  # a private cache folder kept while this lives

    @functools.cached_property
    def frames(self) -> np.ndarray:
        """The video's frames, F×H×W×3 uint8 RGB, as `save` writes them (decoded from the H.264 file, so a cached
        and a fresh render give the same array)."""
        return np.stack(list(iter_frames(self.path)))

    def save(self, path: str | Path) -> Path:
        """Write the video (with its audio) to ``path``, an .mp4 that appears whole or not at all."""
        from animator_cli.generate import check_output

        path = Path(path).expanduser()
        check_output(path, [self.path, self.audio])
        export(self.path, path, self.audio)
        return path


class Animator:
    """Renders animations with one set of weights on one device. ``weights``: the weights home (default
    ``$ANIMATOR_HOME`` or ~/.cache/animator); ``cache``: True for the default stage cache, a folder for another,
    False for none (every call renders, into a folder removed with the last video that uses it); ``runtime``:
    `runtime_options` keywords (offload, vae_on_cpu, split_cfg, checkpoint, compile, window_batch, ...)."""

    def __init__(self, weights: str | Path | None = None, device: str | None = None, dtype: str | None = None, *,
                 cache: bool | str | Path = True, **runtime: Any) -> None:
        check_names(runtime, runtime_options)
        self.weights = WeightsHome.resolve(weights)
        self.runtime: Runtime = runtime_options(device=device, dtype=dtype, **runtime)
        self._scratch = None if cache else tempfile.TemporaryDirectory(prefix="animator-")
        root = Path(self._scratch.name) if self._scratch else None if cache is True else Path(cache).expanduser()
        self.cache = StageCache(root)
        self._pipeline: PipelineLoader = lazy_pipeline(self.weights, self.runtime)

    def generate(self, reference: str | Path, poses: str | Path, *, audio_from: str | Path | None = None,
                 face_masks: str | Path | None = None, identity: bool = False, force: bool = False,
                 progress: Progress | None = None, **options: Any) -> Video:
        """Animate ``reference`` along the skeleton frames in the folder ``poses`` (from `animator extract-pose`
        or any skeleton images). ``audio_from``: a video whose audio `Video.save` muxes in; ``identity``: also
        score every frame's face against the reference (`Video.identity`); ``force``: render even if cached."""
        options = self._options(options)
        rendered = render(Path(reference), Path(poses), options, self.runtime, weights=self.weights,
                          cache=self.cache, pipeline=self._pipeline,
                          audio_from=Path(audio_from) if audio_from else None,
                          face_masks=Path(face_masks) if face_masks else None, force=self._force(force),
                          progress=progress)
        return self._video(rendered, Path(reference), identity)

    def animate(self, reference: str | Path, driving: str | Path, *, align: str = "global",
                pose_backend: str = "auto", max_frames: int | None = None, check: str = "warn",
                identity: bool = False, force: bool = False, progress: Progress | None = None,
                **options: Any) -> Video:
        """Animate ``reference`` with the motion of the ``driving`` video (or frame folder): its poses aligned to
        the reference (``align``: global, limbs or none), after the alignment check (``check``: warn, strict or
        off); the driving audio goes with the video."""
        options = self._options(options)  # bad options fail before the pose stage
        poses = driving_poses(Path(reference), Path(driving), self.runtime, weights=self.weights, cache=self.cache,
                              align=align, pose_backend=pose_backend, max_frames=max_frames,
                              force=self._force(force), progress=progress, check=check)
        rendered = render(Path(reference), poses, options, self.runtime, weights=self.weights,
                          cache=self.cache, pipeline=self._pipeline, audio_from=driving_audio(Path(driving)),
                          force=self._force(force), progress=progress, check=check)
        return self._video(rendered, Path(reference), identity)

    @staticmethod
    def _options(options: dict[str, Any]) -> GenerateOptions:
        check_names(options, generate_options)
        return generate_options(**options)

    def _force(self, force: bool) -> bool:
        return force or self._scratch is not None  # no cache: nothing is reused

    def _video(self, rendered: Rendered, reference: Path, identity: bool) -> Video:
        timeline = None
        if identity:
            from animator_cli.check.timeline import identity_timeline

            timeline = identity_timeline(rendered.video, reference, weights=self.weights, device=self.runtime.device,
                                         fps=rendered.result.fps,
                                         **timeline_marks(rendered.options, rendered.result))
        return Video(rendered.video, rendered.result.fps, rendered.result.audio_from, rendered.result, timeline,
                     self._scratch)
