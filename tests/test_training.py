"""End to end on the tiny model (CPU): prepare-data on generated videos, train, checkpoints, resume, load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animator_cli.video import write_video

TINY = "presets/tiny-cpu.yaml"
# Two frames per clip and one clip per step keep the steps cheap; overfitting one batch with a high learning rate
# makes "the loss falls" a deterministic check rather than a noisy one.
FAST = ["data.num_frames=2", "data.batch_size=1", "overfit_batch=true", "optim.learning_rate=2e-3"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory, astronaut_path: Path) -> Path:
    """Three short clips of the astronaut photo drifting across the frame."""
    folder = tmp_path_factory.mktemp("videos")
    photo = np.asarray(Image.open(astronaut_path).convert("RGB").resize((96, 96)))
    for k in range(3):
        frames = [np.roll(photo, shift=3 * i * (k + 1), axis=1) for i in range(8)]
        write_video(folder / f"dance{k}.mp4", frames, fps=8)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, videos: Path, tiny_home) -> Path:
    from animator_cli.training.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("dataset")
    result = prepare_dataset(videos, out, tiny_home, workers=1)
    assert sorted(result.built) == ["dance0", "dance1", "dance2"] and not result.failed
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, dataset: Path, tiny_home) -> dict:
    """20 steps of the tiny preset through the CLI, checkpoints every 10."""
    from animator_cli.cli.app import run as cli_run

    out = tmp_path_factory.mktemp("run")
    code = cli_run(["--weights", str(tiny_home.root), "--json", "train", "--config", TINY, "--data", str(dataset),
                    "--output", str(out), "--max-steps", "20", *FAST])
    assert code == 0
    return {"dir": out, "metrics": [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]}


def test_prepare_data_writes_the_reference_layout(dataset: Path):
    assert (dataset / "video_rec_path.txt").read_text().split() == ["dance0", "dance1", "dance2"]
    assert (dataset / "video_vec_path.txt").read_text() == ""
    clip = dataset / "dance1"
    names = sorted(p.name for p in (clip / "images").iterdir())
    assert len(names) == 8
    for sub in ("poses", "faces"):
        assert sorted(p.name for p in (clip / sub).iterdir() if p.suffix == ".png") == names
    mask = np.asarray(Image.open(clip / "faces" / "frame_3.png"))
    assert mask.shape == (96, 96) and set(np.unique(mask).tolist()) <= {0, 255} and mask.any()
    skeleton = np.asarray(Image.open(clip / "poses" / "frame_3.png"))
    assert skeleton.shape == (96, 96, 3) and skeleton.any()
    with np.load(clip / "identities.npz") as data:
        assert data["embeddings"].shape == (8, 512) and data["found"].all()
        assert np.abs(data["embeddings"]).sum(axis=1).min() > 0


def test_prepare_data_resumes_and_reports_over_cli(cli, videos: Path, dataset: Path, tiny_home):
    stamp = (dataset / "dance0" / "identities.npz").stat().st_mtime_ns
    leftover = dataset / ".dance3.x1y2.tmp"  # what an interrupted run leaves behind
    (leftover / "images").mkdir(parents=True)
    result = cli("--weights", tiny_home.root, "--json", "prepare-data", videos, "-o", dataset)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["built"] == [] and sorted(summary["skipped"]) == ["dance0", "dance1", "dance2"]
    assert (dataset / "dance0" / "identities.npz").stat().st_mtime_ns == stamp
    assert not leftover.exists() and (dataset / "video_rec_path.txt").read_text().split() == ["dance0", "dance1",
                                                                                           "dance2"]


def test_prepare_data_rejects_a_folder_without_videos(cli, tmp_path, tiny_home):
    result = cli("--weights", tiny_home.root, "prepare-data", tmp_path, "-o", tmp_path / "ds")
    assert result.exit_code == 2 and "no videos" in result.stderr


def test_training_loss_falls_and_checkpoints_are_written(run: dict):
    losses = [m["loss"] for m in run["metrics"]]
    assert [m["step"] for m in run["metrics"]] == list(range(1, 21))
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    for step in (10, 20):
        folder = run["dir"] / f"checkpoint-{step}"
        assert {"pose_net.pth", "face_encoder.pth", "unet.pth", "optimizer.bin",
                "trainer_state.json"} <= {p.name for p in folder.iterdir()}
        assert json.loads((folder / "trainer_state.json").read_text())["step"] == step
    assert not list(run["dir"].glob(".checkpoint-*"))
    assert json.loads((run["dir"] / "data_check.json").read_text())["problems"] == []


def test_checkpoint_loads_through_load_models(run: dict, tiny_home):
    from animator_cli.models.loading import load_models, read_state_dict

    trained = load_models(tiny_home, "cpu", torch.float32, checkpoint_dir=run["dir"] / "checkpoint-20")
    released = read_state_dict(tiny_home.animation_checkpoint("pose_net"))
    changed = [not torch.equal(trained.pose_net.state_dict()[k], released[k]) for k in released]
    assert any(changed)  # training moved the weights
    frozen = read_state_dict(tiny_home.animation_checkpoint("unet"))
    assert torch.equal(trained.unet.state_dict()["conv_in.weight"], frozen["conv_in.weight"])  # ResNet side frozen


def test_resume_continues_from_the_saved_step(run: dict, dataset: Path, tiny_home, tmp_path):
    from animator_cli.cli.app import run as cli_run

    code = cli_run(["--weights", str(tiny_home.root), "train", "--config", TINY, "--data", str(dataset),
                    "--output", str(tmp_path), "--max-steps", "12", "--resume", str(run["dir"] / "checkpoint-10"),
                    *FAST])
    assert code == 0
    resumed = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in resumed] == [11, 12]
    original = {m["step"]: m["loss"] for m in run["metrics"]}
    for m in resumed:  # same weights, optimizer state, data and noise: the same losses as the uninterrupted run
        assert m["loss"] == pytest.approx(original[m["step"]], rel=1e-4)


def test_resume_latest_at_the_end_does_nothing_more(cli, run: dict, dataset: Path, tiny_home):
    result = cli("--weights", tiny_home.root, "--json", "train", "--config", TINY, "--data", dataset,
                 "--output", run["dir"], "--max-steps", "20", "--resume", "latest", *FAST)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["start_step"] == 20 and summary["step"] == 20 and summary["checkpoints"] == []


def test_force_starts_a_new_run_beside_the_previous_one(run: dict, dataset: Path, tiny_home, tmp_path):
    """A run folder of another config is refused; --force moves the previous run to RUN/old-<time>/ and starts
    afresh (its checkpoints can no longer be resumed under the new config)."""
    import shutil

    from animator_cli.cli.app import run as cli_run

    folder = tmp_path / "run"
    shutil.copytree(run["dir"], folder)
    args = ["--weights", str(tiny_home.root), "train", "--config", TINY, "--data", str(dataset), "--output",
            str(folder), "--max-steps", "2", *FAST, "optim.learning_rate=1e-3"]
    assert cli_run(args) == 2
    assert cli_run([*args, "--force"]) == 0
    (aside,) = folder.glob("old-*")
    assert (aside / "checkpoint-20").is_dir() and len((aside / "metrics.jsonl").read_text().splitlines()) == 20
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (folder / "checkpoint-20").exists()
    assert "learning_rate: 0.001" in (folder / "config.yaml").read_text()
    assert "learning_rate: 0.002" in (aside / "config.yaml").read_text()


def test_lora_ema_and_validation_video(dataset: Path, tiny_home, tmp_path):
    """LoRA adapters merged into a loadable unet.pth, EMA weights saved as a loadable folder, a validation video."""
    from animator_cli.cli.app import run as cli_run
    from animator_cli.models.loading import load_models, read_state_dict
    from animator_cli.video import probe

    code = cli_run(["--weights", str(tiny_home.root), "train", "--config", TINY, "--data", str(dataset),
                    "--output", str(tmp_path), "--max-steps", "2", "checkpoint_every=2", "model.lora_rank=4",
                    "ema.enabled=true", "validation.every=2", "validation.num_frames=3", *FAST])
    assert code == 0
    checkpoint = tmp_path / "checkpoint-2"
    released = read_state_dict(tiny_home.animation_checkpoint("unet"))
    key = next(k for k in released if k.endswith("attn1.to_q.weight"))
    for folder in (checkpoint, checkpoint / "ema"):
        unet = load_models(tiny_home, "cpu", torch.float32, checkpoint_dir=folder).unet.state_dict()
        assert not torch.equal(unet[key], released[key])  # the trained adapter is merged in
        assert torch.equal(unet["conv_in.weight"], released["conv_in.weight"])
    adapters = read_state_dict(checkpoint / "unet_adapters.pth")
    assert all(any(part in k for k in adapters) for part in ("lora_A", "lora_B", "processor.id_to_k"))
    info = probe(tmp_path / "validation" / "step_2.mp4")
    assert (info.width, info.height, info.frame_count) == (64, 64, 3)


def test_svd_initialisation_starts_from_svd(tiny_home, tmp_path):
    """model.init=svd: SVD's UNet with ID projections copied from to_k/to_v, PoseNet and face encoder silent."""
    from animator_cli.models.loading import load_models
    from animator_cli.training.init_weights import svd_initial_checkpoint

    folder = svd_initial_checkpoint(tiny_home, tmp_path / "init", seed=0)
    models = load_models(tiny_home, "cpu", torch.float32, checkpoint_dir=folder)
    state = models.unet.state_dict()
    id_key = next(k for k in state if k.endswith("processor.id_to_k.weight"))
    assert torch.equal(state[id_key], state[id_key.replace("processor.id_to_k", "to_k")])
    with torch.no_grad():
        assert float(models.pose_net(torch.rand(1, 3, 64, 64)).abs().max()) == 0
        assert float(models.face_encoder(torch.randn(1, 512), torch.randn(1, 1, 64)).abs().max()) == 0


