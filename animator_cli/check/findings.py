"""What `animator check` reports: the measured numbers, and the rules that turn them into one-line findings.

Thresholds are named here so docs/check.md can quote them; each rule says what goes wrong in the render and what
to change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from animator_cli.check.measure import REGIONS
from animator_cli.errors import InputError

SEVERITIES = ("info", "warning", "error")
SHARE_WARN = 0.2  # share of driving frames with another view, nobody or several people that warrants a warning
FACE_HIDDEN_WARN = 0.5  # share of driving frames without a face
OFF_CANVAS_WARN = 0.05  # share of frames with a joint pushed outside the reference image
SIZE_BAND = (0.8, 1.25)  # driver/reference ratio (head size, build) still considered the same body
TILT_WARN = 30.0  # degrees from upright
LIMBS_GAIN = 0.8  # limbs is suggested when its residual is below this share of global's


@dataclass(frozen=True)
class Finding:
    severity: str  # "info" | "warning" | "error"
    code: str  # stable id: body-region, no-person, multi-person, tilt, view, scale, aspect, off-canvas, ...
    message: str  # one line
    suggestion: str = ""  # the concrete fix, one line ("" if none)

    def line(self) -> str:
        return f"{self.severity:<7} {self.code:<14} {self.message}" + (f" → {self.suggestion}" if self.suggestion
                                                                        else "")


@dataclass(frozen=True)
class Measurements:
    """The numbers the findings come from (shares are of the analysed driving frames; None: not measurable)."""

    align: str
    frames: int
    reference_size: tuple[int, int]
    driving_size: tuple[int, int]
    reference_people: int
    reference_face: bool
    reference_region: str | None
    reference_view: str | None
    reference_tilt: float | None
    driving_region: str | None  # the most common one
    driving_regions: dict[str, float]  # region → share of frames with a person
    driving_views: dict[str, float]  # view → share of frames whose view is measurable
    view_mismatch_share: float | None
    no_person_share: float
    multi_person_share: float | None  # over the sampled frames; None without a face counter
    sampled_frames: int
    driving_face_share: float  # of the frames with a person
    scale_ratio: float | None  # aligned driving head / reference head
    aspect_ratio: float | None  # driving build (shoulders / head) / the reference's
    off_canvas: dict[str, float] = field(default_factory=dict)  # align mode → share of frames
    residuals: dict[str, float | None] = field(default_factory=dict)  # align mode → residual (of the body size)


@dataclass(frozen=True)
class AlignmentReport:
    findings: tuple[Finding, ...]
    best_align: str  # "global" | "limbs"
    measured: Measurements
    preview: Path | None = None

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """Findings of severity warning or error."""
        return tuple(f for f in self.findings if f.severity != "info")

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    def raise_for(self, strict: bool = False) -> None:
        """InputError (exit 2, one line) for the first error finding, or for any warning when ``strict``."""
        if self.errors:
            raise InputError(self.errors[0].message, self.errors[0].suggestion or None)
        if strict and self.warnings:
            first = self.warnings[0]
            raise InputError(f"{len(self.warnings)} warning(s) from the alignment check (--strict), first: "
                             f"{first.message}", first.suggestion or None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN → None, tuples → lists, paths → strings."""
        return _json_safe({"findings": [asdict(f) for f in self.findings], "best_align": self.best_align,
                           **asdict(self.measured), "preview": str(self.preview) if self.preview else None})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _pct(share: float) -> str:
    return f"{share:.0%}"


def best_align(m: Measurements) -> str:
    """limbs when its residual is clearly (LIMBS_GAIN) below global's, else global (the paper's)."""
    g, limbs = m.residuals.get("global"), m.residuals.get("limbs")
    return "limbs" if g is not None and limbs is not None and limbs < LIMBS_GAIN * g else "global"


def judge(m: Measurements) -> tuple[Finding, ...]:
    """Every finding for ``m``, reference first, then alignment, then the driving video on its own."""
    rules = (_reference_face, _reference_people, _tilt, _body_region, _view, _scale, _aspect, _off_canvas,
             _align_mode, _driving_people, _driving_face)
    return tuple(f for rule in rules for f in rule(m))


def _reference_face(m: Measurements) -> list[Finding]:
    if m.reference_face:
        return []
    return [Finding("error", "no-face", "no face found in the reference image: the identity stage needs one",
                    "use a photo where the face is clearly visible, or render with --allow-no-face")]


def _reference_people(m: Measurements) -> list[Finding]:
    if m.reference_people == 0:
        return [Finding("error", "no-person", "no person found in the reference image",
                        "use a photo that shows the person's head and upper body or full body")]
    if m.reference_people > 1:
        return [Finding("warning", "multi-person",
                        f"{m.reference_people} people in the reference image: only the largest is animated",
                        "crop the photo to the one person to animate")]
    return []


def _tilt(m: Measurements) -> list[Finding]:
    if m.reference_tilt is None or abs(m.reference_tilt) <= TILT_WARN:
        return []
    turn = "clockwise" if m.reference_tilt < 0 else "counter-clockwise"
    return [Finding("warning", "tilt", f"the reference person is tilted {abs(m.reference_tilt):.0f}° from upright",
                    f"rotate the photo upright ({turn} by about {round(abs(m.reference_tilt) / 90) * 90 or 45}°)")]


