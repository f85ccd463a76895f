"""One error policy (`animator_cli.errors.classify`): the same failure gives the same exit code and sentence from the
CLI, from a batch job, from any rank of a multi-GPU run and on the web page."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from test_generate import _skeletons

import animator_cli.generate as generate_module
from animator_cli.distributed import failure
from animator_cli.errors import EXIT_CODES, InputError, Kind, WeightsError, option_error
from animator_cli.ui.session import error_text

FAILURES = {
    "disk full": (OSError(errno.ENOSPC, "No space left on device", "/data/out.mp4"), 2,
                  "no space left on device at /data/out.mp4 (free some space or write the output elsewhere)"),
    "out of memory": (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 4,
                      "out of memory on cpu (try fewer frames, --offload, a smaller --tile or a lower resolution)"),
    "weights": (WeightsError("unet.pth is damaged", "reinstall it"), 3, "unet.pth is damaged (reinstall it)"),
    "option": (option_error("steps", 0, "must be at least 1"), 2, "--steps 0 must be at least 1"),
    "bug": (ValueError("a bug\nsecond line"), 1, "internal error: ValueError: a bug"),
}


@pytest.mark.parametrize("name", FAILURES)
def test_every_entry_point_reports_a_failure_alike(name, cli, tiny_home, tmp_path, astronaut_path, monkeypatch):
    exc, code, sentence = FAILURES[name]

    def failing_render(*args, **kwargs):
        raise exc

    monkeypatch.setattr(generate_module, "render", failing_render)
    poses = _skeletons(tmp_path / "poses", 2)
    common = ["--weights", tiny_home.root, "--device", "cpu"]
    # the CLI
    result = cli(*common, "generate", astronaut_path, poses, "-o", tmp_path / "out.mp4")
    assert result.exit_code == code
    assert sentence in result.stderr.replace("\n", "")
    # a batch job
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f"jobs:\n  - {{reference: {astronaut_path}, poses: {poses}, output: {tmp_path / 'b.mp4'}}}\n")
    result = cli(*common, "--json", "batch", jobs)
    (job,) = json.loads(result.stdout)["jobs"]
    assert result.exit_code == code and job["error"] == sentence
    # what a failing rank leaves for the others, who exit with its code
    kind, message = failure(exc)
    assert EXIT_CODES[Kind(kind)] == code and message == sentence.replace(" on cpu", " on the device")
    # the web page (options by the names its fields show)
    assert error_text(exc, "cpu") == sentence.replace("--steps", "steps")


def test_exceptions_say_their_kind_not_an_exit_code():
    assert InputError("x").kind is Kind.INPUT and not hasattr(InputError("x"), "exit_code")
    assert [EXIT_CODES[k] for k in Kind] == [1, 2, 3, 4, 130]