def test_trainable_set_and_param_groups_match_the_reference(tiny_home):
    """PoseNet, face encoder and the UNet's "attentions" tensors: 19 + 56 + 944 as in train.py, in 3 groups."""
    from animator_cli.models.loading import load_models
    from animator_cli.training.trainer import trainable_parameters

    models = load_models(tiny_home, "cpu", torch.float32)
    groups = trainable_parameters(models.pose_net, models.face_encoder, models.unet, lora=False)
    assert {name: len(params) for name, params in groups.items()} == {"pose_net": 19, "face_encoder": 56, "unet": 944}
    frozen = {name for name, p in models.unet.named_parameters() if not p.requires_grad}
    assert "conv_in.weight" in frozen and "time_embedding.linear_1.weight" in frozen
    assert not any("attentions" in name for name in frozen)


def test_prepare_data_reports_a_broken_video_and_builds_the_rest(videos: Path, tiny_home, tmp_path):
    import shutil

    from animator_cli.training.prepare import prepare_dataset

    (tmp_path / "in").mkdir()
    shutil.copy(videos / "dance0.mp4", tmp_path / "in" / "good.mp4")
    (tmp_path / "in" / "broken.mp4").write_bytes(b"not a video at all")
    result = prepare_dataset(tmp_path / "in", tmp_path / "out", tiny_home)
    assert result.built == ["good"] and list(result.failed) == ["broken"]
    assert not (tmp_path / "out" / "broken").exists() and not list((tmp_path / "out").glob(".*"))
    assert (tmp_path / "out" / "video_rec_path.txt").read_text().split() == ["good"]


