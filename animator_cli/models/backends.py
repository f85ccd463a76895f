"""Process-wide GPU settings and kernel choices, applied in one place: `configure_process`.

Each is a switch of `Runtime` (and of the CLI), measured against the default by `benchmarks/gpu_suite.py`:

* ``cudnn_benchmark``: cuDNN times its convolution algorithms on every new shape and keeps the fastest. The UNet's
  shapes repeat at every step, but the first call pays the timing for every shape, and a CLI renders once per
  process (docs/speed.md has the figures that chose the default).
* ``attention``: which `scaled_dot_product_attention` kernel torch tries first (``auto``: torch's own order).
* ``compile_mode``: torch.compile's mode for the UNet blocks (``reduce-overhead`` records CUDA graphs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from animator_cli.options import Runtime

# Tried in this order after the chosen backend, so a shape the chosen kernel cannot run still runs.
_FALLBACKS = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH)
ATTENTION = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def cudnn_benchmark(runtime: Runtime) -> bool:
    """Whether cuDNN benchmarks its algorithms: ``runtime.cudnn_benchmark``, else on for CUDA devices."""
    if runtime.cudnn_benchmark is not None:
        return runtime.cudnn_benchmark
    return runtime.torch_device().type == "cuda"


def configure_process(runtime: Runtime) -> None:
    """Set what torch keeps process-wide for ``runtime`` (the cuDNN policy; with ``compile``, inductor's on-disk
    cache, which it reads from the environment): the one place animator changes process state. `load_pipeline`
    and `train` call it once, before any model runs."""
    torch.backends.cudnn.benchmark = cudnn_benchmark(runtime)
    if runtime.compile:
        from animator_cli.models.compile import use_compile_cache

        use_compile_cache()


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Prefer the attention kernel ``name`` (one of `ATTENTION`, or ``auto``: leave torch's choice) in the block;
    the others stay allowed, in `_FALLBACKS` order, for shapes the chosen one cannot run."""
    if name == "auto":
        yield
        return
    first = ATTENTION[name]
    with sdpa_kernel([first, *(b for b in _FALLBACKS if b != first)], set_priority=True):
        yield
