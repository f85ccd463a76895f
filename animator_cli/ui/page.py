"""The Gradio page of `animator ui`: layout and event wiring only; the work is `UiSession`'s (library calls).

Imported only when `animator ui` runs, because Gradio is an optional extra (``pip install -e ".[ui]"``).
"""

from __future__ import annotations

import html
import logging
import time
from pathlib import Path
from typing import Any

import gradio as gr

from animator_cli.check import AlignmentReport, Finding
from animator_cli.check.report import CHECK_MODES
from animator_cli.draft import PRESET, SHORT_SIDE, SUFFIX
from animator_cli.errors import InputError
from animator_cli.generate import GenerateResult, pose_frames
from animator_cli.options import DTYPES, RESOLUTIONS, SCHEDULES
from animator_cli.pose.align import ALIGN_MODES
from animator_cli.pose.backend import BACKENDS
from animator_cli.ui import MAX_UPLOAD_MB
from animator_cli.ui.session import RenderSettings, UiSession, error_text

log = logging.getLogger("animator")

DEVICE = "device"  # one concurrency group: one preflight or generation at a time on this server's device
VIDEO, POSES = "video", "poses"
AUTO_DTYPE = "auto"
UNSET_BY_ZERO = ("width", "height", "max_frames")
CSS = """
.gradio-container { max-width: 1180px !important; margin: auto; }
.note { border-radius: 8px; padding: 10px 14px; margin: 4px 0; line-height: 1.45; overflow-wrap: anywhere; }
.note.error { background: #fdecec; border: 1px solid #f3b4b4; color: #8a1c1c; }
.note.warning { background: #fff6e0; border: 1px solid #f1d38c; color: #6b4b00; }
.note.ok { background: #e9f7ef; border: 1px solid #a8dcbc; color: #175c33; }
.note.info { background: #eef3fb; border: 1px solid #bfd0ee; color: #1d3d6e; }
.note ul { margin: 4px 0 0 18px; padding: 0; }
.note code { font-size: 0.92em; }
"""


def theme() -> gr.themes.Base:
    """Gradio's default look with system fonts only: the page loads nothing from the internet."""
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Soft(primary_hue="indigo", font=system, font_mono=["ui-monospace", "monospace"])


def note(kind: str, text: str, items: list[str] | None = None) -> str:
    """An escaped HTML box: ``kind`` is error, warning, ok or info; ``items`` become a bullet list."""
    bullets = "".join(f"<li>{html.escape(item)}</li>" for item in items or [])
    return f'<div class="note {kind}">{html.escape(text)}{f"<ul>{bullets}</ul>" if bullets else ""}</div>'


def weights_note(session: UiSession) -> str:
    """The library's message about missing weights (which, and the command that fetches them), or ''."""
    problem = session.weights_problem()
    if problem is None:
        return ""
    return note("warning", f"Generate is off until the weights are complete: {problem}. Then restart `animator ui` "
                "(--weights DIR or ANIMATOR_HOME choose the weights home).")


def result_note(result: GenerateResult, seconds: float) -> str:
    audio = ", with the driving video's audio" if result.audio_from else ""
    origin = "from the cache" if result.cached else f"rendered in {seconds:.1f} s"
    draft = " Draft preview: untick Draft for the full render." if result.output.stem.endswith(SUFFIX) else ""
    return note("ok", f"Done: {result.frames} frames, {result.width}×{result.height} at {result.fps:g} fps"
                f"{audio}; {origin}.{draft}")


def _settings(values: dict[str, Any]) -> RenderSettings:
    """RenderSettings from the widgets' values; 0 in an optional number (Gradio's empty number) means unset."""
    numbers = ("width", "height", "seed", "steps", "max_frames", "tile", "decode_chunk", "reuse_features")
    kept = {k: int(v) if k in numbers else v for k, v in values.items() if v is not None}
    for name in UNSET_BY_ZERO:
        if kept.get(name) == 0:
            kept.pop(name)
    if kept.get("dtype") == AUTO_DTYPE:
        kept.pop("dtype")
    return RenderSettings(**kept)


def limits_text(max_upload_mb: int, keep_seconds: float) -> str:
    """What the server accepts and how long it keeps files, shown under the title."""
    return (f"Files up to {max_upload_mb} MB each. Uploads and results unused for {keep_seconds / 60:g} minutes are "
            "removed from the server: download your video.")


