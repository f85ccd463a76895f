"""The fast paths (pose as extra conv_in channels, one-CLIP-token attention, timestep tensors, batched windows,
regional torch.compile) give today's output within fp32 tolerance (1e-5) on the make-tiny home.

What is compared is the denoiser output of a step: the window-blended v-predictions (both guidance branches,
every frame) for identical inputs. Final latents cannot be held to 1e-5: the Euler step at sigma_max = 700 works
on latents of magnitude ~700 (one float32 ulp there is 6e-5), and the random tiny UNet amplifies any change of
rounding over later steps (today's code differs from its own ``--split-cfg`` by ~1e-3 after three steps).

The reference is the behaviour before those changes, rebuilt here from diffusers' stock pieces: the pose
features added by a forward hook on ``conv_in``, diffusers' ``AttnProcessor2_0`` (full SDPA) for the spatial and
temporal attention (the temporal context cut to the CLIP token), and the ID adapter's two full attentions with
the statistics of the whole CLIP-branch tensor; the pipeline runs one window per UNet call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch.utils._python_dispatch import TorchDispatchMode

from animator_cli.errors import InputError
from animator_cli.generate import load_pipeline
from animator_cli.models.compile import compile_models
from animator_cli.models.id_adapter import IDAttnProcessor, TemporalAttnProcessor
from animator_cli.models.unet import NUM_ID_TOKENS, AnimatorUNet
from animator_cli.options import Runtime, SamplingOptions
from animator_cli.sampling.pipeline import AnimationPipeline, windows_per_call
from animator_cli.sampling.schedule import KarrasSchedule
from animator_cli.sampling.windows import group_windows

TOLERANCE = 1e-5
FRAMES = 40  # three windows of 16


class _ReferenceTemporal:
    """Today's temporal processor: full attention over the CLIP token(s) of the context."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, **kwargs):
        context = None if encoder_hidden_states is None else encoder_hidden_states[:, :-NUM_ID_TOKENS]
        return AttnProcessor2_0()(attn, hidden_states, context)


class _ReferenceID:
    """Today's ID adapter: two full attentions, the identity branch aligned to the whole CLIP-branch tensor."""

    def __init__(self, processor: IDAttnProcessor) -> None:
        self.processor = processor

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, **kwargs):
        clip, ids = encoder_hidden_states[:, :-NUM_ID_TOKENS], encoder_hidden_states[:, -NUM_ID_TOKENS:]
        query = attn.to_q(hidden_states)

        def attend(key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            q, k, v = (t.unflatten(-1, (attn.heads, -1)).transpose(1, 2) for t in (query, key, value))
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)

        h = attend(attn.to_k(clip), attn.to_v(clip))
        i = attend(self.processor.id_to_k(ids), self.processor.id_to_v(ids))
        h_std, h_mean = torch.std_mean(h, dim=(1, 2), keepdim=True)
        i_std, i_mean = torch.std_mean(i, dim=(1, 2), keepdim=True)
        aligned = (i - i_mean) * (h_std / (i_std + 1e-5)) + h_mean
        return attn.to_out[1](attn.to_out[0](h + self.processor.scale * aligned))


def _reference_forward(unet: AnimatorUNet):
    """Today's UNet forward: the pose features added to conv_in's output by a hook held for one call."""

    def forward(sample, timestep, encoder_hidden_states, added_time_ids, pose_latents=None):
        hook = None
        if pose_latents is not None:
            pose = pose_latents.flatten(0, 1) if pose_latents.ndim == 5 else pose_latents
            hook = unet.conv_in.register_forward_hook(lambda _module, _args, output: output + pose)
        try:
            return UNetSpatioTemporalConditionModel.forward(unet, sample, timestep, encoder_hidden_states,
                                                            added_time_ids, return_dict=False)[0]
        finally:
            if hook is not None:
                hook.remove()

    return forward


@contextlib.contextmanager
def reference_unet(unet: AnimatorUNet) -> Iterator[None]:
    """Swap in today's processors and forward for the duration of the block."""
    installed = unet.attn_processors
    reference = {}
    for name, processor in installed.items():
        if isinstance(processor, IDAttnProcessor):
            reference[name] = _ReferenceID(processor)
        elif isinstance(processor, TemporalAttnProcessor):
            reference[name] = _ReferenceTemporal()
        else:
            reference[name] = AttnProcessor2_0()
    unet.set_attn_processor(reference)
    unet.forward = _reference_forward(unet)
    try:
        yield
    finally:
        del unet.forward
        unet.set_attn_processor(installed)


