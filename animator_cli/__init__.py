"""animator: pose-driven, identity-preserving human image animation (StableAnimator)."""

__version__ = "0.1.0"
