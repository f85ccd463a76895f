"""Whole-body poses from MediaPipe Holistic, the backend that works with nothing downloaded.

The `mediapipe` wheel bundles the pose, face-mesh and hand models, so `animator extract-pose` runs out of the box.
Its landmarks are mapped onto the DWPose 134-point layout (keypoints.py):
- body: the 33 BlazePose points → OpenPose-18 (``BODY_FROM_MEDIAPIPE``), the neck being the shoulders' mean with
  the smaller shoulder visibility; scores are BlazePose visibilities, 0 for joints outside the frame;
- feet: big toe ← foot index, heel ← heel; small toes do not exist in BlazePose and stay at score 0;
- face: 68 of the 468 face-mesh vertices, chosen to sit where the iBUG-68 points do (``FACE_MESH_TO_68``);
- hands: MediaPipe's 21 hand points already follow the OpenPose / COCO-WholeBody hand order.
Face mesh and hands carry no per-point confidence, so detected ones get ``FACE_SCORE`` / ``HAND_SCORE``.
MediaPipe follows a single person, which is what StableAnimator animates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

import numpy as np

from animator_cli.pose.credible import is_credible
from animator_cli.pose.keypoints import FACE, FEET, LEFT_HAND, NUM_POINTS, RIGHT_HAND, Pose

# OpenPose-18 index → BlazePose index (None: the neck, computed).
BODY_FROM_MEDIAPIPE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
# COCO-WholeBody feet (left big toe, small toe, heel, right big toe, small toe, heel) → BlazePose (None: absent).
FEET_FROM_MEDIAPIPE = (31, None, 29, 32, None, 30)
# iBUG-68 index → face-mesh vertex. Jaw 0-16 runs from the subject's right temple over the chin (8) to the left;
# brows 17-26, nose bridge 27-30, nostrils 31-35, right eye 36-41 and left eye 42-47 (clockwise from the outer
# corner), outer lips 48-59, inner lips 60-67.
FACE_MESH_TO_68 = (
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)
FACE_SCORE = 1.0
HAND_SCORE = 1.0
BLANK = np.zeros((64, 64, 3), np.uint8)  # a frame without anyone: Holistic drops whatever it was following


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hide the C++ warnings MediaPipe prints straight to file descriptor 2 while it loads its models and on the
    first frames (TFLite delegate notices, "Feedback manager requires ...", "Using NORM_RECT without
    IMAGE_DIMENSIONS ..."): noise to a user. Kept visible with --verbose."""
    if logging.getLogger("animator").isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _array(landmarks) -> np.ndarray:
    return np.array([(p.x, p.y, p.visibility) for p in landmarks.landmark], np.float32)


def holistic_to_pose(result) -> Pose | None:
    """A Holistic result → one Pose in the 134-point layout, or None when no body was found."""
    if result.pose_landmarks is None:
        return None
    body = _array(result.pose_landmarks)
    # BlazePose extrapolates joints beyond the frame (hips and legs of a half-body shot) with high visibility;
    # DWPose would not report them, and drawn they would be guesses, so they become invisible.
    body[((body[:, :2] < 0) | (body[:, :2] > 1)).any(1), 2] = 0.0
    points = np.zeros((NUM_POINTS, 2), np.float32)
    scores = np.zeros(NUM_POINTS, np.float32)
    for target, source in enumerate(BODY_FROM_MEDIAPIPE):
        if source is not None:
            points[target], scores[target] = body[source, :2], body[source, 2]
    points[1] = body[[11, 12], :2].mean(0)
    scores[1] = body[[11, 12], 2].min()
    for target, source in zip(range(FEET.start, FEET.stop), FEET_FROM_MEDIAPIPE, strict=True):
        if source is not None:
            points[target], scores[target] = body[source, :2], body[source, 2]
    if result.face_landmarks is not None:
        points[FACE] = _array(result.face_landmarks)[list(FACE_MESH_TO_68), :2]
        scores[FACE] = FACE_SCORE
    for part, hand in ((LEFT_HAND, result.left_hand_landmarks), (RIGHT_HAND, result.right_hand_landmarks)):
        if hand is not None:
            points[part] = _array(hand)[:, :2]
            scores[part] = HAND_SCORE
    return Pose(points, scores)


class MediaPipeBackend:
    """MediaPipe Holistic. Video frames go through a tracking instance (landmarks follow from frame to frame,
    several times faster than detecting anew); single images through a static one. Both open on first use."""

    name = "mediapipe"

    def __init__(self) -> None:
        self._instances: dict[bool, object] = {}

    def _holistic(self, video: bool):
        if video not in self._instances:
            from mediapipe.python.solutions import holistic  # optional dependency: backend.py checks it is there

            # Our One Euro filter smooths (and --no-smooth must mean raw), so MediaPipe's own smoothing is off.
            with quiet_native_stderr():
                instance = holistic.Holistic(static_image_mode=not video, model_complexity=1,
                                             smooth_landmarks=False, refine_face_landmarks=False)
                # The first frame loads the models, which is when it warns; a blank frame leaves no track behind.
                instance.process(BLANK)
            self._instances[video] = instance
        return self._instances[video]

    def detect(self, rgb: np.ndarray, video: bool = False) -> list[Pose]:
        """The one person MediaPipe follows (empty if none); ``video``: ``rgb`` is the next frame of a clip.

        In a clip Holistic follows what it found last instead of looking again; when that is no credible person
        (a phantom on a textured background, credible.py) it is made to let go, so that a person who comes into
        view later is found rather than the phantom followed through the rest of the clip.
        """
        holistic = self._holistic(video)
        with quiet_native_stderr():
            result = holistic.process(np.ascontiguousarray(rgb))
            pose = holistic_to_pose(result)
            if video and pose is not None and not is_credible(pose, (rgb.shape[1], rgb.shape[0])):
                holistic.process(BLANK)
        return [] if pose is None else [pose]

    def close(self) -> None:
        for instance in self._instances.values():
            instance.close()
        self._instances.clear()
