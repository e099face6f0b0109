"""Which mediapipe landmark is which SMPL-X joint or landmark, and how much the fitter should trust it.

Names follow ``smplx.joint_names.JOINT_NAMES``: the 55 SMPL-X joints, the extra vertex landmarks
(``nose``, ``left_big_toe``, ``left_thumb`` fingertips ...) and the 68 iBUG-style face landmarks
(``right_eye_brow1`` ... ``left_contour_1``). "left"/"right" are always the *person's* sides, which is
also what mediapipe's pose, Holistic hand and face-mesh outputs use (checked on messi5.jpg, where
the person faces the camera and his right wrist is on the image's left).

Sources (``Perception`` arrays): ``body`` = BlazePose's 33 points, ``left_hand``/``right_hand`` =
the 21 hand points, ``face`` = the 478-point face mesh (468 + 10 iris points).

Weights are confidence multipliers for the fitter, reflecting how well each mediapipe point matches
the SMPL-X definition, not how well it was detected:
- hips 0.5: BlazePose hips sit lower and wider than SMPL-X's hip joints (femoral heads).
- body knuckles (pinky/index/thumb) 0.3: coarse; only used when the hand model missed that hand.
- ``foot_index`` -> ``*_big_toe`` 0.5: BlazePose's toe point lies between the big and second toe.
- eyes/ears from the body model 0.5, face contour 0.5 (contours slide with head rotation).
- the MANO-style ``thumb1`` joint sits distal to the anatomical CMC joint: 0.7.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- BlazePose 33 body points: (mediapipe index, mediapipe name) --------------------------------
BODY_LANDMARK_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)  # fmt: skip

# --- mediapipe's 21 hand points ---------------------------------------------------------------
HAND_LANDMARK_NAMES = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip", "index_dip",
    "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip",
    "ring_dip", "ring_tip", "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip


@dataclass(frozen=True)
class Source:
    """One mediapipe point: which ``Perception`` array, which row, and the trust multiplier."""

    array: str  # "body", "left_hand", "right_hand" or "face"
    index: int
    weight: float = 1.0


def _body_table() -> dict[str, list[Source]]:
    """Body joints and foot/head landmarks from BlazePose; wrists/knuckles also come from the hand model."""
    weights = {"hip": 0.5, "ear": 0.5, "eye": 0.5, "nose": 0.5}
    table: dict[str, list[Source]] = {"nose": [Source("body", 0, weights["nose"])]}
    for side in ("left", "right"):
        def body(name: str, weight: float = 1.0) -> Source:
            return Source("body", BODY_LANDMARK_NAMES.index(f"{side}_{name}"), weight)

        table[f"{side}_eye"] = [body("eye", weights["eye"])]
        table[f"{side}_ear"] = [body("ear", weights["ear"])]
        for joint in ("shoulder", "elbow", "knee", "ankle"):
            table[f"{side}_{joint}"] = [body(joint)]
        table[f"{side}_hip"] = [body("hip", weights["hip"])]
        table[f"{side}_heel"] = [body("heel", 0.8)]
        table[f"{side}_big_toe"] = [body("foot_index", 0.5)]
        # Hand model first: it is far more precise; BlazePose's points are the fallback.
        hand = f"{side}_hand"
        table[f"{side}_wrist"] = [Source(hand, 0), body("wrist")]
        table[f"{side}_index1"] = [Source(hand, 5), body("index", 0.3)]  # BlazePose: index #1 knuckle
        table[f"{side}_pinky1"] = [Source(hand, 17), body("pinky", 0.3)]  # pinky #1 knuckle
        table[f"{side}_thumb2"] = [Source(hand, 2), body("thumb", 0.3)]  # thumb #2 knuckle
    return table


def _hand_table() -> dict[str, list[Source]]:
    """SMPL-X finger joints (``*1`` base .. ``*3`` distal) and fingertip landmarks from the hand model."""
    table: dict[str, list[Source]] = {}
    for side in ("left", "right"):
        hand = f"{side}_hand"
        table[f"{side}_thumb1"] = [Source(hand, 1, 0.7)]
        table[f"{side}_thumb3"] = [Source(hand, 3)]
        table[f"{side}_thumb"] = [Source(hand, 4)]
        for finger, mcp in (("index", 5), ("middle", 9), ("ring", 13), ("pinky", 17)):
            for level in (1, 2, 3):
                name = f"{side}_{finger}{level}"
                if name not in (f"{side}_index1", f"{side}_pinky1"):  # those two live in the body table
                    table[name] = [Source(hand, mcp + level - 1)]
            table[f"{side}_{finger}"] = [Source(hand, mcp + 3)]  # fingertip
    return table


# --- face: mediapipe face-mesh index for each iBUG-68 point, in iBUG order, with SMPL-X names ---
# Chosen on the face mesh: brows on the upper brow line, eye corners/lids at 1/3 and 2/3 of each lid,
# lips on the outer/inner lip lines, jaw contour points evenly spaced by arc length (127 .. 152 .. 356).
FACE_MESH_FOR_IBUG68 = (
    127, 234, 132, 58, 172, 136, 149, 176, 152, 400, 378, 365, 397, 288, 361, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107,  # right brow, outer -> inner (17-21)
    336, 296, 334, 293, 300,  # left brow, inner -> outer (22-26)
    168, 197, 5, 1,  # nose bridge, top -> tip (27-30)
    98, 97, 2, 326, 327,  # nose base, person's right -> left (31-35)
    33, 160, 158, 133, 153, 144,  # right eye: outer corner, upper lid x2, inner corner, lower lid x2 (36-41)
    362, 385, 387, 263, 373, 380,  # left eye: inner corner, upper lid x2, outer corner, lower lid x2 (42-47)
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # outer lips from the right corner, clockwise (48-59)
    78, 81, 13, 311, 308, 402, 14, 178,  # inner lips from the right corner (60-67)
)  # fmt: skip
IBUG68_SMPLX_NAMES = (
    "right_contour_1", "right_contour_2", "right_contour_3", "right_contour_4", "right_contour_5",
    "right_contour_6", "right_contour_7", "right_contour_8", "contour_middle", "left_contour_8",
    "left_contour_7", "left_contour_6", "left_contour_5", "left_contour_4", "left_contour_3",
    "left_contour_2", "left_contour_1",
    "right_eye_brow1", "right_eye_brow2", "right_eye_brow3", "right_eye_brow4", "right_eye_brow5",
    "left_eye_brow5", "left_eye_brow4", "left_eye_brow3", "left_eye_brow2", "left_eye_brow1",
    "nose1", "nose2", "nose3", "nose4",
    "right_nose_2", "right_nose_1", "nose_middle", "left_nose_1", "left_nose_2",
    "right_eye1", "right_eye2", "right_eye3", "right_eye4", "right_eye5", "right_eye6",
    "left_eye4", "left_eye3", "left_eye2", "left_eye1", "left_eye6", "left_eye5",
    "right_mouth_1", "right_mouth_2", "right_mouth_3", "mouth_top", "left_mouth_3", "left_mouth_2",
    "left_mouth_1", "left_mouth_5", "left_mouth_4", "mouth_bottom", "right_mouth_4", "right_mouth_5",
    "right_lip_1", "right_lip_2", "lip_top", "left_lip_2", "left_lip_1", "left_lip_3", "lip_bottom",
    "right_lip_3",
)  # fmt: skip
CONTOUR_WEIGHT = 0.5
# Iris centres (refined face mesh only); not SMPL-X landmarks, kept here for anyone who needs gaze.
RIGHT_IRIS_CENTRE, LEFT_IRIS_CENTRE = 468, 473


def _face_table() -> dict[str, list[Source]]:
    return {
        name: [Source("face", index, CONTOUR_WEIGHT if "contour" in name else 1.0)]
        for name, index in zip(IBUG68_SMPLX_NAMES, FACE_MESH_FOR_IBUG68, strict=True)
    }


# name -> sources in priority order; the first source with confidence > 0 is used.
KEYPOINT_TABLE: dict[str, list[Source]] = {**_body_table(), **_hand_table(), **_face_table()}
FITTING_NAMES: tuple[str, ...] = tuple(KEYPOINT_TABLE)


def keypoints_for_fitting(perception) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Keypoints the SMPL-X fitter consumes, always the same names in the same order.

    Args:
        perception: a ``core.prep.perception.Perception`` (anything with ``body``, ``left_hand``,
            ``right_hand``, ``face`` arrays of [N, 3] = (x px, y px, confidence) and ``mask`` [H, W]).
    Returns:
        names: K SMPL-X joint/landmark names (``FITTING_NAMES``).
        xy: [K, 2] float32 pixel coordinates (corner-origin convention, see ``core.prep.image_io``).
        conf: [K] float32 = detection confidence x table weight; 0 for missing points and for points
            outside the image.
    """
    height, width = perception.mask.shape[:2]
    names = list(FITTING_NAMES)
    xy = np.zeros((len(names), 2), np.float32)
    conf = np.zeros(len(names), np.float32)
    for k, name in enumerate(names):
        for source in KEYPOINT_TABLE[name]:
            x, y, c = getattr(perception, source.array)[source.index]
            if c > 0:
                inside = 0.0 <= x <= width and 0.0 <= y <= height
                xy[k] = (x, y)
                conf[k] = c * source.weight if inside else 0.0
                break
    return names, xy, conf


