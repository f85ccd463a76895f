"""The stage cache serves only what it wrote: sizes and hashes are checked, a damaged entry is rebuilt."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from media import stick_poses

from animator_cli.cache import MANIFEST, StageCache
from animator_cli.video import iter_frames, probe

SMALL = ("--width", 64, "--height", 64, "--steps", 1)


def _entry(tmp_path: Path):
    source = tmp_path / "input.bin"
    source.write_bytes(b"abc")
    entry = StageCache(tmp_path / "cache").entry("face", [source], {})
    with entry.writing() as tmp:
        (tmp / "result.bin").write_bytes(b"0123456789")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "more.txt").write_text("more")
    return entry


def test_manifest_records_size_and_sha256(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    files = json.loads((entry.path / MANIFEST).read_text())["files"]
    assert files == {"result.bin": {"size": 10, "sha256": hashlib.sha256(b"0123456789").hexdigest()},
                     "sub/more.txt": {"size": 4, "sha256": hashlib.sha256(b"more").hexdigest()}}
    assert entry.done


def test_each_kind_of_damage_is_one_warning_and_a_rebuild(tmp_path: Path, caplog) -> None:
    damages = {"result.bin: size mismatch": lambda p: (p / "result.bin").write_bytes(b"01234"),
               "result.bin: hash mismatch": lambda p: (p / "result.bin").write_bytes(b"9876543210"),
               "sub/more.txt: missing": lambda p: (p / "sub" / "more.txt").unlink(),
               "manifest.json: unreadable": lambda p: (p / MANIFEST).write_text("{trunc")}
    for problem, damage in damages.items():
        entry = _entry(tmp_path)
        damage(entry.path)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="animator"):
            assert not entry.done
        assert [r.getMessage() for r in caplog.records] == [
            f"cache entry {entry.path} is damaged ({problem}); rebuilding"]
        assert caplog.records[0].levelno == logging.WARNING
        assert not entry.path.exists()  # dropped: the caller's rebuild starts clean


def test_old_format_entry_is_stale_not_a_crash(tmp_path: Path, caplog) -> None:
    entry = _entry(tmp_path)
    manifest = json.loads((entry.path / MANIFEST).read_text())
    manifest["files"] = sorted(manifest["files"])  # the format before hashes: a list of names
    (entry.path / MANIFEST).write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO, logger="animator"):
        assert not entry.done
    assert "predates file checks" in caplog.text and not entry.path.exists()


def test_truncated_cached_video_is_rebuilt_not_copied(cli, tiny_home, tmp_path: Path, astronaut_path: Path) -> None:
    poses = stick_poses(tmp_path / "poses")
    args = ["--weights", tiny_home.root, "--json", "generate", astronaut_path, poses, *SMALL]
    first = cli(*args, "-o", tmp_path / "first.mp4")
    assert first.exit_code == 0, first.stderr
    (cached,) = (tmp_path / "stage-cache" / "generate").glob("*/video.mp4")
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])  # a crash mid-copy, a full disk
    second = cli(*args, "-o", tmp_path / "second.mp4")
    assert second.exit_code == 0, second.stderr
    said = " ".join(second.stderr.split())  # rich wraps log lines to the (narrow) test console
    assert said.count("is damaged") == 1 and "video.mp4: size mismatch" in said
    assert json.loads(second.stdout)["cached"] is False
    assert (tmp_path / "second.mp4").read_bytes() == (tmp_path / "first.mp4").read_bytes()
    assert probe(tmp_path / "second.mp4").frame_count == 3 and len(list(iter_frames(tmp_path / "second.mp4"))) == 3
    third = cli(*args, "-o", tmp_path / "third.mp4")
    assert json.loads(third.stdout)["cached"] is True and "damaged" not in third.stderr


def test_damaged_identity_is_rebuilt_not_an_internal_error(cli, tiny_home, tmp_path: Path,
                                                          astronaut_path: Path) -> None:
    first = cli("--weights", tiny_home.root, "--json", "face", astronaut_path)
    assert first.exit_code == 0, first.stderr
    identity = Path(json.loads(first.stdout)["face"]) / "identity.npz"
    data = bytearray(identity.read_bytes())
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)  # same size, zeroed second half
    identity.write_bytes(bytes(data))
    second = cli("--weights", tiny_home.root, "--json", "face", astronaut_path)
    assert second.exit_code == 0, second.stderr
    assert "identity.npz: hash mismatch" in " ".join(second.stderr.split())
    assert json.loads(second.stdout)["cached"] is False
    assert json.loads(second.stdout)["box"] == json.loads(first.stdout)["box"]
