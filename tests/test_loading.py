"""Loader: a tiny weights home loads through the real code path; bad checkpoints fail cleanly with exit 3."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModelWithProjection

from animator_cli.errors import WeightsError
from animator_cli.models import AnimatorModels, load_models
from animator_cli.models.face_encoder import FaceEncoder
from animator_cli.models.pose_net import PoseNet
from animator_cli.models.unet import AnimatorUNet
from animator_cli.weights.home import WeightsHome
from animator_cli.weights.tiny import svd

# spec §2 step 6: the 25 Karras sigmas of SVD-xt's scheduler config
SPEC_SIGMAS = [700, 545.73, 421.57, 322.45, 244.02, 182.55, 134.85, 98.27, 70.54, 49.81, 34.54, 23.47, 15.59,
               10.10, 6.354, 3.870, 2.269, 1.273, 0.678, 0.339, 0.157, 0.0664, 0.0248, 0.00788, 0.002, 0.0]




@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("svd-home")
    svd.write(root, seed=0)
    return root


@pytest.fixture
def home(pristine: Path, tmp_path: Path) -> WeightsHome:
    """A private copy each test may damage."""
    shutil.copytree(pristine, tmp_path / "home")
    return WeightsHome(tmp_path / "home")


def _forward(models: AnimatorModels, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    clip = models.image_encoder(pixel_values=torch.randn(1, 3, 224, 224, generator=g)).image_embeds
    context = torch.cat([clip[:, None], models.face_encoder(torch.randn(1, 512, generator=g) * 20, clip)], 1)
    pose = models.pose_net(torch.rand(1, 16, 3, 64, 64, generator=g) * 2 - 1)
    sample = torch.randn(1, 16, 8, 8, 8, generator=g)
    return models.unet(sample, torch.tensor(0.25), context, torch.tensor([[6.0, 127.0, 0.02]]), pose_latents=pose)


def test_tiny_home_loads_through_the_real_loader(home: WeightsHome) -> None:
    models = load_models(home, "cpu", torch.float32)
    assert isinstance(models.unet, AnimatorUNet) and isinstance(models.pose_net, PoseNet)
    assert isinstance(models.face_encoder, FaceEncoder) and isinstance(models.vae, AutoencoderKLTemporalDecoder)
    assert isinstance(models.image_encoder, CLIPVisionModelWithProjection)
    assert isinstance(models.scheduler, EulerDiscreteScheduler)
    assert not models.unet.training and not models.pose_net.training
    released = torch.load(home.animation_dir / "unet.pth", weights_only=True)
    loaded = models.unet.state_dict()
    assert loaded.keys() == released.keys() and all(torch.equal(loaded[k], released[k]) for k in released)
    assert models.unet.processor_counts() == {"SpatialAttnProcessor": 16, "IDAttnProcessor": 16,
                                              "TemporalAttnProcessor": 32}
    with torch.no_grad():
        out = _forward(models)
    assert out.shape == (1, 16, 4, 8, 8) and torch.isfinite(out).all()


def test_unet_built_from_the_svd_folder_has_the_checkpoint_keys(home: WeightsHome) -> None:
    """The training start point: SVD's UNet weights plus processors whose ID projections copy to_k/to_v."""
    unet = AnimatorUNet.from_pretrained(home.svd_dir / "unet", local_files_only=True)
    unet.install_processors()
    released = torch.load(home.animation_dir / "unet.pth", weights_only=True)
    assert {k: v.shape for k, v in unet.state_dict().items()} == {k: v.shape for k, v in released.items()}
    assert torch.equal(unet.state_dict()["conv_in.weight"], released["conv_in.weight"])


def test_tiny_scheduler_is_svd_xt_karras_v_prediction(home: WeightsHome) -> None:
    scheduler = load_models(home, "cpu", torch.float32).scheduler
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.use_karras_sigmas
    scheduler.set_timesteps(25)
    assert scheduler.sigmas.tolist() == pytest.approx(SPEC_SIGMAS, rel=5e-3, abs=1e-4)  # spec: 3-4 digits
    assert float(scheduler.init_noise_sigma) == pytest.approx(700.000714, rel=1e-6)