# --- 3D bone directions from BlazePose's metric points ------------------------------------------------
# (fitting name, fitting name) pairs whose direction BlazePose's world landmarks observe. One photo's 2D
# keypoints cannot tell whether a limb points towards or away from the camera; these directions can
# (measured on the synthetic people of benchmarks/fit_truth.py: about 10 degrees off the truth per limb
# bone). Hips are BlazePose's (lower and wider than SMPL-X's), which bends the thigh and torso directions a
# little; the fitter weights this term low against the keypoints.
BONE_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (f"{side}_{a}", f"{side}_{b}") for side in ("left", "right")
    for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle"), ("hip", "shoulder"))
) + (("right_shoulder", "left_shoulder"), ("right_hip", "left_hip"))


@dataclass(frozen=True)
class BoneDirections:
    """Observed 3D directions of ``BONE_PAIRS`` in the photo camera's axes (OpenCV: x right, y down, z away).

    Attributes:
        pairs: B (start name, end name) pairs of fitting names.
        directions: ``[B, 3]`` float32 unit vectors from start to end.
        conf: ``[B]`` float32, the smaller visibility of the two ends; 0 when unobserved.
    """

    pairs: tuple[tuple[str, str], ...]
    directions: np.ndarray
    conf: np.ndarray


def bone_directions(perception) -> BoneDirections:
    """``BONE_PAIRS`` directions from ``perception.body_world`` ([33, 4] metres + visibility; zeros = none)."""
    world = np.asarray(perception.body_world, np.float32)
    directions = np.zeros((len(BONE_PAIRS), 3), np.float32)
    conf = np.zeros(len(BONE_PAIRS), np.float32)
    for k, (start, end) in enumerate(BONE_PAIRS):
        a, b = (world[BODY_LANDMARK_NAMES.index(name)] for name in (start, end))
        vector = b[:3] - a[:3]
        length = float(np.linalg.norm(vector))
        if length > 1e-3:
            directions[k] = vector / length
            conf[k] = min(a[3], b[3])
    return BoneDirections(BONE_PAIRS, directions, conf)
