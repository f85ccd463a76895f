"""animator: pose-driven, identity-preserving human image animation (StableAnimator).

    from animator_cli import Animator

    video = Animator().animate("alice.png", "dance.mp4")
    video.save("alice.mp4")

`Animator` and `Video` (`animator_cli.api`) are imported on first use, so ``import animator_cli`` (and the CLI's
``--help``) stays free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Animator", "Video", "__version__"]

if TYPE_CHECKING:
    from animator_cli.api import Animator, Video


def __getattr__(name: str) -> Any:
    if name in ("Animator", "Video"):
        from animator_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'animator_cli' has no attribute {name!r}")