def tiny_pipeline(home, runtime: Runtime) -> AnimationPipeline:
    pipeline = load_pipeline(home, runtime)
    with torch.no_grad():  # the tiny home's ID projections are copies of to_k/to_v: make the branches differ
        for name, param in pipeline.models.unet.named_parameters():
            if ".processor.id_to_" in name:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    return pipeline


@pytest.fixture(scope="module")
def loaded_pipeline(tiny_home) -> AnimationPipeline:
    return tiny_pipeline(tiny_home, Runtime(device="cpu"))


@pytest.fixture
def pipeline(loaded_pipeline: AnimationPipeline) -> Iterator[AnimationPipeline]:
    """The module's pipeline, its settings put back after each test whatever the test changed."""
    with pipeline_settings(loaded_pipeline):
        yield loaded_pipeline


@contextlib.contextmanager
def pipeline_settings(pipeline: AnimationPipeline, **settings) -> Iterator[None]:
    """``pipeline`` with ``settings`` (attribute values) for the block; its ``batch_cfg`` and ``window_batch`` are
    restored after it."""
    saved = {name: getattr(pipeline, name) for name in ("batch_cfg", "window_batch", *settings)}
    for name, value in settings.items():
        setattr(pipeline, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(pipeline, name, value)


def random_inputs(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reference, FRAMES pose frames (size × size) and an identity, seeded."""
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            rng.integers(0, 256, (FRAMES, size, size, 3), np.uint8), rng.standard_normal(512).astype(np.float32))


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return random_inputs(64)


def first_step_prediction(pipeline: AnimationPipeline, inputs, options: SamplingOptions) -> torch.Tensor:
    """The blended (cond, uncond) v-predictions (2, F, 4, h, w) of the first denoising step."""
    captured = []
    blend = pipeline._blend
    pipeline._blend = lambda *args: captured.append(torch.cat(blend(*args))) or blend_result(captured[-1])
    pipeline._decode = lambda latents, chunk: iter([np.zeros(1)])
    try:
        pipeline(*inputs, options, torch.Generator().manual_seed(1))
    finally:
        del pipeline._blend, pipeline._decode
    return captured[0]  # copied when made: the loop then combines the predictions in place


def blend_result(prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of (cond, uncond) as `AnimationPipeline._blend` returns them, for the loop to go on with."""
    prediction = prediction.clone()
    return prediction[:1], prediction[1:]


GUIDED = SamplingOptions(steps=1, min_guidance=2.0, max_guidance=3.0)
UNGUIDED = SamplingOptions(steps=1, min_guidance=1.0, max_guidance=1.0)


def reference_prediction(pipeline: AnimationPipeline, inputs, options: SamplingOptions) -> torch.Tensor:
    """Today's first-step prediction: the reference UNet, one window per call."""
    with pipeline_settings(pipeline, window_batch=1), reference_unet(pipeline.models.unet):
        return first_step_prediction(pipeline, inputs, options)


@pytest.mark.parametrize(("options", "batch_cfg"), [(GUIDED, True), (GUIDED, False), (UNGUIDED, True)],
                         ids=["guided", "split-cfg", "unguided"])
def test_pipeline_predictions_equal_the_reference(pipeline, inputs, options, batch_cfg):
    """Today's UNet and processors, one window per call, give the reference UNet's prediction."""
    with pipeline_settings(pipeline, batch_cfg=batch_cfg, window_batch=1):
        expected = reference_prediction(pipeline, inputs, options)
        got = first_step_prediction(pipeline, inputs, options)
    assert expected[0].abs().mean() > 0.1  # a real prediction, not zeros
    assert (got - expected).abs().max() <= TOLERANCE


def unet_batches(pipeline: AnimationPipeline, inputs, options: SamplingOptions) -> tuple[torch.Tensor, list[int]]:
    """The first step's prediction and the batch size of each UNet call that made it."""
    batches = []
    hook = pipeline.models.unet.register_forward_pre_hook(lambda _module, args: batches.append(len(args[0])))
    try:
        return first_step_prediction(pipeline, inputs, options), batches
    finally:
        hook.remove()


# 128×128: at 64×64 the tiny UNet's bottleneck (1×1 pixel, 2 channels per GroupNorm group) turns the CPU kernels'
# batch-size-dependent rounding into differences of up to 3e-3 between batches of 1 and 2 windows (see
# test_compiled_unet_is_one_graph_and_gives_the_same_prediction); at 128×128 they stay below 2.5e-6.
@pytest.mark.parametrize(("options", "batch_cfg", "window_batch", "calls"),
                         [(GUIDED, True, 3, [6]), (GUIDED, False, 2, [2, 2, 1, 1]), (UNGUIDED, True, 2, [2, 1])],
                         ids=["guided-3-windows-per-call", "split-cfg-2-windows", "unguided-2-windows"])
def test_batched_windows_equal_one_window_per_call(pipeline, options, batch_cfg, window_batch, calls):
    """Windows stacked into one UNet call give the prediction of the same pipeline running one window per call
    (3 windows of 16 frames)."""
    inputs = random_inputs(128)
    with pipeline_settings(pipeline, batch_cfg=batch_cfg, window_batch=1):
        expected, single = unet_batches(pipeline, inputs, options)
    with pipeline_settings(pipeline, batch_cfg=batch_cfg, window_batch=window_batch):
        got, batched = unet_batches(pipeline, inputs, options)
    assert sum(single) == sum(batched) and len(single) > len(batched) and batched == calls
    assert expected[0].abs().mean() > 0.1  # a real prediction, not zeros
    assert (got - expected).abs().max() <= TOLERANCE


def test_windows_of_a_group_share_one_unet_call(pipeline, inputs):
    calls = []
    forward = pipeline.models.unet.forward
    pipeline.models.unet.forward = lambda *a, **k: calls.append(a[0].shape[:3]) or forward(*a, **k)
    try:
        with pipeline_settings(pipeline, window_batch=2):
            first_step_prediction(pipeline, inputs, GUIDED)
    finally:
        del pipeline.models.unet.forward
    assert calls == [(4, 16, 8), (2, 16, 8)]  # windows 1+2 and 3, each with both guidance branches


class _HostTraffic(TorchDispatchMode):
    """Records, on any device (the CPU included), the ops that are a host sync on a GPU: reading a value
    (``.item()``, ``bool()``, ``float()``), an output size that depends on values (``nonzero``,
    ``masked_select``, indexing with a boolean mask); and the host→device copy of a tensor made from Python data.
    Not visible at this level on the CPU: ``.tolist()``, ``.cpu()``, ``.numpy()``."""

    WATCHED = ("aten._local_scalar_dense", "aten.lift_fresh", "aten.scalar_tensor", "aten.nonzero",
               "aten.masked_select")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        boolean_index = name.startswith("aten.index.Tensor") and any(
            index is not None and index.dtype == torch.bool for index in args[1])
        if name.startswith(self.WATCHED) or boolean_index:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_denoising_loop_has_no_host_sync(pipeline, inputs, monkeypatch):
    """Every input scaling, UNet call and Euler step of the loop runs without a host sync or copy (_HostTraffic)."""
    spy = _HostTraffic()

    def spied(method):
        def run(*args, **kwargs):
            with spy:
                return method(*args, **kwargs)
        return run

    monkeypatch.setattr(pipeline, "_blend", spied(pipeline._blend))
    monkeypatch.setattr(KarrasSchedule, "step", spied(KarrasSchedule.step))
    monkeypatch.setattr(KarrasSchedule, "scale_input", spied(KarrasSchedule.scale_input))
    monkeypatch.setattr(pipeline, "_decode", lambda latents, chunk: iter([np.zeros(1)]))
    unet, calls = pipeline.models.unet, []
    hook = unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        pipeline(*inputs, SamplingOptions(steps=2, min_guidance=2.0, max_guidance=3.0),
                 torch.Generator().manual_seed(1))
    finally:
        hook.remove()
    assert len(calls) == 2 * 3 and spy.seen == []  # 2 steps × 3 windows, guidance batched into each call
    with spy, torch.no_grad():  # what it catches: diffusers' own handling of a Python float timestep, ...
        unet(torch.zeros(1, 2, 8, 8, 8), 0.5, torch.zeros(1, 5, unet.config.cross_attention_dim), torch.zeros(1, 3))
        x = torch.arange(4.0)
        x[x > 1], x.nonzero(), bool(x.any())  # ... a mask, a value-sized output, a value read
    assert spy.seen[-3:] == ["aten.index.Tensor", "aten.nonzero.default", "aten._local_scalar_dense.default"]
    assert "aten.lift_fresh.default" in spy.seen[:-3]


def test_compiled_unet_is_one_graph_and_gives_the_same_prediction(tiny_home):
    """``Runtime(compile=True)``: regional torch.compile (inductor on the CPU) of the UNet and VAE decoder.

    128×128, not the 64×64 of the other tests: there the tiny UNet's bottleneck is 1×1 pixel with 2 channels per
    GroupNorm group, which divides rounding differences by the gap of two nearly equal values, so one window's
    unconditional branch moves by ~2e-3 when inductor reorders fp32 sums (and by 6e-4 in eager under a half-ulp
    change of one block's output: docs/speed.md). At 128×128 (groups of 8 values) compiled and eager agree within
    3.4e-6 (eager's own batch-of-1-or-2 difference: 1.7e-6)."""
    pipeline = tiny_pipeline(tiny_home, Runtime(device="cpu", window_batch=1))
    unet = pipeline.models.unet
    g = torch.Generator().manual_seed(0)
    sample, pose = torch.randn(2, 3, 8, 8, 8, generator=g), torch.randn(6, unet.conv_in.out_channels, 8, 8)
    context = torch.randn(2, 5, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        explanation = torch._dynamo.explain(unet)(sample, torch.tensor(0.5), context,
                                                  torch.tensor([[6.0, 127.0, 0.02]] * 2), pose_latents=pose)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    rng = np.random.default_rng(0)
    inputs = (rng.integers(0, 256, (128, 128, 3), np.uint8), rng.integers(0, 256, (FRAMES, 128, 128, 3), np.uint8),
              rng.standard_normal(512).astype(np.float32))
    expected = reference_prediction(pipeline, inputs, GUIDED)
    compile_models(unet, pipeline.models.vae)
    assert all(block._compiled_call_impl is not None for block in unet.up_blocks)
    assert list(unet.state_dict()) == list(tiny_pipeline(tiny_home, Runtime(device="cpu")).models.unet.state_dict())
    assert (first_step_prediction(pipeline, inputs, GUIDED) - expected).abs().max() <= TOLERANCE


def test_windows_are_grouped_in_order_by_length():
    windows = [[0, 1, 2], [0, 3, 4], [0, 5, 6], [0, 7], [0, 8]]
    assert group_windows(windows, 2) == [[[0, 1, 2], [0, 3, 4]], [[0, 5, 6]], [[0, 7], [0, 8]]]
    assert group_windows(windows, 1) == [[w] for w in windows]
    with pytest.raises(ValueError):
        group_windows(windows, 0)


def test_automatic_window_batch_fits_the_free_memory():
    assert windows_per_call(per_window_bytes=10, free_bytes=100, windows=20) == 8  # 80 % of the free memory
    assert windows_per_call(per_window_bytes=10, free_bytes=100, windows=3) == 3
    assert windows_per_call(per_window_bytes=100, free_bytes=10, windows=3) == 1  # never below one window


def test_bad_window_batch_is_a_usage_error(cli, tmp_path):
    result = cli("generate", tmp_path / "ref.png", tmp_path, "-o", tmp_path / "out.mp4", "--window-batch", "-1")
    assert result.exit_code == 2 and "window-batch" in result.stderr.replace("\n", "")  # 0 means automatic
    with pytest.raises(InputError, match="^window_batch 0"):
        Runtime(window_batch=0).validate()


def test_train_compile_flag_sets_model_compile(cli, tiny_home, monkeypatch, tmp_path):
    import animator_cli.training.trainer as trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda cfg, weights, resume=None, force=False: seen.append(cfg)
                        or SimpleNamespace(is_main=False))
    result = cli("--weights", tiny_home.root, "train", "--compile", "--data", tmp_path, "-o", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert seen[0].model.compile is True
