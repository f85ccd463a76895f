"""HJB face optimisation: identity refinement of the predicted clean latent during denoising (spec §3).

At every step i in [start, end] (inclusive), the sampler's estimate x̂0 is refined by K iterations of Adam
(a fresh optimizer per step, default betas, lr_i = η·(1 − i/N)) on the identity loss
L(z) = mean over frames with a visible face of 1 − cos(ArcFace(crop_f(decode(z))), ArcFace(reference crop)),
where crop_f is the frame's face box resized bilinearly to 112×112 in [-1, 1]; the sampler then takes its Euler
step towards the refined z.

Memory: the frames are refined in independent chunks of ``chunk`` frames (the sampler's decode chunk; the VAE
decodes chunk by chunk in the reference too), so peak memory does not grow with the video's length. This is the
spec's joint optimisation exactly: the chunks share no decoder computation and Adam is element-wise, and each
chunk's loss is its frames' terms divided by the number of face frames in the whole video, so every element of z
gets the gradient of the joint mean. For the same reason several chunks can go through one decoder call as a batch
(the decoder's temporal layers mix frames only within a batch item), and the decoder can be checkpointed per layer
(`checkpointing.py`) without changing the result: `memory.py` chooses both from the free device memory. The
decoder runs in the pipeline's dtype (fp16 on GPU, with a constant loss scale, which Adam's update ignores).

Speed: the spec decodes whole frames (63 decoder forward + backward passes per frame with the defaults, several
times the cost of the denoising itself). With ``margin`` set, only the latent window covering the chunk's face
boxes plus ``margin`` cells is decoded and optimised (the rest of x̂0 gets no gradient, so Adam leaves it
exactly as it is: the edit becomes face-local). That decode sees less context (GroupNorm statistics, attention
and convolutions over the window only), so it approximates the full one; `benchmarks/hjb.py --region` measures
the loss and gradient against full decoding.

Other fixes of spec §7: the ArcFace network is frozen (no gradients into its weights, no ``retain_graph``), the
reference embedding is computed once without autograd, frames without a face are left out of the loss (a chunk
with none is left untouched) instead of crashing, and the VAE is not moved between devices at every step.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from animator_cli.distributed import Ranks
from animator_cli.hjb.arcface import Box, face_crops, identity_distance
from animator_cli.hjb.checkpointing import checkpointed_layers
from animator_cli.hjb.iresnet import IResNet
from animator_cli.hjb.memory import DecodePlan, plan_decode
from animator_cli.options import FaceOptOptions
from animator_cli.sampling.conditioning import to_tensor

log = logging.getLogger("animator")
LATENT_SCALE = 8  # pixels per latent cell (the VAE's downsampling)
FP16_LOSS_SCALE = 1024.0  # keeps fp16 decoder gradients above underflow; Adam's step is invariant to it


@dataclass
class StepRecord:
    """What one refined step did: its learning rate and the joint loss before each Adam iteration (the part of
    this rank's chunks when many ranks share the refinement)."""

    step: int
    lr: float
    losses: list[float] = field(default_factory=list)


class FaceRefiner:
    """Called by the sampler with the VAE and x̂0 (1, F, 4, h, w) at each step for which `active` is true.

    ``boxes`` gives each frame's face box in output pixels (None: not visible); ``reference_crop`` is the
    reference face, (3, 112, 112) in [-1, 1]. ``records`` keeps one `StepRecord` per refined step (with many
    ``ranks``, the losses of this rank's chunks). ``ranks`` share the chunks of ``chunk`` frames out between the
    processes that render the video together (`animator_cli.distributed`).
    """

    def __init__(self, arcface: IResNet, reference_crop: torch.Tensor, boxes: list[Box | None],
                 options: FaceOptOptions, num_steps: int, chunk: int, ranks: Ranks | None = None) -> None:
        options.validate()
        self.ranks = ranks or Ranks()  # the pipeline's: the processes that render the video together
        self.arcface = arcface.eval().requires_grad_(False)  # `load_arcface`'s shared copy, left where it is
        self.options, self.num_steps, self.chunk = options, num_steps, chunk
        self._set_boxes(boxes)
        with torch.no_grad():
            param = next(arcface.parameters())
            self.reference = arcface(reference_crop[None].to(param.device, param.dtype)).float()
        if not self.faces:
            log.warning("--face-opt: no frame has a visible face box; the video is not refined")

    def _set_boxes(self, boxes: list[Box | None], span: range | None = None) -> None:
        """Refine the frames ``boxes`` describe, those in ``span`` only (default: all): their chunks from the
        span's first frame, this rank's share of them, no records yet."""
        span = range(len(boxes)) if span is None else span
        self.boxes, chunk = boxes, self.chunk
        self.chunks = [slice(first, min(first + chunk, span.stop)) for first in range(span.start, span.stop, chunk)]
        decoded = [(s.stop - s.start) if any(box is not None for box in boxes[s]) else 0 for s in self.chunks]
        self.owned = set(self.ranks.take(range(len(self.chunks)), decoded))  # balanced by the frames decoded
        self.faces = sum(box is not None for box in boxes[span.start:span.stop])
        self.records: list[StepRecord] = []

    def for_frames(self, frames: list[int], span: range | None = None) -> FaceRefiner:
        """This refiner for a pass over ``frames`` only, numbered 0..n−1 there (the identity guard's one-window
        re-render): same network, reference and options, those frames' boxes; only the frames in ``span`` (of
        that numbering; default: all) are refined."""
        part = copy.copy(self)
        part._set_boxes([self.boxes[frame] for frame in frames], span)
        return part

    def active(self, step: int) -> bool:
        return self.faces > 0 and self.options.start <= step <= self.options.end

    def learning_rate(self, step: int) -> float:
        return self.options.lr * (1 - step / self.num_steps)

    def __call__(self, vae: torch.nn.Module, denoised: torch.Tensor, step: int) -> torch.Tensor:
        """The refined x̂0 (same shape, dtype and device as ``denoised``). With many ranks, each refines its share
        of the chunks (balanced by the frames decoded) and the shares, zero elsewhere, are summed."""
        record = StepRecord(step, self.learning_rate(step), [0.0] * self.options.iters)
        device = next(vae.parameters()).device
        if next(self.arcface.parameters()).device != device:  # built for another device: a copy of our own
            self.arcface = copy.deepcopy(self.arcface).to(device)
        refined = self.refine_owned(vae, denoised, record)
        if self.ranks.parallel:  # each frame from the rank that owns its chunk, zero elsewhere, summed exactly
            frames = range(refined.shape[1])
            mine = {f for index in self.owned for f in frames[self.chunks[index]]}
            if self.ranks.is_main:  # frames outside every chunk (not refined) come from rank 0
                mine |= set(frames) - {f for chunk in self.chunks for f in frames[chunk]}
            refined[:, [f for f in frames if f not in mine]] = 0
            self.ranks.all_reduce(refined)
        self.records.append(record)
        return refined

    def refine_owned(self, vae: torch.nn.Module, denoised: torch.Tensor, record: StepRecord) -> torch.Tensor:
        """x̂0 with this rank's chunks refined and every other frame as it was."""
        refined = denoised.clone()
        with torch.enable_grad():
            for frames, window, plan in self.groups(vae, denoised.shape):
                refined[0, frames] = self._refine_group(vae, denoised[0, frames], frames, window, plan, record)
        return refined

    def groups(self, vae: torch.nn.Module, shape: torch.Size) -> Iterator[tuple[slice, Box, DecodePlan]]:
        """The refiner's unit of work: runs of consecutive chunks with a face (of this rank's), each decoded in
        one decoder call, with its latent window and decode plan. Chunks share no computation, so any grouping
        (and any split across processes) gives the same result."""
        latent = tuple(shape[-2:])
        todo = [(index, frames, self._window(frames, latent)) for index, frames in enumerate(self.chunks)
                if index in self.owned and any(box is not None for box in self.boxes[frames])]
        while todo:
            _, frames, window = todo[0]
            size = frames.stop - frames.start
            run = 1  # consecutive chunks of the same length and window can share a decoder call
            while (run < len(todo) and todo[run][0] == todo[0][0] + run and todo[run][2] == window
                   and todo[run][1].stop - todo[run][1].start == size):
                run += 1
            area = (window[3] - window[1], window[2] - window[0])
            plan = plan_decode(vae, size, area, latent, run)
            last = todo[plan.chunks_per_call - 1][1]
            yield slice(frames.start, last.stop), window, plan
            todo = todo[plan.chunks_per_call:]

    def _window(self, frames: slice, latent: tuple[int, int]) -> Box:
        return latent_window([box for box in self.boxes[frames] if box is not None], latent, self.options.margin)

    def _refine_group(self, vae: torch.nn.Module, latents: torch.Tensor, frames: slice, window: Box,
                      plan: DecodePlan, record: StepRecord) -> torch.Tensor:
        param = next(vae.parameters())
        scale = FP16_LOSS_SCALE if param.dtype == torch.float16 else 1.0
        # The VAE may live on another device than the latents (--vae-on-cpu): optimise where it runs.
        z = latents.detach().to(param.device, torch.float32).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=record.lr)
        boxes = self.boxes[frames]
        visible = [i for i, box in enumerate(boxes) if box is not None]
        face_boxes = [boxes[i] for i in visible]
        chunk = min(self.chunk, len(boxes))  # the decoder's num_frames: each chunk is one item of the batch
        with checkpointed_layers(vae.decoder) if plan.checkpoint else contextlib.nullcontext():
            for iteration in range(self.options.iters):
                optimizer.zero_grad(set_to_none=True)
                loss = self._loss(vae, z, visible, face_boxes, window, chunk)
                (loss * scale).backward()
                record.losses[iteration] += float(loss.detach())
                if torch.isfinite(z.grad).all():
                    optimizer.step()
                else:
                    log.warning("--face-opt: non-finite gradient at step %d; iteration skipped", record.step)
        return z.detach().to(latents.device, latents.dtype)

    def _loss(self, vae: torch.nn.Module, z: torch.Tensor, visible: list[int], boxes: list[Box],
              window: Box, chunk: int) -> torch.Tensor:
        """These chunks' share of the joint loss: their face frames' distances summed, divided by all face frames.
        Only the latent ``window`` (x0, y0, x1, y1 in latent cells) is decoded, ``chunk`` frames per batch item."""
        param = next(vae.parameters())
        x0, y0, x1, y1 = window
        part = z[..., y0:y1, x0:x1] / vae.config.scaling_factor
        pixels = vae.decode(part.to(param.dtype), num_frames=chunk).sample
        dx, dy = x0 * LATENT_SCALE, y0 * LATENT_SCALE
        # The reference's ((x/2 + 0.5).clamp(0, 1)·255)/255·2 − 1 is this clamp.
        crops = face_crops(pixels[visible].float().clamp(-1, 1), [(a - dx, b - dy, c - dx, d - dy)
                                                                  for a, b, c, d in boxes])
        arc = next(self.arcface.parameters())
        embeddings = self.arcface(crops.to(arc.dtype)).float()
        return identity_distance(embeddings, self.reference.to(embeddings.device)).sum() / self.faces


def latent_window(boxes: list[Box], size: tuple[int, int], margin: int | None) -> Box:
    """(x0, y0, x1, y1) latent cells covering ``boxes`` (pixels) widened by ``margin`` cells and clipped to the
    latent ``size`` (h, w); the whole latent when ``margin`` is None."""
    height, width = size
    if margin is None:
        return 0, 0, width, height
    x0, y0 = (min(box[i] for box in boxes) // LATENT_SCALE - margin for i in (0, 1))
    x1, y1 = (-(-max(box[i] for box in boxes) // LATENT_SCALE) + margin for i in (2, 3))
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def reference_face_crop(reference: np.ndarray, box: Box) -> torch.Tensor:
    """(3, 112, 112) in [-1, 1]: the reference face (H×W×3 uint8, already fitted) cut at ``box`` and resized."""
    return face_crops(to_tensor(reference), [box])[0]
