"""`--draft`: a quick, cheap preview of a render, to look at before paying for the full one.

The preset: the requested size scaled so its short side is 256 px (long side to the nearest multiple of 64; sizes
already that small stay), Align Your Steps' noise levels in 8 steps, the deep UNet features reused every second
step, and no HJB face optimisation (nor as the identity guard's first lever). Each of these changes the pixels,
so a draft is a preview of the motion and framing, not of the final quality. Its options differ from the full
render's, so the stage cache keeps the two apart. The CLI writes it beside the requested output as ``NAME.draft.mp4``.

Torch-free: `animator_cli.options.generate_options` applies it while validating options.
"""

from __future__ import annotations

from pathlib import Path

from animator_cli.errors import InputError

SHORT_SIDE = 256
STEPS = 8
SCHEDULE = "ays"
REUSE_FEATURES = 2
SUFFIX = ".draft"
PRESET = f"--schedule {SCHEDULE} --steps {STEPS} --reuse-features {REUSE_FEATURES}, no --face-opt"


def draft_sampling(steps: int, schedule: str, reuse_features: int, face_opt: bool, *,
                   defaults: tuple[int, str, int]) -> tuple[int, str, int]:
    """The draft's (steps, schedule, reuse_features); an InputError for a value that contradicts the preset (a
    value equal to the default ``defaults`` or to the draft's own counts as not given)."""
    if face_opt:
        raise InputError("--draft renders without --face-opt", "drop one of them")
    for name, value, default, draft in (("--steps", steps, defaults[0], STEPS),
                                        ("--schedule", schedule, defaults[1], SCHEDULE),
                                        ("--reuse-features", reuse_features, defaults[2], REUSE_FEATURES)):
        if value not in (default, draft):
            raise InputError(f"--draft sets {name} {draft}, not {value}", f"drop {name} or --draft")
    return STEPS, SCHEDULE, REUSE_FEATURES


def draft_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) scaled so the short side is `SHORT_SIDE`, the long side rounded to a multiple of 64."""
    short = min(width, height)
    if short <= SHORT_SIDE:
        return width, height
    return _multiple_of_64(width * SHORT_SIDE / short), _multiple_of_64(height * SHORT_SIDE / short)


def _multiple_of_64(size: float) -> int:
    return max(64, 64 * round(size / 64))


def draft_output(output: Path) -> Path:
    """Where a draft of ``output`` goes: ``NAME.draft.mp4`` beside it, or ``output`` when it is already so named."""
    output = Path(output)
    return output if output.stem.endswith(SUFFIX) else output.with_name(f"{output.stem}{SUFFIX}{output.suffix}")


def full_output(draft: Path) -> Path:
    """The full render's output for a draft written to ``draft`` (``NAME.draft.mp4`` → ``NAME.mp4``)."""
    draft = Path(draft)
    stem = draft.stem[:-len(SUFFIX)] if draft.stem.endswith(SUFFIX) else draft.stem
    return draft.with_name(f"{stem}{draft.suffix}")
