"""Face and identity: antelopev2 detection, ArcFace embeddings, the cached face stage."""

from animator_cli.face.analyzer import FaceAnalyzer, largest_face, load_analyzer
from animator_cli.face.arcface import aligned_crop, arcface_embed
from animator_cli.face.identity import FaceIdentity, box_mask, extract_identity
from animator_cli.face.stage import EXPORT_FILES, export_stage, face_stage
from animator_cli.face.storage import load_identity, save_identity

__all__ = [
    "EXPORT_FILES", "FaceAnalyzer", "FaceIdentity", "aligned_crop", "arcface_embed", "box_mask", "export_stage",
    "extract_identity", "face_stage", "largest_face", "load_analyzer", "load_identity",
    "save_identity",
]
