"""The training loop on accelerate: one GPU, several GPUs or nodes (``accelerate launch``), or the CPU.

What it fixes or adds over the reference's train.py (spec §4, §7): warm-up honoured (diffusers
``constant_with_warmup``), gradient clipping at ``max_grad_norm``, three optimizer param groups instead of one per
tensor, no ``empty_cache`` per step, an optional EMA of the trainable parameters only that is saved (and
written as loadable .pth files under ``checkpoint-N/ema``), optional LoRA (peft) on the UNet attention
projections, random streams seeded per rank and step (so GPUs draw different noise and drops, and a
resumed run replays the same ones), resolution buckets chosen by one shared seeded plan, and resume that
jumps straight to the saved micro-batch without loading the skipped batches.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from animator_cli.errors import InputError
from animator_cli.fileio import check_output_path, ensure_writable_dir, write_text_atomic
from animator_cli.progress import stage
from animator_cli.sampling.conditioning import cast_module
from animator_cli.sampling.fit import Fit
from animator_cli.training import checkpoint as ckpt
from animator_cli.training.config import TrainConfig
from animator_cli.training.dataset import BatchPlan, ClipDataset, DataReport, check_dataset, collate, iter_batches
from animator_cli.training.preflight import check_training
from animator_cli.training.run_folder import start_run
from animator_cli.training.step import training_loss
from animator_cli.weights.home import WeightsHome

log = logging.getLogger("animator")
LORA_TARGETS = r".*attentions.*\.(to_q|to_k|to_v|to_out\.0)$"


@dataclass
class TrainResult:
    run_dir: Path
    is_main: bool  # only the main process reports results
    start_step: int
    step: int
    losses: list[float] = field(default_factory=list)  # this process's per-step losses of this run
    checkpoints: list[Path] = field(default_factory=list)
    validation_videos: list[Path] = field(default_factory=list)


def trainable_parameters(pose_net: nn.Module, face_encoder: nn.Module, unet: nn.Module,
                         lora: bool) -> dict[str, list[nn.Parameter]]:
    """The three param groups: all of PoseNet, all of the face encoder, and the UNet's "attentions" parameters
    (LoRA: its adapters and the ID projections). Everything else is frozen."""
    for module in (pose_net, face_encoder, unet):
        module.requires_grad_(False)
    pose_net.requires_grad_(True)
    face_encoder.requires_grad_(True)
    unet_params = []
    for name, param in unet.named_parameters():
        if (ckpt.is_adapter_key(name) if lora else "attentions" in name):
            param.requires_grad_(True)
            unet_params.append(param)
    return {"pose_net": list(pose_net.parameters()), "face_encoder": list(face_encoder.parameters()),
            "unet": unet_params}


def _add_lora(unet: nn.Module, rank: int, alpha: float) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=LORA_TARGETS,
                                       init_lora_weights="gaussian"), unet)


def _step_generator(device: torch.device, *seeds: int) -> torch.Generator:
    value = int(np.random.SeedSequence(list(seeds)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(value)


def _report_data(report: DataReport, config: TrainConfig, run_dir: Path, is_main: bool) -> None:
    if is_main:
        write_text_atomic(run_dir / "data_check.json", json.dumps(
            {"summary": report.summary(), "problems": report.problems, "warnings": report.warnings}, indent=2))
        log.info("data check: %s (details in %s)", report.summary(), run_dir / "data_check.json")
    if report.problems and config.data.on_bad_clip == "error":
        clip, why = report.problems[0]
        count = len(report.problems)
        raise InputError(f"{count} clip{'s' if count > 1 else ''} cannot be used; first: {clip}: {why}",
                         f"see {run_dir / 'data_check.json'}, fix them or set data.on_bad_clip=skip")
    if report.problems and is_main:
        for clip, why in report.problems[:5]:
            log.warning("skipping clip %s: %s", clip, why)


def train(config: TrainConfig, weights: WeightsHome, resume: str | None = None,
          on_step: Callable[[int, float], None] | None = None, force: bool = False) -> TrainResult:
    """Train from ``config``; ``resume`` is None, ``latest`` or a checkpoint folder; ``force`` starts a new run in
    a folder that holds one (the previous run's files move to ``RUN/old-<time>/``, run_folder.py)."""
    run = _set_up(config, weights, resume, force)
    result = TrainResult(run.run_dir, run.accelerator.is_main_process, run.start_step, run.start_step)
    result.step = _run_steps(run, result, on_step)
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return result


@dataclass
class _Optimisation:
    """The optimizer over the three param groups, its LR schedule and the optional EMA of the trained parameters."""

    trainable: list[nn.Parameter]
    optimizer: Any  # accelerate's wrapper: it skips the update while gradients accumulate
    scheduler: Any
    ema: Any | None

    def after_update(self) -> None:
        """Advance the LR schedule and the EMA: once per optimizer update, not per micro-batch."""
        self.scheduler.step()
        if self.ema is not None:
            self.ema.step(self.trainable)


@dataclass
class _Run:
    """What one process holds for a whole run, built by `_set_up`. ``models`` are the loaded models (the frozen VAE
    and CLIP encoder run as they are); ``wrapped`` the trained networks as accelerate prepared them (the loss runs
    through these), ``unwrapped`` the same networks as plain modules (checkpoints and validation use these)."""

    config: TrainConfig
    weights: WeightsHome
    run_dir: Path
    accelerator: Any
    report: DataReport
    plan: BatchPlan
    models: Any
    wrapped: dict[str, nn.Module]
    unwrapped: dict[str, nn.Module]
    optim: _Optimisation
    start_step: int

    @functools.cached_property
    def loss_models(self) -> SimpleNamespace:
        """The models `training_loss` runs: the frozen encoders and the wrapped networks."""
        return SimpleNamespace(vae=self.models.vae, image_encoder=self.models.image_encoder, **self.wrapped)


def _set_up(config: TrainConfig, weights: WeightsHome, resume: str | None, force: bool) -> _Run:
    """Everything before the first step. The order is part of the result: the seed is set before LoRA's random
    initialisation, and a resume restores the RNG states before the data loader is made."""
    check_training(config, weights, force=force, resume=resume)
    check_output_path(Path(config.output), [Path(config.data.path)], folder=True)
    run_dir = ensure_writable_dir(Path(config.output))
    tracker = "tensorboard" if _has_tensorboard() else None
    accelerator = _accelerator(config, run_dir, tracker)
    report, plan = _check_data(config, run_dir, accelerator, force)
    with stage("loading models"):
        models, groups = _training_models(config, weights, run_dir, accelerator)
    wrapped, optim = _prepare_optimisation(config, accelerator, models, groups)
    unwrapped = {name: accelerator.unwrap_model(module) for name, module in wrapped.items()}
    _register_hooks(accelerator, unwrapped)
    start_step = _resume(accelerator, run_dir, resume)
    if tracker:
        accelerator.init_trackers("animator")
    return _Run(config, weights, run_dir, accelerator, report, plan, models, wrapped, unwrapped, optim, start_step)


def _accelerator(config: TrainConfig, run_dir: Path, tracker: str | None) -> Any:
    """The accelerate state of this process (its device, precision, gradient accumulation), its seed set."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    accelerator = Accelerator(gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
                              mixed_precision=config.mixed_precision, cpu=config.cpu, log_with=tracker,
                              project_config=ProjectConfiguration(project_dir=str(run_dir),
                                                                  logging_dir=str(run_dir / "logs")))
    if logging.getLogger("accelerate").level == logging.NOTSET:  # its per-file save messages drown the step logs
        logging.getLogger("accelerate").setLevel(logging.WARNING)
    set_seed(config.seed + accelerator.process_index)
    return accelerator


def _check_data(config: TrainConfig, run_dir: Path, accelerator: Any, force: bool) -> tuple[DataReport, BatchPlan]:
    """The run folder started (or taken over with ``force``), the dataset checked and reported, and this rank's
    share of the shared batch plan."""
    if accelerator.is_main_process and (moved := start_run(run_dir, config, force)):
        log.info("the previous run in %s moved to %s", run_dir, moved)
    report = check_dataset(Path(config.data.path), [b.list_file for b in config.data.buckets],
                           config.data.num_frames, config.data.verify_images)
    _report_data(report, config, run_dir, accelerator.is_main_process)
    plan = BatchPlan([len(c) for c in report.clips], config.data.batch_size, accelerator.num_processes,
                     accelerator.process_index, config.seed, [b.list_file for b in config.data.buckets])
    return report, plan


def _prepare_optimisation(config: TrainConfig, accelerator: Any, models: Any, groups: dict[str, list[nn.Parameter]]
                          ) -> tuple[dict[str, nn.Module], _Optimisation]:
    """AdamW over the param groups with its LR schedule and optional EMA, and the trained networks (in
    ``ckpt.MODEL_FILES`` order), prepared by accelerate; the schedule and EMA join its checkpoints."""
    from diffusers.optimization import get_scheduler

    optim = config.optim
    optimizer = torch.optim.AdamW([{"params": params, "name": name} for name, params in groups.items()],
                                  lr=optim.learning_rate, betas=(optim.adam_beta1, optim.adam_beta2),
                                  weight_decay=optim.weight_decay, eps=optim.adam_epsilon)
    scheduler = get_scheduler(optim.lr_scheduler, optimizer, num_warmup_steps=optim.warmup_steps,
                              num_training_steps=config.max_steps)
    *networks, optimizer = accelerator.prepare(*(getattr(models, name) for name in ckpt.MODEL_FILES), optimizer)
    accelerator.register_for_checkpointing(scheduler)
    trainable = [p for params in groups.values() for p in params]
    ema = None
    if config.ema.enabled:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trainable, decay=config.ema.decay)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    return dict(zip(ckpt.MODEL_FILES, networks, strict=True)), _Optimisation(trainable, optimizer, scheduler, ema)


def _resume(accelerator: Any, run_dir: Path, resume: str | None) -> int:
    """The step to start from: 0, or the resumed checkpoint's, whose weights, optimizer and RNG states are loaded."""
    start = ckpt.resolve_resume(run_dir, resume)
    if start is None:
        if resume == "latest":
            log.info("no checkpoint in %s yet: starting a new run", run_dir)
        return 0
    accelerator.load_state(str(start))
    step = ckpt.read_state(start)["step"]
    log.info("resumed from %s at step %d", start, step)
    return step


def _run_steps(run: _Run, result: TrainResult, on_step: Callable[[int, float], None] | None) -> int:
    """Optimizer steps from ``run.start_step`` to ``max_steps``, each over ``gradient_accumulation_steps``
    micro-batches; the step's loss is their mean. Returns the last step."""
    config, accelerator = run.config, run.accelerator
    step = run.start_step
    micro = step * config.optim.gradient_accumulation_steps
    loader = _loader(run, micro)
    metrics = _MetricsLog(accelerator, run.run_dir / "metrics.jsonl", config, step)
    batches = iter_batches(loader)
    window: list[float] = []
    while step < config.max_steps:
        loss, stats, grad_norm = _micro_step(run, next(batches), micro)
        micro += 1
        window.append(loss)
        if not accelerator.sync_gradients:
            continue
        run.optim.after_update()
        step += 1
        step_loss = float(np.mean(window))
        window.clear()
        result.losses.append(step_loss)
        if on_step:
            on_step(step, step_loss)
        metrics.write(step, step_loss, run.optim.scheduler.get_last_lr()[0], grad_norm, stats)
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            result.checkpoints.append(_save_checkpoint(run, step, micro))
        if config.validation.every and step % config.validation.every == 0 and accelerator.is_main_process:
            result.validation_videos.append(_validation_video(run, step))
    return step


def _loader(run: _Run, micro: int) -> torch.utils.data.DataLoader:
    """The clips of this rank's batch plan from micro-batch ``micro`` on (a resume skips the earlier ones without
    loading them)."""
    data = run.config.data
    dataset = ClipDataset(run.report.clips, [(b.width, b.height) for b in data.buckets], data.num_frames,
                          data.stride, Fit(data.fit))
    return torch.utils.data.DataLoader(dataset, batch_sampler=run.plan.iterate(micro, run.config.overfit_batch),
                                       num_workers=data.num_workers, persistent_workers=False, collate_fn=collate,
                                       pin_memory=run.accelerator.device.type == "cuda")


def _micro_step(run: _Run, batch: dict[str, torch.Tensor], micro: int
                ) -> tuple[float, dict[str, float], torch.Tensor | None]:
    """Forward and backward of one micro-batch, and the optimizer update when the accumulated gradients are synced
    (accelerate skips it in between). Noise and dropout come from a generator seeded by (seed, rank, micro-batch),
    so a resumed run draws the same ones. Returns the loss, its statistics and the gradient norm before clipping
    (None when not clipped)."""
    config, accelerator, optim = run.config, run.accelerator, run.optim
    device = accelerator.device
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    rank, world = accelerator.process_index, accelerator.num_processes
    generator = _step_generator(device, config.seed, rank, 0 if config.overfit_batch else micro)
    with accelerator.accumulate(*run.wrapped.values()):
        loss, stats = training_loss(run.loss_models, batch, config.conditioning, generator, rank, world,
                                    autocast=accelerator.autocast)
        accelerator.backward(loss)
        grad_norm = None
        if accelerator.sync_gradients and config.optim.max_grad_norm > 0:
            grad_norm = accelerator.clip_grad_norm_(optim.trainable, config.optim.max_grad_norm)
        optim.optimizer.step()
        optim.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), stats, grad_norm


