"""`animator check`: alignment preflight before rendering, and the identity timeline after it (docs/check.md)."""

from animator_cli.check.findings import AlignmentReport, Finding, Measurements
from animator_cli.check.report import check_alignment

__all__ = ["AlignmentReport", "Finding", "Measurements", "check_alignment"]
