"""Pose stage: driving video → StableAnimator skeleton images (DWPose or MediaPipe, tracked, smoothed, aligned)."""

from animator_cli.pose.extract import extract_pose
from animator_cli.pose.keypoints import Pose, PoseTrack, face_boxes, load_keypoints, pose_folder_faces

__all__ = ["Pose", "PoseTrack", "extract_pose", "face_boxes", "load_keypoints", "pose_folder_faces"]
