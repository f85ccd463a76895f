"""Fewer and cheaper steps (--schedule ays, --reuse-features N, --draft) and the counted UNet work, on the tiny home.

The defaults must stay today's output bit for bit; the opt-in switches are checked for what they do (which calls run
whole or shallow, with which kept features), not for quality, which random weights cannot show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_generate import _skeletons

import animator_cli.generate as generation
import animator_cli.sampling.pipeline as pipeline_module
from animator_cli.batch import run_job
from animator_cli.draft import draft_output, draft_size, full_output
from animator_cli.errors import InputError
from animator_cli.generate import load_pipeline
from animator_cli.options import Runtime, SamplingOptions, generate_options
from animator_cli.sampling.feature_reuse import UNetCaller, shallow, tapped, unet_forward
from animator_cli.sampling.flops import FULL, SHALLOW, UNetWork, WorkCounter, count_flops
from animator_cli.sampling.schedule import KarrasSchedule, c_noise
from animator_cli.ui.session import RenderSettings

FRAMES = 20
WINDOWS = {"tile": 8, "overlap": 2}  # three windows of 8 frames


@pytest.fixture(scope="module")
def pipeline(tiny_home):
    return load_pipeline(tiny_home, Runtime(device="cpu"))


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (FRAMES, 64, 64, 3), np.uint8),
            rng.standard_normal(512).astype(np.float32))


def unet_inputs(unet, batch: int = 2, frames: int = 16, size: int = 8) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(0)
    context = torch.randn(batch, 5, unet.config.cross_attention_dim, generator=g)
    args = (torch.randn(batch, frames, 8, size, size, generator=g), torch.tensor(1.5), context,
            torch.tensor([[6.0, 127, 0.02]] * batch))
    return args, {"pose_latents": torch.randn(batch * frames, unet.conv_in.out_channels, size, size, generator=g)}


def final_latents(pipeline, inputs, options: SamplingOptions) -> torch.Tensor:
    """The latents the decoder would get (the decoder is skipped)."""
    kept = []
    pipeline._decode = lambda latents, chunk: kept.append(latents) or iter([np.zeros(1)])
    try:
        pipeline(*inputs, options, torch.Generator().manual_seed(1))
    finally:
        del pipeline._decode
    return kept[0]


class _Unchanged:
    """Today's UNet calls: every group's calls go straight to the UNet (no caller, no counting)."""

    def __init__(self, unet, *_) -> None:
        self.unet, self.work = unet, UNetWork()

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        pass

    def at(self, step):
        return self

    def group(self, key):
        return self.unet


@pytest.mark.parametrize("batch_cfg", [True, False], ids=["batched-cfg", "split-cfg"])
def test_defaults_are_todays_output_bit_for_bit(pipeline, inputs, monkeypatch, batch_cfg):
    """Default options, the explicit karras / reuse 1, and the UNet called as before this change (no caller, no
    FLOP counting) give equal final latents, for both guidance layouts."""
    pipeline.batch_cfg = batch_cfg
    try:
        default = final_latents(pipeline, inputs, SamplingOptions(steps=2, min_guidance=2.0, **WINDOWS))
        explicit = final_latents(pipeline, inputs, SamplingOptions(steps=2, min_guidance=2.0, schedule="karras",
                                                                   reuse_features=1, **WINDOWS))
        assert (pipeline.work.full_calls, pipeline.work.shallow_calls) == (6 if batch_cfg else 12, 0)
        monkeypatch.setattr(pipeline_module, "UNetCaller", _Unchanged)
        before = final_latents(pipeline, inputs, SamplingOptions(steps=2, min_guidance=2.0, **WINDOWS))
    finally:
        pipeline.batch_cfg = True
    assert torch.equal(default, explicit) and torch.equal(default, before)


def test_shallow_branch_on_the_tapped_feature_is_the_whole_call(pipeline):
    """The split runs diffusers' own forward with blocks swapped: the tapped call equals the plain call exactly,
    the shallow branch on the feature tapped from the same inputs equals it too, and the UNet is restored."""
    unet = pipeline.models.unet
    args, kwargs = unet_inputs(unet)
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    with torch.no_grad():
        whole = unet(*args, **kwargs)
        kept = []
        with tapped(unet, kept.append):
            assert torch.equal(unet(*args, **kwargs), whole)
        assert torch.equal(unet_forward(unet, *args, deep=kept[0], **kwargs), whole)
        with pytest.raises(RuntimeError), shallow(unet, kept[0][:1]):  # a wrong feature fails, and is undone
            unet(*args, **kwargs)
        assert not torch.equal(unet_forward(unet, *args, deep=kept[0] * 0.5, **kwargs), whole)
    assert [*unet.down_blocks, unet.mid_block, *unet.up_blocks] == blocks


def _twin_steps(monkeypatch) -> None:
    """A schedule whose two steps see the same input: sigma stays 10 over step 0, so the Euler step is x itself."""
    sigmas = torch.tensor([10.0, 10.0, 0.0])
    monkeypatch.setattr(pipeline_module, "make_schedule",
                        lambda *_: KarrasSchedule(sigmas=sigmas, timesteps=c_noise(sigmas[:-1])))


class _Recording(UNetCaller):
    made: list[_Recording] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.made.append(self)
        self.kept_keys: set = set()

    def at(self, step):
        self.kept_keys |= set(self.features)
        return super().at(step)


@pytest.mark.parametrize(("batch_cfg", "window_batch", "keys"), [(False, 2, 4), (True, 1, 3)],
                         ids=["split-cfg-2-windows-per-call", "batched-cfg"])
def test_reused_features_belong_to_their_window_group_and_branch(pipeline, inputs, monkeypatch, batch_cfg,
                                                                 window_batch, keys):
    """Two steps with equal inputs and --reuse-features 2: step 1 runs only shallow calls, on the features kept at
    step 0 for its own group and branch, so its blended predictions equal step 0's exactly; the features are
    dropped when the render ends."""
    _twin_steps(monkeypatch)
    monkeypatch.setattr(pipeline_module, "UNetCaller", _Recording)
    _Recording.made.clear()
    predictions = []
    blend = pipeline._blend
    monkeypatch.setattr(pipeline, "_blend", lambda *args: predictions.append(torch.cat(blend(*args))) or
                        (predictions[-1][:1], predictions[-1][1:]))
    pipeline.batch_cfg, pipeline.window_batch = batch_cfg, window_batch
    try:
        final_latents(pipeline, inputs, SamplingOptions(steps=2, min_guidance=2.0, reuse_features=2, **WINDOWS))
    finally:
        pipeline.batch_cfg, pipeline.window_batch = True, 1
    (caller,) = _Recording.made
    assert len(caller.kept_keys) == keys and caller.features == {}
    assert (pipeline.work.full_calls, pipeline.work.shallow_calls) == (keys, keys)
    assert predictions[0].abs().mean() > 0.1 and torch.equal(predictions[0], predictions[1])


def test_reuse_runs_whole_every_nth_step_and_the_refiner_sees_every_step(pipeline, inputs):
    seen = []

    class Refiner:
        def active(self, step: int) -> bool:
            return True

        def __call__(self, vae, denoised: torch.Tensor, step: int) -> torch.Tensor:
            seen.append(step)
            return denoised

    options = SamplingOptions(steps=4, reuse_features=3, schedule="ays")
    frames = pipeline(inputs[0], inputs[1][:5], inputs[2], options, torch.Generator().manual_seed(1), refine=Refiner())
    assert seen == [0, 1, 2, 3] and frames.shape == (5, 64, 64, 3)
    assert (pipeline.work.full_calls, pipeline.work.shallow_calls) == (2, 2)  # whole at steps 0 and 3


def test_flops_are_counted_live_or_on_the_meta_device_alike(pipeline):
    """The live count (first call of a shape, same output) and the meta-device count (used for compiled UNets)
    agree for whole and shallow calls; CPU attention is counted as on GPUs (4·b·h·s²·d)."""
    q = torch.randn(2, 3, 64, 8)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q))[1] == 4 * 2 * 3 * 64 * 64 * 8
    unet = pipeline.models.unet
    args, kwargs = unet_inputs(unet, batch=1, frames=3)
    with torch.no_grad():
        kept = []
        with tapped(unet, kept.append):
            whole, live = count_flops(lambda: unet(*args, **kwargs))
        _, live_shallow = count_flops(lambda: unet_forward(unet, *args, deep=kept[0], **kwargs))
        assert torch.equal(whole, unet(*args, **kwargs)) and 0 < live_shallow < live
        counter = WorkCounter(unet)
        counter.compiled = True  # as with --compile: counted on the meta twin (meta_flops), once per shape
        counter.known.clear()
        for kind, deep in ((FULL, None), (SHALLOW, kept[0]), (SHALLOW, kept[0])):
            counter.call(kind, lambda d=deep: unet_forward(unet, *args, deep=d, **kwargs), unet_forward, *args,
                         deep=deep, **kwargs)
    assert counter.work == UNetWork(1, 2, live + 2 * live_shallow)


def test_draft_sizes_and_names():
    assert draft_size(512, 512) == (256, 256) and draft_size(576, 1024) == (256, 448)
    assert draft_size(1024, 576) == (448, 256) and draft_size(64, 128) == (64, 128)
    draft = draft_output(Path("out/clip.mp4"))
    assert draft == Path("out/clip.draft.mp4") and draft_output(draft) == draft
    assert full_output(draft) == Path("out/clip.mp4")
    options = generate_options(resolution="576x1024", draft=True)
    s = options.sampling
    assert (options.width, options.height, s.steps, s.schedule, s.reuse_features) == (256, 448, 8, "ays", 2)
    assert options.face_opt is None and generate_options(draft=True, steps=8, schedule="ays").sampling == s
    ui = RenderSettings(draft=True, width=64, height=64).options()
    assert (ui.width, ui.sampling.steps, ui.sampling.reuse_features) == (64, 8, 2)


@pytest.mark.parametrize(("args", "named"), [
    (("--schedule", "euler"), "--schedule"), (("--reuse-features", 0), "--reuse-features"),
    (("--reuse-features", -2), "--reuse-features"), (("--draft", "--face-opt"), "--face-opt"),
    (("--draft", "--steps", 12), "--steps"), (("--draft", "--schedule", "karras", "--reuse-features", 3),
                                              "--reuse-features")])
def test_bad_schedule_reuse_and_draft_exit_2_before_models_load(cli, tiny_home, tmp_path, astronaut_path, args,
                                                                 named, monkeypatch):
    monkeypatch.setattr(generation, "load_pipeline", lambda *_: pytest.fail("models loaded for a bad option"))
    poses = _skeletons(tmp_path / "poses", 2)
    for command, source in (("generate", poses), ("animate", tmp_path / "missing.mp4")):
        result = cli("--weights", tiny_home.root, command, astronaut_path, source, "-o", tmp_path / "o.mp4", *args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert named in result.stderr.replace("'", "")


def test_bad_values_are_refused_by_the_library_too():
    for bad in ({"schedule": "euler"}, {"reuse_features": 0}, {"reuse_features": True}, {"reuse_features": 1.5},
                {"draft": True, "face_opt": True}, {"draft": True, "reuse_features": 4}):
        with pytest.raises(InputError):
            generate_options(**bad)


def test_cli_draft_writes_beside_the_output_with_its_own_cache_entry(cli, tiny_home, tmp_path, astronaut_path):
    """64×64 is below the draft's 256: only the sampling preset applies. The draft and the full render do not
    share a cache entry; --json reports the UNet work (none when cached)."""
    poses = _skeletons(tmp_path / "poses", 3)
    args = ["--weights", tiny_home.root, "--json", "generate", astronaut_path, poses, "-o", tmp_path / "out.mp4",
            "--width", 64, "--height", 64]
    draft = cli(*args, "--draft")
    assert draft.exit_code == 0, draft.stderr
    result = json.loads(draft.stdout)
    assert result["output"] == str(tmp_path / "out.draft.mp4") and not (tmp_path / "out.mp4").exists()
    assert (result["unet_calls"], result["unet_shallow_calls"], result["cached"]) == (8, 4, False)
    assert result["unet_tflop"] > 0 and f"-o {tmp_path / 'out.mp4'}" in draft.stderr.replace("\n", "")
    full = json.loads(cli(*args, "--steps", 1).stdout)
    assert (full["cached"], full["unet_calls"], full["unet_shallow_calls"]) == (False, 1, 0)
    again = json.loads(cli(*args, "--draft").stdout)
    assert (again["cached"], again["unet_calls"], again["unet_tflop"]) == (True, 0, 0.0)


def test_batch_jobs_take_schedule_and_reuse(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr("animator_cli.batch.generate", lambda *a, **k: seen.append(a[3]))
    job = {"reference": tmp_path / "r.png", "poses": tmp_path / "p", "output": tmp_path / "o.mp4",
           "schedule": "ays", "steps": 10, "reuse_features": 2}
    run_job(job, Runtime(device="cpu"), weights=None, cache=None, pipeline=None, force=False)
    assert (seen[0].sampling.schedule, seen[0].sampling.steps, seen[0].sampling.reuse_features) == ("ays", 10, 2)
