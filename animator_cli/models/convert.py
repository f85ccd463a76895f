"""`animator weights convert`: half-precision ``.safetensors`` twins of the released ``.pth`` checkpoints.

The loader prefers the twins: they load without unpickling, stream tensor by tensor and are half the size.
All three ``.pth`` are checked against the architecture (sized from the home's SVD configs) before any twin
is written, so a wrong file never ends up shadowing the original.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from animator_cli.fileio import atomic_path
from animator_cli.models.loading import build_architecture, check_state_dict, read_state_dict
from animator_cli.weights.home import WeightsHome


def convert_checkpoints(home: WeightsHome, dtype: torch.dtype = torch.float16) -> list[Path]:
    """Write ``<name>.safetensors`` next to each ``<name>.pth`` of the Animation folder; return their paths."""
    svd_dir = home.require(home.svd_dir / "model_index.json", "SVD-xt diffusers folder",
                           "animator weights download --only svd").parent
    architecture = build_architecture(svd_dir).modules()
    sources = {name: home.require(home.animation_dir / f"{name}.pth", f"StableAnimator checkpoint {name}",
                                  "animator weights download --only animation") for name in architecture}
    for name, source in sources.items():  # check all first (memory-mapped, cheap): all twins or none
        check_state_dict(read_state_dict(source), architecture[name], source)
    written = []
    for source in sources.values():
        state_dict = read_state_dict(source, "cpu", dtype)
        target = source.with_suffix(".safetensors")
        with atomic_path(target) as tmp:
            save_file({key: tensor.contiguous() for key, tensor in state_dict.items()}, str(tmp),
                      metadata={"format": "pt", "source": source.name})
        written.append(target)
        del state_dict
    return written
