"""Batch job files: defaults apply where they mean something, paths resolve next to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from animator_cli.batch import read_jobs, run_job
from animator_cli.errors import InputError
from animator_cli.generate import Runtime


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
