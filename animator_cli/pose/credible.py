"""When a detection is a person: a credible skeleton, not a pose estimator's guess on a coffee cup.

MediaPipe's body model returns a complete, human-shaped skeleton whenever its detector fires, and on textures (a
coffee cup panning, bricks, a cheetah's fur) it fires often, with visibilities near 1; counting visible joints
let those through, and a render driven by them is garbage produced at full cost. A detection counts as a person
only when all of these hold (lengths in pixels of the image the pose belongs to):

- **main joints**: both shoulders are confidently found (score ≥ MAIN_SCORE), or one of them and the face (a
  close-up cuts the other off);
- **size**: the trunk, the largest distance between two of the nose, shoulders and hips found, spans at least
  MIN_TRUNK of the image's short side;
- **limbs in proportion**: no confidently found arm or leg bone is longer than MAX_LIMB trunks;
- **a face, or a body standing on its legs**: the face is visible (MIN_FACE_POINTS face points), or both hips
  are found, the torso (mid-hip → neck) leans at most UPRIGHT_DEGREES from upright and a knee is found at least
  MIN_KNEE_DROP torso lengths below its hip. Phantoms show no face and their bodies lie, lean or sit anywhere; a
  person seen from behind, or too small for the face to be made out, stands.

Frames that fail are not detected: filled from their neighbours like any missed frame. docs/pose.md has the
measurements behind the thresholds.
"""

from __future__ import annotations

import math

import numpy as np

from animator_cli.pose.keypoints import (
    BODY,
    L_ANKLE,
    L_ELBOW,
    L_HIP,
    L_KNEE,
    L_SHOULDER,
    L_WRIST,
    NOSE,
    R_ANKLE,
    R_ELBOW,
    R_HIP,
    R_KNEE,
    R_SHOULDER,
    R_WRIST,
    Pose,
    face_visible,
)

RULE = "credible-1"  # in the pose and check stage keys: entries cached under the old rule are not reused
MAIN_SCORE = 0.5  # a joint is confidently found at this score (drawing needs only KEYPOINT_THRESHOLD)
MIN_TRUNK = 0.08  # of the image's short side
MAX_LIMB = 2.5  # longest arm or leg bone, in trunks (measured on real people: up to 1.8)
UPRIGHT_DEGREES = 60.0  # the most a torso standing in for a face may lean from upright
MIN_KNEE_DROP = 0.66  # a knee below its hip by this share of the torso: a thigh that points down
CORE = (NOSE, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP)
LIMBS = ((R_SHOULDER, R_ELBOW), (R_ELBOW, R_WRIST), (L_SHOULDER, L_ELBOW), (L_ELBOW, L_WRIST),
         (R_HIP, R_KNEE), (R_KNEE, R_ANKLE), (L_HIP, L_KNEE), (L_KNEE, L_ANKLE))


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot(*(a - b)))


def _longest_limb(xy: np.ndarray, found: np.ndarray) -> float:
    return max((_distance(xy[a], xy[b]) for a, b in LIMBS if found[a] and found[b]), default=0.0)


def _trunk(xy: np.ndarray, found: np.ndarray) -> float:
    """The largest distance between two of the nose, shoulders and hips found: the body's size in the image."""
    core = xy[[i for i in CORE if found[i]]]
    return float(np.linalg.norm(core[:, None] - core[None], axis=-1).max()) if len(core) > 1 else 0.0


def _standing(xy: np.ndarray, found: np.ndarray) -> bool:
    """Both hips found, the neck above the mid-hip within the allowed lean, and a knee well below its hip (image y
    grows downwards)."""
    if not (found[R_HIP] and found[L_HIP]):
        return False
    neck, mid_hip = (xy[R_SHOULDER] + xy[L_SHOULDER]) / 2, (xy[R_HIP] + xy[L_HIP]) / 2
    torso = _distance(neck, mid_hip)
    if torso <= 0 or mid_hip[1] - neck[1] < math.cos(math.radians(UPRIGHT_DEGREES)) * torso:
        return False
    drops = [xy[knee, 1] - xy[hip, 1] for hip, knee in ((R_HIP, R_KNEE), (L_HIP, L_KNEE)) if found[knee]]
    return bool(max(drops, default=-math.inf) >= MIN_KNEE_DROP * torso)


def is_credible(pose: Pose, size: tuple[int, int]) -> bool:
    """Whether ``pose``, normalised to an image of ``size`` = (width, height) pixels, shows a person (the rules
    are in the module docstring)."""
    found = pose.scores[BODY] >= MAIN_SCORE
    face = bool(face_visible(pose.scores))
    if int(found[R_SHOULDER]) + int(found[L_SHOULDER]) < (1 if face else 2):
        return False
    xy = pose.points[BODY].astype(np.float64) * np.asarray(size, np.float64)
    trunk = _trunk(xy, found)
    if trunk < MIN_TRUNK * min(size) or _longest_limb(xy, found) > MAX_LIMB * trunk:
        return False
    return face or _standing(xy, found)
