"""One training step's maths (spec §4 steps 1-11): encode, noise, drop conditions, predict, weigh the error.

The conditioning comes from the functions the sampler uses (``animator_cli.sampling.conditioning``): the
CLIP embedding (antialiased 224 px + CLIP mean/std), the noise-augmented reference latent, the face-token
context and the added time ids. Train/inference mismatches of the reference fixed here (spec §7):

* a dropped CLIP token zeroes the whole context (CLIP and face tokens), exactly the sampler's unconditional
  context. In the reference the face tokens stayed, but a zero CLIP token already silences the ID branch
  through its normalisation, so the forward pass is unchanged and the two now agree by construction;
* a sample whose CLIP token AND reference latent are dropped also loses its pose (``drop_pose_when_unconditional``),
  so it is exactly the sampler's unconditional branch (no pose, zero context, zero latent);
* the reference latent is the distribution's mode, as at inference (the reference trained on a sample);
* drops are multiplications by 0/1 masks, so every trainable parameter takes part in every step (no DDP
  unused-parameter errors) and ranks draw different masks (their generators are seeded per rank).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from animator_cli.sampling.conditioning import added_time_ids, build_context, clip_embedding, reference_latent
from animator_cli.sampling.schedule import c_in, c_noise
from animator_cli.training.config import ConditioningConfig
from animator_cli.training.loss import denoising_loss
from animator_cli.training.noise import sample_sigmas


@dataclass
class DropMasks:
    """Per-sample booleans (B,): which conditions are dropped."""

    image: torch.Tensor
    latent: torch.Tensor
    pose: torch.Tensor


def dropout_masks(r: torch.Tensor, cond: ConditioningConfig) -> DropMasks:
    """Drops from one uniform draw per sample, in the reference's bands: image if r < p_image; latent if r falls
    in a band of width p_latent overlapping the image band by p_both; pose with both (when configured)."""
    image = r < cond.drop_image
    low = cond.drop_image - cond.drop_both
    latent = (r >= low) & (r < low + cond.drop_latent)
    pose = image & latent if cond.drop_pose_when_unconditional else torch.zeros_like(image)
    return DropMasks(image, latent, pose)


@torch.no_grad()
def encode_frames(vae: torch.nn.Module, frames: torch.Tensor, generator: torch.Generator,
                  chunk: int = 16) -> torch.Tensor:
    """Scaled latents (B, F, 4, h, w) of frames (B, F, 3, H, W) in [-1, 1]: a sample of the posterior × 0.18215."""
    batch, count = frames.shape[:2]
    param = next(vae.parameters())
    flat = frames.flatten(0, 1).to(param.device, param.dtype)
    latents = torch.cat([vae.encode(flat[i:i + chunk]).latent_dist.sample(generator)
                         for i in range(0, len(flat), chunk)])
    return (latents.float() * vae.config.scaling_factor).view(batch, count, *latents.shape[1:])


def training_loss(models: object, batch: dict[str, torch.Tensor], cond: ConditioningConfig,
                  generator: torch.Generator, rank: int = 0, world_size: int = 1,
                  autocast=None) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one micro-batch and a few numbers to log. ``models`` has unet, vae, image_encoder,
    pose_net, face_encoder (unwrapped or DDP-wrapped); ``autocast`` is a context factory for the networks."""
    device = batch["pixel_values"].device
    frames, reference = batch["pixel_values"], batch["reference"]
    size = len(frames)
    latents = encode_frames(models.vae, frames, generator)
    clip = clip_embedding(models.image_encoder, reference)
    ref_latent = reference_latent(models.vae, reference, cond.noise_aug, generator).to(device)

    sigma = sample_sigmas(size, generator, rank, world_size, device=device)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(device)
    sigma5 = sigma.view(-1, 1, 1, 1, 1)
    noisy = latents + sigma5 * noise
    drops = dropout_masks(torch.rand(size, generator=generator, device=generator.device).to(device), cond)

    keep_latent = (~drops.latent).float().view(-1, 1, 1, 1, 1)
    unet_input = torch.cat([noisy * c_in(sigma5), (ref_latent[:, None] * keep_latent).expand_as(latents)], dim=2)
    time_ids = added_time_ids(cond.fps, cond.motion_bucket, cond.noise_aug).to(device).repeat(size, 1)
    with autocast() if autocast else contextlib.nullcontext():
        context = build_context(models.face_encoder, clip, batch["identity"])
        context = context * (~drops.image).to(context.dtype).view(-1, 1, 1)
        pose = models.pose_net(batch["pose_pixels"])  # (B·F, C0, h, w)
        keep_pose = (~drops.pose).to(pose.dtype).repeat_interleave(frames.shape[1]).view(-1, 1, 1, 1)
        prediction = models.unet(unet_input, c_noise(sigma), context, time_ids, pose_latents=pose * keep_pose)
    loss = denoising_loss(prediction, noisy, latents, sigma, batch.get("face_masks"), cond.face_weight)
    stats = {"sigma_mean": float(sigma.mean()), "drop_image": float(drops.image.float().mean()),
             "drop_latent": float(drops.latent.float().mean())}
    return loss, stats
