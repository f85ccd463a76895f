"""The StableAnimator networks (PoseNet, face encoder, ID-adapter UNet) and how they are loaded."""

from animator_cli.models.loading import AnimatorModels, load_models

__all__ = ["AnimatorModels", "load_models"]