def test_tiny_home_is_seeded(pristine: Path, tmp_path: Path) -> None:
    svd.write(tmp_path / "same", seed=0)
    svd.write(tmp_path / "other", seed=1)
    name = "checkpoints/Animation/unet.pth"
    a, b, c = (torch.load(root / name, weights_only=True) for root in (pristine, tmp_path / "same", tmp_path / "other"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv_in.weight"], c["conv_in.weight"])
    svd_weights = "checkpoints/SVD/unet/diffusion_pytorch_model.safetensors"
    assert (pristine / svd_weights).read_bytes() == (tmp_path / "same" / svd_weights).read_bytes()


def test_fp16_variant_files_of_the_svd_folder_are_used(home: WeightsHome) -> None:
    for sub, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                      ("image_encoder", "model")):
        folder = home.svd_dir / sub
        (folder / f"{name}.safetensors").rename(folder / f"{name}.fp16.safetensors")
    models = load_models(home, "cpu", torch.float32)
    assert models.vae.dtype == torch.float32
    with torch.no_grad():
        assert torch.isfinite(_forward(models)).all()


def test_missing_svd_weights_name_the_file(home: WeightsHome) -> None:
    (home.svd_dir / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"vae/diffusion_pytorch_model\.safetensors"):
        load_models(home, "cpu", torch.float32)


def test_safetensors_twin_is_preferred_and_checkpoint_dir_overrides(home: WeightsHome, tmp_path: Path) -> None:
    pth = home.animation_dir / "pose_net.pth"
    state = torch.load(pth, weights_only=True)
    save_file({**state, "scale": torch.tensor([3.0])}, str(pth.with_suffix(".safetensors")))
    assert load_models(home, "cpu", torch.float32).pose_net.scale.item() == 3.0

    run = tmp_path / "checkpoint-100"
    run.mkdir()
    for name in ("face_encoder", "unet"):
        shutil.copy(home.animation_dir / f"{name}.pth", run)
    torch.save({**state, "scale": torch.tensor([5.0])}, run / "pose_net.pth")
    assert load_models(home, "cpu", torch.float32, checkpoint_dir=run).pose_net.scale.item() == 5.0
    (run / "unet.pth").unlink()
    with pytest.raises(WeightsError, match="unet"):
        load_models(home, "cpu", torch.float32, checkpoint_dir=run)


def test_half_precision_load(home: WeightsHome) -> None:
    models = load_models(home, "cpu", torch.float16)
    dtypes = {t.dtype for m in (models.unet, models.pose_net, models.face_encoder, models.vae, models.image_encoder)
              for t in m.parameters()}
    assert dtypes == {torch.float16}


def test_convert_writes_fp16_twins_that_load_the_same_model(cli, home: WeightsHome) -> None:
    result = cli("--weights", home.root, "weights", "convert")
    assert result.exit_code == 0, result.stderr
    twins = [home.animation_dir / f"{n}.safetensors" for n in ("pose_net", "face_encoder", "unet")]
    assert result.stdout.split() == [str(p) for p in twins]
    for twin in twins:
        original = torch.load(twin.with_suffix(".pth"), weights_only=True)
        converted = load_file(str(twin))
        assert converted.keys() == original.keys()
        assert all(t.dtype == torch.float16 for t in converted.values())
        assert all(torch.equal(converted[k], original[k].half()) for k in original)
    assert not [p for p in home.animation_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    models = load_models(home, "cpu", torch.float32)
    assert torch.equal(models.unet.conv_in.weight, load_file(str(twins[2]))["conv_in.weight"].float())


def _damage(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def test_wrong_shape_fails_with_exit_3_naming_the_key(cli, home: WeightsHome) -> None:
    key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.id_to_k.weight"
    _damage(home.animation_dir / "unet.pth", lambda sd: sd.__setitem__(key, torch.zeros(3, 3)))
    result = cli("--weights", home.root, "weights", "convert")
    assert result.exit_code == 3
    message = " ".join(result.stderr.split())
    assert "unet.pth" in message and key in message and "(3, 3)" in message and "Traceback" not in result.stderr
    assert not list(home.animation_dir.glob("*.safetensors"))  # all checked before any twin is written
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_models(home, "cpu", torch.float32)


def test_missing_and_unexpected_keys_are_named(cli, home: WeightsHome) -> None:
    _damage(home.animation_dir / "face_encoder.pth",
            lambda sd: (sd.pop("fusion_model.proj_out.bias"), sd.__setitem__("extra.weight", torch.zeros(1))))
    result = cli("--weights", home.root, "weights", "convert")
    assert result.exit_code == 3
    message = " ".join(result.stderr.split())
    assert "face_encoder.pth" in message
    assert "missing keys (1): fusion_model.proj_out.bias" in message
    assert "unexpected keys (1): extra.weight" in message


class _RunsCode:
    """Pickles to a call of os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_runs_code_is_refused(cli, home: WeightsHome, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = torch.load(home.animation_dir / "pose_net.pth", weights_only=True)
    torch.save({**state, "scale": _RunsCode(marker)}, home.animation_dir / "pose_net.pth")
    with pytest.raises(WeightsError, match="refusing to load .*pose_net.pth"):
        load_models(home, "cpu", torch.float32)
    result = cli("--weights", home.root, "weights", "convert")
    assert result.exit_code == 3 and "refusing to load" in result.stderr
    assert not marker.exists()


def test_truncated_and_missing_checkpoints_are_weights_errors(home: WeightsHome) -> None:
    unet = home.animation_dir / "unet.pth"
    unet.write_bytes(unet.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="unet.pth"):
        load_models(home, "cpu", torch.float32)
    unet.unlink()
    with pytest.raises(WeightsError, match="not found.*unet.pth"):
        load_models(home, "cpu", torch.float32)


def test_make_tiny_command(cli, tmp_path: Path) -> None:
    target = tmp_path / "tiny"
    result = cli("weights", "make-tiny", target, "--seed", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(target)
    assert (target / "checkpoints" / "SVD" / "model_index.json").exists()
    assert load_models(WeightsHome(target), "cpu", torch.float32).unet.processor_counts()["IDAttnProcessor"] == 16
    again = cli("weights", "make-tiny", target)
    assert again.exit_code == 2 and "not an empty folder" in again.stderr


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999999"])
def test_make_tiny_seed_out_of_range_exits_2(cli, tmp_path: Path, seed: str) -> None:
    """numpy seeds are 0 ≤ seed < 2**32; outside that make-tiny crashed with exit 1."""
    result = cli("weights", "make-tiny", tmp_path / "tiny", "--seed", seed)
    assert result.exit_code == 2 and "--seed" in result.stderr, result.stderr
    assert not (tmp_path / "tiny").exists() and not list(tmp_path.iterdir())
