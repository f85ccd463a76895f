"""How many people a picture shows: the pose backend's persons, or faces where the backend follows only one.

MediaPipe Holistic tracks a single person, so it cannot say a photo holds six. MediaPipe's full-range face
detector (bundled in the same wheel, works offline) counts faces instead; the larger of the two counts is taken.
Without mediapipe installed only the backend's count is used.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from animator_cli.pose.backend import PoseBackend
from animator_cli.pose.keypoints import Pose
from animator_cli.pose.mediapipe_backend import quiet_native_stderr
from animator_cli.pose.track import credible_people

FACE_CONFIDENCE = 0.5


class PeopleCounter:
    """Counts people in RGB images with ``backend`` and, when mediapipe is installed, its face detector."""

    def __init__(self, backend: PoseBackend) -> None:
        self.backend = backend
        self._faces = None
        self.counts_faces = importlib.util.find_spec("mediapipe") is not None

    def _detector(self):
        if self._faces is None:
            from mediapipe.python.solutions import face_detection

            self._faces = face_detection.FaceDetection(model_selection=1, min_detection_confidence=FACE_CONFIDENCE)
        return self._faces

    def faces(self, rgb: np.ndarray) -> int:
        """Faces found by MediaPipe's full-range detector (0 without mediapipe)."""
        if not self.counts_faces:
            return 0
        with quiet_native_stderr():  # loading and the first frames print TFLite notices on fd 2
            result = self._detector().process(np.ascontiguousarray(rgb))
        return len(result.detections or [])

    def count(self, rgb: np.ndarray) -> tuple[list[Pose], int]:
        """The backend's persons in ``rgb``, and the faces found (see :meth:`faces`)."""
        return credible_people(self.backend.detect(rgb), (rgb.shape[1], rgb.shape[0])), self.faces(rgb)

    def close(self) -> None:
        if self._faces is not None:
            self._faces.close()
            self._faces = None
