"""`animator ui` on a network: who may sign in, what the command prints and passes to Gradio, and how old uploads
and results leave the disk. The browser half (sign-in page, files refused without it, oversized uploads) is in
tests/test_ui.py."""

from __future__ import annotations

import logging
import os
import time

import pytest
from test_ui import needs_gradio

from animator_cli.cache import StageCache
from animator_cli.errors import InputError
from animator_cli.ui.access import DEFAULT_USER, decide_access
from animator_cli.ui.workfolder import WorkFolder


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"])
def test_this_machine_only_needs_no_sign_in(host):
    access = decide_access(host, share=False)
    assert access.open and not access.exposed and access.check() is None


@pytest.mark.parametrize(("host", "share"), [("0.0.0.0", False), ("192.168.1.20", False), ("::", False),
                                             ("myhost.example", False), ("127.0.0.1", True)])
def test_a_network_address_or_a_public_link_gets_a_made_up_password(host, share):
    first, second = decide_access(host, share), decide_access(host, share)
    assert first.made_up and first.exposed and first.user == DEFAULT_USER
    assert len(first.password) >= 20 and first.password != second.password
    signs_in = first.check()
    assert signs_in(DEFAULT_USER, first.password)
    assert not signs_in(DEFAULT_USER, second.password) and not signs_in("admin", first.password)


def test_auth_and_no_auth():
    given = decide_access("0.0.0.0", False, auth="ann:pa:ss")
    assert (given.user, given.password, given.made_up) == ("ann", "pa:ss", False)
    assert given.check()("ann", "pa:ss") and not given.check()("ann", "pa")
    assert not decide_access("127.0.0.1", False, auth="ann:x").open  # asked for: asked on loopback too
    opened = decide_access("0.0.0.0", True, no_auth=True)
    assert opened.open and opened.exposed
    for bad in ("ann", "ann:", ":pw", ""):
        with pytest.raises(InputError, match="--auth must be USER:PASSWORD"):
            decide_access("0.0.0.0", False, auth=bad)
    with pytest.raises(InputError, match="--auth and --no-auth contradict"):
        decide_access("0.0.0.0", False, auth="a:b", no_auth=True)


@pytest.mark.parametrize("args", [["--auth", "nocolon"], ["--auth", "a:b", "--no-auth"], ["--max-upload-mb", "0"]])
def test_bad_ui_options_are_one_line_usage_errors(cli, args):
    result = cli("ui", "--host", "0.0.0.0", *args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")


@needs_gradio
@pytest.mark.parametrize(("args", "signs_in"), [({"host": "0.0.0.0"}, "made up"), ({}, None),
                                                ({"host": "0.0.0.0", "no_auth": True}, None),
                                                ({"auth": "ann:secret", "max_upload_mb": 3}, "ann")])
def test_serve_passes_the_sign_in_and_the_upload_cap_to_gradio(tiny_home, tmp_path, caplog, monkeypatch, gradio_env,
                                                              args, signs_in):
    import gradio as gr

    from animator_cli.ui.server import serve

    launched = {}

    def launch(page, **kwargs):
        launched.update(kwargs)
        page.local_url, page.share_url = "http://here/", None

    def block(page):
        raise KeyboardInterrupt

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    monkeypatch.setattr(gr.Blocks, "block_thread", block)
    with caplog.at_level(logging.INFO, "animator"), pytest.raises(KeyboardInterrupt):
        serve(tiny_home, StageCache(tmp_path / "cache"), **args)
    assert launched["max_file_size"] == args.get("max_upload_mb", 500) * 2**20
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if signs_in is None:
        assert launched["auth"] is None
        assert [w for w in warnings if "--no-auth" in w] == (["animator ui: --no-auth: anyone who can reach "
                                                              "0.0.0.0:7860 can upload files and use this machine's "
                                                              "GPU"] if args.get("no_auth") else [])
    elif signs_in == "ann":
        assert launched["auth"]("ann", "secret") and not launched["auth"]("ann", "secre")
        assert warnings == []
    else:
        (line,) = warnings  # printed once, as a warning so that --quiet keeps it
        password = line.split("with password ")[1].split(" ")[0]
        assert line.startswith("animator ui: sign in as user animator with password ")
        assert launched["auth"]("animator", password) and not launched["auth"]("animator", password[:-1])


def _entry(folder, name: str, age_s: float, now: float):
    """A file ``folder/name`` last modified ``age_s`` seconds before ``now`` (its folder too)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    for p in (path, path.parent):
        os.utime(p, (now - age_s, now - age_s))
    return path


def test_sweep_removes_work_unused_for_the_set_time_but_not_work_in_use(tmp_path):
    files, now = WorkFolder(tmp_path, keep=3600), time.time()
    old_upload = _entry(tmp_path / "uploads" / "a1", "photo.png", 7200, now)
    fresh_upload = _entry(tmp_path / "uploads" / "b2", "clip.mp4", 60, now)
    old_result = _entry(tmp_path / "outputs" / "r1", "out.mp4", 7200, now)
    half_written = _entry(tmp_path / "uploads", "tmpx1y2", 7200, now)  # Gradio's upload in progress: one file
    growing = _entry(tmp_path / "outputs" / "r2", "old.png", 7200, now)
    _entry(tmp_path / "outputs" / "r2", "new.png", 10, now)  # a newer file inside counts as a use
    in_use = _entry(tmp_path / "uploads" / "c3", "ref.png", 7200, now)

    with files.using(in_use, tmp_path / "elsewhere.png", None):
        removed = files.sweep(now)
        assert in_use.exists()
    assert sorted(removed) == sorted([old_upload.parent, old_result.parent, half_written])
    assert not old_upload.parent.exists() and not old_result.exists() and not half_written.exists()
    assert fresh_upload.exists() and growing.exists()
    assert files.sweep(time.time() + 1800) == []  # the end of `using` counts as a use
    assert sorted(files.sweep(time.time() + 7200)) == sorted([fresh_upload.parent, growing.parent, in_use.parent])
    assert files.sweep(time.time() + 7200) == []
    assert files.new("previews").parent == tmp_path.resolve() / "previews"


def test_sweep_every_runs_until_stopped(tmp_path):
    files = WorkFolder(tmp_path, keep=0)
    stop = files.sweep_every(0.01)
    _entry(tmp_path / "outputs" / "x", "out.mp4", 3600, time.time())
    try:
        deadline = time.monotonic() + 30
        while (tmp_path / "outputs" / "x").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
    assert not (tmp_path / "outputs" / "x").exists()
