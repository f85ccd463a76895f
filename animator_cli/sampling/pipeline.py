"""`AnimationPipeline`: reference image + pose frames + identity embedding → video frames.

One pass, in the order of the released StableAnimator pipeline (spec §2), with its weaknesses fixed:

1. Encoders run once: CLIP embedding, face tokens, the noise-augmented reference latent, and the PoseNet
   features of every frame when they fit ``pose_feature_budget`` (the reference recomputed PoseNet for every window
   at every step); a longer video's features are computed per chunk of frames as windows need them and dropped
   after (`PoseFeatures`), so memory does not grow with its length.
2. Initial noise: one ``randn(1, tile, 4, h, w)`` draw repeated along time, scaled by ``init_noise_sigma``.
3. Each step denoises every temporal window (frame 0 is every window's anchor) and blends the windows'
   v-predictions with triangular weights. Classifier-free guidance uses the reference's unconditional branch
   (no pose, zero context, zero reference latent) with a per-frame scale ``linspace(min_g, max_g, F)``; both
   branches go through the UNet as one batch unless ``batch_cfg`` is off (then two calls, less memory).
   With every scale at 1 the unconditional branch is skipped. ``window_batch`` windows of one length go through
   the UNet in one call (batch K·2 with guidance); on a GPU with ``window_batch=None`` the first step runs one
   window per call while measuring its memory peak, then K is what 80 % of the free memory holds.
4. The Euler step runs on fp32 latents whatever the model dtype; decoding goes in chunks of frames, each handed
   to a ``sink`` (e.g. the video encoder) as it is decoded, or gathered into one array without a sink.

Poses may be an (F, H, W, 3) array or any sequence whose slices are such arrays (`FittedPoses` reads them from
their folder on demand); with a lazy sequence and a sink, memory holds the latents and a few chunks of frames.

``options.schedule`` picks the noise levels (`animator_cli.sampling.schedule`), ``options.reuse_features`` how
often the whole UNet runs (`animator_cli.sampling.feature_reuse`); ``work`` holds the UNet calls and FLOPs of the
last call (`animator_cli.sampling.flops`).

Random draws come from one generator in the reference's order and shapes: the reference-image noise
``randn(1, 3, H, W)`` (fp32) first, then the initial latents ``randn(1, tile, 4, H/8, W/8)`` in the model dtype.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from animator_cli.distributed import OrderedSum, Ranks
from animator_cli.errors import InputError
from animator_cli.models.backends import attention_backend
from animator_cli.models.loading import AnimatorModels
from animator_cli.options import SamplingOptions
from animator_cli.progress import Progress, stage
from animator_cli.sampling.conditioning import (
    added_time_ids,
    cast_module,
    clip_embedding,
    context_tokens,
    reference_latent,
    to_tensor,
)
from animator_cli.sampling.feature_reuse import UNetCaller
from animator_cli.sampling.flops import UNetWork
from animator_cli.sampling.pose_features import PoseFeatures
from animator_cli.sampling.schedule import KarrasSchedule, make_schedule
from animator_cli.sampling.windows import blend_weights, group_windows, periodic_noise, window_indices

# Takes each chunk of decoded frames (n, H, W, 3) uint8, in order, as soon as it is decoded.
FrameSink = Callable[[np.ndarray], None]


class PoseSource(Protocol):
    """Pose frames: an (F, H, W, 3) uint8 array, or a sequence that reads a slice's frames only when asked
    (`animator_cli.sampling.pose_frames.FittedPoses`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


# Bytes of PoseNet features computed once up front (about 50 frames at 512×512 in fp16 on the real model); longer
# videos compute them per window at every step (~1 % of the UNet's work), so memory stays flat with the length.
POSE_FEATURE_BUDGET = 128 * 2**20


class Refiner(Protocol):
    """Replaces the denoised estimate x̂0 (1, F, C, h, w) fp32 at the steps where it is active."""

    def active(self, step: int) -> bool: ...

    def __call__(self, vae: torch.nn.Module, denoised: torch.Tensor, step: int) -> torch.Tensor: ...


class FeatureSource(Protocol):
    """PoseNet features of a window's frames (`PoseFeatures`, or a view of one window's, `sampling.repair`)."""

    def window(self, frames: list[int], index: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SampledVideo:
    """A video's final latents (1, F, 4, h, w) fp32 and what denoising it shared over its windows, kept so that one
    window can be sampled again without encoding anything again (`animator_cli.sampling.repair`). ``noise`` is the
    initial unit noise of one period (tile frames; frame f starts from ``noise[f % tile]``)."""

    windows: list[list[int]]
    schedule: KarrasSchedule
    branches: _Branches
    pose_features: PoseFeatures
    guidance: torch.Tensor  # (1, F, 1, 1, 1)
    options: SamplingOptions
    noise: torch.Tensor  # (period, 4, h, w) in the model dtype, as drawn
    latents: torch.Tensor | None = None


def _in_attention_backend(method: Callable) -> Callable:
    """Run a pipeline method with the attention kernel its pipeline prefers (``self.attention``)."""
    @functools.wraps(method)
    def run(self: AnimationPipeline, *args, **kwargs):
        with attention_backend(self.attention):
            return method(self, *args, **kwargs)
    return run


class AnimationPipeline:
    """Holds the models and where they run; ``__call__`` animates one reference.

    ``offload`` keeps every model on the CPU and moves each one to ``device`` only while it runs;
    ``vae_on_cpu`` runs the VAE on the CPU in fp32 (encode and decode), which saves its activations' memory.
    ``ranks``: the processes that render the video together (each denoises its share of the windows; rank 0
    decodes and gets the frames, the others get None).
    ``window_batch`` is the number of windows per UNet call (None: automatic, see the module docstring; 1 on the
    CPU, where batching gains nothing). On a GPU the convolutional models are kept channels-last, and with
    ``channels_last_3d`` the VAE decoder's 3-D convolutions too. ``attention`` is the attention kernel preferred
    during a call (`animator_cli.models.backends.attention_backend`; ``auto`` leaves torch's choice).
    """

    pose_feature_budget = POSE_FEATURE_BUDGET

    def __init__(self, models: AnimatorModels, device: torch.device | str, dtype: torch.dtype = torch.float16,
                 offload: bool = False, vae_on_cpu: bool = False, batch_cfg: bool = True,
                 window_batch: int | None = 1, ranks: Ranks | None = None, attention: str = "auto",
                 channels_last_3d: bool = False) -> None:
        self.models, self.device, self.dtype = models, torch.device(device), dtype
        self.offload, self.vae_on_cpu, self.batch_cfg = offload, vae_on_cpu, batch_cfg
        self.window_batch, self.attention = window_batch, attention
        self.ranks = ranks or Ranks()
        self.work = UNetWork()  # the last call's UNet calls and FLOPs, over every rank
        resting = torch.device("cpu") if offload else self.device
        on_gpu = self.device.type == "cuda"
        for name in ("unet", "image_encoder", "face_encoder", "pose_net"):
            place(getattr(models, name), resting, dtype, channels_last=on_gpu and name != "image_encoder")
        place(models.vae, *((torch.device("cpu"), torch.float32) if vae_on_cpu else (resting, dtype)),
              channels_last=on_gpu and not vae_on_cpu, channels_last_3d=channels_last_3d and not vae_on_cpu)

    @contextlib.contextmanager
    def _running(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The module on its compute device for the duration of the block (a no-op without offload)."""
        move = self.offload and not (module is self.models.vae and self.vae_on_cpu)
        if move:
            module.to(self.device)
        try:
            yield module
        finally:
            if move:
                module.to("cpu")

    @_in_attention_backend
    @torch.no_grad()
    def __call__(self, reference: np.ndarray, poses: PoseSource, identity: np.ndarray, options: SamplingOptions,
                 generator: torch.Generator, progress: Progress | None = None,
                 refine: Refiner | None = None, sink: FrameSink | None = None) -> np.ndarray | None:
        """Animate ``reference`` (H×W×3 uint8, already fitted to the output size) along ``poses`` (F×H×W×3
        uint8, same size; or a sequence whose slices are such arrays, see the module docstring) with the 512-d
        ArcFace ``identity``; returns F×H×W×3 uint8 frames, or None when ``sink`` takes them chunk by chunk.
        ``refine`` (the HJB face optimisation, `animator_cli.hjb.FaceRefiner`) replaces x̂0 at the steps where it
        is active."""
        video = self.sample(reference, poses, identity, options, generator, progress, refine)
        if not self.ranks.is_main:  # rank 0 decodes
            return None
        return self.decode(video.latents, options.decode_chunk, sink)

    @_in_attention_backend
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int, sink: FrameSink | None = None) -> np.ndarray | None:
        """The frames (F, H, W, 3) uint8 of latents (1, F, 4, h, w), or None when ``sink`` takes them chunk by
        chunk as they are decoded."""
        with stage("decoding"):
            frames = self._decode(latents, chunk)
            if sink is None:
                return np.concatenate(list(frames))
            for part in frames:
                sink(part)
            return None

    @_in_attention_backend
    @torch.no_grad()
    def sample(self, reference: np.ndarray, poses: PoseSource, identity: np.ndarray, options: SamplingOptions,
               generator: torch.Generator, progress: Progress | None = None,
               refine: Refiner | None = None) -> SampledVideo:
        """The denoised latents of `__call__`'s video, not decoded, with what a later pass over one of its windows
        needs (`animator_cli.sampling.repair`): the conditioning, the initial noise and the windows."""
        models, num_frames, size = self.models, len(poses), poses[:1].shape[1:]
        if size != reference.shape or reference.shape[0] % 64 or reference.shape[1] % 64:
            raise InputError(f"pose frames {size} and reference {reference.shape} must share one "
                             "H×W×3 size, a multiple of 64", "fit both with animator_cli.sampling.fit.fit_image")
        windows = window_indices(num_frames, options.tile, options.overlap)
        image = to_tensor(reference)

        # 1. Conditioning, computed once.
        with self._running(models.image_encoder) as encoder:
            clip = clip_embedding(encoder, image.to(self.device))
        with self._running(models.face_encoder) as face_encoder:
            context = context_tokens(face_encoder, clip, torch.from_numpy(np.asarray(identity, np.float32)))
        with self._running(models.vae) as vae:
            image_latent = reference_latent(vae, image, options.noise_aug, generator)
        pose_features = self._pose_features(poses, options.tile, reference.shape[:2])
        time_ids = added_time_ids(options.cond_fps, options.motion_bucket, options.noise_aug)

        # 2. Schedule and initial noise.
        schedule = make_schedule(models.scheduler, options.steps, options.schedule)
        h, w = image_latent.shape[-2:]
        noise = periodic_noise((image_latent.shape[1], h, w), num_frames, options.tile, generator, self.dtype)
        latents = noise.to(self.device, torch.float32) * schedule.init_noise_sigma
        period = noise[0, :options.tile].clone()
        del noise  # the video-long draw: one period is all a later pass needs
        guidance = torch.linspace(options.min_guidance, options.max_guidance, num_frames, device=self.device)
        guidance = guidance.view(1, num_frames, 1, 1, 1)
        guided = bool((guidance != 1).any())

        # 3. Denoising loop over steps and windows.
        branches = _Branches(image_latent.to(self.device, self.dtype), context.to(self.dtype),
                             time_ids.to(self.device, self.dtype), guided, self.batch_cfg)
        video = SampledVideo(windows, schedule, branches, pose_features, guidance, options, period)
        video.latents = self.denoise(video, latents, windows, pose_features, guidance, options.id_scale, refine,
                                     progress, self.ranks)
        return video

    @_in_attention_backend
    @torch.no_grad()
    def denoise(self, video: SampledVideo, latents: torch.Tensor, windows: list[list[int]],
                pose_features: FeatureSource, guidance: torch.Tensor, id_scale: float, refine: Refiner | None = None,
                progress: Progress | None = None, ranks: Ranks | None = None,
                hold: Callable[[torch.Tensor, int], None] | None = None) -> torch.Tensor:
        """Run ``video``'s schedule on ``latents`` (1, n, 4, h, w) fp32 (updated in place and returned), whose
        ``windows`` index them, with these PoseNet features and guidance scales (n frames each). ``hold`` may
        overwrite frames of the latents before each step (a re-sampled window's fixed neighbours)."""
        models, options, schedule = self.models, video.options, video.schedule
        models.unet.set_id_scale(id_scale)
        tiles = _Tiles(windows, latents.shape[1], self.device, ranks)
        batcher = _WindowBatcher(tiles, self.window_batch, self.device)
        timesteps = schedule.timesteps.to(self.device)  # no host→device copy per UNet call
        # With the face refiner the VAE stays on the device for the whole loop (one move under --offload).
        decoder = self._running(models.vae) if refine is not None else contextlib.nullcontext(models.vae)
        keep = torch.device("cpu") if self.offload else self.device  # where reused deep features wait
        with self._running(models.unet) as unet, decoder as vae, stage("denoising"), \
                UNetCaller(unet, options.reuse_features, keep) as calls:
            for step, timestep in enumerate(timesteps):
                if hold is not None:
                    hold(latents, step)
                x_in = functools.partial(schedule.scale_input, step=step)
                with batcher.measuring(step):
                    cond, uncond = self._blend(calls.at(step), latents, x_in, timestep, batcher.groups, tiles,
                                               pose_features, video.branches)
                v = guide(cond, uncond, guidance) if video.branches.guided else cond
                if refine is not None and refine.active(step):
                    latents = schedule.step(latents, v, step, functools.partial(refine, vae, step=step))
                else:
                    latents = schedule.step(latents, v, step)
                if progress is not None:
                    progress(step + 1, len(schedule))
        self.work = calls.work.summed(ranks or Ranks(), self.device)
        return latents

    @_in_attention_backend
    @torch.no_grad()
    def decode_frames(self, latents: torch.Tensor, frames: list[int], chunk: int) -> np.ndarray:
        """uint8 pixels (len(frames), H, W, 3) of ``frames`` (sorted) of the latents (1, F, 4, h, w), decoded in the
        chunks `_decode` uses (the decoder mixes the frames of a chunk): a repaired window's frames without
        decoding the video again."""
        starts = sorted({frame - frame % chunk for frame in frames})
        calls = self.decode_calls(latents[0, start:start + chunk] for start in starts)
        decoded = {start + i: frame for start, pixels in zip(starts, calls, strict=True)
                   for i, frame in enumerate(pixels)}
        return np.stack([decoded[frame] for frame in frames])

    def _pose_features(self, poses: PoseSource, chunk: int, size: tuple[int, int]) -> PoseFeatures:
        """PoseNet output (320 channels, h, w) per window, computed in chunks of ``chunk`` frames: all up front
        when they fit ``pose_feature_budget`` bytes, else as windows need them (`PoseFeatures`). Kept on the CPU
        when offloading (a long video's features are large) and moved per window."""
        keep = torch.device("cpu") if self.offload else self.device

        def compute(start: int, stop: int) -> torch.Tensor:
            with self._running(self.models.pose_net) as pose_net:
                return pose_net(to_tensor(poses[start:stop]).to(self.device, self.dtype)).to(keep)

        per_frame = self.models.pose_net.final_proj.out_channels * (size[0] // 8) * (size[1] // 8) * self.dtype.itemsize
        return PoseFeatures(compute, len(poses), chunk, keep_all=len(poses) * per_frame <= self.pose_feature_budget)

    def _blend(self, unet: UNetCaller, latents: torch.Tensor, scale_input: Callable[[torch.Tensor], torch.Tensor],
               timestep: torch.Tensor, groups: list[_Group], tiles: _Tiles, pose_features: FeatureSource,
               branches: _Branches) -> tuple[torch.Tensor, torch.Tensor]:
        """Window-blended (cond, uncond) v-predictions, each (1, F, 4, h, w) fp32; one UNet call per group of this
        rank's windows, whose frames are added into ``total`` in window order (over every rank's windows). Each
        group's latents are scaled by ``scale_input`` as they are taken: no scaled copy of the whole video."""
        total = OrderedSum(torch.zeros(2, *latents.shape[1:], device=self.device), self.ranks, tiles.indices)
        for group in groups:
            pose = pose_features.window(group.frames, group.index).to(self.device)
            x_in = scale_input(latents[0, group.index]).to(self.dtype).unflatten(0, (group.size, -1))
            v = branches.predict(unet.group(group.key), x_in, timestep, pose)
            total.add(group.index, v.float() * group.weights)
        total = total.result().div_(tiles.weight_sum)
        return total[1:], total[:1]

    def _decode(self, latents: torch.Tensor, chunk: int) -> Iterator[np.ndarray]:
        """uint8 frames (n, H, W, 3) from latents (1, F, 4, h, w), ``chunk`` frames per VAE call, each call's
        frames yielded as soon as they are decoded."""
        return self.decode_calls(latents[0, i:i + chunk] for i in range(0, latents.shape[1], chunk))

    def decode_calls(self, calls: Iterable[torch.Tensor]) -> Iterator[np.ndarray]:
        """uint8 frames (n, H, W, 3) of each latents (n, 4, h, w) of ``calls``, one VAE call each, yielded as
        decoded (the VAE on its device for the whole run)."""
        with self._running(self.models.vae) as vae:
            for latents in calls:
                yield _pixels(vae, latents)


def _pixels(vae: torch.nn.Module, latents: torch.Tensor) -> np.ndarray:
    """uint8 frames (n, H, W, 3) of latents (n, 4, h, w), in one VAE call."""
    param = next(vae.parameters())
    part = (latents / vae.config.scaling_factor).to(param.device, param.dtype)
    pixels = vae.decode(part, num_frames=len(part)).sample
    return ((pixels.float() + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def guide(cond: torch.Tensor, uncond: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance ``uncond + guidance * (cond - uncond)``, computed in ``cond``'s memory: the same
    operations, so the same bits, without three latent-sized temporaries (a long video's largest tensors)."""
    return torch.sub(cond, uncond, out=cond).mul_(guidance).add_(uncond)


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool = False,
          channels_last_3d: bool = False) -> None:
    """Move a module for inference in ``dtype``; ``channels_last`` stores its 2-D convolution weights NHWC (the
    layout GPU convolution kernels are fastest in; moving the module later keeps it), ``channels_last_3d`` its
    3-D ones NDHWC."""
    cast_module(module, dtype)
    module.to(device).eval().requires_grad_(False)
    for conv in module.modules():
        if channels_last and isinstance(conv, torch.nn.Conv2d):
            conv.to(memory_format=torch.channels_last)
        elif channels_last_3d and isinstance(conv, torch.nn.Conv3d):
            conv.to(memory_format=torch.channels_last_3d)


class _Group:
    """K windows of n frames for one UNet call: their frame indices (K·n, on the host and the device) and
    blending weights (1, K·n, 1, 1, 1) on the device."""

    def __init__(self, windows: list[list[int]], device: torch.device) -> None:
        self.size, self.key = len(windows), tuple(map(tuple, windows))
        self.frames = [i for window in windows for i in window]  # on the host: no device read to find them
        self.index = torch.tensor(self.frames, device=device)
        self.weights = torch.cat([blend_weights(len(w)) for w in windows]).to(device).view(1, -1, 1, 1, 1)


class _Tiles:
    """Every window's frame indices and the per-frame sums of their blending weights on the device, and this rank's
    windows (all of them in a single process)."""

    def __init__(self, windows: list[list[int]], num_frames: int, device: torch.device,
                 ranks: Ranks | None = None) -> None:
        self.device = device
        every = _Group(windows, device)
        self.weight_sum = torch.zeros(num_frames, device=device).index_add_(0, every.index, every.weights.flatten())
        self.indices = [torch.tensor(w, device=device) for w in windows]
        self.weight_sum = self.weight_sum.view(1, -1, 1, 1, 1)
        self.windows = (ranks or Ranks()).take(windows, [len(w) for w in windows])

    def groups(self, size: int) -> list[_Group]:
        """This rank's windows in groups of at most ``size`` consecutive windows of one length."""
        return [_Group(group, self.device) for group in group_windows(self.windows, size)]


class _WindowBatcher:
    """The groups of windows per UNet call: ``size`` windows each, or automatic when None (one on the CPU; on a
    GPU one during the first step while its memory peak is measured, then as many as 80 % of the free memory
    holds)."""

    def __init__(self, tiles: _Tiles, size: int | None, device: torch.device) -> None:
        self.tiles, self.device = tiles, device
        self.auto = size is None and device.type == "cuda"
        self.groups = tiles.groups(size or 1)

    @contextlib.contextmanager
    def measuring(self, step: int) -> Iterator[None]:
        """Measure the first step's peak memory, then regroup (automatic size only)."""
        if not self.auto or step:
            yield
            return
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        yield
        per_window = torch.cuda.max_memory_allocated(self.device) - base
        free = torch.cuda.mem_get_info(self.device)[0] + torch.cuda.memory_reserved(self.device) - base
        self.groups = self.tiles.groups(windows_per_call(per_window, free, len(self.tiles.windows)))


def windows_per_call(per_window_bytes: int, free_bytes: int, windows: int) -> int:
    """How many windows one UNet call can take: 80 % of the free memory over one window's peak, 1 to ``windows``."""
    return max(1, min(windows, int(0.8 * free_bytes) // max(per_window_bytes, 1)))


class _Branches:
    """The conditional and unconditional UNet inputs of one window, built from tensors fixed for the run."""

    def __init__(self, image_latent: torch.Tensor, context: torch.Tensor, time_ids: torch.Tensor,
                 guided: bool, batched: bool) -> None:
        self.image_latent, self.guided, self.batched = image_latent, guided, batched
        self.context, self.time_ids = context.to(image_latent.device), time_ids
        self.uncond_context = torch.zeros_like(self.context)
        self._zero_cache: dict[tuple, torch.Tensor] = {}

    def _zeros(self, like: torch.Tensor) -> torch.Tensor:
        """Zeros shaped like ``like``, allocated once per shape: windows repeat their sizes at every step."""
        key = (tuple(like.shape), like.dtype, like.device)
        if key not in self._zero_cache:
            self._zero_cache[key] = torch.zeros_like(like)
        return self._zero_cache[key]

    def predict(self, unet: Callable[..., torch.Tensor], x: torch.Tensor, timestep: torch.Tensor,
                pose: torch.Tensor) -> torch.Tensor:
        """v-predictions (2, K·n, 4, h, w) of K windows ``x`` (K, n, 4, h, w) with PoseNet features ``pose``
        (K·n, C, h, w): row 0 unconditional (zeros when unguided), row 1 conditional."""
        k, n = x.shape[:2]
        ref = self.image_latent[:, None].expand(k, n, -1, -1, -1)
        cond_in = torch.cat([x, ref], dim=2)
        context, uncond_context = self.context.expand(k, -1, -1), self.uncond_context.expand(k, -1, -1)
        time_ids = self.time_ids.expand(k, -1)
        if not self.guided:
            cond = unet(cond_in, timestep, context, time_ids, pose_latents=pose).flatten(0, 1)
            return torch.stack([self._zeros(cond), cond])
        uncond_in = torch.cat([x, self._zeros(ref)], dim=2)
        if self.batched:
            v = unet(torch.cat([uncond_in, cond_in]), timestep, torch.cat([uncond_context, context]),
                     time_ids.repeat(2, 1), pose_latents=torch.cat([self._zeros(pose), pose]))
            return v.unflatten(0, (2, k)).flatten(1, 2)
        uncond = unet(uncond_in, timestep, uncond_context, time_ids)
        cond = unet(cond_in, timestep, context, time_ids, pose_latents=pose)
        return torch.stack([uncond.flatten(0, 1), cond.flatten(0, 1)])
