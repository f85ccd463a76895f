"""The GPU speed levers (issue 19) on the CPU: the lossless ones change no value (1e-5), the switches reach torch,
and the ones the CPU cannot run say so in one line before any model loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from animator_cli.generate import load_pipeline
from animator_cli.models.backends import configure_process
from animator_cli.models.id_adapter import multihead_attention
from animator_cli.models.temporal_conv import TemporalConv, use_temporal_conv_2d
from animator_cli.options import Runtime, SamplingOptions
from animator_cli.sampling.pipeline import place
from animator_cli.weights.home import WeightsHome
from benchmarks.random_models import build_models, build_unet, build_vae


def test_attention_in_slices_equals_one_call():
    """The temporal attention's batch is sliced past the GPU grid limit; slicing changes no value."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(37, 16, 64, generator=generator) for _ in range(3))
    whole = multihead_attention(4, q, k, v)
    for limit in (4, 8, 20, 36):  # 1, 2, 5 and 9 samples per slice, the last slice shorter
        sliced = multihead_attention(4, q, k, v, max_batch_heads=limit)
        assert sliced.shape == whole.shape
        assert (sliced - whole).abs().max() <= 1e-5


def test_channels_last_3d_decoder_equals_contiguous():
    """The VAE decoder with its 3-D convolutions stored channels-last-3d decodes the same frames."""
    vae = build_vae("cpu", torch.float32, tiny=True)
    assert any(isinstance(m, torch.nn.Conv3d) for m in vae.decoder.modules())
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        contiguous = vae.decode(latents, num_frames=4).sample
        place(vae, torch.device("cpu"), torch.float32, channels_last_3d=True)
        conv3d = next(m for m in vae.decoder.modules() if isinstance(m, torch.nn.Conv3d))
        assert conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d)
        layered = vae.decode(latents, num_frames=4).sample
    assert (layered - contiguous).abs().max() <= 1e-5


def test_temporal_convolutions_as_2d_keep_keys_and_values():
    """Every 3-D convolution of the UNet and the VAE decoder runs as a 2-D one: same state-dict keys, same outputs
    (1e-5), in both memory layouts the pipeline uses. At 16×16 latents: at 8×8 the tiny UNet's bottleneck is one
    pixel with two channels per GroupNorm group, which amplifies any rounding difference (docs/speed.md)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    unet, vae = build_unet("cpu", torch.float32, tiny=True), build_vae("cpu", torch.float32, tiny=True)
    sample = torch.randn(2, 3, 8, 16, 16, generator=generator)
    context = torch.randn(2, 5, unet.config.cross_attention_dim, generator=generator)
    time_ids = torch.tensor([[7.0, 127.0, 0.02]] * 2)
    latents = torch.randn(3, 4, 16, 16, generator=generator)
    keys = (list(unet.state_dict()), list(vae.state_dict()))
    with torch.no_grad():
        before = unet(sample, torch.tensor(10.0), context, time_ids), vae.decode(latents, num_frames=3).sample
        conv3d = sum(isinstance(m, torch.nn.Conv3d) for m in (*unet.modules(), *vae.modules()))
        assert use_temporal_conv_2d(unet) + use_temporal_conv_2d(vae) == conv3d > 0
        assert (list(unet.state_dict()), list(vae.state_dict())) == keys
        after = unet(sample, torch.tensor(10.0), context, time_ids), vae.decode(latents, num_frames=3).sample
        place(vae, torch.device("cpu"), torch.float32, channels_last_3d=True)
        layered = vae.decode(latents, num_frames=3).sample
    for old, new in zip((*before, before[1]), (*after, layered), strict=True):
        assert (new - old).abs().max() <= 1e-5 * max(1.0, old.abs().max().item())


def test_levers_reach_the_pipeline_and_keep_the_frames(tmp_path):
    """`load_pipeline(models=...)` takes built models (no weights read); a render with every lossless lever set
    gives the default render's frames."""
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    identity = rng.standard_normal(512).astype(np.float32)
    nowhere = WeightsHome(tmp_path / "no-weights")  # never read: the models are given
    models = build_models("cpu", torch.float32, tiny=True)

    def render(**levers) -> np.ndarray:
        pipeline = load_pipeline(nowhere, Runtime(device="cpu", **levers), models=models)
        assert pipeline.models is models and pipeline.attention == levers.get("attention", "auto")
        conv3d = next(m for m in models.vae.decoder.modules() if isinstance(m, torch.nn.Conv3d))
        assert conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d) == ("channels_last_3d" in levers)
        return pipeline(reference, poses, identity, SamplingOptions(steps=2, tile=3, overlap=1),
                        torch.Generator().manual_seed(0))

    default = render()
    assert np.array_equal(render(attention="flash", channels_last_3d=True, cudnn_benchmark=False), default)
    # 2-D kernels round differently (1e-5, test above): a frame value may land on the next integer
    temporal = render(temporal_conv_2d=True, channels_last_3d=True)
    assert any(isinstance(m, TemporalConv) for m in models.unet.modules())
    assert np.abs(temporal.astype(int) - default.astype(int)).max() <= 1


@pytest.fixture
def cudnn_flag():
    previous = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = previous


@pytest.mark.parametrize(("runtime", "expected"), [
    (Runtime(device="cpu"), False), (Runtime(device="cpu", cudnn_benchmark=True), True),
    (Runtime(device="cuda", cudnn_benchmark=False), False)])
def test_cudnn_benchmark_policy_is_set_once_per_process(cudnn_flag, runtime, expected):
    torch.backends.cudnn.benchmark = not expected
    configure_process(runtime)
    assert torch.backends.cudnn.benchmark is expected


@pytest.mark.parametrize(("args", "says"), [
    (["--fp8"], "--fp8 needs a CUDA GPU"),
    (["--compile-mode", "reduce-overhead"], "--compile-mode reduce-overhead needs compile"),
    (["--attention", "fastest"], "--attention"),
])
def test_levers_the_cpu_cannot_use_are_usage_errors(cli, tmp_path, args, says, monkeypatch):
    def no_models(*_args, **_kwargs):
        raise AssertionError("models loaded before the options were checked")

    monkeypatch.setattr("animator_cli.models.loading.load_models", no_models)
    result = cli("--device", "cpu", "generate", tmp_path / "ref.png", tmp_path, "-o", tmp_path / "o.mp4", *args)
    assert result.exit_code == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