def build_page(session: UiSession, max_upload_mb: int = MAX_UPLOAD_MB) -> gr.Blocks:
    """The page; every event calls `UiSession` and turns its errors into the CLI's one-line message. Old uploads
    and results are swept by the session's `WorkFolder` (not Gradio's cache deletion, which would remove the
    inputs of a render still running)."""
    d = RenderSettings()
    blocked = weights_note(session)
    with gr.Blocks(title="animator", analytics_enabled=False) as page:
        gr.Markdown("# animator\nAnimate the person in a photo with the motion of a video (StableAnimator).")
        gr.Markdown(limits_text(max_upload_mb, session.files.keep), elem_id="limits")
        gr.HTML(blocked, elem_id="weights", visible=bool(blocked))
        source = gr.State(VIDEO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                with gr.Row():
                    reference = gr.Image(label="Reference photo", type="filepath", format="png", height=300,
                                         sources=["upload", "clipboard"], elem_id="reference")
                    with gr.Tabs():
                        with gr.Tab("Driving video", id=VIDEO) as video_tab:
                            driving = gr.Video(label="Driving video", sources=["upload"], height=260,
                                               elem_id="driving")
                        with gr.Tab("Pose folder", id=POSES) as poses_tab:
                            pose_files = gr.File(label="Pose folder (from `animator extract-pose`)",
                                                 file_count="directory", height=260, elem_id="pose-folder")
                with gr.Row():
                    resolution = gr.Dropdown(list(RESOLUTIONS), value=d.resolution, label="Resolution (W×H)")
                    steps = gr.Number(d.steps, label="Steps", precision=0, elem_id="steps")
                    seed = gr.Number(d.seed, label="Seed", precision=0,
                                     info="The same seed gives the same video.")
                face_opt = gr.Checkbox(d.face_opt, label="Face optimisation (--face-opt)",
                                       info="Refines the face identity during denoising; slower.")
                identity_guard = gr.Checkbox(bool(d.identity_guard), label="Identity guard (--identity-guard)",
                                             info="Renders again the windows where the face slipped.")
                draft = gr.Checkbox(d.draft, label="Draft preview (--draft)", elem_id="draft",
                                    info=f"Short side {SHORT_SIDE} px, {PRESET}: a quick look, not the final quality.")
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    with gr.Row():
                        width = gr.Number(0, label="Width", precision=0, step=64,
                                          info="Multiple of 64; 0: the resolution's.", elem_id="width")
                        height = gr.Number(0, label="Height", precision=0, step=64,
                                           info="Multiple of 64; 0: the resolution's.", elem_id="height")
                        max_frames = gr.Number(0, label="Max frames", precision=0,
                                               info="Use only the first N driving frames; 0: all.")
                    with gr.Row():
                        align = gr.Dropdown(list(ALIGN_MODES), value=d.align, label="Pose alignment")
                        pose_backend = gr.Dropdown(list(BACKENDS), value=d.pose_backend, label="Pose backend")
                        check_mode = gr.Dropdown(list(CHECK_MODES), value=d.check, label="Alignment check",
                                                 info="strict: stop on a warning before rendering.")
                    with gr.Row():
                        dtype = gr.Dropdown([AUTO_DTYPE, *DTYPES], value=AUTO_DTYPE, label="Precision",
                                            info="auto: fp16 on GPU, fp32 on CPU.")
                        tile = gr.Number(d.tile, label="Frames per window (--tile)", precision=0)
                        decode_chunk = gr.Number(d.decode_chunk, label="Frames per VAE decode", precision=0)
                    with gr.Row():
                        schedule = gr.Dropdown(list(SCHEDULES), value=d.schedule, label="Noise schedule",
                                               info="ays: Align Your Steps for SVD (try 10 steps).")
                        reuse_features = gr.Number(d.reuse_features, label="Reuse deep features (--reuse-features)",
                                                   precision=0, info="Whole UNet every N-th step; 1: every step.")
                    with gr.Row():
                        offload = gr.Checkbox(d.offload, label="Offload idle models to the CPU")
                        vae_on_cpu = gr.Checkbox(d.vae_on_cpu, label="VAE on the CPU")
                        split_cfg = gr.Checkbox(d.split_cfg, label="Split guidance into two UNet calls")
                        drift_lock = gr.Checkbox(d.drift_lock, label="Drift lock (--drift-lock)",
                                                 info="Every window keeps the first window's colours.")
                generate = gr.Button("Generate", variant="primary", size="lg", interactive=not blocked,
                                     elem_id="generate")
            with gr.Column(scale=4):
                status = gr.HTML(elem_id="status", min_height=64)  # room for the progress bar's text
                findings = gr.HTML(elem_id="findings")
                preview = gr.Image(label="Pose preview",
                                   type="filepath", interactive=False, height=260, elem_id="preview")
                result = gr.Video(label="Result", interactive=False, height=300, elem_id="result")
                download = gr.File(label="Download", interactive=False, height=90, elem_id="download")

        named = {"resolution": resolution, "width": width, "height": height, "seed": seed, "steps": steps,
                 "face_opt": face_opt, "align": align, "pose_backend": pose_backend, "check": check_mode,
                 "max_frames": max_frames, "dtype": dtype, "offload": offload, "vae_on_cpu": vae_on_cpu,
                 "split_cfg": split_cfg, "tile": tile, "decode_chunk": decode_chunk, "schedule": schedule,
                 "reuse_features": reuse_features, "draft": draft, "identity_guard": identity_guard,
                 "drift_lock": drift_lock}
        inputs = {source, reference, driving, pose_files, *named.values()}  # a set: the handler gets a dict

        def unpack(values: dict[Any, Any]) -> tuple[str, str | None, str | None, list[str] | None, RenderSettings]:
            settings = _settings({name: values[widget] for name, widget in named.items()})
            return values[source], values[reference], values[driving], values[pose_files], settings

        def error_note(exc: Exception, what: str) -> str:
            log.debug("%s failed", what, exc_info=True)
            return note("error", f"error: {error_text(exc, session.device)}")

        def check(values: dict[Any, Any]) -> tuple[str, str | None]:
            try:
                kind, ref, video, files, settings = unpack(values)
                if kind == POSES and files:
                    poses = session.pose_folder(files)
                    return note("info", f"Pose folder: {len(pose_frames(poses))} frames."), \
                        str(session.pose_preview(poses))
                if kind == VIDEO and ref and video:
                    report = session.check(Path(ref), Path(video), settings)
                    return findings_note(report), str(report.preview) if report.preview else None
                return "", None
            except Exception as exc:  # noqa: BLE001 — every failure becomes the page's one-line message
                return error_note(exc, "check"), None

        def run(values: dict[Any, Any], progress: gr.Progress = gr.Progress()  # noqa: B008 — how Gradio finds it
                ) -> tuple[str, str | None, str | None]:
            started = time.monotonic()
            try:
                kind, ref, video, files, settings = unpack(values)
                if not ref:
                    raise InputError("no reference photo", "upload one first")
                output = session.render(
                    Path(ref), settings, driving=Path(video) if kind == VIDEO and video else None,
                    poses=session.pose_folder(files) if kind == POSES and files else None,
                    progress=lambda stage, done, total: progress((done, total) if total else 0.0, desc=stage))
            except Exception as exc:  # noqa: BLE001 — every failure becomes the page's one-line message
                return error_note(exc, "generation"), None, None
            return result_note(output, time.monotonic() - started), str(output.output), str(output.output)

        preflight = {"fn": check, "inputs": inputs, "outputs": [findings, preview], "concurrency_id": DEVICE,
                     "concurrency_limit": 1}
        video_tab.select(lambda: VIDEO, None, source).then(**preflight)
        poses_tab.select(lambda: POSES, None, source).then(**preflight)
        for trigger in (reference.change, driving.change, pose_files.change, align.change, pose_backend.change):
            trigger(**preflight)
        generate.click(run, inputs, [status, result, download], concurrency_id=DEVICE, concurrency_limit=1)
    return page


def findings_note(report: AlignmentReport) -> str:
    """`animator check`'s findings (what the CLI prints): a box per error or warning, the notes in one list."""
    def line(finding: Finding) -> str:
        return finding.message + (f" → {finding.suggestion}" if finding.suggestion else "")

    boxes = [note(f.severity, f"{f.severity}: {line(f)}") for f in report.findings if f.severity == "error"]
    boxes += [note("warning", f"warning: {line(f)}") for f in report.findings if f.severity == "warning"]
    infos = [line(f) for f in report.findings if f.severity not in ("error", "warning")]
    if infos or not boxes:
        boxes.append(note("info" if boxes else "ok", "Alignment check:" if infos else "Alignment check: no findings.",
                          infos))
    return "".join(boxes)
