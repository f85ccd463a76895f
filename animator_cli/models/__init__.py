"""The StableAnimator networks (PoseNet, face encoder, ID-adapter UNet) and how they are loaded."""