def _region_name(region: str) -> str:
    return {"head": "the head only", "upper": "the upper body", "knees": "the body down to the knees",
            "full": "the full body"}[region]


def _body_region(m: Measurements) -> list[Finding]:
    ref, drv = m.reference_region, m.driving_region
    if ref is None or drv is None:
        return []
    share = sum(s for r, s in m.driving_regions.items() if REGIONS.index(r) > REGIONS.index(ref))
    if REGIONS.index(drv) > REGIONS.index(ref):
        return [Finding("warning", "body-region",
                        f"the reference shows {_region_name(ref)}, the driving video {_region_name(drv)} "
                        f"({_pct(share)} of frames show more than the reference): the model must invent the rest",
                        f"use a reference photo showing {_region_name(drv)}, or a driving video framed like the "
                        "reference")]
    if REGIONS.index(drv) < REGIONS.index(ref):
        return [Finding("info", "body-region",
                        f"the driving video shows {_region_name(drv)}, the reference {_region_name(ref)}: the "
                        "parts the driver does not show are not animated",
                        f"use a driving video showing {_region_name(ref)} to animate all of it")]
    return [Finding("info", "body-region", f"reference and driving video both show {_region_name(ref)}")]


def _view(m: Measurements) -> list[Finding]:
    if m.reference_view is None or m.view_mismatch_share is None:
        return []
    views = ", ".join(f"{v} {_pct(s)}" for v, s in m.driving_views.items() if s)
    text = f"the reference is a {m.reference_view} view; driving frames: {views}"
    if m.view_mismatch_share > SHARE_WARN:
        return [Finding("warning", "view", f"{text} ({_pct(m.view_mismatch_share)} differ)",
                        f"use a {m.reference_view}-view driving clip, or a reference photographed like the driver")]
    return [Finding("info", "view", text)]


def _ratio_finding(code: str, ratio: float | None, what: str) -> list[Finding]:
    if ratio is None:
        return []
    if SIZE_BAND[0] <= ratio <= SIZE_BAND[1]:
        return [Finding("info", code, f"{what} after alignment: {ratio:.2f}× the reference's")]
    return [Finding("warning", code, f"{what} after alignment is {ratio:.2f}× the reference's: body proportions "
                    "differ", "use --align limbs, which gives every bone the reference's length")]


def _scale(m: Measurements) -> list[Finding]:
    return _ratio_finding("scale", m.scale_ratio, f"driving head size (--align {m.align})")


def _aspect(m: Measurements) -> list[Finding]:
    return _ratio_finding("aspect", m.aspect_ratio, "driving build (shoulder width / head length)")


def _off_canvas(m: Measurements) -> list[Finding]:
    share = m.off_canvas.get(m.align)
    if share is None:
        return []
    if share <= OFF_CANVAS_WARN:
        return [Finding("info", "off-canvas", f"joints leave the reference image in {_pct(share)} of frames")]
    others = [(s, mode) for mode, s in m.off_canvas.items() if mode != m.align and s < share]
    fix = (f"--align {min(others)[1]} keeps them inside in more frames ({_pct(min(others)[0])})" if others
           else "use a reference photo with room around the person, framed like the driving video")
    return [Finding("warning", "off-canvas", f"alignment pushes joints outside the reference image in "
                    f"{_pct(share)} of frames: those parts are cut off", fix)]


def _align_mode(m: Measurements) -> list[Finding]:
    g, limbs = m.residuals.get("global"), m.residuals.get("limbs")
    if g is None or limbs is None:
        return []
    best = best_align(m)
    text = f"--align {best} fits best (residual global {g:.3f}, limbs {limbs:.3f} of the body size)"
    if best != m.align:
        return [Finding("warning", "align-mode", text, f"use --align {best}")]
    return [Finding("info", "align-mode", text)]


def _driving_people(m: Measurements) -> list[Finding]:
    if m.no_person_share >= 1:
        return [Finding("error", "driving-people", "nobody is found in any driving frame: there is no motion to "
                        "copy", "use a driving video that shows a person: shoulders and face, or a body standing "
                        "on its legs")]
    found = []
    if m.no_person_share > 0:
        severity = "warning" if m.no_person_share > SHARE_WARN else "info"
        found.append(Finding(severity, "driving-people", f"nobody is detected in {_pct(m.no_person_share)} of "
                             "driving frames: those frames are interpolated or black",
                             "trim the clip to where the person is in view (--max-frames)"))
    if m.multi_person_share:
        severity = "warning" if m.multi_person_share > SHARE_WARN else "info"
        found.append(Finding(severity, "driving-people", f"several people in {_pct(m.multi_person_share)} of "
                             f"{m.sampled_frames} sampled driving frames: the tracked person may switch",
                             "crop the driving video to the one dancer"))
    return found


def _driving_face(m: Measurements) -> list[Finding]:
    if m.no_person_share >= 1:  # no face share to judge: _driving_people reports the error
        return []
    hidden = 1 - m.driving_face_share
    if hidden > FACE_HIDDEN_WARN:
        return [Finding("warning", "face-hidden", f"the face is hidden in {_pct(hidden)} of driving frames: "
                        "identity is not guided there", "prefer a driving clip that faces the camera; inspect "
                        "the result with `animator evaluate VIDEO --reference REF --timeline DIR`")]
    return [Finding("info", "face-hidden", f"the face is visible in {_pct(m.driving_face_share)} of driving "
                    "frames")] if hidden > 0 else []
