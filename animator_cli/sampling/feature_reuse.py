"""How the sampler calls the UNet: whole, or DeepCache-style with its deep features reused (``--reuse-features N``).

DeepCache (Ma, Fang, Wang, CVPR 2024, arXiv:2312.00858) observes that a UNet's deep features change slowly from one
denoising step to the next. With ``N`` > 1, every N-th step runs the whole UNet and keeps the deep feature that
enters the last up block; the steps in between run only the shallow branch (``conv_in``, the first down block,
whose skip outputs the last up block takes, and the last up block with its output layers) on that kept feature.
At SVD-xt's sizes the shallow branch is a fraction of a whole call (counted: `animator_cli.sampling.flops`).

Features are kept per (window group, branch): a group is the windows of one UNet call, and the branch is the
call's position among the group's calls in a step (the batched guidance pair, or the unconditional then the
conditional call of ``--split-cfg``, or the conditional one alone), fixed for a render. A group with no kept
feature (the first step, or groups regrouped after ``--window-batch 0`` measured the first step) runs whole.
Every rank of a window-parallel run keeps its own windows' features; they are dropped when the render ends.

diffusers' forward is not copied: a call runs ``UNetSpatioTemporalConditionModel.forward`` as it is, with the
deep blocks swapped for stand-ins for the duration of the call (`shallow`) or the last up block wrapped to see its
input (`tapped`). The real blocks that run (compiled or not) are called with the same arguments as in a whole
call, so they compute what they would there. With ``N`` = 1 the UNet is called as before, untouched.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch
from torch import nn

from animator_cli.sampling.flops import FULL, SHALLOW, UNetWork, WorkCounter


class _SkippedDown(nn.Module):
    """Stands in for a skipped down block: its input goes on as the hidden state and as each of the block's skip
    outputs, placeholders that only the skipped up blocks take."""

    has_cross_attention = False

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, hidden_states: torch.Tensor, **_: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return hidden_states, (hidden_states,) * self.outputs


class _Kept(nn.Module):
    """Stands in for the mid block and a skipped up block (taking ``skips`` skip outputs, as the real one): returns
    the kept deep feature, which reaches the last up block."""

    has_cross_attention = False

    def __init__(self, deep: torch.Tensor, skips: int = 0) -> None:
        super().__init__()
        self.deep, self.resnets = deep, [None] * skips  # diffusers takes len(block.resnets) skip outputs

    def forward(self, hidden_states: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.deep


class _Tap(nn.Module):
    """The last up block, calling ``sink`` with its input (the deep feature) first."""

    def __init__(self, block: nn.Module, sink: Callable[[torch.Tensor], None]) -> None:
        super().__init__()
        self.block, self.sink = block, sink
        self.has_cross_attention = getattr(block, "has_cross_attention", False)
        self.resnets = [None] * len(block.resnets)

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.sink(hidden_states)
        return self.block(hidden_states=hidden_states, **kwargs)


@contextlib.contextmanager
def _swapped(unet: nn.Module, down: list[nn.Module], mid: nn.Module, up: list[nn.Module]) -> Iterator[None]:
    """The UNet with these blocks in place of its own for the duration of the block (restored even on error)."""
    saved = list(unet.down_blocks), unet.mid_block, list(unet.up_blocks)
    try:
        _place(unet, down, mid, up)
        yield
    finally:
        _place(unet, *saved)


def _place(unet: nn.Module, down: list[nn.Module], mid: nn.Module, up: list[nn.Module]) -> None:
    for blocks, new in ((unet.down_blocks, down), (unet.up_blocks, up)):
        for i, block in enumerate(new):
            blocks[i] = block
    unet.mid_block = mid


def tapped(unet: nn.Module, sink: Callable[[torch.Tensor], None]) -> contextlib.AbstractContextManager[None]:
    """A whole call that hands the deep feature (the last up block's input) to ``sink``."""
    up = list(unet.up_blocks)
    return _swapped(unet, list(unet.down_blocks), unet.mid_block, [*up[:-1], _Tap(up[-1], sink)])


def shallow(unet: nn.Module, deep: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """A call of the shallow branch only, on the kept deep feature ``deep``."""
    down, up = list(unet.down_blocks), list(unet.up_blocks)
    skipped = [_SkippedDown(len(block.resnets) + len(block.downsamplers or ())) for block in down[1:]]
    return _swapped(unet, [down[0], *skipped], _Kept(deep), [*(_Kept(deep, len(b.resnets)) for b in up[:-1]), up[-1]])


def unet_forward(unet: nn.Module, *args: Any, deep: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
    """The UNet's output for ``unet(*args, **kwargs)``; its shallow branch's on ``deep`` when given."""
    with shallow(unet, deep) if deep is not None else contextlib.nullcontext():
        return unet(*args, **kwargs)


class UNetCaller:
    """The UNet as one render calls it: whole at every ``every``-th step (every step when 1) and shallow in
    between, the deep features kept on ``keep`` (the CPU under ``--offload``) until the render ends; counts the
    work (`work`). Use as a context manager (the kept features are dropped on exit) and call `at` each step."""

    def __init__(self, unet: nn.Module, every: int = 1, keep: torch.device | None = None) -> None:
        self.unet, self.every, self.keep = unet, every, keep
        self.features: dict[Hashable, torch.Tensor] = {}
        self.counter = WorkCounter(unet)
        self.step = 0

    def __enter__(self) -> UNetCaller:
        return self

    def __exit__(self, *_: object) -> None:
        self.features.clear()

    def at(self, step: int) -> UNetCaller:
        """This caller for the calls of denoising step ``step``."""
        self.step = step
        return self

    def group(self, key: Hashable) -> Callable[..., torch.Tensor]:
        """The UNet for the calls of window group ``key`` in this step (its n-th call is branch n)."""
        branches = itertools.count()
        return lambda *args, **kwargs: self.call((key, next(branches)), *args, **kwargs)

    def call(self, key: Hashable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``unet(*args, **kwargs)`` for the branch ``key``: shallow when this step reuses its kept feature."""
        deep = self.features.get(key) if self.step % self.every else None
        if deep is not None:
            deep = deep.to(args[0].device)
            run = functools.partial(unet_forward, self.unet, *args, deep=deep, **kwargs)
        elif self.every > 1:
            run = functools.partial(self._whole_keeping, key, args, kwargs)
        else:
            run = functools.partial(self.unet, *args, **kwargs)
        return self.counter.call(FULL if deep is None else SHALLOW, run, unet_forward, *args, deep=deep, **kwargs)

    def _whole_keeping(self, key: Hashable, args: tuple, kwargs: dict) -> torch.Tensor:
        with tapped(self.unet, lambda deep: self.features.__setitem__(key, deep.to(self.keep or deep.device))):
            return self.unet(*args, **kwargs)

    @property
    def work(self) -> UNetWork:
        return self.counter.work
