"""Regional ``torch.compile``: the UNet's down/mid/up blocks and the VAE decoder's blocks, each compiled in place.

Compiling the blocks rather than whole models keeps compile time short and the models' state-dict keys
unchanged (``nn.Module.compile`` wraps the call, not the module), so checkpoints save and load as before and
the compiled model is the same object. The UNet forward has no graph break (no hooks, no Python-side state), so
every block is one graph. Works on the CPU too (inductor generates C++); the first call of each shape compiles.

Inductor's FX graph cache and AOTAutograd cache (both on by default) are kept in `compile_cache_dir`, not in
torch's default under /tmp, which a reboot empties: a later process then loads the kernels instead of compiling
them again (minutes on a CPU). It still traces every block with dynamo (docs/speed.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from animator_cli.models.unet import AnimatorUNet

# The classes compiled: the UNet's blocks and those of the temporal VAE decoder (which the HJB refinement also runs).
REGIONS = frozenset({*AnimatorUNet._repeated_blocks, "MidBlockTemporalDecoder", "UpBlockTemporalDecoder"})
# Static shapes wherever gradients flow through compiled blocks (the decoder under the HJB refinement, the UNet in
# training): the instances of one block class differ in shape, so dynamo's automatic dynamic shapes would recompile
# them with symbolic sizes, and inductor (torch 2.13) fails on the backward of those graphs ("cannot determine truth
# value of Relational: 64*s20*s33 < 64"). Each shape gets its own graph instead.
STATIC = {"dynamic": False}
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache_dir() -> Path:
    """``$TORCHINDUCTOR_CACHE_DIR`` when set by the user, else ``$XDG_CACHE_HOME/animator/torchinductor`` (default
    ``~/.cache/animator/torchinductor``), beside the stage cache."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get(CACHE_ENV)
    # Importing diffusers sets the variable to torch's default: that value is not a choice of the user.
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "animator" / "torchinductor"


def use_compile_cache() -> Path:
    """Point inductor's on-disk caches at `compile_cache_dir` (it reads the variable at every lookup)."""
    path = compile_cache_dir()
    os.environ[CACHE_ENV] = str(path)
    return path


def compile_regions(module: nn.Module, **options) -> nn.Module:
    """Compile, in place, every block of ``module`` (a UNet, a VAE or its decoder) whose class is in REGIONS;
    ``options`` go to ``torch.compile``. Returns ``module``. Raises ValueError when it holds no such block."""
    blocks = [sub for sub in module.modules() if type(sub).__name__ in REGIONS]
    if not blocks:
        raise ValueError(f"{type(module).__name__} has no block to compile ({', '.join(sorted(REGIONS))})")
    for block in blocks:
        block.compile(**options)
    return module


def compile_models(unet: nn.Module, vae: nn.Module | None = None, *, training: bool = False,
                   mode: str = "default") -> None:
    """Compile the UNet's blocks and, when given, the VAE decoder's. ``training``: gradients flow through the UNet,
    so its blocks get static shapes (inference keeps dynamo's automatic dynamic shapes: fewer graphs to trace).
    ``mode``: torch.compile's mode for the UNet blocks (``reduce-overhead`` records a CUDA graph per block and
    shape; the decoder, which the HJB refinement differentiates, keeps the default). Where compiled kernels are
    kept on disk is process set-up: `animator_cli.models.backends.configure_process`."""
    compile_regions(unet, **(STATIC if training else {}), **({} if mode == "default" else {"mode": mode}))
    if vae is not None:
        compile_decoder(vae)


def compile_decoder(vae: nn.Module) -> None:
    """Compile the blocks of ``vae``'s decoder (decoding and the HJB refinement's backward through it)."""
    compile_regions(vae.decoder, **STATIC)
