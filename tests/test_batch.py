"""Batch job files: defaults apply where they mean something, paths resolve next to the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import animator_cli.batch as batch
from animator_cli.batch import read_jobs, run_job
from animator_cli.errors import InputError, OutOfMemoryError, WeightsError
from animator_cli.generate import GenerateResult
from animator_cli.options import Runtime


def test_defaults_apply_only_where_they_mean_something(tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(
        "defaults: {pose-backend: mediapipe, audio_from: music.mp4, steps: 3}\n"
        "jobs:\n"
        "  - {reference: a.png, driving: dance.mp4, output: out/a.mp4}\n"
        "  - {reference: b.png, poses: poses/wave, output: out/b.mp4, seed: 7}\n")
    animate_job, generate_job = read_jobs(jobs_file)
    assert animate_job["pose_backend"] == "mediapipe" and "audio_from" not in animate_job
    assert generate_job["audio_from"] == tmp_path / "music.mp4" and "pose_backend" not in generate_job
    assert animate_job["steps"] == generate_job["steps"] == 3 and generate_job["seed"] == 7
    assert generate_job["poses"] == tmp_path / "poses" / "wave"


def test_animate_option_on_a_pose_job_is_still_an_error(tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text("jobs:\n  - {reference: b.png, poses: p, output: o.mp4, align: limbs}\n")
    (job,) = read_jobs(jobs_file)
    with pytest.raises(InputError, match="only apply to jobs with a driving video"):
        run_job(job, Runtime(device="cpu"), weights=None, cache=None, pipeline=None, force=False)


@pytest.mark.parametrize("error, code", [(InputError("bad"), 2), (WeightsError("no weights"), 3),
                                         (OutOfMemoryError("oom"), 4), (RuntimeError("CUDA out of memory"), 4),
                                         (ValueError("a bug"), 1)])
def test_batch_exits_with_the_first_failed_jobs_own_code(cli, tiny_home, tmp_path: Path, monkeypatch, error,
                                                         code) -> None:
    """Exit 1 is for bugs: a batch whose first failure is bad input exits 2, missing weights 3, out of memory 4."""
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text("jobs:\n" + "".join(f"  - {{reference: r.png, poses: p, output: {name}.mp4}}\n"
                                              for name in ("ok", "first", "second")))
    later = WeightsError("later") if code != 3 else InputError("later")

    def fake_job(job, *_):
        if job["output"].name == "ok.mp4":
            return GenerateResult(job["output"], 1, 25.0, 64, 64, cached=True)
        raise error if job["output"].name == "first.mp4" else later

    monkeypatch.setattr(batch, "run_job", fake_job)
    result = cli("--weights", tiny_home.root, "--json", "batch", jobs_file)  # complete: the batch checks first
    assert result.exit_code == code, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == 2 and [j["ok"] for j in report["jobs"]] == [True, False, False]
    assert "2 of 3 jobs failed" in result.stderr


def test_two_jobs_writing_one_file_stop_the_batch_before_any_job(cli, tiny_home, tmp_path: Path,
                                                                 monkeypatch) -> None:
    """The second job would replace the first one's video: refused up front, whatever the spelling of the path."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.mp4").write_bytes(b"an earlier render")
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text("jobs:\n  - {reference: r.png, poses: p, output: out/a.mp4}\n"
                         "  - {reference: r.png, poses: p, output: out/b.mp4}\n"
                         "  - {reference: s.png, poses: q, output: out/../out/a.mp4}\n")
    ran = []
    monkeypatch.setattr(batch, "run_job", lambda job, *_: ran.append(job))
    result = cli("--weights", tiny_home.root, "batch", jobs_file)
    assert result.exit_code == 2 and ran == []
    assert "jobs 0 and 2 both write" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "out" / "a.mp4").read_bytes() == b"an earlier render"
