"""`--compile` beyond the UNet prediction (tests/test_lossless_speedups.py): training and the HJB face refinement,
which backpropagate through compiled blocks, and where inductor keeps its cache."""

from __future__ import annotations

import os

import torch
from torch._dynamo.utils import counters

from animator_cli.generate import load_pipeline
from animator_cli.hjb import FaceRefiner, load_arcface, reference_face_crop
from animator_cli.hjb.checkpointing import checkpointed_layers
from animator_cli.models.compile import CACHE_ENV, compile_cache_dir, compile_decoder, compile_models
from animator_cli.options import FaceOptOptions, Runtime
from animator_cli.sampling.fit import fit_image
from animator_cli.video import load_image

FACE_BOX = (16, 8, 48, 40)  # a face box in 64×64 frames
FRAMES = 4


def _loss_and_gradient(refiner: FaceRefiner, vae: torch.nn.Module,
                       z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What one Adam iteration of the refiner consumes: the identity loss of x̂0 ``z`` and its gradient, through the
    decoder checkpointed per layer (the CPU's plan for a whole-frame decode)."""
    z = z.clone().requires_grad_(True)
    with torch.enable_grad(), checkpointed_layers(vae.decoder):
        loss = refiner._loss(vae, z, list(range(FRAMES)), [FACE_BOX] * FRAMES, (0, 0, 8, 8), FRAMES)
        loss.backward()
    return loss.detach(), z.grad


def test_face_refinement_through_the_compiled_decoder(tiny_home, astronaut_path):
    """`--face-opt --compile`: the refiner backpropagates through the compiled decoder blocks and gets eager's loss
    and gradient (x̂0's update: Adam's first step is about lr·sign(gradient), so the refined latents themselves
    would magnify a rounding difference of a near-zero gradient element to 2·lr). Inductor reorders fp32 sums
    (measured: gradient within 1.4e-6 of its largest element, loss within 6e-8 of ~1); 1e-5 leaves room for other
    CPUs' kernels. Refining the next chunk or step compiles nothing new (the checkpointed layers keep their forward
    object, on which dynamo guards)."""
    vae = load_pipeline(tiny_home, Runtime(device="cpu")).models.vae
    crop = reference_face_crop(fit_image(load_image(astronaut_path), 64, 64), (20, 4, 40, 28))
    refiner = FaceRefiner(load_arcface(tiny_home), crop, [FACE_BOX] * FRAMES, FaceOptOptions(), 4, FRAMES)
    z = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    want_loss, want_gradient = _loss_and_gradient(refiner, vae, z)
    compile_decoder(vae)
    loss, gradient = _loss_and_gradient(refiner, vae, z)
    assert vae.decoder.up_blocks[0]._compiled_call_impl is not None and want_gradient.abs().max() > 0
    assert (loss - want_loss).abs() <= 1e-5 * want_loss.abs()
    assert (gradient - want_gradient).abs().max() <= 1e-5 * want_gradient.abs().max()
    graphs = counters["stats"]["unique_graphs"]
    _loss_and_gradient(refiner, vae, z)
    assert counters["stats"]["unique_graphs"] == graphs


def test_training_backpropagates_through_the_compiled_unet(tiny_home):
    """`animator train --compile` (``compile_models(unet, training=True)``) used to stop at the first backward
    with "InductorError: cannot determine truth value of Relational" (the blocks' automatic dynamic-shape graphs);
    with static shapes the gradients are eager's within fp32 rounding: measured 1.25e-6 relative (norm of all
    parameters' gradients; eager itself moves 8.8e-7 under a half-ulp change of its input). 16×16 latents, as in
    the prediction test: at 8×8 the tiny UNet's 1×1 bottleneck amplifies rounding 200-fold. Single parameters with
    near-zero gradients differ relatively more, in eager too, so the norm is compared."""
    unet = load_pipeline(tiny_home, Runtime(device="cpu")).models.unet.train().requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    sample, pose = torch.randn(1, 2, 8, 16, 16, generator=g), torch.randn(2, unet.conv_in.out_channels, 16, 16)
    context = torch.randn(1, 5, unet.config.cross_attention_dim, generator=g)

    def gradients() -> list[torch.Tensor]:
        unet.zero_grad(set_to_none=True)
        output = unet(sample, torch.tensor(0.5), context, torch.tensor([[6.0, 127.0, 0.02]]), pose_latents=pose)
        output.square().mean().backward()
        return [p.grad.clone() for p in unet.parameters()]

    want = torch.cat([grad.flatten() for grad in gradients()])
    compile_models(unet, training=True)
    got = torch.cat([grad.flatten() for grad in gradients()])
    assert unet.down_blocks[0]._compiled_call_impl is not None and want.abs().max() > 0
    assert (got - want).norm() <= 1e-5 * want.norm()


def test_inductor_cache_lives_beside_the_stage_cache(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(CACHE_ENV, default_cache_dir())  # what importing diffusers leaves: not the user's choice
    assert compile_cache_dir() == tmp_path / "animator" / "torchinductor"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"


def test_compile_cache_is_set_up_with_the_process_not_by_compiling(monkeypatch, tmp_path):
    """Inductor reads its cache folder from the environment: `configure_process` sets it (with ``compile``), and
    compiling a model changes no process state of its own."""
    from animator_cli.models.backends import configure_process

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    ours = str(tmp_path / "animator" / "torchinductor")
    configure_process(Runtime(device="cpu"))
    assert CACHE_ENV not in os.environ
    block = torch.nn.Sequential(torch.nn.Linear(2, 2))
    monkeypatch.setattr("animator_cli.models.compile.REGIONS", {"Sequential"})
    compile_models(block)
    assert os.environ.get(CACHE_ENV) != ours  # (torch itself may write its own default there)
    configure_process(Runtime(device="cpu", compile=True))
    assert os.environ[CACHE_ENV] == ours
