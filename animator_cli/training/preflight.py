"""What `train` checks before any work, without importing torch: the dataset folder, every weights component the
run loads (all missing ones in one error), and that the run folder is not another config's run (run_folder.py)."""

from __future__ import annotations

from pathlib import Path

from animator_cli.errors import InputError
from animator_cli.training.config import TrainConfig
from animator_cli.training.run_folder import check_run_folder
from animator_cli.weights.home import WeightsHome


def require_dataset_dir(root: Path | str | None) -> Path:
    """The dataset folder ``root``, or an InputError saying how to make one."""
    hint = "pass --data DATASET_DIR (see `animator prepare-data`)"
    if root is None:
        raise InputError("no dataset given", hint + " or set data.path in the config")
    if not Path(root).is_dir():
        raise InputError(f"dataset folder {root} does not exist", hint)
    return Path(root)


def training_weights(config: TrainConfig) -> list[str]:
    """The weights components a run loads: SVD, and the released checkpoints when it fine-tunes them."""
    release = config.model.init == "release" and not config.model.init_checkpoint
    return ["svd", *(["animation"] if release else [])]


def check_training(config: TrainConfig, weights: WeightsHome, *, force: bool = False,
                   resume: str | None = None) -> None:
    """The dataset folder exists, every weights component the run loads is installed, and the run folder may take
    this run (``force``: start over, ``resume``: continue; see run_folder.py)."""
    require_dataset_dir(config.data.path)
    weights.require_components(training_weights(config))
    check_run_folder(Path(config.output), config, force=force, resume=resume)
