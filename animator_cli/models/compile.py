"""Regional ``torch.compile``: the UNet's down/mid/up blocks and the VAE decoder's blocks, each compiled in place.

Compiling the blocks rather than whole models keeps compile time short and the models' state-dict keys
unchanged (``nn.Module.compile`` wraps the call, not the module), so checkpoints save and load as before and
the compiled model is the same object. The UNet forward has no graph break (no hooks, no Python-side state), so
every block is one graph. Works on the CPU too (inductor generates C++); the first call of each shape compiles.
"""

from __future__ import annotations

from torch import nn

from animator_cli.models.unet import AnimatorUNet

# The classes compiled: the UNet's blocks and those of the temporal VAE decoder (which the HJB refinement also runs).
REGIONS = frozenset({*AnimatorUNet._repeated_blocks, "MidBlockTemporalDecoder", "UpBlockTemporalDecoder"})


def compile_regions(module: nn.Module, **options) -> nn.Module:
    """Compile, in place, every block of ``module`` (a UNet, a VAE or its decoder) whose class is in REGIONS;
    ``options`` go to ``torch.compile``. Returns ``module``. Raises ValueError when it holds no such block."""
    blocks = [sub for sub in module.modules() if type(sub).__name__ in REGIONS]
    if not blocks:
        raise ValueError(f"{type(module).__name__} has no block to compile ({', '.join(sorted(REGIONS))})")
    for block in blocks:
        block.compile(**options)
    return module


def compile_models(unet: nn.Module, vae: nn.Module | None = None) -> None:
    """Compile the UNet's blocks and, when given, the VAE decoder's (training passes no VAE)."""
    compile_regions(unet)
    if vae is not None:
        compile_regions(vae.decoder)
