"""Assembling the face refiner of one generation: the reference face, the frames' face boxes, the ArcFace network."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from animator_cli.distributed import Ranks
from animator_cli.errors import InputError, option_error
from animator_cli.face import FaceIdentity
from animator_cli.hjb.arcface import load_arcface
from animator_cli.hjb.boxes import fit_box, mask_face_boxes, pose_face_boxes, template_box
from animator_cli.hjb.refine import FaceRefiner, reference_face_crop
from animator_cli.options import FaceOptOptions
from animator_cli.sampling.fit import Fit
from animator_cli.weights.home import WeightsHome

if TYPE_CHECKING:
    import torch


def build_refiner(reference: np.ndarray, reference_size: tuple[int, int], identity: FaceIdentity, poses: Path,
                  num_frames: int, options: FaceOptOptions, *, fit: Fit, steps: int, chunk: int,
                  weights: WeightsHome, masks: Path | None = None, ranks: Ranks | None = None,
                  device: str | torch.device = "cpu") -> FaceRefiner:
    """The refiner for ``reference`` (already fitted to the output size; ``reference_size`` = (w, h) of the
    original, in which the face stage's ``identity.box`` is given) animated along the pose folder ``poses``.

    Frame boxes come from ``masks`` (a folder of frame_<i>.png) when given, else from the pose folder's
    keypoints.npz; both go through the same fit as the frames they describe. The reference is framed by the same
    convention as the frames (`boxes`): its detector box with masks, else the ArcFace template box of its five
    keypoints. ``device``: where the VAE decodes during the refinement (ArcFace runs there).
    """
    height, width = reference.shape[:2]
    if not identity.found:
        raise InputError("face_opt needs a face in the reference image, and none was found",
                         "use a reference photo with a visible face, or turn face_opt off", option="face_opt")
    face = tuple(float(v) for v in identity.box) if masks is not None else template_box(identity.landmarks)
    box = None if face is None else fit_box(face, reference_size, width, height, fit)
    if box is None:
        raise option_error("fit", fit.value, f"puts the reference face outside the {width}×{height} output",
                           "use fit contain, or turn face_opt off")
    if masks is not None:
        boxes = mask_face_boxes(masks, num_frames, width, height, fit)
    else:
        boxes = pose_face_boxes(poses, num_frames, width, height, fit)
    return FaceRefiner(load_arcface(weights, device), reference_face_crop(reference, box), boxes, options, steps, chunk,
                       ranks)
