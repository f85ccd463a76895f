"""The validation video written during training, through the same AnimationPipeline as ``animator generate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from animator_cli.face import extract_identity
from animator_cli.options import SamplingOptions
from animator_cli.sampling.fit import Fit, fit_image
from animator_cli.sampling.pipeline import AnimationPipeline
from animator_cli.training.config import TrainConfig
from animator_cli.training.dataset import IDENTITY_FILE, DataReport
from animator_cli.video import list_frames, load_image, write_video
from animator_cli.weights.home import WeightsHome

VALIDATION_FPS = 7  # StableAnimator's conditioning fps; the reference wrote its GIFs at this rate too
VALIDATION_SEED = 23123134  # fixed, so successive validation videos differ only by the weights


def validation_inputs(config: TrainConfig, report: DataReport, weights: WeightsHome
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference H×W×3, poses F×H×W×3, identity (512,)) fitted to the validation size.

    Defaults: frame 0 of the first usable training clip, its cached identity, and its next frames' poses."""
    v = config.validation
    clip = next(c for bucket in report.clips for c in bucket)
    if v.reference:
        reference = load_image(Path(v.reference))
        identity = extract_identity(reference, weights, allow_no_face=True).embedding
    else:
        reference = load_image(clip.frames[0])
        with np.load(clip.path / IDENTITY_FILE) as data:
            identity = np.asarray(data["embeddings"][0], np.float32)
    pose_files = list_frames(Path(v.poses)) if v.poses else [clip.path / "poses" / f.name for f in clip.frames[1:]]
    poses = np.stack([fit_image(load_image(p), v.width, v.height, Fit.COVER, pose=True)
                      for p in pose_files[:v.num_frames]])
    return fit_image(reference, v.width, v.height, Fit.COVER), poses, identity


def validation_video(models: object, config: TrainConfig, report: DataReport, weights: WeightsHome, path: Path,
                     device: torch.device) -> Path:
    """Animate the validation inputs with the current weights and write ``path`` (mp4)."""
    reference, poses, identity = validation_inputs(config, report, weights)
    v = config.validation
    tile = min(16, len(poses))
    options = SamplingOptions(steps=v.steps, min_guidance=v.guidance, max_guidance=v.guidance, tile=max(tile, 2),
                              overlap=min(4, max(tile, 2) - 1))
    pipeline = AnimationPipeline(models, device, dtype=torch.float32)
    generator = torch.Generator(device=device).manual_seed(VALIDATION_SEED)
    frames = pipeline(reference, poses, identity, options, generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, list(frames), fps=VALIDATION_FPS)
    return path