def _validation_video(run: _Run, step: int) -> Path:
    """``validation/step_<step>.mp4`` rendered with the current (EMA when enabled) weights by the inference
    pipeline; training mode and the frozen encoders' precision are restored afterwards."""
    from animator_cli.models.loading import AnimatorModels
    from animator_cli.training.validation import validation_video

    models = run.models
    view = AnimatorModels(vae=models.vae, image_encoder=models.image_encoder, scheduler=models.scheduler,
                          **run.unwrapped)
    with _evaluating(run.unwrapped, run.optim.trainable, run.optim.ema), run.accelerator.autocast():
        path = validation_video(view, run.config, run.report, run.weights,
                                run.run_dir / "validation" / f"step_{step}.mp4", run.accelerator.device)
    _cast_frozen_encoders(models, run.config.mixed_precision)  # the fp32 validation pipeline upcast them
    return path


def _training_models(config: TrainConfig, weights: WeightsHome, run_dir: Path, accelerator: Any
                     ) -> tuple[Any, dict[str, list[nn.Parameter]]]:
    """All models in float32 on the process's device, the trainable ones in train mode; their param groups."""
    from animator_cli.models.loading import load_models

    models = load_models(weights, accelerator.device, torch.float32,
                         _initial_checkpoint(config, weights, run_dir, accelerator))
    _cast_frozen_encoders(models, config.mixed_precision)
    lora = config.model.lora_rank > 0
    if lora:
        _add_lora(models.unet, config.model.lora_rank, config.model.lora_alpha)
    groups = trainable_parameters(models.pose_net, models.face_encoder, models.unet, lora)
    for module in (models.pose_net, models.face_encoder, models.unet):
        module.train()
    if config.model.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
    if config.model.compile:
        from animator_cli.models.backends import configure_process
        from animator_cli.models.compile import compile_models
        from animator_cli.options import Runtime

        # training keeps torch's cuDNN default (deterministic algorithm choice); the compile cache as for renders
        configure_process(Runtime(device=str(accelerator.device), compile=True, cudnn_benchmark=False))
        compile_models(models.unet, training=True)
    return models, groups