def test_two_processes_with_torchrun(dataset: Path, tiny_home, tmp_path):
    """DDP on the CPU (gloo): one result printed, every rank's RNG state in the checkpoint, resume at the step."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "animator_cli", "--weights", str(tiny_home.root), "--json", "train", "--config", TINY,
               "--data", str(dataset), "--output", str(tmp_path), "checkpoint_every=2", "data.num_frames=2",
               "data.batch_size=1"]
    first = subprocess.run([*command, "--max-steps", "2"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(first.stdout.strip().splitlines()) == 1 and json.loads(first.stdout)["step"] == 2
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (tmp_path / "checkpoint-2").iterdir()}
    second = subprocess.run([*command, "--max-steps", "3", "--resume", "latest"], capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(second.stdout)["start_step"] == 2 and (tmp_path / "checkpoint-3").is_dir()


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: a run with another mixed precision needs a clean slate (a CLI run
    is its own process, so only tests that switch precision in one process need this)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_bf16_mixed_precision_runs_the_frozen_encoders_in_bf16(dataset: Path, tiny_home, tmp_path, monkeypatch):
    """Under bf16 the frozen CLIP and VAE run in bf16 (halving their memory), also after a validation video
    (whose fp32 pipeline upcasts them); the trained networks keep fp32 master weights."""
    import animator_cli.training.trainer as trainer
    from animator_cli.cli.app import run as cli_run

    seen = []
    real_loss = trainer.training_loss

    def spy(models, *args, **kwargs):
        seen.append((next(models.image_encoder.parameters()).dtype, next(models.vae.parameters()).dtype,
                     next(models.pose_net.parameters()).dtype))
        return real_loss(models, *args, **kwargs)

    monkeypatch.setattr(trainer, "training_loss", spy)
    code = cli_run(["--weights", str(tiny_home.root), "train", "--config", TINY, "--data", str(dataset),
                    "--output", str(tmp_path), "--max-steps", "2", "mixed_precision=bf16", "validation.every=1",
                    "validation.num_frames=2", *FAST])
    assert code == 0
    assert seen == [(torch.bfloat16, torch.bfloat16, torch.float32)] * 2
