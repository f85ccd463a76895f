"""Counted UNet work: how many UNet calls a render made (whole and shallow) and their FLOPs, so what a faster
setting saves is visible without a GPU.

The FLOPs are torch.utils.flop_counter's formulas, the ones FlopCounterMode (and so benchmarks/gpu_suite.py)
applies. They are worked out once per distinct call (kind and input shapes) and multiplied by the number of such
calls, at little cost:

- eager UNet: the first call of each kind and shape runs under a dispatch mode that sees the ops it runs and adds
  up their formulas from the shapes; the same kernels run (the output is bit for bit the uncounted one) and nothing
  is read back from the device;
- compiled UNet (``--compile``): a dispatch mode would make the compiled blocks run eagerly, so the call is counted
  again on a weightless copy of the UNet on the meta device (about half a second per distinct call, far less than
  compiling).

torch's table has no entry for the CPU's flash-attention kernel, which left the attention out of CPU counts; it is
counted with the GPU kernels' formula, so CPU, meta and GPU counts agree.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

from animator_cli.distributed import Ranks

_aten = torch.ops.aten
FORMULAS = {**flop_registry,
            _aten._scaled_dot_product_flash_attention_for_cpu: flop_registry[_aten._scaled_dot_product_flash_attention]}
FULL, SHALLOW = "full", "shallow"


@dataclass(frozen=True)
class UNetWork:
    """The UNet calls of a render (over every rank): whole-network calls, shallow-branch calls, their FLOPs."""

    full_calls: int = 0
    shallow_calls: int = 0
    flops: int = 0

    @property
    def calls(self) -> int:
        return self.full_calls + self.shallow_calls

    @property
    def tflop(self) -> float:
        return self.flops / 1e12

    def __add__(self, other: UNetWork) -> UNetWork:
        return UNetWork(self.full_calls + other.full_calls, self.shallow_calls + other.shallow_calls,
                        self.flops + other.flops)

    def summed(self, ranks: Ranks, device: torch.device) -> UNetWork:
        """The work of every rank of a window-parallel run (each counted its own windows); one collective."""
        if not ranks.parallel:
            return self
        total = torch.tensor([self.full_calls, self.shallow_calls, self.flops], dtype=torch.int64, device=device)
        ranks.all_reduce(total)
        return UNetWork(*total.tolist())


class _Counter(TorchDispatchMode):
    """Adds up the FLOP formulas of the ops run under it (from shapes only: no value is read)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = FORMULAS.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(run: Callable[[], Any]) -> tuple[Any, int]:
    """``run()``'s result and the FLOPs of the ops it ran."""
    with _Counter() as counter:
        result = run()
    return result, counter.flops


def meta_flops(forward: Callable[..., Any], module: torch.nn.Module, *args: Any, **kwargs: Any) -> int:
    """FLOPs of ``forward(module, *args, **kwargs)`` on ``module``'s weightless meta twin (tensors → meta)."""
    twin = _meta_twin(module)
    meta_args, meta_kwargs = tree_map(
        lambda x: torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x, (args, kwargs))
    with torch.device("meta"), torch.no_grad():
        return count_flops(lambda: forward(twin, *meta_args, **meta_kwargs))[1]


_TWINS: weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module] = weakref.WeakKeyDictionary()


def _meta_twin(module: torch.nn.Module) -> torch.nn.Module:
    """The module's architecture (and processors, which set the attention FLOPs) on the meta device, built once."""
    if module not in _TWINS:
        with torch.device("meta"):
            twin = type(module).from_config(module.config)
            if hasattr(twin, "install_processors"):
                twin.install_processors()
        _TWINS[module] = twin.to("meta").eval().requires_grad_(False)
    return _TWINS[module]


def compiled(module: torch.nn.Module) -> bool:
    """Whether any block of ``module`` was compiled in place (`animator_cli.models.compile`)."""
    return any(getattr(sub, "_compiled_call_impl", None) is not None for sub in module.modules())


_KNOWN: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


class WorkCounter:
    """Counts one render's UNet calls by kind and their FLOPs; the FLOPs of a (kind, input shapes) are worked out
    once per UNet and process (kept for later renders: `animator batch`, the web page)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet, self.compiled = unet, compiled(unet)
        self.known = _KNOWN.setdefault(unet, {})
        self.calls: collections.Counter[str] = collections.Counter()
        self.flops = 0

    def call(self, kind: str, run: Callable[[], torch.Tensor], forward: Callable[..., torch.Tensor],
             *args: Any, **kwargs: Any) -> torch.Tensor:
        """``run()`` (the call as it happens, with its side effects), counted as a ``kind`` call of the side-effect
        free ``forward(unet, *args, **kwargs)``, which it must equal in work."""
        key = (kind, _describe(args), _describe(kwargs))
        flops = self.known.get(key)
        if flops is None and not self.compiled:
            out, flops = count_flops(run)
        else:
            out = run()
            if flops is None:
                flops = meta_flops(forward, self.unet, *args, **kwargs)
        self.known[key] = flops
        self.calls[kind] += 1
        self.flops += flops
        return out

    @property
    def work(self) -> UNetWork:
        return UNetWork(self.calls[FULL], self.calls[SHALLOW], self.flops)


def _describe(value: Any) -> Any:
    """A hashable description of call inputs: tensors by shape and dtype, containers by their items."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.dtype
    if isinstance(value, dict):
        return tuple((name, _describe(item)) for name, item in sorted(value.items()))
    if isinstance(value, (tuple, list)):
        return tuple(_describe(item) for item in value)
    return value
