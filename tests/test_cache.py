"""Stage cache: keys follow content and parameters; interrupted writes are never trusted."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from animator_cli import __version__
from animator_cli.cache import MANIFEST, StageCache, hash_input


def _build(entry, text: str, replace: bool = False) -> None:
    with entry.writing(replace=replace) as tmp:
        (tmp / "result.txt").write_text(text)


def test_miss_then_hit(tmp_path: Path) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(b"abc")
    cache = StageCache(tmp_path / "cache")
    entry = cache.entry("pose", [source], {"align": "global"})
    assert not entry.done
    _build(entry, "result")
    again = cache.entry("pose", [source], {"align": "global"})
    assert again.path == entry.path and again.done
    manifest = json.loads((again.path / MANIFEST).read_text())
    assert manifest["stage"] == "pose" and manifest["version"] == __version__
    assert manifest["params"] == {"align": "global"} and list(manifest["files"]) == ["result.txt"]


def test_key_follows_content_params_and_roles(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    cache = StageCache(tmp_path / "cache")
    key = cache.entry("s", [a, b], {"x": 1}).key
    assert cache.entry("s", [a, b], {"x": 2}).key != key
    assert cache.entry("s", [b, a], {"x": 1}).key != key  # reference and driving video are not interchangeable
    assert cache.entry("t", [a, b], {"x": 1}).key != key
    a.write_bytes(b"ONE")
    assert cache.entry("s", [a, b], {"x": 1}).key != key
    a.write_bytes(b"one")
    a.rename(tmp_path / "renamed")  # content, not the path, decides
    assert cache.entry("s", [tmp_path / "renamed", b], {"x": 1}).key == key


def test_folder_inputs_hash_their_files(tmp_path: Path) -> None:
    folder = tmp_path / "poses"
    folder.mkdir()
    (folder / "frame_0.png").write_bytes(b"0")
    cache = StageCache(tmp_path / "cache")
    key = cache.entry("gen", [folder], {}).key
    (folder / "frame_1.png").write_bytes(b"1")
    assert cache.entry("gen", [folder], {}).key != key


def test_interrupted_write_is_not_trusted(tmp_path: Path) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(b"abc")
    cache = StageCache(tmp_path / "cache")
    entry = cache.entry("face", [source], {})
    with pytest.raises(KeyboardInterrupt), entry.writing() as tmp:
        (tmp / "half.npz").write_bytes(b"partial")
        raise KeyboardInterrupt
    assert not entry.done and not entry.path.exists()
    assert list((tmp_path / "cache" / "face").iterdir()) == []  # scratch folder removed too
    _build(entry, "complete")
    assert entry.done and (entry.path / "result.txt").read_text() == "complete"


def test_force_rebuild_replaces_entry(tmp_path: Path) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(b"abc")
    entry = StageCache(tmp_path / "cache").entry("face", [source], {})
    _build(entry, "first")
    _build(entry, "second")  # a build without --force keeps the finished entry (another process's, say)
    assert (entry.path / "result.txt").read_text() == "first"
    _build(entry, "second", replace=True)  # what --force does: build again over a finished entry
    assert (entry.path / "result.txt").read_text() == "second"


def test_an_entry_another_process_finished_meanwhile_is_kept(tmp_path: Path) -> None:
    """Two builds of one entry overlap: the first to finish stays in place, the second is dropped, no temp left."""
    source = tmp_path / "input.bin"
    source.write_bytes(b"abc")
    entry = StageCache(tmp_path / "cache").entry("face", [source], {})
    with entry.writing() as mine:
        (mine / "result.txt").write_text("mine")
        _build(entry, "theirs")  # another process finishes the same entry first
    assert entry.done and (entry.path / "result.txt").read_text() == "theirs"
    assert [p.name for p in entry.path.parent.iterdir()] == [entry.key]


def test_a_damaged_entry_in_the_way_is_replaced_not_kept(tmp_path: Path) -> None:
    """What is found at the entry's place when a build completes is kept only if intact (here: half removed by
    another process that found it damaged)."""
    source = tmp_path / "input.bin"
    source.write_bytes(b"abc")
    entry = StageCache(tmp_path / "cache").entry("generate", [source], {})
    with entry.writing() as mine:
        (mine / "result.txt").write_text("good")
        _build(entry, "theirs")
        (entry.path / "result.txt").write_text("th")  # truncated
    assert entry.done and (entry.path / "result.txt").read_text() == "good"


def test_scratch_folders_of_dead_builds_are_swept_live_ones_kept(tmp_path: Path) -> None:
    """A build killed with SIGKILL (or by the out-of-memory killer) leaves its scratch folder: the next build in
    that stage removes it once untouched for a week; a live build's folder and finished entries stay."""
    source = tmp_path / "input.bin"
    source.write_bytes(b"abc")
    cache = StageCache(tmp_path / "cache")
    old_entry = cache.entry("pose", [source], {"n": 1})
    _build(old_entry, "finished long ago")
    stage_dir = old_entry.path.parent
    dead, dead_swap = stage_dir / f".{'a' * 24}.x1y2z3_q.tmp", stage_dir / f".{'b' * 24}.x1y2z3_q.old"
    live, users = stage_dir / f".{'c' * 24}.x1y2z3_q.tmp", stage_dir / ".thesis.tmp"  # live build; not ours
    for folder in (dead, dead_swap, live, users):
        (folder / "frames").mkdir(parents=True)
    week_ago = time.time() - 7 * 24 * 3600 - 60
    for folder in (dead, dead_swap, users, old_entry.path):
        os.utime(folder, (week_ago, week_ago))
    _build(cache.entry("pose", [source], {"n": 2}), "new")
    assert sorted(p.name for p in stage_dir.iterdir()) == sorted([old_entry.key, live.name, users.name,
                                                                  cache.entry("pose", [source], {"n": 2}).key])
    assert old_entry.done


