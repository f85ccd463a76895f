"""`animator batch`: many (reference, driving) jobs from one YAML file, the models loaded once.

File format (paths are relative to the YAML file's folder)::

    defaults:                 # optional; any generate/animate option, CLI spelling with - or _
      resolution: 576x1024
      steps: 25
    jobs:
      - reference: alice.png
        driving: dance.mp4    # a driving video (animate) ...
        output: out/alice.mp4
      - reference: bob.jpg
        poses: poses/wave     # ... or a pose folder (generate)
        output: out/bob.mp4
        seed: 7               # per-job override
        audio_from: wave.mp4

Sharding: ``shard=(i, n)`` runs jobs i, i+n, i+2n, …; without it the RANK / WORLD_SIZE variables set by
torchrun or accelerate are used, so ``torchrun --nproc-per-node 4 -m animator_cli batch jobs.yaml`` splits the
jobs over four GPUs (each process also takes ``cuda:$LOCAL_RANK`` unless ``--device`` is given). With a
window-parallel ``runtime`` (``animator batch --parallel windows``, `animator_cli.distributed`) every process takes
part in every job instead, and the first failed job stops the batch on every rank.
No job may write over a file any job reads (checked before that job runs), and no two jobs may write one
file (checked before the first job: the second would replace the first one's video). A failing job is recorded and the
others still run; `animator batch` then exits with the first failed job's
code (2 bad input, 3 weights, 4 out of memory, 1 only for an internal error), never with a code of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from animator_cli.cache import StageCache
from animator_cli.distributed import Ranks, local_device
from animator_cli.errors import AnimatorError, InputError, classify
from animator_cli.fileio import check_output_path
from animator_cli.generate import GenerateResult, animate, generate, lazy_pipeline, needed_weights
from animator_cli.options import Runtime, check_names, generate_options
from animator_cli.weights.home import WeightsHome

INPUT_KEYS = ("reference", "driving", "poses", "audio_from")
PATH_KEYS = (*INPUT_KEYS, "output")
ANIMATE_KEYS = ("align", "pose_backend", "max_frames")
GENERATE_ONLY_KEYS = ("poses", "audio_from")


@dataclass(frozen=True)
class JobOutcome:
    index: int
    output: str | None
    result: GenerateResult | None = None
    error: str | None = None
    exit_code: int = 0  # what the CLI would have exited with for this job alone

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"``, else RANK/WORLD_SIZE from the environment, else (0, 1)."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"invalid --shard {text!r}", "use I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise InputError(f"invalid --shard {text!r}", "I must be between 0 and N-1")
    return index, count


def read_jobs(path: Path) -> list[dict[str, Any]]:
    """The job entries with defaults merged in, keys normalised to snake_case and paths resolved."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read jobs file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list) or not document["jobs"]:
        raise InputError(f"{path} has no job list", "expected a top-level `jobs:` list (see `animator batch -h`)")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InputError(f"{path}: `defaults` must be a mapping")
    defaults = _normalise(defaults)
    jobs = []
    for raw in document["jobs"]:
        entry = _normalise(raw if isinstance(raw, dict) else {"invalid": raw})
        # A default applies where it means something: animate-only options skip pose-folder jobs and
        # audio_from skips driving-video jobs (on a job itself, such a key is still an error).
        skip = GENERATE_ONLY_KEYS if "driving" in entry else ANIMATE_KEYS
        job = {**{k: v for k, v in defaults.items() if k not in skip}, **entry}
        for key in PATH_KEYS:
            if job.get(key) is not None:
                job[key] = path.parent / Path(str(job[key])).expanduser()
        jobs.append(job)
    return jobs


def check_distinct_outputs(jobs: list[dict[str, Any]]) -> None:
    """Raise InputError when two jobs name one output file (by path, or through links to one place)."""
    seen: dict[Path, int] = {}
    for number, job in enumerate(jobs):  # numbered as `animator batch` reports them
        if job.get("output") is None:
            continue
        try:
            where = Path(job["output"]).resolve()
        except (OSError, RuntimeError):  # a symlink loop: the job itself reports it
            where = Path(os.path.abspath(job["output"]))
        if where in seen:
            raise InputError(f"jobs {seen[where]} and {number} both write {where}", "give each job its own output")
        seen[where] = number


