"""Activation checkpointing of the VAE decoder for the face optimisation's backward pass.

diffusers' own switch (`enable_gradient_checkpointing`; in 0.42 the TemporalDecoder honours it whenever grad is
enabled, in eval mode too, so the reference's forked RefinedAutoencoderKLTemporalDecoder is not needed) checkpoints
the mid block and each of the four up blocks as a whole, so the backward of the last up block still holds all of
its full-resolution activations. Here every spatial and temporal resnet, the attention and the upsamplers are
checkpointed one by one instead. Measured on the SVD-xt decoder (random weights), one 512×512 frame in fp32 on
CPU, decode + iresnet100 + backward (`benchmarks/hjb.py --full-decoder`): peak memory 10.3 GiB without
checkpointing, 5.8 GiB with diffusers' per-block switch, 3.1 GiB per layer.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D, TemporalResnetBlock
from diffusers.models.upsampling import Upsample2D
from torch.utils.checkpoint import checkpoint

LAYERS = (ResnetBlock2D, TemporalResnetBlock, Attention, Upsample2D)


def _checkpointed_call(forward: Callable[..., torch.Tensor], *args: object, **kwargs: object) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def _checkpointed_forward(layer: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """The layer's checkpointed forward, made once per layer: torch.compile (``--compile``) guards on the object at
    ``layer.forward``, so a new one at every refined chunk would recompile the decoder blocks each time."""
    if "_checkpointed_forward" not in layer.__dict__:
        layer._checkpointed_forward = functools.partial(_checkpointed_call, type(layer).forward.__get__(layer))
    return layer._checkpointed_forward


@contextlib.contextmanager
def checkpointed_layers(decoder: torch.nn.Module) -> Iterator[int]:
    """Within the block, each of ``decoder``'s resnets, attentions and upsamplers keeps only its input for the
    backward pass and recomputes the rest; yields how many layers are checkpointed. Restored on exit."""
    layers = [m for m in decoder.modules() if isinstance(m, LAYERS)]
    for layer in layers:
        layer.forward = _checkpointed_forward(layer)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward
