"""The Python API (`animator_cli.Animator`): the README's example as written, the same video as the CLI, options
by name, the models loaded once, caching switchable."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_generate import FAST, _skeletons

from animator_cli.errors import InputError, classify

README = Path(__file__).parents[1] / "README.md"


def readme_example() -> str:
    """The first python block of the README's "Python API" section."""
    section = README.read_text().split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(tiny_home, tmp_path, astronaut_path):
    from media import clip_with_audio

    shutil.copyfile(astronaut_path, tmp_path / "alice.png")
    clip_with_audio(tmp_path / "dance.mp4", frames=3, fps=10)
    env = {**os.environ, "ANIMATOR_HOME": str(tiny_home.root), "ANIMATOR_CACHE": str(tmp_path / "cache"),
           "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "(3, 256, 256, 3) 10.0"
    assert (tmp_path / "alice.draft.mp4").stat().st_size > 0


@pytest.fixture
def animator(tiny_home, tmp_path):
    from animator_cli import Animator

    return Animator(tiny_home.root, device="cpu", cache=tmp_path / "api-cache")


def test_generate_gives_the_cli_s_video(animator, cli, tiny_home, tmp_path, astronaut_path):
    """One lower layer: `Video.save` writes the bytes `animator generate` writes for the same options, and
    ``frames`` are that file's frames."""
    poses = _skeletons(tmp_path / "poses", 5)
    video = animator.generate(astronaut_path, poses, seed=3, **FAST)
    saved = video.save(tmp_path / "api.mp4")
    result = cli("--weights", tiny_home.root, "--device", "cpu", "generate", astronaut_path, poses,
                 "-o", tmp_path / "cli.mp4", "--seed", 3, "--width", 64, "--height", 64, "--steps", 1)
    assert result.exit_code == 0, result.stderr
    assert saved.read_bytes() == (tmp_path / "cli.mp4").read_bytes()
    assert video.frames.shape == (5, 64, 64, 3) and video.frames.dtype == np.uint8
    assert video.fps == 12.0 and not video.result.cached and video.result.unet_calls == 1


def test_models_load_once_and_cached_results_load_nothing(animator, tmp_path, astronaut_path):
    poses = _skeletons(tmp_path / "poses", 3)
    first = animator.generate(astronaut_path, poses, seed=1, **FAST)
    second = animator.generate(astronaut_path, poses, seed=2, **FAST)
    again = animator.generate(astronaut_path, poses, seed=1, **FAST)
    assert animator._pipeline.cache_info().misses == 1  # one load for both renders
    assert not first.result.cached and not second.result.cached and again.result.cached
    assert np.array_equal(again.frames, first.frames) and not np.array_equal(second.frames, first.frames)


def test_without_cache_every_call_renders_and_the_folder_goes_with_the_videos(tiny_home, tmp_path, astronaut_path):
    from animator_cli import Animator

    animator = Animator(tiny_home.root, device="cpu", cache=False)
    poses = _skeletons(tmp_path / "poses", 3)
    first = animator.generate(astronaut_path, poses, **FAST)
    second = animator.generate(astronaut_path, poses, **FAST)
    assert not first.result.cached and not second.result.cached
    folder = Path(animator.cache.root)
    assert folder.is_dir() and not folder.is_relative_to(tmp_path)
    del animator, first
    assert folder.is_dir()  # the second video still lives in it
    second.save(tmp_path / "kept.mp4")
    del second
    assert not folder.exists()


def test_options_are_checked_by_name(animator, tmp_path, astronaut_path):
    poses = _skeletons(tmp_path / "poses", 3)
    with pytest.raises(InputError, match="unknown option 'stpes' .did you mean 'steps'"):
        animator.generate(astronaut_path, poses, stpes=3)
    with pytest.raises(InputError) as raised:
        animator.generate(astronaut_path, poses, width=100, height=64)
    failure = classify(raised.value)
    assert failure.message.startswith("width 100 is not a multiple of 64")  # the library names the option ...
    assert failure.cli_message.startswith("--width 100 is not a multiple of 64")  # ... the CLI spells its flag
    assert (failure.kind, failure.exit_code) == ("input", 2)
    from animator_cli import Animator

    with pytest.raises(InputError, match="unknown option 'ofload' .did you mean 'offload'"):
        Animator(ofload=True)


def test_identity_timeline_when_asked(animator, tmp_path, astronaut_path):
    poses = _skeletons(tmp_path / "poses", 3)
    assert animator.generate(astronaut_path, poses, **FAST).identity is None
    video = animator.generate(astronaut_path, poses, identity=True, **FAST)
    assert video.identity.cosines.shape == (3,)