def _normalise(entry: dict[str, Any]) -> dict[str, Any]:
    return {str(k).replace("-", "_"): v for k, v in entry.items()}


def run_job(job: dict[str, Any], runtime: Runtime, weights: WeightsHome, cache: StageCache, pipeline: Callable,
            force: bool, ranks: Ranks | None = None) -> GenerateResult:
    """One job: `animate` when it has ``driving``, `generate` when it has ``poses``."""
    job = dict(job)
    if "invalid" in job:
        raise InputError(f"job entry {job['invalid']!r} is not a mapping")
    missing = [key for key in ("reference", "output") if job.get(key) is None]
    if missing or ("driving" in job) == ("poses" in job):
        raise InputError("a job needs reference, output and exactly one of driving or poses")
    reference, output = job.pop("reference"), job.pop("output")
    animate_args = {key: job.pop(key) for key in ANIMATE_KEYS if key in job}
    driving, poses, audio_from = job.pop("driving", None), job.pop("poses", None), job.pop("audio_from", None)
    check_names(job, generate_options, what="job option")
    try:
        options = generate_options(**job)
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid job options ({exc})", "use the long option names and values of "
                                                         "`animator generate`") from exc
    if driving is not None:
        if audio_from is not None:
            raise InputError("audio_from is only for pose-folder jobs; animate jobs take the driving audio")
        return animate(reference, driving, output, options, runtime, weights=weights, cache=cache,
                       pipeline=pipeline, force=force, ranks=ranks, **animate_args)
    if animate_args:
        raise InputError(f"{', '.join(animate_args)} only apply to jobs with a driving video")
    return generate(reference, poses, output, options, runtime, weights=weights, cache=cache, pipeline=pipeline,
                    audio_from=audio_from, force=force, ranks=ranks)


def _failed(index: int, output: str | None, exc: Exception, device: str | None) -> JobOutcome:
    """The outcome of a job that raised ``exc``: the line and exit code the CLI would give it."""
    failure = classify(exc, device)
    return JobOutcome(index, output, error=failure.cli_message, exit_code=failure.exit_code)


def run_batch(jobs_file: Path, runtime: Runtime, *, weights: WeightsHome, cache: StageCache,
              shard: tuple[int, int] = (0, 1), force: bool = False,
              on_done: Callable[[JobOutcome], None] | None = None, ranks: Ranks | None = None) -> list[JobOutcome]:
    """Run this shard's jobs; each outcome holds the result or the one-line error of a failed job. Missing
    weights stop the batch before its first job (a WeightsError listing all of them)."""
    jobs = read_jobs(jobs_file)
    check_distinct_outputs(jobs)
    runtime = local_device(runtime)  # under torchrun each process takes its own GPU
    weights.require_components(needed_weights(runtime))
    ranks = ranks or Ranks()
    pipeline = lazy_pipeline(weights, runtime, ranks)
    index, count = shard
    inputs = [job[key] for job in jobs for key in INPUT_KEYS if job.get(key) is not None]
    outcomes = []
    for number in range(index, len(jobs), count):
        job = jobs[number]
        output = str(job["output"]) if job.get("output") is not None else None
        try:
            if output is not None:  # another job's input is as precious as this job's own
                check_output_path(job["output"], inputs)
            outcome = JobOutcome(number, output, result=run_job(job, runtime, weights, cache, pipeline, force, ranks))
        except (AnimatorError, RuntimeError, ValueError, OSError) as exc:  # e.g. CUDA out of memory on one video
            if ranks.parallel:
                raise  # the ranks render each job together: one rank's failure stops them all
            outcome = _failed(number, output, exc, runtime.device)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes
