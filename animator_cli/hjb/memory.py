"""How the face refiner decodes: with or without activation checkpointing, and how many chunks per decoder call.

Both choices leave the result unchanged (checkpointing recomputes the same forward; chunks decoded in one call as
a batch share no computation, see `refine.py`); they trade memory for speed. On a GPU they follow the free device
memory (``torch.cuda.mem_get_info`` plus what PyTorch's allocator holds unused): the decoder is checkpointed only
when one chunk's un-checkpointed backward does not fit (checkpointing costs a third decoder pass per iteration),
and as many chunks as fit go through one decoder call. The memory a decode + backward keeps is counted once per
shape on the meta device (a copy of the decoder without weights): the bytes autograd saves, without
checkpointing, and with per-layer checkpointing (the layers' inputs plus the largest layer's saved tensors, which
its recomputation holds during the backward). A CPU keeps the rule of earlier versions (checkpoint when more than
a quarter of the latent is decoded, one chunk per call): host RAM is shared with everything else on the machine
and a CPU gains little from larger calls.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import torch

from animator_cli.hjb.checkpointing import LAYERS

CHECKPOINT_ABOVE = 0.25  # CPU: decoded share of the latent above which the decoder is checkpointed
MEMORY_FACTOR = 1.5  # the counted saved tensors × this: gradients, the crops and ArcFace, allocator slack
RESERVE_BYTES = 2 * 2**30  # left free for the rest of the step (the UNet's next call allocates again)


@dataclass(frozen=True)
class DecodePlan:
    checkpoint: bool  # per-layer activation checkpointing of the decoder
    chunks_per_call: int  # decode chunks batched into one decoder call


def free_bytes(device: torch.device) -> int | None:
    """Bytes a new allocation can use on ``device``: free device memory plus the allocator's unused cache; None on
    devices without such a count (the CPU)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def plan_decode(vae: torch.nn.Module, frames: int, window: tuple[int, int], latent: tuple[int, int],
                chunks: int) -> DecodePlan:
    """The plan for refining up to ``chunks`` chunks of ``frames`` frames whose decoded latent ``window`` is
    (h, w) cells of a (h, w) ``latent``."""
    param = next(vae.parameters())
    free = free_bytes(param.device)
    if free is None:
        share = window[0] * window[1] / (latent[0] * latent[1])
        return DecodePlan(checkpoint=share > CHECKPOINT_ABOVE, chunks_per_call=1)
    budget = free - RESERVE_BYTES
    full, layered = decode_backward_bytes(vae, frames, window, param.dtype)
    checkpoint = MEMORY_FACTOR * full > budget
    need = MEMORY_FACTOR * (layered if checkpoint else full)
    return DecodePlan(checkpoint, max(1, min(chunks, int(budget // need))))


def decode_backward_bytes(vae: torch.nn.Module, frames: int, window: tuple[int, int],
                          dtype: torch.dtype) -> tuple[int, int]:
    """(without checkpointing, with per-layer checkpointing): bytes autograd keeps for the backward of decoding
    ``frames`` latent frames of ``window`` (h, w) cells in ``dtype``."""
    config = json.dumps(dict(vae.config), sort_keys=True, default=str)
    return _count_saved(type(vae), config, frames, tuple(window), dtype)


@functools.lru_cache(maxsize=16)
def _count_saved(cls: type, config: str, frames: int, window: tuple[int, int], dtype: torch.dtype) -> tuple[int, int]:
    with torch.device("meta"):
        twin = cls.from_config(json.loads(config))
    # Buffers made with torch.Tensor() land on the CPU; torch's own `to` skips diffusers' warning on casts.
    torch.nn.Module.to(twin, "meta", dtype).eval().requires_grad_(False)
    layers = [m for m in twin.decoder.modules() if isinstance(m, LAYERS)]
    saved: dict[object, int] = {}  # layer (None: outside every layer) → bytes its ops save
    inputs, running, seen = 0, [], set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            owner = running[-1] if running else None
            saved[owner] = saved.get(owner, 0) + tensor.numel() * tensor.element_size()
        return tensor

    def enter(module: torch.nn.Module, args: tuple) -> None:
        nonlocal inputs
        running.append(module)
        inputs += sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))

    def leave(*_: object) -> None:
        running.pop()

    handles = [h for m in layers for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        z = torch.zeros(frames, twin.config.latent_channels, *window, device="meta", dtype=dtype, requires_grad=True)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            twin.decode(z, num_frames=frames)
    finally:
        for handle in handles:
            handle.remove()
    outside = saved.pop(None, 0)
    full = outside + sum(saved.values())
    # `checkpointed_layers` keeps each layer's inputs; the backward recomputes one layer at a time.
    layered = outside + inputs + max(saved.values(), default=0)
    return full, min(full, layered)
