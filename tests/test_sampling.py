"""Sampler pieces against the numbers of the specification (§2 steps 5-10, §8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from skimage import data

from animator_cli.errors import InputError
from animator_cli.sampling.conditioning import CLIP_MEAN, CLIP_STD, added_time_ids, clip_pixels, to_tensor
from animator_cli.sampling.fit import Fit, fit_image
from animator_cli.sampling.schedule import (
    AYS_SVD_SIGMAS,
    c_noise,
    denoised_from_v,
    euler_step,
    karras_schedule,
    make_schedule,
)
from animator_cli.sampling.windows import blend_weights, periodic_noise, window_indices

# checkpoints/SVD/scheduler/scheduler_config.json of stable-video-diffusion-img2vid-xt
SVD_SCHEDULER = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False, interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="v_prediction", set_alpha_to_one=False, sigma_max=700.0,
    sigma_min=0.002, skip_prk_steps=True, steps_offset=1, timestep_spacing="leading", timestep_type="continuous",
    trained_betas=None, use_karras_sigmas=True,
)
SPEC_SIGMAS = [700, 545.73, 421.57, 322.45, 244.02, 182.55, 134.85, 98.27, 70.54, 49.81, 34.54, 23.47, 15.59,
               10.10, 6.354, 3.870, 2.269, 1.273, 0.678, 0.339, 0.157, 0.0664, 0.0248, 0.00788, 0.002, 0]


@pytest.fixture
def scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler.from_config(SVD_SCHEDULER)


def test_karras_sigmas_match_spec(scheduler):
    schedule = karras_schedule(scheduler, 25)
    assert len(schedule) == 25 and schedule.sigmas.shape == (26,)
    np.testing.assert_allclose(schedule.sigmas.numpy(), SPEC_SIGMAS, rtol=3e-3, atol=1e-6)
    assert schedule.init_noise_sigma == pytest.approx(700.000732, abs=1e-5)
    assert torch.allclose(schedule.timesteps, 0.25 * torch.log(schedule.sigmas[:-1]))
    assert torch.allclose(schedule.timesteps, scheduler.timesteps.float())
    assert c_noise(torch.tensor(700.0)).item() == pytest.approx(0.25 * np.log(700))


def test_euler_step_matches_diffusers(scheduler):
    """The k-diffusion form of the step is the diffusers v-prediction Euler step without churn."""
    schedule = karras_schedule(scheduler, 25)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 4, 8, 8, generator=generator) * schedule.init_noise_sigma
    scheduler.set_timesteps(25)
    for i, t in enumerate(scheduler.timesteps[:6]):
        v = torch.randn(x.shape, generator=generator)
        assert torch.allclose(schedule.scale_input(x, i), scheduler.scale_model_input(x, t))
        expected = scheduler.step(v, t, x, return_dict=False)[0]
        x = schedule.step(x, v, i)
        torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("refined", [False, True])
def test_in_place_step_and_guidance_equal_the_formulas_bit_for_bit(scheduler, refined):
    """The loop updates the latents in place and uses the prediction as scratch (memory of long videos): the
    result must be the out-of-place formulas' (denoised_from_v, euler_step, uncond + g·(cond − uncond)) exactly."""
    from animator_cli.sampling.pipeline import guide

    schedule = karras_schedule(scheduler, 25)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, 7, 4, 8, 8, generator=generator) * schedule.init_noise_sigma
    cond, uncond = torch.randn(2, 1, 7, 4, 8, 8, generator=generator)
    guidance = torch.linspace(1.0, 3.0, 7).view(1, 7, 1, 1, 1)
    refine = (lambda d: d * 0.5 + 0.01) if refined else None
    for i in range(4):
        v = uncond + guidance * (cond - uncond)
        assert torch.equal(guide(cond.clone(), uncond, guidance), v)
        denoised = denoised_from_v(x, v, schedule.sigmas[i])
        expected = euler_step(x, refine(denoised) if refined else denoised, schedule.sigmas[i], schedule.sigmas[i + 1])
        x = schedule.step(x.clone(), v.clone(), i, refine)
        assert torch.equal(x, expected)


def test_schedule_rejects_epsilon_config():
    from animator_cli.errors import WeightsError
    with pytest.raises(WeightsError):
        karras_schedule(EulerDiscreteScheduler.from_config(dict(SVD_SCHEDULER, prediction_type="epsilon")), 25)


def test_ays_schedule_is_the_published_svd_levels(scheduler):
    """10 steps: NVIDIA's eleven SVD levels (ComfyUI's AlignYourStepsScheduler "SVD" list), the last, 0.002,
    replaced by 0 as ComfyUI does, so the last step returns the denoised estimate."""
    schedule = make_schedule(scheduler, 10, "ays")
    assert len(schedule) == 10
    np.testing.assert_allclose(schedule.sigmas.numpy(), [700, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403,
                                                         0.173, 0.034, 0], rtol=1e-6)
    assert torch.equal(schedule.timesteps, c_noise(schedule.sigmas[:-1]))
    assert schedule.init_noise_sigma == pytest.approx(700.000732, abs=1e-5)