def _cast_frozen_encoders(models: Any, mixed_precision: str) -> None:
    """The frozen CLIP encoder runs in the mixed-precision dtype (as the reference trained; it halves CLIP
    ViT-H's 2.5 GB). The VAE follows only under bf16: SVD's VAE overflows in fp16 (its config forces fp32)."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)
    if dtype is None:
        return
    cast_module(models.image_encoder, dtype)
    if dtype == torch.bfloat16:
        cast_module(models.vae, dtype)


class _MetricsLog:
    """Every ``log_every`` steps and at the last one: the step's loss averaged over processes, its learning rate,
    gradient norm, speed and loss statistics → metrics.jsonl, the console and TensorBoard (when installed)."""

    def __init__(self, accelerator: Any, path: Path, config: TrainConfig, start_step: int) -> None:
        self.accelerator, self.path, self.start_step = accelerator, path, start_step
        self.every, self.last = config.log_every, config.max_steps
        self.started = time.perf_counter()  # steps_per_s counts from here

    def write(self, step: int, loss: float, lr: float, grad_norm: torch.Tensor | None,
              stats: dict[str, float]) -> None:
        if step % self.every and step != self.last:
            return
        accelerator = self.accelerator
        record = {"step": step, "loss": loss, "lr": lr, "grad_norm": None if grad_norm is None else float(grad_norm),
                  "steps_per_s": (step - self.start_step) / (time.perf_counter() - self.started), **stats}
        record["loss"] = float(accelerator.reduce(torch.tensor(loss, device=accelerator.device), "mean"))
        if accelerator.is_main_process:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            log.info("step %d loss %.4f lr %.2e", step, record["loss"], lr)
        accelerator.log({k: v for k, v in record.items() if isinstance(v, float)}, step=step)


@contextlib.contextmanager
def _evaluating(modules: dict[str, nn.Module], trainable: list[nn.Parameter], ema: Any):
    """Eval mode (with the EMA weights when enabled); training state restored afterwards, since the sampling
    pipeline freezes every module it is given."""
    if ema is not None:
        ema.store(trainable)
        ema.copy_to(trainable)
    try:
        yield
    finally:
        if ema is not None:
            ema.restore(trainable)
        for module in modules.values():
            module.train()
        for param in trainable:
            param.requires_grad_(True)


def _register_hooks(accelerator: Any, modules: dict[str, nn.Module]) -> None:
    """Accelerate saves optimizer/scheduler/RNG/EMA; the models go to the released-format .pth files instead."""
    def save_hook(_models: list, weights: list, output_dir: str) -> None:
        if accelerator.is_main_process:
            ckpt.save_models(Path(output_dir), modules)
        weights.clear()

    def load_hook(models: list, input_dir: str) -> None:
        ckpt.load_models_into(Path(input_dir), modules)
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _save_checkpoint(run: _Run, step: int, micro: int) -> Path:
    """``checkpoint-<step>``, written under a partial name and renamed when every process is done."""
    accelerator, run_dir, config, ema = run.accelerator, run.run_dir, run.config, run.optim.ema
    final = run_dir / f"checkpoint-{step}"
    partial = run_dir / f".checkpoint-{step}.partial"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()  # every rank has written its RNG state before the folder is renamed
    if accelerator.is_main_process:
        if ema is not None:
            (partial / "ema").mkdir()
            ema.store(run.optim.trainable)
            ema.copy_to(run.optim.trainable)
            try:
                ckpt.save_models(partial / "ema", run.unwrapped)
            finally:
                ema.restore(run.optim.trainable)
        (partial / ckpt.STATE_FILE).write_text(json.dumps(
            {"step": step, "micro_batch": micro, "config": config.as_dict()}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for old in ckpt.prune(run_dir, config.checkpoints_keep):
            log.info("removed old checkpoint %s", old)
        log.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def _initial_checkpoint(config: TrainConfig, weights: WeightsHome, run_dir: Path, accelerator: Any) -> Path | None:
    """Where the starting weights come from: the home's release (None), a given folder, or SVD (``RUN/init``)."""
    if config.model.init == "release":
        return Path(config.model.init_checkpoint) if config.model.init_checkpoint else None
    from animator_cli.training.init_weights import svd_initial_checkpoint

    folder = run_dir / "init"
    if accelerator.is_main_process:
        svd_initial_checkpoint(weights, folder, config.seed)
    accelerator.wait_for_everyone()
    return folder


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None

