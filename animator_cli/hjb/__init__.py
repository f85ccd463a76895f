"""HJB face optimisation (`--face-opt`): identity refinement of the denoised estimate with a frozen torch ArcFace."""

from animator_cli.hjb.arcface import Box, face_crops, load_arcface
from animator_cli.hjb.boxes import fit_box, mask_face_boxes, pose_face_boxes
from animator_cli.hjb.build import build_refiner
from animator_cli.hjb.iresnet import IResNet, IResNetConfig, iresnet_from_state_dict
from animator_cli.hjb.refine import FaceRefiner, StepRecord, reference_face_crop

__all__ = [
    "Box", "FaceRefiner", "IResNet", "IResNetConfig", "StepRecord",
    "build_refiner", "face_crops", "fit_box", "iresnet_from_state_dict", "load_arcface", "mask_face_boxes",
    "pose_face_boxes", "reference_face_crop",
]
