"""One video on two CPU processes (gloo): window shares, equality with one process, and failing ranks.

The multi-process tests start real launches on the tiny weights home (40 frames = 3 windows of 16 at 64×64, one
thread per process): `torchrun` for the equality tests, two plain processes with the launcher's variables for
the failure tests (no launcher that would stop the survivor for us). Each takes tens of seconds on a small CPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_hjb import _face_pose, pose_folder

from animator_cli.distributed import PeerFailure, Ranks, failure, shares, timeout
from animator_cli.errors import InputError, OutOfMemoryError, classify
from animator_cli.video import iter_frames, load_image

WORKER = Path(__file__).with_name("rank_worker.py")
FRAMES = 40  # three windows of 16 with overlap 4
TIMEOUT_S = 60  # ANIMATOR_DIST_TIMEOUT of the failure tests: the survivor must stop well before


@pytest.mark.parametrize(("sizes", "parts", "expected"), [
    ([16, 16, 16], 2, [range(0, 1), range(1, 3)]),
    ([16] * 5, 4, [range(0, 1), range(1, 2), range(2, 4), range(4, 5)]),
    ([4, 4, 0, 0, 4, 1], 2, [range(0, 2), range(2, 6)]),
    ([16], 3, [range(0, 0), range(0, 1), range(0, 0)]),
    ([0, 0], 2, [range(0, 2), range(0, 0)]),
])
def test_shares_are_contiguous_and_balanced(sizes, parts, expected):
    assert shares(sizes, parts) == expected


@pytest.mark.parametrize("count", range(1, 12))
def test_every_window_has_one_owner_and_loads_differ_by_one(count):
    owned = [Ranks(rank, 4).take(list(range(count)), [16] * count) for rank in range(4)]
    assert sum(owned, []) == list(range(count))
    assert max(map(len, owned)) - min(map(len, owned)) <= 1


def test_failure_kinds():
    """What a rank leaves for the others: the kind (its exit code is the CLI's) and the CLI's line."""
    assert failure(InputError("bad", "hint")) == ("input", "bad (hint)")
    assert failure(OutOfMemoryError("out of memory"))[0] == "out_of_memory"
    assert failure(torch.OutOfMemoryError("CUDA out of memory. Tried"))[0] == "out_of_memory"
    assert failure(KeyboardInterrupt()) == ("interrupted", "interrupted")
    assert failure(ValueError("x\ny")) == ("internal", "internal error: ValueError: x")
    assert failure(OSError(28, "No space left on device", "/data/out.mp4")) == (
        "input", "no space left on device at /data/out.mp4 (free some space or write the output elsewhere)")


def _pair() -> tuple[Ranks, Ranks]:
    """Ranks 0 and 1 of a two-rank run sharing one real (in-memory) store, in this process."""
    from torch.distributed import HashStore

    store = HashStore()
    return Ranks(0, 2, store), Ranks(1, 2, store)


def test_rank_0_runs_a_stage_and_the_others_get_its_result():
    main, other = _pair()
    calls = []
    assert main.on_main(lambda: calls.append(0) or ("folder", True)) == ("folder", True)
    assert other.on_main(lambda: calls.append(1)) == ("folder", True)
    assert calls == [0]  # rank 1 read rank 0's answer
    assert main.on_main(lambda: 7) == 7 and other.on_main(lambda: 0) == 7  # the next stage has its own key


def test_a_stage_failing_on_rank_0_fails_the_others_with_its_code_silently():
    main, other = _pair()

    def bad_video():
        raise InputError("driving video x.mp4 cannot be decoded")

    with pytest.raises(InputError):
        main.on_main(bad_video)
    with pytest.raises(PeerFailure) as raised:
        other.on_main(bad_video)
    assert (classify(raised.value).exit_code, raised.value.silent) == (2, True)
    assert "driving video x.mp4" in str(raised.value)


def test_a_broken_collective_reads_the_failed_rank_s_report():
    main, other = _pair()
    with pytest.raises(PeerFailure) as lost, other.collective():
        raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:6559")
    assert (classify(lost.value).exit_code, lost.value.silent) == (1, False)
    assert "another rank stopped without reporting an error (Connection closed by peer" in str(lost.value)
    main.report(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    with pytest.raises(PeerFailure) as reported, other.collective():
        raise RuntimeError("Connection closed by peer")
    assert (classify(reported.value).exit_code, reported.value.silent) == (4, True)
    assert str(reported.value).startswith("rank 0 failed: out of memory")


def test_timeout_variable(monkeypatch):
    monkeypatch.setenv("ANIMATOR_DIST_TIMEOUT", "12.5")
    assert timeout().total_seconds() == 12.5
    monkeypatch.setenv("ANIMATOR_DIST_TIMEOUT", "0")
    with pytest.raises(InputError):
        timeout()


def test_batch_windows_and_shard_are_exclusive(cli, tiny_home, tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs: [{reference: a.png, poses: p, output: o.mp4}]\n")
    result = cli("--weights", tiny_home.root, "batch", jobs, "--parallel", "windows", "--shard", "0/2")
    assert result.exit_code == 2 and "--shard" in result.stderr
    assert cli("--weights", tiny_home.root, "batch", jobs, "--parallel", "pixels").exit_code == 2


@pytest.fixture(scope="module")
def poses(tmp_path_factory) -> Path:
    """40 frames whose face leaves the picture in frames 20-24 (for --face-opt; plain runs ignore it)."""
    folder = tmp_path_factory.mktemp("poses") / "poses"
    return pose_folder(folder, [_face_pose((0.3 + 0.01 * i, 0.3), (0.1, 0.12), visible=not 20 <= i < 25)
                                for i in range(FRAMES)], (64, 64))


def _args(tiny_home, reference: Path, poses: Path, output: Path, *extra) -> list[str]:
    return [str(a) for a in ("--weights", tiny_home.root, "--json", "generate", reference, poses, "-o", output,
                             "--width", 64, "--height", 64, "--steps", 3, *extra)]


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    tests = str(Path(__file__).parent)
    return {**os.environ, "ANIMATOR_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]), **extra}


def _frames(folder: Path) -> np.ndarray:
    """The frames as rendered (--frames-dir PNGs: libx264's threaded encodes of equal frames may differ)."""
    return np.stack([load_image(folder / f"frame_{i}.png") for i in range(FRAMES)])


def _one_process(tiny_home, reference: Path, poses: Path, folder: Path, *extra) -> tuple[torch.Tensor, np.ndarray]:
    folder.mkdir()
    done = subprocess.run([sys.executable, WORKER, folder, "none", *_args(
        tiny_home, reference, poses, folder / "out.mp4", "--frames-dir", folder / "frames", *extra)],
                          env=_environment(folder), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return torch.load(folder / "latents.pt"), _frames(folder / "frames")


@pytest.mark.parametrize("extra", [(), ("--face-opt", "--face-opt-steps", "0:1", "--face-opt-iters", "1"),
                                   ("--schedule", "ays", "--reuse-features", "2")],
                         ids=["plain", "face-opt", "ays-reuse"])
def test_two_processes_render_what_one_renders(tiny_home, astronaut_path, poses, tmp_path, extra):
    """torchrun with 2 CPU processes: the same latents (the windows' predictions are blended in window order on
    every rank, so bit for bit, beyond the required fp32 tolerance), the same video, one result line (rank 0's,
    counting every rank's UNet calls). With --reuse-features each rank keeps its own windows' features."""
    single_latents, single_frames = _one_process(tiny_home, astronaut_path, poses, tmp_path / "single", *extra)
    folder = tmp_path / "two"
    folder.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", WORKER,
               folder, "none", *_args(tiny_home, astronaut_path, poses, folder / "out.mp4", "--frames-dir",
                                      folder / "frames", *extra)]
    done = subprocess.run(command, env=_environment(folder), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.strip().splitlines()) == 1 and '"cached": false' in done.stdout
    assert json.loads(done.stdout)["unet_calls"] == 3 * 3  # every rank's calls: 3 steps × 3 windows
    latents = torch.load(folder / "latents.pt")
    assert latents.shape == single_latents.shape == (1, FRAMES, 4, 8, 8)
    assert (latents - single_latents).abs().max() <= 1e-5 and torch.equal(latents, single_latents)
    assert np.array_equal(_frames(folder / "frames"), single_frames)
    assert len(list(iter_frames(folder / "out.mp4"))) == FRAMES


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_ranks(tiny_home, reference: Path, poses: Path, folder: Path, fault: str) -> list[subprocess.CompletedProcess]:
    """Both ranks as plain processes with the launcher's variables, rank 1 failing at its second step."""
    folder.mkdir()
    port = str(_free_port())
    processes = [subprocess.Popen(
        [sys.executable, WORKER, folder, fault, *_args(tiny_home, reference, poses, folder / "out.mp4")],
        env=_environment(folder, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                         MASTER_PORT=port, ANIMATOR_DIST_TIMEOUT=str(TIMEOUT_S)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        outputs = [process.communicate(timeout=600) for process in processes]
    finally:
        for process in processes:
            process.kill()
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err)
            for p, (out, err) in zip(processes, outputs, strict=True)]


def test_a_killed_rank_ends_the_job_without_output(tiny_home, astronaut_path, poses, tmp_path):
    """Rank 1 is SIGKILLed mid-run: rank 0 stops with exit code 1 and one line long before the timeout."""
    started = time.monotonic()
    rank0, rank1 = _two_ranks(tiny_home, astronaut_path, poses, tmp_path / "run", "kill")
    assert rank1.returncode == -9
    assert rank0.returncode == 1 and rank0.stdout == ""
    errors = [line for line in rank0.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "another rank stopped without reporting an error" in errors[0], rank0.stderr
    assert not list((tmp_path / "run").glob("*.mp4")) and not (tmp_path / "run" / "latents.pt").exists()
    # both processes load torch and the models first; the survivor itself stops in about a second
    assert time.monotonic() - started < 300


def test_a_rank_out_of_memory_ends_the_job_with_its_code(tiny_home, astronaut_path, poses, tmp_path):
    """Rank 1 runs out of memory: every rank exits with code 4, and the job prints one error line (rank 1's)."""
    rank0, rank1 = _two_ranks(tiny_home, astronaut_path, poses, tmp_path / "run", "oom")
    assert (rank0.returncode, rank1.returncode) == (4, 4), rank0.stderr + rank1.stderr
    assert rank0.stdout == rank1.stdout == "" and "error" not in rank0.stderr
    assert len([line for line in rank1.stderr.splitlines() if "error" in line]) == 1
    assert "out of memory" in rank1.stderr
    assert not list((tmp_path / "run").glob("*.mp4"))


@pytest.mark.parametrize(("device", "local_rank", "gpu", "expected"), [
    (None, "1", True, "cuda:1"), ("cuda", "1", True, "cuda:1"), ("cuda:0", "1", True, "cuda:0"),
    ("cpu", "1", True, "cpu"), (None, "1", False, None), (None, None, True, None)])
def test_one_rule_puts_each_launched_process_on_its_gpu(monkeypatch, device, local_rank, gpu, expected):
    """`animator batch` (jobs per process) and window-parallel sessions take ``cuda:$LOCAL_RANK`` by the same rule:
    only under a launcher, only with a GPU, only when the user named no device or just ``cuda``."""
    from animator_cli.distributed import local_device
    from animator_cli.options import Runtime

    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr("animator_cli.device.cuda_available", lambda: gpu)
    assert local_device(Runtime(device=device)).device == (expected if expected else device)