def test_ays_schedule_interpolates_log_sigma_for_other_step_counts(scheduler):
    """20 steps: 21 levels on a grid twice as fine, so every other one is a published level and the ones between
    are the geometric means of their neighbours (linear in log sigma)."""
    sigmas = make_schedule(scheduler, 20, "ays").sigmas.double().numpy()
    published = np.array(AYS_SVD_SIGMAS)
    np.testing.assert_allclose(sigmas[:-1:2], published[:-1], rtol=1e-6)
    np.testing.assert_allclose(sigmas[1::2], np.sqrt(published[:-1] * published[1:]), rtol=1e-6)
    assert sigmas[-1] == 0
    few = make_schedule(scheduler, 3, "ays").sigmas.numpy()  # 4 levels at 0, 1/3, 2/3, 1 of the grid
    np.testing.assert_allclose(few[:3], np.exp(np.interp([0, 1 / 3, 2 / 3], np.linspace(0, 1, 11),
                                                         np.log(published))), rtol=1e-6)
    assert np.all(np.diff(few) < 0) and few[-1] == 0


def test_default_schedule_is_the_karras_one_bit_for_bit(scheduler):
    default, karras = make_schedule(scheduler, 25), karras_schedule(scheduler, 25)
    assert torch.equal(default.sigmas, karras.sigmas) and torch.equal(default.timesteps, karras.timesteps)


@pytest.mark.parametrize(("frames", "expected"), [
    (16, [list(range(16))]),
    (28, [list(range(16)), [0, *range(13, 28)]]),
    (30, [list(range(16)), [0, *range(13, 28)], [0, *range(15, 30)]]),
    (40, [list(range(16)), [0, *range(13, 28)], [0, *range(25, 40)]]),
    (5, [[0, 1, 2, 3, 4]]),
    (1, [[0]]),
])
def test_window_indices(frames, expected):
    assert window_indices(frames, 16, 4) == expected


def test_windows_cover_every_frame_with_anchor():
    for frames in range(1, 80):
        for tile, overlap in ((16, 4), (8, 1), (4, 3)):
            windows = window_indices(frames, tile, overlap)
            assert all(w[0] == 0 and len(w) == min(tile, frames) for w in windows)
            assert sorted({i for w in windows for i in w}) == list(range(frames))


@pytest.mark.parametrize(("tile", "overlap"), [(16, 0), (16, 16), (1, 0)])
def test_invalid_tiling_is_an_input_error(tile, overlap):
    with pytest.raises(InputError):
        window_indices(40, tile, overlap)


def test_blend_weights_triangle():
    w = blend_weights(16)
    expected = [0.0625, 0.1875, 0.3125, 0.4375, 0.5625, 0.6875, 0.8125, 0.9375]
    np.testing.assert_allclose(w.numpy(), expected + expected[::-1])
    np.testing.assert_allclose(blend_weights(5).numpy(), [0.2, 0.6, 1.0, 0.6, 0.2], rtol=1e-6)


def test_periodic_noise_has_tile_period_and_matches_the_reference_draw():
    noise = periodic_noise((4, 3, 2), 40, 16, torch.Generator().manual_seed(7))
    assert noise.shape == (1, 40, 4, 3, 2)
    assert torch.equal(noise[:, :16], noise[:, 16:32]) and torch.equal(noise[:, :8], noise[:, 32:])
    assert not torch.equal(noise[:, 0], noise[:, 1])
    reference = torch.randn(1, 16, 4, 3, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(noise[:, :16], reference)
    assert torch.equal(periodic_noise((4, 3, 2), 5, 16, torch.Generator().manual_seed(7)), reference[:, :5])


def test_added_time_ids():
    ids = added_time_ids(7, 127, 0.02)
    assert ids.shape == (1, 3) and ids[0].tolist() == pytest.approx([6, 127, 0.02])


def test_clip_preprocessing_matches_direct_computation():
    """Our antialiased resize + CLIP normalisation equals diffusers' SVD preprocessing on a real photo."""
    photo = data.astronaut()[:, 64:448]  # 512×384, non-square: the resize distorts, as in the reference
    x = to_tensor(photo)
    assert x.shape == (1, 3, 512, 384) and x.min() >= -1 and x.max() <= 1
    expected = (_resize_with_antialiasing(x, (224, 224)) + 1) / 2
    expected = (expected - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    got = clip_pixels(x)
    assert got.shape == (1, 3, 224, 224)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # also for an upscale (blur is a no-op) and a tiny image
    for size in ((64, 96), (3, 500)):
        small = torch.rand(1, 3, *size) * 2 - 1
        want = (_resize_with_antialiasing(small, (224, 224)) + 1) / 2 if size[0] > 3 else None
        if want is not None:
            want = (want - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
            torch.testing.assert_close(clip_pixels(small), want, rtol=0, atol=1e-5)
        assert torch.isfinite(clip_pixels(small)).all()


def test_fit_modes_keep_aspect():
    photo = data.astronaut()[:, :256]  # 512 high, 256 wide
    cover = fit_image(photo, 64, 64, Fit.COVER)
    contain = fit_image(photo, 64, 64, Fit.CONTAIN, pose=True)
    stretch = fit_image(photo, 64, 64, Fit.STRETCH)
    assert cover.shape == contain.shape == stretch.shape == (64, 64, 3)
    # contain: the 32-pixel-wide image is centred between black bars
    assert contain[:, :16].max() == 0 and contain[:, 48:].max() == 0 and contain[:, 16:48].max() > 0
    # cover: the centre crop of a 64×128 downscale equals the middle rows of that downscale
    full = fit_image(photo, 64, 128, Fit.STRETCH)
    np.testing.assert_array_equal(cover, full[32:96])
