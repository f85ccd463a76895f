"""Tiny, seeded stand-ins for the SVD-xt diffusers folder and the three StableAnimator checkpoints.

Same files, formats and module structure as the release (4 UNet levels, 2 layers per block, 64 attention
layers with 16 ID adapters, 4 ID tokens, Karras/v-prediction scheduler with SVD-xt's exact config); only
the widths shrink, so a UNet call on 16 frames at 64×64 px runs in a fraction of a second on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from animator_cli.fileio import atomic_dir, atomic_path
from animator_cli.models.face_encoder import FaceEncoder
from animator_cli.models.loading import no_progress_bars
from animator_cli.models.pose_net import PoseNet
from animator_cli.models.unet import SVD_XT_UNET_CONFIG, AnimatorUNet

CONTEXT_DIM = 64  # UNet cross_attention_dim = CLIP projection dim = face-token width (one 64-d head)

UNET_CONFIG: dict = {
    **SVD_XT_UNET_CONFIG,
    "sample_size": 8,
    "block_out_channels": [32, 64, 64, 64],
    "num_attention_heads": [1, 2, 2, 2],
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 24,
    "cross_attention_dim": CONTEXT_DIM,
}

VAE_CONFIG: dict = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "block_out_channels": [32, 32, 32, 32],
    "sample_size": 64, "scaling_factor": 0.18215, "force_upcast": True,
}

CLIP_CONFIG: dict = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "image_size": 224, "patch_size": 14, "projection_dim": CONTEXT_DIM, "hidden_act": "gelu",
}

# stabilityai/stable-video-diffusion-img2vid-xt scheduler/scheduler_config.json, verbatim.
SCHEDULER_CONFIG: dict = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.24.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}

# feature_extractor/preprocessor_config.json of SVD-xt (CLIP's 224 px preprocessing).
PREPROCESSOR_CONFIG: dict = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}

MODEL_INDEX: dict = {
    "_class_name": "StableVideoDiffusionPipeline",
    "_diffusers_version": "0.24.0.dev0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
    "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
}


def write(root: Path, seed: int) -> None:
    """Write ``root/checkpoints/SVD/`` and ``root/checkpoints/Animation/{pose_net,face_encoder,unet}.pth``."""
    root = Path(root)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetSpatioTemporalConditionModel(**UNET_CONFIG)
        vae = AutoencoderKLTemporalDecoder(**VAE_CONFIG)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_CONFIG))
        checkpoints = _animation_checkpoints(unet)

    with atomic_dir(root / "checkpoints" / "SVD") as svd:
        (svd / "model_index.json").write_text(_json(MODEL_INDEX))
        unet.save_pretrained(svd / "unet")
        vae.save_pretrained(svd / "vae")
        with no_progress_bars():
            image_encoder.save_pretrained(svd / "image_encoder")
        (svd / "scheduler").mkdir()
        (svd / "scheduler" / "scheduler_config.json").write_text(_json(SCHEDULER_CONFIG))
        (svd / "feature_extractor").mkdir()
        (svd / "feature_extractor" / "preprocessor_config.json").write_text(_json(PREPROCESSOR_CONFIG))

    for name, state_dict in checkpoints.items():
        with atomic_path(root / "checkpoints" / "Animation" / f"{name}.pth") as tmp:
            torch.save(state_dict, tmp)


def _animation_checkpoints(svd_unet: UNetSpatioTemporalConditionModel) -> dict[str, dict[str, torch.Tensor]]:
    """State dicts shaped like a trained release: the zero-initialised outputs get random weights too, so the
    pose and identity paths really change the tiny model's output."""
    pose_net = PoseNet(noise_latent_channels=UNET_CONFIG["block_out_channels"][0])
    face_encoder = FaceEncoder(cross_attention_dim=CONTEXT_DIM, clip_embeddings_dim=CLIP_CONFIG["projection_dim"])
    for layer in (pose_net.final_proj, face_encoder.fusion_model.proj_out):
        torch.nn.init.normal_(layer.weight, std=0.05)
        torch.nn.init.normal_(layer.bias, std=0.05)
    unet = AnimatorUNet.from_config(svd_unet.config)
    unet.load_state_dict(svd_unet.state_dict())
    unet.install_processors()
    with torch.no_grad():
        for name, tensor in unet.named_parameters():
            if ".processor.id_to_" in name:
                tensor.add_(torch.randn_like(tensor) * 0.05)
    return {name: {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
            for name, module in (("pose_net", pose_net), ("face_encoder", face_encoder), ("unet", unet))}


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
