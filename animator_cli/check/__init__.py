"""`animator check`: alignment preflight before rendering, and the identity timeline after it (docs/check.md).

The timeline needs the face models and torch; it is imported on first use so `animator check` starts quickly.
"""

from typing import Any

from animator_cli.check.findings import AlignmentReport, Finding, Measurements
from animator_cli.check.report import check_alignment

_LAZY = {"IdentityTimeline", "identity_timeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from animator_cli.check import timeline

        return getattr(timeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AlignmentReport", "Finding", "IdentityTimeline", "Measurements", "check_alignment", "identity_timeline"]
