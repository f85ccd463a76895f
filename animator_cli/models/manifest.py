"""Every state-dict key and shape of the three released checkpoints, from the full-size architecture.

Built on the meta device (no memory, no weights needed); ``animator weights manifest`` prints it in the format
of the spec's ``checkpoint-keys.tsv``, which is how key compatibility with the release is checked.
"""

from __future__ import annotations

import torch

from animator_cli.models.face_encoder import FaceEncoder
from animator_cli.models.pose_net import PoseNet
from animator_cli.models.unet import SVD_XT_UNET_CONFIG, AnimatorUNet

HEADER = "# columns: checkpoint<TAB>key<TAB>shape"


def full_size_modules() -> dict[str, torch.nn.Module]:
    """Checkpoint file name → empty full-size module (SVD-xt UNet with the ID processors installed)."""
    with torch.device("meta"):
        unet = AnimatorUNet(**SVD_XT_UNET_CONFIG)
        unet.install_processors()
        return {"pose_net.pth": PoseNet(), "face_encoder.pth": FaceEncoder(), "unet.pth": unet}


def manifest_rows() -> list[tuple[str, str, tuple[int, ...]]]:
    """(checkpoint file, key, shape) in state-dict order."""
    return [(file, key, tuple(tensor.shape))
            for file, module in full_size_modules().items() for key, tensor in module.state_dict().items()]


def format_manifest(rows: list[tuple[str, str, tuple[int, ...]]]) -> str:
    """The TSV text: a ``#`` header line, then ``file<TAB>key<TAB>shape`` with shapes as Python tuples."""
    return "\n".join([HEADER, *(f"{file}\t{key}\t{shape}" for file, key, shape in rows)]) + "\n"
