"""One video on many processes: window-parallel sampling on torch.distributed (docs/multi-gpu.md).

Launched by ``torchrun`` or ``accelerate launch`` (their RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
variables), every rank loads the models on its own device (``cuda:LOCAL_RANK`` with NCCL, else the CPU with gloo)
and runs the same sampler with the same random draws. What the ranks share out (`Ranks.take`: contiguous shares
balanced by size):

- the temporal windows of every denoising step: one collective per step gathers their v-predictions, which every
  rank blends in window order (`OrderedSum`), so any number of ranks gives the one-process latents bit for bit;
- the HJB refiner's chunks of x̂0: each rank fills in its own chunks and one ``all_reduce`` adds the (otherwise
  zero) tensors, exact as every element comes from one rank;
- the stages that write the cache (face, pose extraction, whether the video is cached): rank 0 runs them
  (`Ranks.on_main`) and the others wait for its answer, then read the same cache entries;
- the decode and the output file: rank 0 only.

Failures: a rank that fails prints its error as usual and leaves its exit code in the rendezvous store; the others
see their next collective fail (at the latest after ``ANIMATOR_DIST_TIMEOUT`` seconds, the process group's
timeout) and exit with the same code without printing it again. A rank that vanishes without a report (killed)
makes the others exit with code 1 and one line saying so. torchrun also stops the others when one exits non-zero.

Importing this module does not import torch: `Ranks` is part of `animator_cli.options.Runtime`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from animator_cli.errors import AnimatorError, InputError, Kind, classify, is_out_of_memory

if TYPE_CHECKING:
    import torch

    from animator_cli.options import Runtime

log = logging.getLogger("animator")
T = TypeVar("T")

TIMEOUT_ENV = "ANIMATOR_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # the longest wait for another rank: a step's collective, or rank 0's pose extraction
FAILURE_KEY = "failed"


class PeerFailure(AnimatorError):
    """This rank stops because another one failed; ``silent`` when that rank printed the error itself."""

    def __init__(self, message: str, kind: Kind, silent: bool, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.kind, self.silent = Kind(kind), silent


def shares(sizes: Sequence[int], parts: int) -> list[range]:
    """Split items of the given sizes into ``parts`` contiguous runs of near-equal total size: an item goes to the
    part in which the midpoint of its cumulative size falls (equal sizes: floor or ceil of items/parts each)."""
    total, before, owners = sum(sizes), 0, []
    for size in sizes:
        middle = before + size / 2
        owners.append(min(parts - 1, int(middle * parts / total)) if total else 0)
        before += size
    return [range(owners.index(p), len(owners) - owners[::-1].index(p)) if p in owners else range(0)
            for p in range(parts)]


class Ranks:
    """This process's place in a window-parallel run; the default is the single process (no collective)."""

    def __init__(self, rank: int = 0, world_size: int = 1, store: Any = None,
                 timeout: timedelta = timedelta(seconds=DEFAULT_TIMEOUT_S)) -> None:
        self.rank, self.world_size, self.store, self.timeout = rank, world_size, store, timeout
        self._stages = 0  # how many `on_main` calls so far: every rank makes them in the same order

    def __repr__(self) -> str:
        return f"Ranks(rank={self.rank}, world_size={self.world_size})"

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[T], sizes: Sequence[int]) -> list[T]:
        """This rank's contiguous share of ``items`` (see `shares`); every item belongs to exactly one rank."""
        return [items[i] for i in shares(sizes, self.world_size)[self.rank]]

    def all_reduce(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` over the ranks, in place (nothing to do in a single process)."""
        if self.parallel:
            import torch.distributed as dist

            with self.collective():
                dist.all_reduce(tensor)

    def on_main(self, stage: Callable[[], T]) -> T:
        """``stage()`` run on rank 0 only; the others wait for its (picklable) result or its error through the
        rendezvous store, so a stage that writes the cache runs once and every rank agrees on its answer."""
        if not self.parallel:
            return stage()
        key = f"stage/{self._stages}"
        self._stages += 1
        if self.is_main:
            try:
                value = stage()
            except BaseException as exc:
                self.store.set(key, pickle.dumps(("failed", *failure(exc))))
                raise
            self.store.set(key, pickle.dumps(("ok", value)))
            return value
        with self.collective():
            self.store.wait([key], self.timeout)
            outcome = pickle.loads(self.store.get(key))
        if outcome[0] == "failed":
            raise PeerFailure(f"rank 0 failed: {outcome[2]}", outcome[1], silent=True)
        return outcome[1]

    def report(self, exc: BaseException) -> None:
        """Leave this rank's failure in the store for the others (a `PeerFailure` was reported already)."""
        if self.parallel and not isinstance(exc, PeerFailure):
            kind, message = failure(exc)
            with contextlib.suppress(Exception):  # the store may be gone with rank 0
                self.store.set(FAILURE_KEY, json.dumps({"rank": self.rank, "kind": kind, "message": message}))

    @contextlib.contextmanager
    def collective(self) -> Iterator[None]:
        """Turn a failed collective (a peer crashed, or the timeout passed) into a `PeerFailure`."""
        try:
            yield
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise
            raise self._peer_failure(exc) from exc

    def _peer_failure(self, exc: BaseException) -> PeerFailure:
        with contextlib.suppress(Exception):
            if self.store.check([FAILURE_KEY]):
                report = json.loads(self.store.get(FAILURE_KEY))
                return PeerFailure(f"rank {report['rank']} failed: {report['message']}", report["kind"], silent=True)
        detail = _first_line(exc).split("] ", 1)[-1]  # without gloo's "[source.cc:line] " prefix
        return PeerFailure(f"rank {self.rank}: another rank stopped without reporting an error ({detail[:200]})",
                           Kind.INTERNAL, silent=False,
                           hint="it was killed or lost its connection: see the launcher's log")


class OrderedSum:
    """``total`` plus contributions ``index_add_``-ed along dim 1, one per item, each computed by the rank that owns
    the item (`Ranks.take`): with many ranks the contributions are gathered and added in item order on every rank,
    so the sum equals the one-process sum bit for bit. (An all_reduce of partial sums would re-associate the
    additions where the items of several ranks overlap, like the anchor frame 0 shared by every window.)"""

    def __init__(self, total: torch.Tensor, ranks: Ranks, indices: Sequence[torch.Tensor]) -> None:
        self.total, self.ranks, self.indices = total, ranks, indices
        self._kept: list[torch.Tensor] = []

    def add(self, index: torch.Tensor, value: torch.Tensor) -> None:
        """Add the next owned item's contribution (``value`` along dim 1 lands at ``index``)."""
        if self.ranks.parallel:
            self._kept.append(value)
        else:
            self.total.index_add_(1, index, value)

    def result(self) -> torch.Tensor:
        if not self.ranks.parallel:
            return self.total
        import torch
        import torch.distributed as dist

        owners = shares([len(index) for index in self.indices], self.ranks.world_size)
        lengths = [sum(len(self.indices[i]) for i in owned) for owned in owners]
        shape = (self.total.shape[0], max(lengths), *self.total.shape[2:])
        mine = self.total.new_zeros(shape)
        if self._kept:
            mine[:, :lengths[self.ranks.rank]] = torch.cat(self._kept, dim=1)
        gathered = [torch.empty_like(mine) for _ in owners]
        with self.ranks.collective():
            dist.all_gather(gathered, mine)
        for owned, values in zip(owners, gathered, strict=True):
            start = 0
            for item in owned:
                index = self.indices[item]
                self.total.index_add_(1, index, values[:, start:start + len(index)])
                start += len(index)
        return self.total


def failure(exc: BaseException) -> tuple[str, str]:
    """(kind, one-line message) of an exception, as the CLI reports it (`animator_cli.errors.classify`): what a
    rank leaves for the others, so every rank exits with the failing rank's code."""
    report = classify(exc)
    return report.kind.value, report.cli_message


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def local_device(runtime: Runtime) -> Runtime:
    """``runtime`` on this process's own GPU, ``cuda:$LOCAL_RANK``, when a launcher started it, a GPU is there and
    the user named no device or just ``cuda``; unchanged otherwise. The one rule for every multi-process run
    (jobs shared out by `animator batch`, or windows shared by `session`)."""
    from animator_cli.device import cuda_available

    if runtime.device in (None, "cuda") and "LOCAL_RANK" in os.environ and cuda_available():
        return dataclasses.replace(runtime, device=f"cuda:{int(os.environ['LOCAL_RANK'])}")
    return runtime


def world_size() -> int:
    """How many processes the launcher started (1 without torchrun / accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def timeout() -> timedelta:
    """The process group's timeout: ``ANIMATOR_DIST_TIMEOUT`` seconds, else `DEFAULT_TIMEOUT_S`."""
    seconds = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    if not seconds > 0:
        raise InputError(f"{TIMEOUT_ENV}={seconds} must be a positive number of seconds")
    return timedelta(seconds=seconds)


@contextlib.contextmanager
def session(runtime: Runtime) -> Iterator[tuple[Runtime, Ranks]]:
    """(``runtime`` for this rank, its `Ranks`) in a window-parallel run: the process group joined (NCCL on
    ``cuda:LOCAL_RANK``, gloo on the CPU); an exception is reported to the other ranks before it propagates.
    A single process (WORLD_SIZE unset or 1) gets ``runtime`` unchanged and the single-process `Ranks`."""
    if world_size() <= 1:
        yield runtime, Ranks()
        return
    import torch
    import torch.distributed as dist

    runtime = local_device(runtime)
    device = runtime.torch_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    wait = timeout()
    store, rank, size = next(dist.rendezvous("env://", timeout=wait))
    # Keys of an earlier attempt (torchrun --max-restarts) must not be read as this one's.
    store = dist.PrefixStore(f"animator/{os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)}/", store)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank, world_size=size,
                            timeout=wait)
    ranks = Ranks(rank, size, store, wait)
    try:
        yield runtime, ranks
    except BaseException as exc:
        ranks.report(exc)
        raise  # the process group is not torn down: peers may be gone, and the process ends here
    dist.destroy_process_group()
