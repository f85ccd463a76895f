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
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler

    from animator_cli.models.loading import AnimatorModels

    check_training(config, weights, force=force, resume=resume)
    check_output_path(Path(config.output), [Path(config.data.path)], folder=True)
    run_dir = ensure_writable_dir(Path(config.output))
    tracker = "tensorboard" if _has_tensorboard() else None
    accelerator = Accelerator(gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
                              mixed_precision=config.mixed_precision, cpu=config.cpu, log_with=tracker,
                              project_config=ProjectConfiguration(project_dir=str(run_dir),
                                                                  logging_dir=str(run_dir / "logs")))
    rank, world = accelerator.process_index, accelerator.num_processes
    if logging.getLogger("accelerate").level == logging.NOTSET:  # its per-file save messages drown the step logs
        logging.getLogger("accelerate").setLevel(logging.WARNING)
    set_seed(config.seed + rank)
    device = accelerator.device

    if accelerator.is_main_process and (moved := start_run(run_dir, config, force)):
        log.info("the previous run in %s moved to %s", run_dir, moved)
    report = check_dataset(Path(config.data.path), [b.list_file for b in config.data.buckets],
                           config.data.num_frames, config.data.verify_images)
    _report_data(report, config, run_dir, accelerator.is_main_process)
    plan = BatchPlan([len(c) for c in report.clips], config.data.batch_size, world, rank, config.seed,
                     [b.list_file for b in config.data.buckets])

    with stage("loading models"):
        models, groups = _training_models(config, weights, run_dir, accelerator)
    optim = config.optim
    optimizer = torch.optim.AdamW([{"params": params, "name": name} for name, params in groups.items()],
                                  lr=optim.learning_rate, betas=(optim.adam_beta1, optim.adam_beta2),
                                  weight_decay=optim.weight_decay, eps=optim.adam_epsilon)
    scheduler = get_scheduler(optim.lr_scheduler, optimizer, num_warmup_steps=optim.warmup_steps,
                              num_training_steps=config.max_steps)
    pose_net, face_encoder, unet, optimizer = accelerator.prepare(models.pose_net, models.face_encoder, models.unet,
                                                                  optimizer)
    accelerator.register_for_checkpointing(scheduler)
    ema = None
    trainable = [p for params in groups.values() for p in params]
    if config.ema.enabled:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trainable, decay=config.ema.decay)
        ema.to(device)
        accelerator.register_for_checkpointing(ema)
    unwrapped = {name: accelerator.unwrap_model(m) for name, m in
                 (("pose_net", pose_net), ("face_encoder", face_encoder), ("unet", unet))}
    _register_hooks(accelerator, unwrapped)

    start = ckpt.resolve_resume(run_dir, resume)
    step = 0
    if start is not None:
        accelerator.load_state(str(start))
        step = ckpt.read_state(start)["step"]
        log.info("resumed from %s at step %d", start, step)
    elif resume == "latest":
        log.info("no checkpoint in %s yet: starting a new run", run_dir)
    if tracker:
        accelerator.init_trackers("animator")

    dataset = ClipDataset(report.clips, [(b.width, b.height) for b in config.data.buckets], config.data.num_frames,
                          config.data.stride, Fit(config.data.fit))
    accum = optim.gradient_accumulation_steps
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=plan.iterate(step * accum, config.overfit_batch),
                                         num_workers=config.data.num_workers, pin_memory=device.type == "cuda",
                                         persistent_workers=False, collate_fn=collate)
    step_models = SimpleNamespace(vae=models.vae, image_encoder=models.image_encoder, pose_net=pose_net,
                                  face_encoder=face_encoder, unet=unet)
    result = TrainResult(run_dir, accelerator.is_main_process, step, step)
    metrics_path = run_dir / "metrics.jsonl"
    micro = step * accum
    window: list[float] = []
    started = time.perf_counter()
    batches = iter_batches(loader)
    while step < config.max_steps:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        generator = _step_generator(device, config.seed, rank, 0 if config.overfit_batch else micro)
        with accelerator.accumulate(pose_net, face_encoder, unet):
            loss, stats = training_loss(step_models, batch, config.conditioning, generator, rank, world,
                                        autocast=accelerator.autocast)
            accelerator.backward(loss)
            grad_norm = None
            if accelerator.sync_gradients and optim.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(trainable, optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        micro += 1
        window.append(float(loss.detach()))
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        if ema is not None:
            ema.step(trainable)
        step += 1
        step_loss = float(np.mean(window))
        window.clear()
        result.losses.append(step_loss)
        if on_step:
            on_step(step, step_loss)
        if step % config.log_every == 0 or step == config.max_steps:
            record = {"step": step, "loss": step_loss, "lr": scheduler.get_last_lr()[0],
                      "grad_norm": None if grad_norm is None else float(grad_norm),
                      "steps_per_s": (step - result.start_step) / (time.perf_counter() - started), **stats}
            _log_metrics(accelerator, record, metrics_path)
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            result.checkpoints.append(_save_checkpoint(accelerator, run_dir, step, micro, config, ema, trainable,
                                                       unwrapped))
        if config.validation.every and step % config.validation.every == 0 and accelerator.is_main_process:
            from animator_cli.training.validation import validation_video

            view = AnimatorModels(vae=models.vae, image_encoder=models.image_encoder, scheduler=models.scheduler,
                                  **unwrapped)
            with _evaluating(unwrapped, trainable, ema), accelerator.autocast():
                result.validation_videos.append(validation_video(
                    view, config, report, weights, run_dir / "validation" / f"step_{step}.mp4", device))
            _cast_frozen_encoders(models, config.mixed_precision)  # the fp32 validation pipeline upcast them
    result.step = step
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


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
        from animator_cli.models.compile import compile_models

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


def _log_metrics(accelerator: Any, record: dict[str, Any], path: Path) -> None:
    """Loss averaged over processes → metrics.jsonl, the console and TensorBoard (when installed)."""
    record["loss"] = float(accelerator.reduce(torch.tensor(record["loss"], device=accelerator.device), "mean"))
    if accelerator.is_main_process:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        log.info("step %d loss %.4f lr %.2e", record["step"], record["loss"], record["lr"])
    accelerator.log({k: v for k, v in record.items() if isinstance(v, float)}, step=record["step"])


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


def _save_checkpoint(accelerator: Any, run_dir: Path, step: int, micro: int, config: TrainConfig, ema: Any,
                     trainable: list[nn.Parameter], modules: dict[str, nn.Module]) -> Path:
    """``checkpoint-<step>``, written under a partial name and renamed when every process is done."""
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
            ema.store(trainable)
            ema.copy_to(trainable)
            try:
                ckpt.save_models(partial / "ema", modules)
            finally:
                ema.restore(trainable)
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

