"""Shared fixtures: real photos shipped in dependencies, a tiny weights home, an in-process CLI runner."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models are dominated by thread overhead; one thread is faster and steadier on shared CPUs."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def _private_compile_cache(tmp_path_factory: pytest.TempPathFactory):
    """Compiled kernels go to a folder of this test session, not the user's ~/.cache/animator/torchinductor
    (`animator_cli.models.compile` points inductor there, for the rest of the process)."""
    import os

    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("torchinductor"))
    yield
    if previous is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / "astronaut.png"


@pytest.fixture(scope="session")
def t1_path() -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"


@pytest.fixture(scope="session")
def tom_hanks_path() -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images" / "Tom_Hanks_54745.png"


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory: pytest.TempPathFactory):
    """A complete weights home of tiny seeded models, written once per test session."""
    from animator_cli.weights.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny-home"), seed=0)


@pytest.fixture
def gradio_env(monkeypatch: pytest.MonkeyPatch):
    """`animator_cli.ui.server.serve` sets Gradio's environment variables; put them back afterwards."""
    import os

    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, os.environ.get(name, ""))


@dataclasses.dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `animator ARGS...` in-process; the stage cache defaults to a per-test folder."""
    from animator_cli.cli.app import run

    monkeypatch.setenv("ANIMATOR_CACHE", str(tmp_path / "stage-cache"))

    def invoke(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = run([str(a) for a in args])
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return invoke
