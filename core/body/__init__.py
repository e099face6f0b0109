"""The body model layer: SMPL-X-format bodies (embedded CC0 model or a user's SMPL-X), skinning,
and helpers that turn a body into Gaussians (subdivision, skinning weights for arbitrary points).

Frame: metres, y up, the person faces +z, +x is the person's left; zero pose = T-pose, palms down.
"""
from core.body.lbs import joint_transforms, skin_points
from core.body.model import BodyModel, BodyOutput
from core.body.model_file import EMBEDDED_MODEL_PATH, MODEL_ENV_VAR, resolve_model_path
from core.body.parts import FACE_PARTS, HAND_PARTS, PART_NAMES, PART_PALETTE, part_colors, part_labels_from_weights
from core.body.poses import star_pose, zero_pose
from core.body.skeleton import JOINT_NAMES, LANDMARK_NAMES, NUM_JOINTS, PARENTS
from core.body.skinning_weights import WeightVolume, build_weight_volume, diffused_weights, nearest_vertex_weights
from core.body.subdivision import refine_long_edges, subdivide, subdivide_to_spacing, unique_edges

__all__ = [
    "BodyModel", "BodyOutput", "EMBEDDED_MODEL_PATH", "MODEL_ENV_VAR", "resolve_model_path",
    "joint_transforms", "skin_points",
    "PART_NAMES", "PART_PALETTE", "FACE_PARTS", "HAND_PARTS", "part_colors", "part_labels_from_weights",
    "star_pose", "zero_pose",
    "JOINT_NAMES", "LANDMARK_NAMES", "NUM_JOINTS", "PARENTS",
    "WeightVolume", "build_weight_volume", "diffused_weights", "nearest_vertex_weights",
    "refine_long_edges", "subdivide", "subdivide_to_spacing", "unique_edges",
]
