"""SMPLify-X-style fitting of the body model to one photo: 2D keypoints + person mask -> SMPL-X parameters.

Objective (2D residuals are measured in units of the person's height in pixels, so the weights do not
depend on the image size):
- keypoints: confidence-weighted Geman-McClure penalty on the reprojection error of every fitting
  keypoint the body model has: its 55 joints (hips, knees, wrists, finger joints ...) and surface
  landmarks (nose, eyes, ears, toes, heels, fingertips), and the 51 brow/eye/nose/lip points of the
  iBUG-68 layout through the model file's face-landmark embedding (``lmk_faces_idx``: a licensed
  SMPL-X's own, or for the embedded CC0 model the one ``tools/face_landmark_embedding.py`` found with
  mediapipe's face mesh). Together the face points weigh like a few body keypoints
  (``FitWeights.face_keypoints``): they turn and tilt the head and open the jaw; without them the
  head is seen through five points only and the photo's face lands misplaced on the avatar.
- silhouette: a subset of body vertices (one per 3 cm cell, set 2 cm inwards along the normal)
  drawn as isotropic Gaussians with ``core.render.rasterize`` at low resolution (160 px); squared
  difference of its alpha to the person mask, inside the photo only (crop padding is unknown, not
  background); photo prep counts mask pixels the body leaves uncovered less
  (``FitWeights.silhouette_uncovered``): the mask is the dressed person, the body the bare one inside it.
  Its alpha > 0.5 matches the mesh's own mask to IoU ~0.94.
- bone directions: ``1 - cos`` between the model's limb and torso bones and BlazePose's metric 3D
  points (``core.prep.landmarks.bone_directions``), which see what 2D keypoints cannot: whether a limb
  points towards or away from the camera, and how the torso is turned.
- priors: joint-limit hinge (``core.motion.joint_limits``; and [0, 1] for a model whose expressions are
  facial actions, ``BodyModel.expression_range``), pose magnitude, betas and expression L2.

Stages (Adam; torch runs single-threaded meanwhile), iteration counts from ``PrepConfig.fit_iterations``:
1. camera: translation + global orientation from the torso keypoints, depth initialised from the
   focal length and the torso's length;
2. limbs: the body pose alone, with the limbs' bone directions weighted up (a quarter of the body
   stage's steps), so each limb swings to the side of the camera it is on before the keypoints settle it;
3. + body pose + betas; the silhouette fades in over the second half (a limb that starts far from
   its keypoints would otherwise be held in the wrong part of the mask);
4. + hand poses (and jaw + expression when the model has face landmarks).

Camera convention: the world is the SMPL-X frame (metres, y up). The photo camera is an OpenCV
camera at the world origin looking along -z with y up: ``viewmat = PHOTO_VIEWMAT = diag(1, -1, -1, 1)``
and ``K`` the crop's intrinsics. A zero ``global_orient`` therefore faces the camera, and ``transl``
places the body in front of it (negative z).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from core.body.lbs import pose_corrective_offsets
from core.body.skeleton import JOINT_NAMES, POSE_SLICES
from core.motion.joint_limits import pose_limits
from core.prep.landmarks import IBUG68_SMPLX_NAMES
from core.threads import single_torch_thread

PHOTO_VIEWMAT = np.diag([1.0, -1.0, -1.0, 1.0])
"""World-to-camera ``[4, 4]`` of the photo camera (OpenCV axes): the SMPL-X world seen from the origin along -z."""
_CAMERA_FLIP = torch.tensor([1.0, -1.0, -1.0])  # PHOTO_VIEWMAT's rotation, as a diagonal

POSE_FIELDS = tuple(POSE_SLICES)  # global_orient, body_pose, jaw_pose, leye_pose, reye_pose, hands
# Fitting names that the body model calls differently: mediapipe fingertips -> "<side>_<finger>_tip".
_FINGERTIPS = ("thumb", "index", "middle", "ring", "pinky")
# The 51 static SMPL-X face landmarks (lmk_faces_idx) are iBUG-68 points 17..67, in order.
_STATIC_FACE_NAMES = IBUG68_SMPLX_NAMES[17:]
_TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
_FINGERTIP_NAMES = frozenset(f"{side}_{finger}" for side in ("left", "right") for finger in _FINGERTIPS)
SILHOUETTE_CELL = 0.03  # metres: one silhouette Gaussian per cell of this size on the template


@dataclass
class FitWeights:
    """Weights of the fitting objective (2D residuals in person heights, angles in radians)."""

    keypoints: float = 1.0
    robust_sigma: float = 0.2  # Geman-McClure scale, fraction of the person's height
    hand_keypoints_stage2: float = 0.2  # hands count less before the hand pose is free
    # Confidence factor of the 51 face points (with a face-landmark embedding): they turn the head and open
    # the jaw, the body's keypoints place the body. Face / body keypoint error, % of height, messi5 and
    # basketball1: 0.1 -> 1.58 / 2.38 and 0.38 / 1.13; 0.3 -> 0.84 / 2.24 and 0.31 / 1.13; 1.0 -> 0.69 / 2.54
    # and 0.33 / 1.26. Against ground truth (benchmarks/fit_truth.py) 0.1, 0.3 and 1.0 are within noise.
    face_keypoints: float = 0.3
    silhouette: float = 0.0075  # measured on dressed synthetic people: stronger pulls the bare body into the clothes
    silhouette_start: float = 0.5  # fraction of the body stage before the silhouette term starts
    # Factor on mask pixels the body leaves uncovered (1: a symmetric squared difference). Photo prep lowers it
    # (``PrepConfig.silhouette_uncovered``): its mask is the dressed person, and clothes widen the shape.
    silhouette_uncovered: float = 1.0
    joint_limits: float = 10.0
    body_pose: float = 1e-6
    hand_pose: float = 1e-6
    betas: float = 1e-5
    expression: float = 1e-5
    bone_directions: float = 0.01  # 1 - cos to BlazePose's 3D bone directions (unitless; 10 degrees ~ 0.015)
    # The limbs stage (before the body stage, body pose only, ``limbs_fraction`` x the body stage's steps)
    # counts the limbs' directions ``1 + boost`` times: a limb that starts bent the wrong way (towards vs
    # away from the camera) must swing through poses whose keypoints fit worse, which the keypoints alone
    # would never do. The body stage then starts from there with its full budget.
    bone_directions_boost: float = 30.0
    limbs_fraction: float = 0.25
    upright: float = 1e-2  # camera stage: torso keypoints alone barely see a forward tilt; prefer upright
    depth: float = 1e-3  # keeps the camera distance near its torso-based initial value (metres^-2)
    silhouette_size: int = 160  # pixels, longer side of the silhouette render
    # Silhouette Gaussians: size and opacity (with one per SILHOUETTE_CELL, set inwards by the inset)
    # chosen so their alpha > 0.5 matches the mesh's own mask (IoU 0.94 at 120 px person height).
    silhouette_sigma: float = 0.01  # metres
    silhouette_inset: float = 0.02  # metres
    silhouette_opacity: float = 0.75
    learning_rates: tuple[float, float, float] = (0.05, 0.05, 0.02)  # Adam: camera, limbs and body, hands


def prep_fit_weights(prep, **overrides) -> FitWeights:
    """The photo prep's ``FitWeights``: the defaults with ``prep``'s (a ``core.config.PrepConfig``) settings,
    then ``overrides`` (field=value)."""
    return FitWeights(**{"silhouette_uncovered": prep.silhouette_uncovered, **overrides})


@dataclass
class FitResult:
    """What ``fit_smplx`` found.

    Attributes:
        params: SMPL-X parameters as float32 1-D arrays: ``betas``, ``expression``, ``global_orient``,
            ``body_pose`` ... ``reye_pose`` (axis-angle radians) and ``transl`` (metres).
        projected: ``[K, 2]`` the fitted reprojection of each keypoint (pixels), NaN for names the model lacks.
        metrics: keypoint error (pixels and % of the person's height, see ``fit_metrics``) and ``time_s``.
    """

    params: dict[str, np.ndarray]
    projected: np.ndarray
    metrics: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# keypoints on the body model


@dataclass(frozen=True)
class SurfacePoints:
    """Points on the body as barycentric combinations of vertices.

    Attributes:
        names: P point names.
        vertex_ids: ``[P, 3]`` int64 vertex indices.
        weights: ``[P, 3]`` float32 barycentric weights (rows sum to 1).
    """

    names: tuple[str, ...]
    vertex_ids: np.ndarray
    weights: np.ndarray


def model_surface_points(model) -> SurfacePoints:
    """The body model's named surface landmarks (one vertex each) plus SMPL-X's 51 static face
    landmarks when its file has the embedding (barycentric points on ``lmk_faces_idx`` faces)."""
    names = list(model.landmark_names)
    ids = np.asarray(model.landmark_vertex_ids.cpu().numpy(), np.int64)
    vertex_ids = [np.stack([ids, ids, ids], axis=1)]
    weights = [np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (len(ids), 1))]
    face_idx = getattr(model.smplx, "lmk_faces_idx", None)
    if face_idx is not None and len(face_idx) == len(_STATIC_FACE_NAMES):
        faces = model.faces.cpu().numpy()
        vertex_ids.append(faces[face_idx.cpu().numpy().astype(np.int64)])
        weights.append(model.smplx.lmk_bary_coords.cpu().numpy().astype(np.float32))
        names += _STATIC_FACE_NAMES
    return SurfacePoints(tuple(names), np.concatenate(vertex_ids).astype(np.int64),
                         np.concatenate(weights).astype(np.float32))


def keypoint_index(names: list[str] | tuple[str, ...], surface: SurfacePoints) -> np.ndarray:
    """Where each fitting keypoint lives in ``[joints (55), surface points (P)]``: ``[K]`` int64, -1 if nowhere.

    Joint names match ``JOINT_NAMES``; fingertips (``left_index``) match ``left_index_tip`` landmarks.
    """
    joint_index = {name: i for i, name in enumerate(JOINT_NAMES)}
    surface_index = {name: len(JOINT_NAMES) + i for i, name in enumerate(surface.names)}
    index = np.full(len(names), -1, np.int64)
    for k, name in enumerate(names):
        if name in joint_index:
            index[k] = joint_index[name]
        elif name in surface_index:
            index[k] = surface_index[name]
        elif name in _FINGERTIP_NAMES and f"{name}_tip" in surface_index:
            index[k] = surface_index[f"{name}_tip"]
    return index


# --------------------------------------------------------------------------------------------
# a fast forward for a few points


def kinematic_levels(parents: np.ndarray) -> list[np.ndarray]:
    """Joints grouped by depth in the tree: ``[roots], [their children], ...`` (int64 arrays)."""
    depth = np.zeros(len(parents), np.int64)
    for joint, parent in enumerate(parents):
        depth[joint] = 0 if parent < 0 else depth[parent] + 1
    return [np.flatnonzero(depth == d) for d in range(int(depth.max()) + 1)]


class ForwardKinematics:
    """Forward kinematics batched by tree level (about 12 matrix products instead of one per joint).

    Same result as ``core.body.lbs.joint_transforms`` for one body; the fitter calls it hundreds of
    times, where a per-joint loop dominates the cost.
    """

    def __init__(self, parents: np.ndarray):
        parents = np.asarray(parents, np.int64)
        self.levels = kinematic_levels(parents)
        position = np.zeros(len(parents), np.int64)  # each joint's row within its level
        for level in self.levels:
            position[level] = np.arange(len(level))
        self.parent_rows = [torch.as_tensor(position[parents[level]]) for level in self.levels[1:]]
        self.level_ids = [torch.as_tensor(level) for level in self.levels]
        self.parents = torch.as_tensor(parents)
        self.order = torch.as_tensor(np.argsort(np.concatenate(self.levels)))

    def __call__(self, pose: torch.Tensor, rest_joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pose [J, 3]`` axis-angle (radians, relative to the parent), ``rest_joints [J, 3]`` metres ->
        ``(joints [J, 3], transforms [J, 3, 4])`` with ``x_posed = transforms[j] @ [x_canonical, 1]``."""
        from smplx.lbs import batch_rodrigues

        local = batch_rodrigues(pose)  # [J, 3, 3]
        roots = self.level_ids[0]
        rotations, origins = [local[roots]], [rest_joints[roots]]
        for ids, parent_rows in zip(self.level_ids[1:], self.parent_rows):
            parent_rotation = rotations[-1][parent_rows]
            bone = rest_joints[ids] - rest_joints[self.parents[ids]]
            origins.append(origins[-1][parent_rows] + (parent_rotation @ bone[:, :, None])[..., 0])
            rotations.append(parent_rotation @ local[ids])
        rotation = torch.cat(rotations)[self.order]
        joints = torch.cat(origins)[self.order]
        offset = joints - (rotation @ rest_joints[:, :, None])[..., 0]
        return joints, torch.cat([rotation, offset[:, :, None]], dim=2)


class BodyPoints:
    """The parts of ``BodyModel.forward`` the fitter needs, for a subset of vertices only.

    Rest joints are linear in the shape/expression coefficients, so their regression is precomputed;
    only the chosen vertices are shaped and skinned. Same maths as ``BodyModel.forward`` (pose
    correctives included when the model has them).

    Args:
        model: a ``core.body.BodyModel``.
        vertex_ids: ``[S]`` vertices to pose.
        inset: ``[S]`` metres to move each vertex inwards along its template normal before posing (None: 0).
    """

    def __init__(self, model, vertex_ids: np.ndarray, inset: np.ndarray | None = None):
        ids = torch.as_tensor(np.asarray(vertex_ids), dtype=torch.int64)
        dirs = model.blend_dirs.detach()  # [V, 3, B + E]
        regressor = model.j_regressor.detach()
        self.num_vertices = len(ids)
        self.joint_template = regressor @ model.v_template.detach()  # [55, 3]
        self.joint_dirs = torch.einsum("jv,vck->jck", regressor, dirs).contiguous()  # [55, 3, B + E]
        self.vertex_template = model.v_template.detach()[ids]  # [S, 3]
        if inset is not None:
            from core.render.mesh import vertex_normals

            normals = vertex_normals(model.v_template.detach().cpu().double().numpy(), model.faces.cpu().numpy())
            offset = normals[np.asarray(vertex_ids)] * np.asarray(inset, np.float64)[:, None]
            self.vertex_template = self.vertex_template - torch.as_tensor(offset, dtype=self.vertex_template.dtype)
        self.vertex_dirs = dirs[ids].contiguous()  # [S, 3, B + E]
        self.weights = model.lbs_weights.detach()[ids].contiguous()  # [S, 55]
        self.kinematics = ForwardKinematics(model.parents.cpu().numpy())
        self.posedirs = None
        if model.has_pose_correctives:
            posedirs = model.smplx.posedirs.detach()  # [9 * 54, V * 3]
            self.posedirs = posedirs.reshape(posedirs.shape[0], -1, 3)[:, ids].reshape(posedirs.shape[0], -1)

    def __call__(self, params: dict[str, torch.Tensor], with_vertices: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``params`` of ``[1, D]`` tensors (``BodyModel.forward``'s names) -> ``(joints [55, 3], vertices [S, 3])``
        posed, translation included, metres; vertices None unless ``with_vertices``."""
        coefficients = torch.cat([params["betas"], params["expression"]], dim=1)[0]  # [B + E]
        rest_joints = self.joint_template + self.joint_dirs @ coefficients
        full_pose = torch.cat([params[name] for name in POSE_FIELDS], dim=1).reshape(-1, 3)
        joints, transforms = self.kinematics(full_pose, rest_joints)
        transl = params["transl"][0]
        if not with_vertices:
            return joints + transl, None
        shaped = self.vertex_template + self.vertex_dirs @ coefficients
        if self.posedirs is not None:
            from smplx.lbs import batch_rodrigues

            local = batch_rodrigues(full_pose)[None]
            shaped = shaped + pose_corrective_offsets(local, self.posedirs)[0]
        per_vertex = (self.weights @ transforms.reshape(-1, 12)).reshape(-1, 3, 4)  # blended [R | t]
        vertices = (per_vertex[:, :, :3] @ shaped[:, :, None])[..., 0] + per_vertex[:, :, 3]
        return joints + transl, vertices + transl


def silhouette_vertex_ids(template: np.ndarray, cell: float = SILHOUETTE_CELL) -> np.ndarray:
    """One vertex per occupied ``cell``-metre voxel of ``template [V, 3]`` (the one nearest its centre) -> ``[S]``."""
    voxel = np.floor(template / cell).astype(np.int64)
    centre_distance = np.linalg.norm(template - (voxel + 0.5) * cell, axis=1)
    order = np.lexsort((centre_distance, voxel[:, 2], voxel[:, 1], voxel[:, 0]))
    sorted_voxels = voxel[order]
    first = np.ones(len(order), bool)
    first[1:] = np.any(sorted_voxels[1:] != sorted_voxels[:-1], axis=1)
    return np.sort(order[first])


# --------------------------------------------------------------------------------------------
# camera


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """World points ``[N, 3]`` (metres) -> pixels ``[N, 2]`` through the photo camera (``PHOTO_VIEWMAT``, ``K [3, 3]``)."""
    camera = points * _CAMERA_FLIP.to(points)
    depth = camera[:, 2:].clamp_min(1e-3)  # keeps a point passing behind the camera finite
    return (camera[:, :2] / depth) * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])


def initial_camera(
    torso_3d: np.ndarray, torso_2d: np.ndarray, torso_conf: np.ndarray, K: np.ndarray, person_height_px: float,
    image_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Initial ``(global_orient [3], transl [3])`` from the torso (left/right shoulder, left/right hip).

    Depth: focal x (3D shoulder-to-hip length) / (2D length); without a torso, 1.7 m over the person's
    pixel height. The body faces the camera unless the shoulders appear swapped (seen from behind).

    Args:
        torso_3d: ``[4, 3]`` model joints (T-pose, zero shape), metres.
        torso_2d: ``[4, 2]`` detected pixels; torso_conf ``[4]``.
        K: ``[3, 3]`` intrinsics; person_height_px: the person's extent in pixels; image_size (width, height).
    """
    focal = 0.5 * (K[0, 0] + K[1, 1])
    seen = torso_conf > 0.1
    shoulders, hips = seen[:2].all(), seen[2:].all()
    if shoulders and hips:
        length_3d = np.linalg.norm(torso_3d[:2].mean(0) - torso_3d[2:].mean(0))
        length_2d = np.linalg.norm(torso_2d[:2].mean(0) - torso_2d[2:].mean(0))
        depth = focal * length_3d / max(length_2d, 1.0)
        # A torso foreshortened by leaning would put the body far too deep; the full height bounds it.
        depth = min(depth, focal * 2.0 / max(person_height_px, 1.0))
    else:
        depth = focal * 1.7 / max(person_height_px, 1.0)
    if seen.any():
        centre_2d = (torso_2d[seen] * torso_conf[seen, None]).sum(0) / torso_conf[seen].sum()
        centre_3d = torso_3d[seen].mean(0)
    else:
        centre_2d, centre_3d = np.array(image_size, float) / 2.0, np.zeros(3)
    facing_away = shoulders and torso_2d[0, 0] < torso_2d[1, 0]  # the left shoulder on the image's left
    orient = np.array([0.0, math.pi, 0.0]) if facing_away else np.zeros(3)
    if facing_away:
        centre_3d = centre_3d * np.array([-1.0, 1.0, -1.0])  # the yaw turns the torso's offset too
    # The camera sees world (x, -y, -z): pixel u = fx x / -z + cx, v = fy (-y) / -z + cy.
    x = (centre_2d[0] - K[0, 2]) * depth / K[0, 0]
    y = -(centre_2d[1] - K[1, 2]) * depth / K[1, 1]
    transl = np.array([x, y, -depth]) - centre_3d
    return orient, transl


# --------------------------------------------------------------------------------------------
# objective terms


def geman_mcclure(squared: torch.Tensor, sigma: float) -> torch.Tensor:
    """Robust penalty of squared residuals: ``sigma^2 r^2 / (sigma^2 + r^2)``, quadratic near 0, bounded by sigma^2."""
    return sigma**2 * squared / (sigma**2 + squared)


def limit_penalty(pose: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Sum of squared excursions of ``pose [1, D]`` beyond ``[lower, upper] [D]`` (radians^2)."""
    return ((lower - pose).clamp_min(0.0).square() + (pose - upper).clamp_min(0.0).square()).sum()


def silhouette_alpha(points: torch.Tensor, K: torch.Tensor, width: int, height: int, sigma: float,
                     opacity: float) -> torch.Tensor:
    """Soft silhouette ``[height, width]`` of world ``points [N, 3]`` as isotropic Gaussians (sigma metres)."""
    from core.render import rasterize

    count = points.shape[0]
    quats = points.new_zeros(count, 4)
    quats[:, 0] = 1.0
    viewmat = torch.as_tensor(PHOTO_VIEWMAT, dtype=points.dtype)
    _, alpha, _ = rasterize(
        points, quats, points.new_full((count, 3), sigma), points.new_full((count,), opacity),
        points.new_ones(count, 1), viewmat[None], K[None], width, height, backend="cpu",
    )
    return alpha[0, ..., 0]


def resize_area(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-filtered resize of an ``[H, W]`` float image (pixels)."""
    import cv2

    return cv2.resize(np.ascontiguousarray(image, np.float32), (width, height), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------------------------
# the fit


@dataclass
class KeypointTargets:
    """The detected keypoints the model can explain, as tensors (K' <= K rows).

    Attributes:
        pixels: ``[K', 2]`` detected positions; conf ``[K']`` > 0.
        point: ``[K']`` row in ``[joints (55), surface points]``.
        is_hand: ``[K']`` finger joints and tips; is_torso: ``[K']`` shoulders and hips; is_face: ``[K']`` the
            51 brow, eye, nose and lip points (only with a face-landmark embedding).
    """

    pixels: torch.Tensor
    conf: torch.Tensor
    point: torch.Tensor
    is_hand: torch.Tensor
    is_torso: torch.Tensor
    is_face: torch.Tensor


@dataclass
class DirectionTargets:
    """Observed 3D bone directions the model can explain (B' rows).

    Attributes:
        start, end: ``[B']`` rows in ``[joints (55), surface points]``.
        directions: ``[B', 3]`` unit vectors in the photo camera's axes (OpenCV); conf ``[B']`` > 0.
        is_torso: ``[B']`` bones between two joints of the shoulders and hips (used from the camera stage on).
    """

    start: torch.Tensor
    end: torch.Tensor
    directions: torch.Tensor
    conf: torch.Tensor
    is_torso: torch.Tensor


@dataclass
class SilhouetteTarget:
    """The person mask at the silhouette render's resolution.

    Attributes:
        mask: ``[h, w]`` soft mask; valid: ``[h, w]`` 1 where the photo has pixels (0 on crop padding).
        K: ``[3, 3]`` intrinsics for ``[h, w]``; area: mask pixels inside ``valid`` (normaliser).
    """

    mask: torch.Tensor
    valid: torch.Tensor
    K: torch.Tensor
    area: float


def _is_hand_keypoint(name: str) -> bool:
    """Finger joints and fingertips (``left_index2``, ``right_thumb``), not the wrists."""
    return name.startswith(("left_", "right_")) and name.split("_", 1)[1].startswith(_FINGERTIPS)


def _is_face_keypoint(names) -> np.ndarray:
    """``[K]`` bool: which of ``names`` are the 51 static face points (brows, eyes, nose, lips)."""
    return np.isin(np.asarray(names), _STATIC_FACE_NAMES)


def keypoint_targets(names, keypoints: np.ndarray, conf: np.ndarray, surface: SurfacePoints) -> KeypointTargets:
    """Keep the keypoints that were detected (conf > 0) and that the body model has."""
    index = keypoint_index(names, surface)
    conf = np.asarray(conf, np.float32)
    used = (index >= 0) & (conf > 0)
    hands = np.array([_is_hand_keypoint(n) for n in names], bool)
    torso = np.array([n in _TORSO for n in names], bool)
    face = _is_face_keypoint(names)
    return KeypointTargets(
        pixels=torch.as_tensor(np.asarray(keypoints, np.float32)[used]),
        conf=torch.as_tensor(conf[used]),
        point=torch.as_tensor(index[used]),
        is_hand=torch.as_tensor(hands[used]),
        is_torso=torch.as_tensor(torso[used]),
        is_face=torch.as_tensor(face[used]),
    )


def direction_targets(bones, surface: SurfacePoints) -> DirectionTargets:
    """Keep the ``core.prep.landmarks.BoneDirections`` (or None: none) that were seen and that the model has."""
    if bones is None:
        empty = torch.zeros(0, dtype=torch.int64)
        return DirectionTargets(empty, empty, torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, dtype=torch.bool))
    starts = keypoint_index([a for a, _ in bones.pairs], surface)
    ends = keypoint_index([b for _, b in bones.pairs], surface)
    conf = np.asarray(bones.conf, np.float32)
    used = (starts >= 0) & (ends >= 0) & (conf > 0)
    torso = np.array([a in _TORSO and b in _TORSO for a, b in bones.pairs], bool)
    return DirectionTargets(
        start=torch.as_tensor(starts[used]), end=torch.as_tensor(ends[used]),
        directions=torch.as_tensor(np.asarray(bones.directions, np.float32)[used]),
        conf=torch.as_tensor(conf[used]), is_torso=torch.as_tensor(torso[used]),
    )


def silhouette_target(mask: np.ndarray, K: np.ndarray, valid: np.ndarray | None, size: int) -> SilhouetteTarget:
    """``mask [H, W]`` area-resized so its longer side is ``size`` pixels, with matching intrinsics."""
    height, width = mask.shape
    scale = size / max(height, width)
    small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
    small_K = np.asarray(K, np.float64).copy()
    small_K[0] *= small_w / width  # pixel edges sit at integers, so K scales with the image
    small_K[1] *= small_h / height
    inside = np.ones(mask.shape, np.float32) if valid is None else np.asarray(valid, np.float32)
    small_mask = resize_area(np.asarray(mask, np.float32) * inside, small_w, small_h)
    small_valid = (resize_area(inside, small_w, small_h) > 0.99).astype(np.float32)
    return SilhouetteTarget(
        mask=torch.as_tensor(small_mask), valid=torch.as_tensor(small_valid),
        K=torch.as_tensor(small_K.astype(np.float32)), area=max(float((small_mask * small_valid).sum()), 1.0),
    )


def person_height_px(mask: np.ndarray, conf: np.ndarray, keypoints: np.ndarray) -> float:
    """The person's vertical extent in pixels: the mask's rows above 0.5, else the keypoints'."""
    rows = np.flatnonzero((np.asarray(mask) > 0.5).any(axis=1))
    if rows.size:
        return float(rows[-1] + 1 - rows[0])
    seen = np.asarray(keypoints)[np.asarray(conf) > 0]
    return float(np.ptp(seen[:, 1])) if len(seen) > 1 else float(mask.shape[0])


class FitObjective:
    """The staged objective: keypoints (+ silhouette and priors after the camera stage).

    Poses the silhouette vertices and the corners of the model's surface points with one
    ``BodyPoints``; the first ``num_silhouette`` posed vertices are the silhouette's.
    """

    def __init__(self, model, surface: SurfacePoints, keypoints: KeypointTargets, silhouette: SilhouetteTarget,
                 K: np.ndarray, height_px: float, weights: FitWeights, directions: DirectionTargets | None = None):
        self.surface = surface
        silhouette_ids = silhouette_vertex_ids(model.v_template.detach().cpu().numpy())
        self.num_silhouette = len(silhouette_ids)
        corner_ids = self.surface.vertex_ids.reshape(-1)
        # Silhouette Gaussians sit one inset inside the surface, so their blurred outline meets the mesh's.
        inset = np.concatenate([np.full(len(silhouette_ids), weights.silhouette_inset), np.zeros(len(corner_ids))])
        self.body = BodyPoints(model, np.concatenate([silhouette_ids, corner_ids]), inset)
        self.surface_weights = torch.as_tensor(self.surface.weights)[..., None]  # [P, 3, 1]
        self.keypoints = keypoints
        self.directions = directions or direction_targets(None, surface)
        self.silhouette = silhouette
        self.K = torch.as_tensor(np.asarray(K, np.float32))
        self.height_px = height_px
        self.weights = weights
        self.limits = {name: tuple(torch.as_tensor(b, dtype=torch.float32) for b in bounds)
                       for name, bounds in pose_limits().items()}
        if getattr(model, "expression_range", None) is not None:  # facial actions in [0, 1]
            self.limits["expression"] = tuple(torch.full((model.num_expression,), bound) for bound in model.expression_range)
        self.initial_depth = 0.0  # the camera stage's depth prior centre, set once the camera is initialised

    def keypoint_term(self, points: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        """Confidence-weighted mean Geman-McClure of the reprojection errors (person heights^2)."""
        residual = (project(points, self.K) - self.keypoints.pixels) / self.height_px
        robust = geman_mcclure(residual.square().sum(-1), self.weights.robust_sigma)
        return (conf * robust).sum() / conf.sum().clamp_min(1e-6)

    def direction_term(self, points: torch.Tensor, torso_only: bool = False, limbs_only: bool = False
                       ) -> torch.Tensor:
        """Confidence-weighted mean ``1 - cos`` between the model's bones (``points [R, 3]`` world, rows as
        ``DirectionTargets``) and the observed directions, compared in the camera's axes; over the torso's
        or the limbs' bones alone when asked."""
        targets = self.directions
        conf = targets.conf
        if torso_only or limbs_only:
            conf = conf * (targets.is_torso if torso_only else ~targets.is_torso)
        if not bool((conf > 0).any()):
            return points.new_zeros(())
        vector = (points[targets.end] - points[targets.start]) * _CAMERA_FLIP.to(points)
        cos = (vector * targets.directions).sum(-1) / vector.norm(dim=-1).clamp_min(1e-6)
        return (conf * (1.0 - cos)).sum() / conf.sum()

    def silhouette_term(self, vertices: torch.Tensor) -> torch.Tensor:
        """Squared alpha-vs-mask difference over the photo's pixels, per mask pixel."""
        target = self.silhouette
        height, width = target.mask.shape
        alpha = silhouette_alpha(vertices, target.K, width, height,
                                 self.weights.silhouette_sigma, self.weights.silhouette_opacity)
        residual = alpha - target.mask
        uncovered = torch.where(residual < 0, self.weights.silhouette_uncovered, 1.0)
        return (residual.square() * uncovered * target.valid).sum() / target.area

    def prior_term(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        w = self.weights
        hands = params["left_hand_pose"].square().sum() + params["right_hand_pose"].square().sum()
        magnitude = (w.body_pose * params["body_pose"].square().sum() + w.hand_pose * hands
                     + w.betas * params["betas"].square().sum() + w.expression * params["expression"].square().sum())
        limits = sum(limit_penalty(params[name], *bounds) for name, bounds in self.limits.items())
        return magnitude + w.joint_limits * limits

    def __call__(self, params: dict[str, torch.Tensor], stage: str, progress: float = 1.0) -> torch.Tensor:
        """Loss for ``stage`` (``STAGES``: camera = torso keypoints + depth prior + torso directions; limbs =
        keypoints + priors + boosted limb directions; body and hands = keypoints + priors + directions +
        silhouette), ``progress`` in [0, 1] through the stage (the silhouette fades in during the body stage)."""
        w, targets = self.weights, self.keypoints
        if stage == "camera":
            joints, _ = self.body(params, with_vertices=False)
            torso = targets.is_torso
            residual = (project(joints[targets.point[torso]], self.K) - targets.pixels[torso]) / self.height_px
            conf = targets.conf[torso]
            fit = (conf * residual.square().sum(-1)).sum() / conf.sum().clamp_min(1e-6)
            return (w.keypoints * fit + w.depth * (params["transl"][0, 2] - self.initial_depth).square()
                    + w.upright * tilt(params["global_orient"])
                    + w.bone_directions * self.direction_term(joints, torso_only=True))
        joints, vertices = self.body(params)
        corners = vertices[self.num_silhouette:].reshape(-1, 3, 3)
        every_point = torch.cat([joints, (corners * self.surface_weights).sum(1)])
        points = every_point[targets.point]
        conf = targets.conf
        if stage in ("limbs", "body"):
            conf = torch.where(targets.is_hand, conf * w.hand_keypoints_stage2, conf)
        conf = torch.where(targets.is_face, conf * w.face_keypoints, conf)
        loss = (w.keypoints * self.keypoint_term(points, conf) + self.prior_term(params)
                + w.bone_directions * self.direction_term(every_point))
        if stage == "limbs":  # limbs only: the torso's bones run between BlazePose's hips, lower than the model's
            return loss + w.bone_directions_boost * w.bone_directions * self.direction_term(every_point,
                                                                                             limbs_only=True)
        silhouette = w.silhouette * silhouette_ramp(stage, progress, w.silhouette_start)
        if silhouette > 0:
            loss = loss + silhouette * self.silhouette_term(vertices[: self.num_silhouette])
        return loss


def tilt(global_orient: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` of the angle between the body's up axis turned by ``global_orient [1, 3]`` and world up."""
    from smplx.lbs import batch_rodrigues

    return 1.0 - batch_rodrigues(global_orient)[0, 1, 1]


STAGES = ("camera", "limbs", "body", "hands")


def silhouette_ramp(stage: str, progress: float, start: float) -> float:
    """Silhouette weight factor: 0 in the camera stage and the first ``start`` of the body stage (the
    keypoints place the limbs first; a silhouette pulls a limb that starts far off into the wrong part
    of the mask), then rising linearly to 1 at the body stage's end, 1 after."""
    if stage in ("camera", "limbs"):
        return 0.0
    if stage == "body":
        return float(np.clip((progress - start) / max(1.0 - start, 1e-6), 0.0, 1.0))
    return 1.0


def fit_smplx(
    model,
    names: list[str] | tuple[str, ...],
    keypoints: np.ndarray,
    conf: np.ndarray,
    mask: np.ndarray,
    K: np.ndarray,
    iterations: tuple[int, int, int] | list[int] = (60, 120, 60),
    valid: np.ndarray | None = None,
    weights: FitWeights | None = None,
    progress: Callable[[str, float], None] | None = None,
    bones=None,
) -> FitResult:
    """Fit the body model to one image's keypoints and person mask.

    Args:
        model: a ``core.body.BodyModel``.
        names: K keypoint names (``core.prep.landmarks.FITTING_NAMES``); names the model lacks are skipped.
        keypoints: ``[K, 2]`` pixel coordinates (corner-origin convention); conf: ``[K]`` >= 0, 0 = missing.
        mask: ``[H, W]`` soft person mask in [0, 1] of the same image.
        K: ``[3, 3]`` intrinsics of that image (pixels); the camera is ``PHOTO_VIEWMAT``.
        iterations: Adam steps of the three configured stages (camera, body, hands/face); the limbs stage
            between camera and body takes ``weights.limbs_fraction`` x the body's.
        valid: ``[H, W]`` bool, pixels that show the photo (False on crop padding); None = all.
        weights: objective weights; progress: optional ``callable(stage, fraction)``.
        bones: ``core.prep.landmarks.BoneDirections`` observed in 3D (BlazePose's metric points), or None.
    Returns:
        ``FitResult`` with ``params``, ``projected`` keypoints and ``metrics`` (see ``fit_metrics``).

    Runs torch single-threaded while it works (restored after): these small products are faster that
    way, and far faster when other processes compete for the cores.
    """
    started = time.perf_counter()
    weights = weights or FitWeights()
    with single_torch_thread():
        height_px = person_height_px(mask, conf, keypoints)
        surface = model_surface_points(model)
        objective = FitObjective(
            model, surface, keypoint_targets(names, keypoints, conf, surface),
            silhouette_target(mask, K, valid, weights.silhouette_size), K, height_px, weights,
            direction_targets(bones, surface),
        )
        params = initial_params(model, objective, names, keypoints, conf, mask.shape)
        objective.initial_depth = float(params["transl"][0, 2])
        camera, body, hands = (int(n) for n in iterations)
        steps = (camera, round(weights.limbs_fraction * body), body, hands)
        rates = (weights.learning_rates[0], weights.learning_rates[1], *weights.learning_rates[1:])
        optimise(params, objective, steps, rates, fit_stages(surface), progress)
    result = {name: value.detach()[0].numpy().astype(np.float32) for name, value in params.items()}
    projected = project_keypoints(model, result, names, K)
    metrics = fit_metrics(projected, keypoints, conf, height_px, names)
    metrics["time_s"] = time.perf_counter() - started
    return FitResult(params=result, projected=projected, metrics=metrics)


def zero_params(model) -> dict[str, torch.Tensor]:
    """Every ``BodyModel.forward`` argument at zero as ``[1, D]`` float32 tensors."""
    return {
        "betas": torch.zeros(1, model.num_betas),
        "expression": torch.zeros(1, model.num_expression),
        **{name: torch.zeros(1, 3 * (s.stop - s.start)) for name, s in POSE_SLICES.items()},
        "transl": torch.zeros(1, 3),
    }


def initial_params(model, objective: FitObjective, names, keypoints, conf, shape) -> dict[str, torch.Tensor]:
    """Zero pose and shape, with the camera from ``initial_camera``."""
    params = zero_params(model)
    with torch.no_grad():
        joints, _ = objective.body(params, with_vertices=False)
    lookup = {name: k for k, name in enumerate(names)}
    torso_2d = np.array([keypoints[lookup[n]] if n in lookup else (0.0, 0.0) for n in _TORSO], np.float64)
    torso_conf = np.array([conf[lookup[n]] if n in lookup else 0.0 for n in _TORSO], np.float64)
    torso_3d = joints[[JOINT_NAMES.index(n) for n in _TORSO]].numpy()
    orient, transl = initial_camera(torso_3d, torso_2d, torso_conf, objective.K.numpy(), objective.height_px,
                                    (shape[1], shape[0]))
    params["global_orient"] = torch.as_tensor(orient, dtype=torch.float32)[None]
    params["transl"] = torch.as_tensor(transl, dtype=torch.float32)[None]
    return params


def fit_stages(surface: SurfacePoints) -> list[tuple[str, list[str]]]:
    """(stage name, parameters it optimises) for ``STAGES``; jaw and expression only with face landmarks."""
    face = ["jaw_pose", "expression"] if any(n in surface.names for n in _STATIC_FACE_NAMES) else []
    camera = ["global_orient", "transl"]
    body = camera + ["body_pose", "betas"]
    return [("camera", camera), ("limbs", ["body_pose"]), ("body", body),
            ("hands", body + ["left_hand_pose", "right_hand_pose"] + face)]


def optimise(params: dict[str, torch.Tensor], objective: FitObjective, iterations, learning_rates,
             stages: list[tuple[str, list[str]]], progress: Callable[[str, float], None] | None = None) -> None:
    """Run Adam on each stage's free parameters in turn, updating ``params`` in place.

    ``stages``: (name, parameter names) per stage; ``iterations`` and ``learning_rates``: one per stage.
    """
    for (name, free), steps, lr in zip(stages, iterations, learning_rates, strict=True):
        steps = int(steps)
        for key in params:
            params[key] = params[key].detach().requires_grad_(key in free)
        optimiser = torch.optim.Adam([params[key] for key in free], lr=lr)
        for step in range(steps):
            optimiser.zero_grad(set_to_none=True)
            objective(params, name, step / max(steps - 1, 1)).backward()
            optimiser.step()
            if progress is not None and (step % 10 == 9 or step == steps - 1):
                progress(f"fit {name}", (step + 1) / steps)
    for key in params:
        params[key] = params[key].detach()


# --------------------------------------------------------------------------------------------
# results


def project_keypoints(model, params: dict[str, np.ndarray], names, K: np.ndarray) -> np.ndarray:
    """Reproject the named keypoints of the body posed by ``params`` into the photo -> ``[K, 2]`` px, NaN if unknown."""
    surface = model_surface_points(model)
    index = keypoint_index(names, surface)
    with torch.no_grad():
        out = model(**{key: torch.as_tensor(value)[None] for key, value in params.items()})
        corners = out.vertices[0][torch.as_tensor(surface.vertex_ids)]
        points = torch.cat([out.joints[0], (corners * torch.as_tensor(surface.weights)[..., None]).sum(1)])
        pixels = project(points, torch.as_tensor(np.asarray(K), dtype=points.dtype)).numpy()
    projected = np.full((len(names), 2), np.nan, np.float32)
    projected[index >= 0] = pixels[index[index >= 0]]
    return projected


def fit_metrics(projected: np.ndarray, keypoints: np.ndarray, conf: np.ndarray, height_px: float,
                names=None, min_conf: float = 0.2) -> dict:
    """Mean 2D error of the keypoints with confidence > ``min_conf`` that the model has, in pixels and in %
    of ``height_px``; with ``names``, also over the body keypoints alone (no finger joints or tips)."""
    usable = np.isfinite(projected[:, 0]) & (np.asarray(conf) > min_conf)
    errors = np.linalg.norm(projected - np.asarray(keypoints)[:, :2], axis=1)

    def mean(selected: np.ndarray) -> float:
        return float(errors[selected].mean()) if selected.any() else float("nan")

    metrics = {
        "keypoint_error_px": mean(usable),
        "keypoint_error_pct": 100.0 * mean(usable) / height_px,
        "keypoints_used": int(usable.sum()),
        "person_height_px": float(height_px),
    }
    if names is not None:
        hands = np.array([_is_hand_keypoint(n) for n in names], bool)
        face = _is_face_keypoint(names)
        body = usable & ~hands & ~face
        metrics["body_keypoint_error_pct"] = 100.0 * mean(body) / height_px
        metrics["body_keypoints_used"] = int(body.sum())
        if (usable & face).any():
            metrics["face_keypoint_error_pct"] = 100.0 * mean(usable & face) / height_px
    return metrics
