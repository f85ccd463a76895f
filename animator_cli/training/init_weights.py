"""Starting weights for a run that trains from SVD-xt rather than from the released StableAnimator checkpoints.

The reference's default (command_train.sh without ``--finetune_mode``): the SVD UNet with the ID projections
initialised as copies of each cross-attention's to_k/to_v (``install_processors``), a fresh PoseNet and a
fresh face encoder (both with zero-initialised outputs, so step 0 is exactly SVD). They are written once as
``RUN/init/{pose_net,face_encoder,unet}.pth`` in the released format, and then loaded by the same strict
``load_models`` as every other checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPVisionConfig

from animator_cli.errors import WeightsError
from animator_cli.fileio import atomic_dir
from animator_cli.models.face_encoder import FaceEncoder
from animator_cli.models.pose_net import PoseNet
from animator_cli.models.unet import AnimatorUNet
from animator_cli.weights.home import WeightsHome

UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


def svd_initial_checkpoint(home: WeightsHome, folder: Path, seed: int) -> Path:
    """``folder`` holding the three initial .pth files (written on first use, reused afterwards)."""
    folder = Path(folder)
    if all((folder / f"{name}.pth").is_file() for name in ("pose_net", "face_encoder", "unet")):
        return folder
    svd_dir = home.require(home.svd_dir / "model_index.json", "SVD-xt diffusers folder",
                           "animator weights download --only svd").parent
    variant = None if (svd_dir / "unet" / UNET_WEIGHTS).exists() else "fp16"
    try:
        unet = AnimatorUNet.from_pretrained(str(svd_dir), subfolder="unet", variant=variant, local_files_only=True,
                                            torch_dtype=torch.float32)
        clip = CLIPVisionConfig.from_pretrained(svd_dir / "image_encoder", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot load the SVD UNet from {svd_dir}: {exc}",
                           "animator weights download --only svd") from exc
    unet.install_processors()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
        face_encoder = FaceEncoder(cross_attention_dim=unet.config.cross_attention_dim,
                                   clip_embeddings_dim=clip.projection_dim)
    with atomic_dir(folder) as tmp:
        for name, module in (("pose_net", pose_net), ("face_encoder", face_encoder), ("unet", unet)):
            torch.save({k: v.detach().contiguous() for k, v in module.state_dict().items()}, tmp / f"{name}.pth")
    return folder
