"""Training checkpoints: ``RUN/checkpoint-N/`` holds the three files ``generate`` loads plus the accelerate state.

``pose_net.pth``, ``face_encoder.pth`` and ``unet.pth`` have exactly the released checkpoints' keys (a LoRA run
writes the UNet with its adapters merged), so ``load_models(home, ..., checkpoint_dir=RUN/checkpoint-N)``
and ``animator generate --checkpoint`` read them unchanged. Accelerate writes the optimizer, LR scheduler, RNG
and EMA states beside them; its own copy of the model weights is suppressed by a save hook (the reference
stored every weight twice). The folder is written as ``.checkpoint-N.partial`` and renamed when complete,
so ``--resume latest`` never picks a half-written checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from animator_cli.errors import InputError
from animator_cli.models.loading import check_state_dict, read_state_dict

STATE_FILE = "trainer_state.json"
LORA_FILE = "unet_adapters.pth"
MODEL_FILES = ("pose_net", "face_encoder", "unet")  # the order the models are given to accelerator.prepare
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()
             and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """``latest`` → the newest complete checkpoint (None if there is none yet); a path → that checkpoint."""
    if resume is None:
        return None
    if resume == "latest":
        found = checkpoint_dirs(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise InputError(f"{path} is not a complete training checkpoint (no {STATE_FILE})",
                         "pass --resume latest or a RUN_DIR/checkpoint-N folder")
    return path


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def prune(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (keep 0 = keep all); returns what was deleted."""
    found = checkpoint_dirs(run_dir)
    doomed = found[:-keep] if keep and len(found) > keep else []
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def unet_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's tensors under the released keys, LoRA adapters (if any) added to their base weights.

    The merged weights are computed beside the module (base + ΔW), never by merging in place, so saving a
    checkpoint does not perturb the weights being trained."""
    state = {k.replace(".base_layer.", "."): v.detach() for k, v in unet.state_dict().items() if "lora_" not in k}
    from_peft = len(state) != len(unet.state_dict())
    if from_peft:
        from peft.tuners.lora import LoraLayer

        for name, module in unet.named_modules():
            if isinstance(module, LoraLayer):
                key = f"{name}.weight"
                with torch.no_grad():
                    state[key] = state[key] + sum(module.get_delta_weight(a) for a in module.active_adapters)
    return {k: v.contiguous() for k, v in state.items()}


def is_adapter_key(key: str) -> bool:
    """UNet state keys a LoRA run trains: the LoRA matrices and the ID adapter's projections."""
    return "lora_" in key or ".processor.id_to_" in key


def save_models(folder: Path, modules: dict[str, nn.Module]) -> None:
    """Write ``<name>.pth`` for pose_net, face_encoder, unet (float32 tensors, plain state dicts)."""
    for name in MODEL_FILES:
        module = modules[name]
        state = unet_state_dict(module) if name == "unet" else module.state_dict()
        torch.save({k: v.detach().float().contiguous().cpu() for k, v in state.items()}, folder / f"{name}.pth")
    unet_state = modules["unet"].state_dict()
    if any("lora_" in k for k in unet_state):  # a merged unet.pth cannot be split again: keep the adapters too
        torch.save({k: v.detach().cpu() for k, v in unet_state.items() if is_adapter_key(k)},
                   folder / LORA_FILE)


def load_models_into(folder: Path, modules: dict[str, nn.Module]) -> None:
    """Restore the trained modules from a checkpoint folder (strict: every key and shape must match).

    A LoRA UNet keeps its frozen base weights (the run's initial checkpoint) and gets its adapters back."""
    for name in MODEL_FILES:
        module = modules[name]
        if name == "unet" and any("lora_" in k for k in module.state_dict()):
            path = Path(folder) / LORA_FILE
            expected = {k for k in module.state_dict() if is_adapter_key(k)}
        else:
            path = Path(folder) / f"{name}.pth"
            expected = None
        state = read_state_dict(path, device="cpu")
        if expected is None:
            check_state_dict(state, module, path)
        elif set(state) != expected:
            raise InputError(f"{path} does not hold this run's LoRA adapters",
                             "resume with the same model.lora_rank as the run was started with")
        module.load_state_dict(state, strict=expected is None)
