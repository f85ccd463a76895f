"""Random-weight StableAnimator networks for benchmarks: full (release) size or make-tiny size, built on a device.

Full size is the SVD-xt architecture (UNet 1.5 B parameters with the ID processors, temporal VAE, CLIP ViT-H/14),
the release's PoseNet and face encoder, and the glintr100 iresnet100 of the HJB loss; ``tiny=True`` gives the
widths of `animator weights make-tiny` (animator_cli.weights.tiny), so a benchmark's code path can be checked on a
CPU in seconds. Nothing is downloaded or read from disk; weights are random (timings and memory do not depend on
the values), created directly on ``device`` (no host copy of a 3 GB UNet).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from animator_cli.hjb import IResNet
from animator_cli.models.face_encoder import FaceEncoder
from animator_cli.models.loading import AnimatorModels
from animator_cli.models.pose_net import PoseNet
from animator_cli.models.unet import SVD_XT_UNET_CONFIG, AnimatorUNet
from animator_cli.sampling.conditioning import cast_module
from animator_cli.weights.tiny import arcface as tiny_arcface
from animator_cli.weights.tiny import svd as tiny_svd

# stabilityai/stable-video-diffusion-img2vid-xt vae/config.json (architecture fields)
SVD_VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
                  "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
                  "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": True}
# stabilityai/stable-video-diffusion-img2vid-xt image_encoder/config.json (CLIP ViT-H/14 vision tower)
SVD_CLIP_CONFIG = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                   "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "projection_dim": 1024,
                   "hidden_act": "gelu", "layer_norm_eps": 1e-5}


def _finish(module: torch.nn.Module, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """In ``dtype`` on ``device`` (buffers made with torch.Tensor() are built on the CPU), eval mode, frozen."""
    cast_module(module, dtype)
    return module.to(device).eval().requires_grad_(False)


def build_unet(device: torch.device | str, dtype: torch.dtype, tiny: bool = False) -> AnimatorUNet:
    with torch.device(device):
        unet = AnimatorUNet.from_config(tiny_svd.UNET_CONFIG if tiny else SVD_XT_UNET_CONFIG)
        unet.install_processors()
    return _finish(unet, device, dtype)


def build_vae(device: torch.device | str, dtype: torch.dtype, tiny: bool = False) -> AutoencoderKLTemporalDecoder:
    with torch.device(device):
        vae = AutoencoderKLTemporalDecoder(**(tiny_svd.VAE_CONFIG if tiny else SVD_VAE_CONFIG))
    return _finish(vae, device, dtype)


def build_arcface(device: torch.device | str, dtype: torch.dtype = torch.float32, tiny: bool = False) -> IResNet:
    """glintr100's iresnet100 (or the tiny stand-in's layout), random, frozen."""
    with torch.device(device):
        arcface = IResNet(tiny_arcface.CONFIG) if tiny else IResNet()
    return _finish(arcface, device, dtype)


def build_models(device: torch.device | str, dtype: torch.dtype, tiny: bool = False) -> AnimatorModels:
    """Everything `AnimationPipeline` and a training step need, random, on ``device`` in ``dtype``."""
    unet = build_unet(device, dtype, tiny)
    clip = tiny_svd.CLIP_CONFIG if tiny else SVD_CLIP_CONFIG
    with torch.device(device):
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip))
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
        face_encoder = FaceEncoder(cross_attention_dim=unet.config.cross_attention_dim,
                                   clip_embeddings_dim=clip["projection_dim"])
    return AnimatorModels(unet=unet, vae=build_vae(device, dtype, tiny),
                          image_encoder=_finish(image_encoder, device, dtype),
                          scheduler=EulerDiscreteScheduler.from_config(tiny_svd.SCHEDULER_CONFIG),
                          pose_net=_finish(pose_net, device, dtype), face_encoder=_finish(face_encoder, device, dtype))
