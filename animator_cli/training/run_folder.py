"""A run folder belongs to one config: resuming needs the same one, ``--force`` starts over and keeps the old run.

``RUN/config.yaml`` records the config a run was started with. Training into the folder with a config that
differs in what shapes the weights (data, model, optimiser, conditioning, EMA, seed, precision) would resume one
run's checkpoints under another's settings and rewrite config.yaml to claim the mixture. Settings that only say
how long, how often, where or how fast (SESSION_KEYS) may change from one session to the next.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from animator_cli.errors import InputError
from animator_cli.fileio import write_text_atomic
from animator_cli.training.config import TrainConfig, load_config

CONFIG_FILE = "config.yaml"
SESSION_KEYS = ("output", "max_steps", "checkpoint_every", "checkpoints_keep", "log_every", "cpu", "data.path",
                "data.num_workers", "data.on_bad_clip", "data.verify_images", "model.weights", "model.compile",
                "validation")
# What a run writes into its folder; --force moves exactly these aside, never a file the run did not make.
RUN_FILES = re.compile(r"config\.yaml|data_check\.json|metrics\.jsonl|logs|validation|init|"
                       r"checkpoint-\d+|\.checkpoint-\d+\.partial")
SHOWN_CHANGES = 3


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changes(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted key → (old, new) for the settings that differ and shape the run (SESSION_KEYS left out)."""
    before, after = _flat(old.as_dict()), _flat(new.as_dict())
    return {key: (before[key], after[key]) for key in after
            if before[key] != after[key] and not any(key == s or key.startswith(f"{s}.") for s in SESSION_KEYS)}


def check_run_folder(run_dir: Path, config: TrainConfig, *, force: bool = False, resume: str | None = None) -> None:
    """Before any work (every process): an InputError when ``run_dir`` holds a run of another config, unless
    ``force``; ``force`` with ``resume`` contradicts itself."""
    if force and resume is not None:
        raise InputError("--force starts a new run and --resume continues one", "give one of them")
    path = Path(run_dir) / CONFIG_FILE
    if force or not path.is_file():
        return
    hint = (f"train into another --output, or with --config {path}, or add --force to start over (the previous "
            f"run moves to {Path(run_dir) / 'old-<time>'})")
    try:
        previous = load_config(path)
    except InputError as exc:
        raise InputError(f"the run folder's {path} cannot be read ({exc.message})", hint) from exc
    if differ := changes(previous, config):
        shown = ", ".join(f"{key} {old!r} → {new!r}" for key, (old, new) in list(differ.items())[:SHOWN_CHANGES])
        more = f" and {len(differ) - SHOWN_CHANGES} more" if len(differ) > SHOWN_CHANGES else ""
        raise InputError(f"run folder {run_dir} was made with another config ({shown}{more}): resuming needs the "
                         "same config", hint)


def start_run(run_dir: Path, config: TrainConfig, force: bool = False) -> Path | None:
    """The main process, once the folder is checked: with ``force`` the previous run's files move to
    ``RUN/old-<time>/`` (returned); then config.yaml records ``config``."""
    run_dir = Path(run_dir)
    moved = _move_aside(run_dir) if force else None
    write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(config.as_dict(), sort_keys=False))
    return moved


def _move_aside(run_dir: Path) -> Path | None:
    found = [p for p in run_dir.iterdir() if RUN_FILES.fullmatch(p.name)]
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, number = run_dir / f"old-{stamp}", 1
    while aside.exists():
        number += 1
        aside = run_dir / f"old-{stamp}-{number}"
    aside.mkdir()
    for path in found:
        os.replace(path, aside / path.name)
    return aside
