"""CSIM: cosine similarity of ArcFace (antelopev2 glintr100) embeddings of the largest face per frame.

Generated faces are compared with the reference image's face when one is given (identity preservation,
StableAnimator's use), otherwise with the face in the ground-truth frame of the same index. Frames
where either face is not found are left out and counted.
"""

from __future__ import annotations

import numpy as np

from animator_cli.face import FaceAnalyzer, extract_identity
from animator_cli.face.identity import to_detector_input


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


class CsimScorer:
    """Per-frame CSIM against a fixed reference embedding or the ground-truth frame's face."""

    def __init__(self, analyzer: FaceAnalyzer, reference: np.ndarray | None = None) -> None:
        self.analyzer = analyzer
        self.reference = (extract_identity(reference, analyzer=analyzer).embedding
                          if reference is not None else None)
        self.missing = 0

    def embedding(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        face = self.analyzer.largest(to_detector_input(frame_rgb))
        return None if face is None else np.asarray(face.embedding, dtype=np.float64)

    def __call__(self, generated: np.ndarray, truth: np.ndarray) -> float | None:
        """The frame's CSIM, or None (counted in ``missing``) when a face is not found."""
        gen = self.embedding(generated)
        target = self.reference if self.reference is not None else self.embedding(truth)
        if gen is None or target is None:
            self.missing += 1
            return None
        return cosine(gen, target)