def _build_and_read(root: str, rounds: int, barrier, failures) -> None:
    """One of several processes that build the same entries at the same moment, then read them. Like the face
    and generate stages, each computes its result first, then writes the entry."""
    source = Path(root) / "input.bin"
    rng = random.Random()
    for round_ in range(rounds):
        entry = StageCache(Path(root) / "cache").entry("face", [source], {"round": round_})
        barrier.wait(timeout=60)
        try:
            if not entry.done:
                time.sleep(rng.uniform(0, 0.004))  # the work, finishing at slightly different times
                with entry.writing() as tmp:
                    for i in range(20):
                        (tmp / f"part{i}.txt").write_text(str(i) * 100)
            assert [(entry.path / f"part{i}.txt").read_text() for i in range(20)] == [str(i) * 100 for i in range(20)]
            assert entry.done
        except Exception as exc:  # noqa: BLE001 - every kind of failure is counted, with its message
            failures.put(f"round {round_}: {type(exc).__name__}: {exc}")


def test_processes_building_one_entry_at_once_never_see_it_missing(tmp_path: Path) -> None:
    """Batch shards sharing a reference build its face entry at the same moment: a reader used to find a file
    missing while another process swapped the entry, and a second swap failed ("Directory not empty")."""
    import multiprocessing

    (tmp_path / "input.bin").write_bytes(b"abc")
    context = multiprocessing.get_context("fork")
    barrier, failures = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_build_and_read, args=(str(tmp_path), 150, barrier, failures))
               for _ in range(4)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=240)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    assert [worker.exitcode for worker in workers] == [0] * 4
    seen = []
    while not failures.empty():
        seen.append(failures.get())
    assert seen == []
    assert not [p for p in (tmp_path / "cache" / "face").iterdir() if p.name.startswith(".")]


def test_settled_inputs_are_read_once_and_a_rewrite_is_seen(tmp_path: Path, monkeypatch) -> None:
    """`animate` hands one driving video to several stages: an input unchanged for a while is hashed once per process;
    any rewrite (a new mtime), and any file changed in the last seconds, is read again."""
    import animator_cli.cache as cache

    video = tmp_path / "driving.mp4"
    video.write_bytes(b"one")
    old = time.time() - 60
    os.utime(video, (old, old))
    reads = []
    monkeypatch.setattr(cache, "hash_path", lambda path: reads.append(path) or _sha(path))
    cache._file_digest.cache_clear()
    assert hash_input(video) == hash_input(video) == _sha(video)
    assert len(reads) == 1
    video.write_bytes(b"ONE")  # same size, mtime now
    assert hash_input(video) == _sha(video) and hash_input(video) == _sha(video)
    assert len(reads) == 3  # changed in the last seconds: read every time


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
