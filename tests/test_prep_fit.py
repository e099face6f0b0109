"""SMPL-X fitting and the prep pipeline (core.prep.fit, pipeline, geometry, debug).

Synthetic checks render the body model in a known pose and camera (MeshRenderer for the mask, the
model's own joints/landmarks projected as keypoints) and fit it back. The real-photo checks run the
whole pipeline on messi5.jpg from Debian's ``opencv-doc`` (skipped, saying so, when it is missing).
"""
from __future__ import annotations

import gzip
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.body import BodyModel, PART_PALETTE
from core.body.lbs import joint_transforms
from core.body.skeleton import JOINT_INDEX, JOINT_NAMES
from core.config import Config
from core.errors import UserError
from core.motion.joint_limits import random_plausible_pose
from core.prep import fit as F
from core.prep.debug import FITTED, debug_image
from core.prep.geometry import render_geometry, silhouette_inside, silhouette_iou
from core.prep.landmarks import BONE_PAIRS, FITTING_NAMES, BoneDirections
from core.prep.pipeline import (
    CUT_OFF_WEIGHT, DEBUG_PNG, cache_key, downweight_cut_off_limbs, load_cached, prepare_subject,
)
from core.render.mesh import MeshRenderer

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
SUBJECT_FILES = ("subject.json", "image.png", "mask.png", "albedo.png", "keypoints.npz", "smplx.npz",
                 "geometry.npz")


@pytest.fixture(scope="module")
def model() -> BodyModel:
    return BodyModel.load()


def _params(model, **given) -> dict[str, np.ndarray]:
    """Every SMPL-X parameter as a float32 1-D array, zeros unless given."""
    params = {key: value[0].numpy() for key, value in F.zero_params(model).items()}
    params.update({key: np.asarray(value, np.float32).reshape(-1) for key, value in given.items()})
    return params


def _camera(size: int = 512, focal: float = 1.3) -> np.ndarray:
    return np.array([[focal * size, 0.0, size / 2], [0.0, focal * size, size / 2], [0.0, 0.0, 1.0]])


# --- building blocks ---------------------------------------------------------------------------------


def test_forward_kinematics_matches_lbs(model):
    rng = np.random.default_rng(1)
    pose = torch.as_tensor(rng.normal(0.0, 0.4, (55, 3)), dtype=torch.float32)
    rest = model.v_template.new_tensor(rng.normal(0.0, 0.3, (55, 3)))
    joints, transforms = F.ForwardKinematics(model.parents.numpy())(pose, rest)
    expected_joints, expected_transforms, _ = joint_transforms(pose[None], rest[None], model.parents)
    assert torch.allclose(joints, expected_joints[0], atol=1e-5)
    assert torch.allclose(transforms, expected_transforms[0, :, :3, :], atol=1e-5)


def test_body_points_match_body_model(model):
    rng = np.random.default_rng(2)
    pose = random_plausible_pose(rng, spread=0.7, max_yaw=3.0)
    params = _params(model, **{k: v for k, v in pose.items() if k != "transl"}, transl=[0.3, -0.2, -2.5],
                     betas=rng.normal(0, 1, model.num_betas), expression=rng.uniform(0, 0.5, model.num_expression))
    ids = np.array([0, 17, 4000, 9000, model.num_vertices - 1])
    joints, vertices = F.BodyPoints(model, ids)({k: torch.as_tensor(v)[None] for k, v in params.items()})
    expected = model(**{k: torch.as_tensor(v)[None] for k, v in params.items()})
    assert torch.allclose(joints, expected.joints[0], atol=1e-5)
    assert torch.allclose(vertices, expected.vertices[0, ids], atol=1e-5)
    # An inset moves the rest-pose vertex inwards along its normal by exactly that distance.
    rest = {k: torch.as_tensor(v)[None] for k, v in _params(model).items()}
    _, inset = F.BodyPoints(model, ids, np.full(len(ids), 0.02))(rest)
    _, plain = F.BodyPoints(model, ids)(rest)
    assert np.allclose((plain - inset).norm(dim=1).numpy(), 0.02, atol=1e-6)


def test_body_points_apply_pose_correctives():
    """A user SMPL-X has pose-corrective blend shapes; the fitter's forward must include them too."""
    model = BodyModel.load()
    generator = torch.Generator().manual_seed(4)
    model.smplx.posedirs = 1e-3 * torch.randn(model.smplx.posedirs.shape, generator=generator)
    model._has_pose_correctives = True
    params = _params(model, body_pose=0.3 * torch.randn(63, generator=generator), transl=[0.0, 0.0, -2.0])
    ids = np.array([5, 3000, 12000])
    _, vertices = F.BodyPoints(model, ids)({k: torch.as_tensor(v)[None] for k, v in params.items()})
    expected = model(**{k: torch.as_tensor(v)[None] for k, v in params.items()}).vertices[0, ids]
    plain = BodyModel.load()(**{k: torch.as_tensor(v)[None] for k, v in params.items()}).vertices[0, ids]
    assert (expected - plain).abs().max() > 1e-3  # the correctives matter here
    assert torch.allclose(vertices, expected, atol=1e-5)


def test_keypoint_index_maps_joints_landmarks_and_fingertips(model):
    surface = F.model_surface_points(model)
    index = F.keypoint_index(FITTING_NAMES, surface)
    where = dict(zip(FITTING_NAMES, index))
    assert where["left_wrist"] == JOINT_INDEX["left_wrist"]
    assert where["right_index2"] == JOINT_INDEX["right_index2"]
    assert where["nose"] == len(JOINT_NAMES) + surface.names.index("nose")
    assert where["left_index"] == len(JOINT_NAMES) + surface.names.index("left_index_tip")  # fingertip
    assert where["right_big_toe"] == len(JOINT_NAMES) + surface.names.index("right_big_toe")
    # The embedded CC0 model carries the 51 static iBUG points; the jaw contour (17 points) is not static.
    assert where["nose1"] == len(JOINT_NAMES) + surface.names.index("nose1") and where["right_contour_1"] == -1
    assert (index >= 0).sum() == 61 + 51


def test_face_landmarks_of_a_user_smplx_are_used():
    """A model file with SMPL-X's 51-point face embedding adds those landmarks, and frees jaw/expression."""
    from types import SimpleNamespace

    from core.prep.landmarks import IBUG68_SMPLX_NAMES

    faces = torch.arange(306).reshape(102, 3)
    bary = torch.rand(51, 3)
    fake = SimpleNamespace(
        landmark_names=("nose",), landmark_vertex_ids=torch.tensor([7]), faces=faces,
        smplx=SimpleNamespace(lmk_faces_idx=torch.arange(51) * 2, lmk_bary_coords=bary / bary.sum(1, keepdim=True)),
    )
    surface = F.model_surface_points(fake)
    assert surface.names == ("nose", *IBUG68_SMPLX_NAMES[17:])
    assert np.array_equal(surface.vertex_ids[0], [7, 7, 7]) and np.array_equal(surface.vertex_ids[1], [0, 1, 2])
    assert np.array_equal(surface.vertex_ids[2], [6, 7, 8])  # face 2, the second point's
    index = F.keypoint_index(["right_eye_brow1", "right_contour_1", "left_mouth_1"], surface)
    assert index.tolist() == [len(JOINT_NAMES) + 1, -1, len(JOINT_NAMES) + 1 + IBUG68_SMPLX_NAMES[17:].index("left_mouth_1")]
    assert [name for name, _ in F.fit_stages(surface)] == list(F.STAGES)
    assert "jaw_pose" in F.fit_stages(surface)[-1][1] and "expression" in F.fit_stages(surface)[-1][1]
    assert "jaw_pose" not in F.fit_stages(F.SurfacePoints(("nose",), surface.vertex_ids[:1], surface.weights[:1]))[-1][1]


def test_projection_agrees_with_mesh_renderer(model):
    """Visible vertices projected by the fitter's camera land on pixels the mesh renderer covers."""
    size, K = 256, _camera(256)
    params = _params(model, global_orient=[0.1, 0.6, 0.0], transl=[0.1, 0.1, -3.0])
    with torch.no_grad():
        vertices = model(**{k: torch.as_tensor(v)[None] for k, v in params.items()}).vertices[0]
    renderer = MeshRenderer()
    mask = renderer.render(vertices.numpy(), model.faces.numpy(), F.PHOTO_VIEWMAT, K, size, size)["mask"]
    visible = renderer.visible_vertices(vertices.numpy(), model.faces.numpy(), F.PHOTO_VIEWMAT, K, size, size)
    pixels = np.floor(F.project(vertices[visible], torch.as_tensor(K, dtype=torch.float32)).numpy()).astype(int)
    assert visible.sum() > 1000
    assert mask[pixels[:, 1], pixels[:, 0]].mean() > 0.98
    # A mirrored camera (the classic sign slip) would put them elsewhere.
    mirrored = size - 1 - pixels[:, 0]
    assert mask[pixels[:, 1], mirrored].mean() < 0.8


def test_silhouette_inside_ignores_what_lies_beyond_the_body():
    """The share of the body's pixels inside the person mask: clothes reaching beyond the body leave it at
    1 (while they lower the IoU), a body poking out of the mask lowers it; only ``valid`` pixels count."""
    body = np.zeros((10, 10))
    body[:, 4:] = 1.0
    dressed = np.zeros((10, 10))
    dressed[:, 2:] = 1.0
    assert silhouette_inside(body, dressed) == 1.0 and silhouette_iou(body, dressed) == pytest.approx(60 / 80)
    holed = dressed.copy()
    holed[:5, 6:] = 0.0  # 20 of the body's 60 pixels outside the mask
    assert silhouette_inside(body, holed) == pytest.approx(40 / 60)
    valid = np.ones((10, 10), bool)
    valid[:5] = False  # the rows with the hole are outside the photo
    assert silhouette_inside(body, holed, valid) == 1.0
    assert silhouette_inside(np.zeros((4, 4)), np.ones((4, 4))) == 0.0  # no body, nothing inside


def test_silhouette_gaussians_match_the_mesh_outline(model):
    """The fitter's Gaussian silhouette (alpha > 0.5) is a close stand-in for the mesh's own mask."""
    rng = np.random.default_rng(3)
    pose = random_plausible_pose(rng, spread=0.5)
    params = _params(model, **{k: v for k, v in pose.items() if k != "transl"}, transl=[0.0, 0.1, -3.2])
    size, K = 160, _camera(160)
    mesh_mask = render_geometry(model, params, K, size, size)["mask"]
    weights = F.FitWeights()
    ids = F.silhouette_vertex_ids(model.v_template.numpy())
    _, points = F.BodyPoints(model, ids, np.full(len(ids), weights.silhouette_inset))(
        {k: torch.as_tensor(v)[None] for k, v in params.items()})
    alpha = F.silhouette_alpha(points, torch.as_tensor(K, dtype=torch.float32), size, size,
                               weights.silhouette_sigma, weights.silhouette_opacity)
    assert 1500 < len(ids) < 3000
    assert silhouette_iou(alpha.numpy(), mesh_mask) > 0.88


@pytest.mark.parametrize("yaw", [0.3, np.pi - 0.3])
def test_initial_camera_from_the_torso(model, yaw):
    """Depth from the torso's length, facing from the shoulders' order (seen from behind when swapped)."""
    K = _camera()
    truth = _params(model, global_orient=[0.0, yaw, 0.0], transl=[0.2, 0.1, -3.0])
    names = ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    pixels = F.project_keypoints(model, truth, names, K)
    with torch.no_grad():
        joints = model().joints[0]
    orient, transl = F.initial_camera(joints[[JOINT_INDEX[n] for n in names]].numpy(), pixels, np.ones(4), K,
                                      300.0, (512, 512))
    assert abs(transl[2] - (-3.0)) < 0.3  # the turn shortens the shoulders, not the torso's length
    facing_away = abs(abs(orient[1]) - np.pi) < 1e-6
    assert facing_away == (yaw > np.pi / 2)


def test_fit_recovers_a_synthetic_pose(model):
    """Fit a rendered body in a known pose from its projected keypoints (1 px noise) and mask.

    The pose keeps its limb bends visible in the image (a 3/4 view, raised forearm, stepping leg):
    from one view, a bend towards the camera is only seen as foreshortening and cannot be recovered
    exactly. Zero betas, because body size and camera distance trade off in one photo.
    """
    body = np.zeros((21, 3), np.float32)
    for name, rotation in {"left_shoulder": (-1.4, 0, -0.4), "left_elbow": (0, -1.3, 0),
                           "right_shoulder": (0, 0, 1.1), "right_elbow": (0, 0.9, 0),
                           "left_hip": (-0.7, 0, 0.1), "left_knee": (1.2, 0, 0),
                           "right_hip": (0, 0, -0.15), "right_knee": (0.3, 0, 0)}.items():
        body[JOINT_INDEX[name] - 1] = rotation
    truth = _params(model, body_pose=body, global_orient=[0.0, 0.9, 0.0], transl=[0.05, 0.1, -3.2])
    size, K = 512, _camera()
    mask = render_geometry(model, truth, K, size, size)["mask"]
    pixels = F.project_keypoints(model, truth, FITTING_NAMES, K)
    conf = np.where(np.isfinite(pixels[:, 0]), 0.9, 0.0).astype(np.float32)
    pixels = np.nan_to_num(pixels) + np.random.default_rng(0).normal(0.0, 1.0, pixels.shape)

    result = F.fit_smplx(model, FITTING_NAMES, pixels, conf, mask, K)

    assert result.metrics["keypoint_error_pct"] < 1.0
    fitted_mask = render_geometry(model, result.params, K, size, size)["mask"]
    assert silhouette_iou(fitted_mask, mask) > 0.9
    assert np.abs(result.params["transl"] - truth["transl"]).max() < 0.03  # metres
    with torch.no_grad():
        true_joints, fit_joints = (model(**{k: torch.as_tensor(v)[None] for k, v in p.items()}).joints[0].numpy()
                                   for p in (truth, result.params))

    def direction(joints, start, end):
        bone = joints[JOINT_INDEX[end]] - joints[JOINT_INDEX[start]]
        return bone / np.linalg.norm(bone)

    def degrees(a, b):
        return np.degrees(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0)))

    for side in ("left", "right"):
        for upper, middle, lower in (("shoulder", "elbow", "wrist"), ("hip", "knee", "ankle")):
            names = [f"{side}_{upper}", f"{side}_{middle}", f"{side}_{lower}"]
            true_bend = degrees(direction(true_joints, *names[:2]), direction(true_joints, *names[1:]))
            fit_bend = degrees(direction(fit_joints, *names[:2]), direction(fit_joints, *names[1:]))
            assert abs(fit_bend - true_bend) < 20.0, (names[1], true_bend, fit_bend)  # elbows and knees
        # Shoulders: the upper arm points where it should.
        arm = [f"{side}_shoulder", f"{side}_elbow"]
        assert degrees(direction(true_joints, *arm), direction(fit_joints, *arm)) < 20.0, arm



def test_loose_clothes_do_not_widen_the_fitted_body(model):
    """The person mask of a dressed photo is wider than the bare body inside it. Fitted to exact keypoints
    and a mask 10 px wider all round, prep's fit (``PrepConfig.silhouette_uncovered``: mask pixels the body
    leaves uncovered count 0.2) keeps the true shape closer than a symmetric silhouette term, which inflates
    the body into the clothes."""
    from scipy.ndimage import binary_dilation

    truth = _params(model, body_pose=np.zeros((21, 3), np.float32), global_orient=[0.0, 0.3, 0.0],
                    transl=[0.0, 0.1, -3.2])
    size, K = 512, _camera()
    mask = binary_dilation(render_geometry(model, truth, K, size, size)["mask"] > 0.5, iterations=10)
    pixels = F.project_keypoints(model, truth, FITTING_NAMES, K)
    conf = np.where(np.isfinite(pixels[:, 0]), 0.9, 0.0).astype(np.float32)
    pixels = np.nan_to_num(pixels)

    def shape_error(weights: F.FitWeights) -> float:
        betas = F.fit_smplx(model, FITTING_NAMES, pixels, conf, mask.astype(np.float32), K,
                            weights=weights).params["betas"]
        with torch.no_grad():
            fitted = model(betas=torch.as_tensor(betas)[None]).vertices[0]
            rest = model().vertices[0]
        return float((fitted - rest).norm(dim=-1).mean())

    weights = F.prep_fit_weights(Config().prep)
    assert weights.silhouette_uncovered < 1.0 and F.FitWeights().silhouette_uncovered == 1.0
    prep, symmetric = shape_error(weights), shape_error(F.FitWeights())
    assert prep < 0.7 * symmetric, (prep, symmetric)


def test_face_points_turn_the_head_and_open_the_jaw(model):
    """A head turned and tilted on the neck with the jaw open, seen from the front, keypoints with 2 px
    detector noise: the 51 face points hold the head's orientation closer than the five head points
    alone (``face_keypoints=0``: nose, eyes, ears), and they alone see the jaw."""
    body = np.zeros((21, 3), np.float32)
    body[JOINT_INDEX["neck"] - 1] = (0.15, 0.35, 0.0)
    body[JOINT_INDEX["head"] - 1] = (0.2, 0.35, 0.15)
    truth = _params(model, body_pose=body, jaw_pose=[0.25, 0.0, 0.0], transl=[0.0, 0.25, -2.6])
    size, K = 512, _camera()
    mask = render_geometry(model, truth, K, size, size)["mask"]
    clean = F.project_keypoints(model, truth, FITTING_NAMES, K)
    conf = np.where(np.isfinite(clean[:, 0]), 0.9, 0.0).astype(np.float32)

    def head_rotation(params):
        with torch.no_grad():
            out = model(**{k: torch.as_tensor(v)[None] for k, v in params.items()})
        return out.joint_transforms[0, JOINT_INDEX["head"], :3, :3].numpy().astype(np.float64)

    def degrees(a, b):
        return np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)))

    with_face = F.FitWeights().face_keypoints
    head, jaw = {with_face: [], 0.0: []}, {with_face: [], 0.0: []}
    for seed in (1, 2):
        pixels = np.nan_to_num(clean) + np.random.default_rng(seed).normal(0.0, 2.0, clean.shape)
        for weight in head:
            fit = F.fit_smplx(model, FITTING_NAMES, pixels, conf, mask, K, weights=F.FitWeights(face_keypoints=weight))
            head[weight].append(degrees(head_rotation(fit.params), head_rotation(truth)))
            jaw[weight].append(float(fit.params["jaw_pose"][0]))
    head, jaw = {w: np.mean(v) for w, v in head.items()}, {w: np.mean(v) for w, v in jaw.items()}
    assert head[with_face] < 5.0 and head[with_face] < head[0.0], head
    assert abs(jaw[with_face] - 0.25) < 0.1 and jaw[0.0] < 0.1, jaw


def _bone_directions(joints: np.ndarray, rng: np.random.Generator, noise_deg: float) -> BoneDirections:
    """``BONE_PAIRS`` of world ``joints [55, 3]`` in the photo camera's axes, each turned by ~``noise_deg``."""
    vectors = np.array([joints[JOINT_INDEX[b]] - joints[JOINT_INDEX[a]] for a, b in BONE_PAIRS]) * (1.0, -1.0, -1.0)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors += rng.normal(0.0, np.radians(noise_deg) / np.sqrt(2.0), vectors.shape)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return BoneDirections(BONE_PAIRS, vectors.astype(np.float32), np.full(len(BONE_PAIRS), 0.9, np.float32))


def test_bone_directions_resolve_what_keypoints_cannot(model):
    """Forearms and a shin pointing at the camera in a frontal photo: their 2D keypoints barely move with
    the bend, and bending away from the camera projects almost the same. With BlazePose-like 3D bone
    directions (8 degrees of noise) every observed bone comes back within 15 degrees."""
    body = np.zeros((21, 3), np.float32)
    for name, rotation in {"left_shoulder": (0, 0, -1.2), "left_elbow": (0, -1.4, 0),
                           "right_shoulder": (0, 0, 1.2), "right_elbow": (0, 1.4, 0),
                           "left_hip": (-1.0, 0, 0.1), "left_knee": (1.3, 0, 0)}.items():
        body[JOINT_INDEX[name] - 1] = rotation
    truth = _params(model, body_pose=body, transl=[0.0, 0.2, -3.2])
    size, K = 512, _camera()
    mask = render_geometry(model, truth, K, size, size)["mask"]
    rng = np.random.default_rng(3)
    pixels = F.project_keypoints(model, truth, FITTING_NAMES, K)
    conf = np.where(np.isfinite(pixels[:, 0]), 0.9, 0.0).astype(np.float32)
    pixels = np.nan_to_num(pixels) + rng.normal(0.0, 1.0, pixels.shape)
    with torch.no_grad():
        true_joints = model(**{k: torch.as_tensor(v)[None] for k, v in truth.items()}).joints[0].numpy()
    bones = _bone_directions(true_joints, rng, noise_deg=8.0)

    result = F.fit_smplx(model, FITTING_NAMES, pixels, conf, mask, K, bones=bones)

    with torch.no_grad():
        fit_joints = model(**{k: torch.as_tensor(v)[None] for k, v in result.params.items()}).joints[0].numpy()
    truth_dirs = _bone_directions(true_joints, rng, noise_deg=0.0).directions
    fit_dirs = _bone_directions(fit_joints, rng, noise_deg=0.0).directions
    angles = np.degrees(np.arccos(np.clip((truth_dirs * fit_dirs).sum(1), -1.0, 1.0)))
    assert angles.max() < 15.0, [f"{a}-{b} {angle:.1f}" for (a, b), angle in zip(BONE_PAIRS, angles)]
    assert result.metrics["keypoint_error_pct"] < 1.0


def test_direction_term_measures_the_angle(model):
    """``1 - cos`` per bone in the camera's axes: 0 when the model's bone agrees, 2 when it is reversed."""
    surface = F.model_surface_points(model)
    pairs = (("left_shoulder", "left_elbow"),)
    with torch.no_grad():
        joints = model().joints[0]
    bone = (joints[JOINT_INDEX["left_elbow"]] - joints[JOINT_INDEX["left_shoulder"]]).numpy() * (1.0, -1.0, -1.0)
    bone /= np.linalg.norm(bone)
    for sign, expected in ((1.0, 0.0), (-1.0, 2.0)):
        targets = F.direction_targets(BoneDirections(pairs, (sign * bone[None]).astype(np.float32),
                                                     np.ones(1, np.float32)), surface)
        objective = F.FitObjective.__new__(F.FitObjective)
        objective.directions = targets
        assert float(objective.direction_term(joints)) == pytest.approx(expected, abs=1e-5)
    unseen = F.direction_targets(BoneDirections(pairs, np.zeros((1, 3), np.float32), np.zeros(1, np.float32)),
                                 surface)
    assert len(unseen.conf) == 0


def test_cut_off_limbs_are_down_weighted():
    names = list(FITTING_NAMES)
    xy = np.zeros((len(names), 2), np.float32)
    conf = np.ones(len(names), np.float32)
    at = {name: k for k, name in enumerate(names)}
    xy[:] = (200.0, 200.0)
    xy[at["left_knee"]] = (210.0, 420.0)
    xy[at["left_ankle"]] = (215.0, 478.0)  # 2 px above the bottom of a 480 px photo
    xy[at["right_ankle"]] = (180.0, 400.0)
    warnings = ["person is cut off at the bottom"]
    weighted = downweight_cut_off_limbs(names, xy, conf, warnings, (640, 480), person_height=400.0)
    assert weighted[at["left_ankle"]] == pytest.approx(CUT_OFF_WEIGHT)
    assert weighted[at["left_heel"]] == pytest.approx(CUT_OFF_WEIGHT)  # distal to the cut point
    assert weighted[at["left_knee"]] == 1.0 and weighted[at["right_ankle"]] == 1.0
    assert weighted[at["left_wrist"]] == 1.0
    unchanged = downweight_cut_off_limbs(names, xy, conf, [], (640, 480), person_height=400.0)
    assert np.array_equal(unchanged, conf)


def test_debug_image_draws_keypoints_and_outlines():
    image = np.full((64, 64, 3), 0.5, np.float32)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1.0
    part_seg = np.zeros((64, 64, 3), np.float32)
    keypoints = np.array([[20.5, 20.5, 1.0], [40.5, 40.5, 0.0]], np.float32)
    projected = np.array([[30.5, 30.5], [np.nan, np.nan]], np.float32)
    picture = debug_image(image, mask, mask, part_seg, keypoints, projected, caption="x")
    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8
    assert tuple(picture[30, 30]) == FITTED  # the fitted reprojection's dot
    assert np.abs(picture[40, 40].astype(int) - picture[35, 35].astype(int)).max() < 2  # missing: no mark


# --- the pipeline on a real photo --------------------------------------------------------------------


@pytest.fixture(scope="module")
def messi_photo(tmp_path_factory) -> Path:
    plain, packed = OPENCV_DATA / "messi5.jpg", OPENCV_DATA / "messi5.jpg.gz"
    out = tmp_path_factory.mktemp("photo") / "messi5.jpg"
    if plain.exists():
        shutil.copyfile(plain, out)
    elif packed.exists():
        with gzip.open(packed, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        pytest.skip(f"{plain} not found: install the Debian package opencv-doc (apt-get install opencv-doc)")
    return out


@pytest.fixture(scope="module")
def messi_run(messi_photo, model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("subjects") / "messi"
    calls = []
    started = time.perf_counter()
    subject = prepare_subject(messi_photo, folder, Config(), debug=True, model=model,
                              progress=lambda stage, fraction: calls.append((stage, fraction)))
    return {"subject": subject, "folder": folder, "calls": calls, "seconds": time.perf_counter() - started}


def test_messi_subject_folder_is_complete(messi_run):
    folder, subject = messi_run["folder"], messi_run["subject"]
    for name in SUBJECT_FILES + (DEBUG_PNG,):
        assert (folder / name).is_file(), name
    from core.subject import Subject

    loaded = Subject.load(folder)
    size = Config().prep.crop_size
    assert loaded.image.shape == (size, size, 3) and loaded.mask.shape == (size, size)
    for key in ("betas", "expression", "global_orient", "body_pose", "left_hand_pose", "right_hand_pose",
                "jaw_pose", "leye_pose", "reye_pose", "transl"):
        assert loaded.smplx[key].dtype == np.float32 and loaded.smplx[key].ndim == 1, key
    assert loaded.smplx["body_pose"].shape == (63,)
    assert loaded.keypoints.shape == (len(FITTING_NAMES), 3) and loaded.keypoint_names == list(FITTING_NAMES)
    assert set(loaded.geometry) == {"depth", "normal", "part_seg", "position"}
    info = json.loads((folder / "subject.json").read_text())
    assert info["photo_hash"] == subject.info["photo_hash"] and info["body_model"]["source"] == "embedded"
    assert info["body_model"]["num_vertices"] == 13718
    stages = {stage for stage, _ in messi_run["calls"]}
    assert {"perceive", "fit body", "geometry", "done"} <= stages
    assert all(0.0 <= fraction <= 1.0 for _, fraction in messi_run["calls"])


def test_messi_fit_meets_targets(messi_run, model):
    """Recomputed from the saved files: keypoint error <= 3 % of the height; the fitted body fills the
    person mask (IoU >= 0.70) and stays inside it (>= 94 % of its pixels)."""
    from core.subject import Subject

    subject = Subject.load(messi_run["folder"])
    body = subject.geometry["depth"] > 0
    iou = silhouette_iou(body, subject.mask, _valid_pixels(subject))
    projected = F.project_keypoints(model, subject.smplx, subject.keypoint_names, subject.K)
    height = F.person_height_px(subject.mask, subject.keypoints[:, 2], subject.keypoints[:, :2])
    metrics = F.fit_metrics(projected, subject.keypoints[:, :2], subject.keypoints[:, 2], height,
                            subject.keypoint_names)
    assert metrics["keypoints_used"] > 40
    assert metrics["keypoint_error_pct"] <= 3.0
    # The face points open the jaw and move the face; the facial actions stay in their [0, 1] range.
    assert model.expression_range == (0.0, 1.0) and subject.smplx["expression"].min() > -0.02
    assert metrics["body_keypoint_error_pct"] <= 4.0  # hips/knees are where clothes and the mask disagree
    inside = silhouette_inside(body, subject.mask, _valid_pixels(subject))
    # Issue 3 asked for IoU >= 0.80 with the person mask, which is the dressed person. The bare body in
    # messi's loose kit reached it only inflated into the clothes (betas[2] 2.3, a paunch from the side) and
    # still 8 % of its pixels outside them (IoU 0.818, inside 0.922). With prep.silhouette_uncovered = 0.2:
    # 0.745 and 0.959; against ground truth (benchmarks/fit_truth.py) that shape is the closer one.
    assert iou >= 0.70 and inside >= 0.94, (iou, inside)
    assert abs(iou - subject.info["fit"]["silhouette_iou"]) < 1e-6
    assert abs(inside - subject.info["fit"]["silhouette_inside"]) < 1e-6
    assert subject.info["fit"]["time_s"] < 60.0  # 20 s target on an idle 2-core machine; CI is shared


def test_messi_geometry_targets_are_consistent(messi_run, model):
    from core.subject import Subject

    subject = Subject.load(messi_run["folder"])
    geometry = subject.geometry
    body = geometry["depth"] > 0
    assert 0.05 < body.mean() < 0.6
    depth = geometry["depth"][body]
    assert abs(np.median(depth) + subject.smplx["transl"][2]) < 0.5  # camera z ~ the body's distance
    normals = geometry["normal"][body]
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-3)
    assert (normals[:, 2] < 0).mean() > 0.9  # surfaces seen from the camera face it (-z)
    colours = geometry["part_seg"][body]
    distance = np.abs(colours[:, None, :] - PART_PALETTE[None]).sum(-1).min(1)
    assert (distance < 1e-3).all()  # flat palette colours only
    assert np.allclose(geometry["part_seg"][~body], 0.0) and np.allclose(geometry["position"][~body], 0.0)
    positions = geometry["position"][body]
    assert positions[:, 1].max() - positions[:, 1].min() > 1.0  # canonical star pose: head to feet, metres
    assert np.abs(positions).max() < 1.5


def test_messi_debug_png(messi_run):
    picture = np.asarray(Image.open(messi_run["folder"] / DEBUG_PNG).convert("RGB"))
    image = np.asarray(Image.open(messi_run["folder"] / "image.png").convert("RGB"))
    assert picture.shape == image.shape
    assert (np.abs(picture.astype(int) - image.astype(int)).max(-1) > 30).mean() > 0.05  # overlay drawn
    assert (picture.reshape(-1, 3) == np.array(FITTED)).all(-1).sum() > 20  # fitted keypoints


def test_messi_second_call_uses_the_cache(messi_run, messi_photo, model):
    folder = messi_run["folder"]
    before = (folder / "subject.json").stat().st_mtime_ns
    first_picture = np.asarray(Image.open(folder / DEBUG_PNG))
    (folder / DEBUG_PNG).unlink()
    started = time.perf_counter()
    again = prepare_subject(messi_photo, folder, Config(), debug=True, model=model)
    assert again.info.get("cached") is True
    # Redrawn from the saved Subject alone (8-bit image and mask: rounding, an outline pixel moved here and there).
    redrawn = np.asarray(Image.open(folder / DEBUG_PNG))
    assert (np.abs(redrawn.astype(int) - first_picture.astype(int)).max(-1) > 3).mean() < 0.01
    assert time.perf_counter() - started < messi_run["seconds"] / 3
    assert (folder / "subject.json").stat().st_mtime_ns == before
    assert np.array_equal(again.smplx["body_pose"], messi_run["subject"].smplx["body_pose"])
    # Other prep settings, another person or another photo are not the same Subject.
    other = Config()
    other.prep.crop_margin = 0.2
    assert load_cached(folder, cache_key(messi_photo, other, None)) is None
    assert load_cached(folder, cache_key(messi_photo, Config(), 2)) is None
    assert load_cached(folder, cache_key(messi_photo, Config(), None)) is not None


def _valid_pixels(subject) -> np.ndarray:
    from core.prep.crop import Crop, crop_image

    width, height = (round(v * subject.info["photo_scale"]) for v in subject.info["photo_size"])
    return crop_image(np.ones((height, width), np.float32), Crop(**subject.info["crop"])) > 0.5


# --- the user's own mask and albedo (core.prep.supplied) ----------------------------------------------


def _grey_png(values: np.ndarray, path: Path) -> Path:
    Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)).save(path)
    return path


def test_supplied_mask_and_albedo_replace_prep_estimates(messi_photo, model, tmp_path):
    """A SAM-like mask (here mediapipe's, widened by 9 px, at half the photo's size: prep's own would differ)
    and an albedo image (a tinted copy of the photo, as an RGBA cut-out) become the Subject's mask and albedo;
    their bytes join the cache key."""
    import cv2

    from core.prep.crop import Crop, crop_image
    from core.prep.image_io import load_matching, load_photo
    from core.prep.perception import perceive_photo
    from core.prep.supplied import SuppliedMaps

    photo = load_photo(messi_photo)
    own = perceive_photo(photo, refine=None).mask
    widened = cv2.dilate((own > 0.5).astype(np.uint8), np.ones((19, 19), np.uint8)).astype(np.float32)
    width, height = photo.size
    mask_path = _grey_png(cv2.resize(widened, (width // 2, height // 2), interpolation=cv2.INTER_AREA),
                          tmp_path / "sam_mask.png")
    tint = np.array([0.9, 0.6, 0.3], np.float32)
    rgba = np.concatenate([photo.rgb * tint, np.where(widened[..., None] > 0.5, 1.0, 0.0)], axis=-1)
    albedo_path = tmp_path / "albedo.png"
    Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA").save(albedo_path)
    supplied = SuppliedMaps(mask_path, albedo_path)

    folder = tmp_path / "subject"
    subject = prepare_subject(messi_photo, folder, Config(), model=model, supplied=supplied)
    crop = Crop(**subject.info["crop"])
    want_mask = crop_image(load_matching(mask_path, (width, height), "mask").rgb.mean(axis=-1), crop)
    want_albedo = crop_image(load_matching(albedo_path, (width, height), "albedo").rgb, crop)
    assert np.abs(subject.mask - want_mask).max() < 1e-5
    assert np.abs(subject.albedo - want_albedo).max() < 1e-5
    default_mask = crop_image(own, crop) > 0.5
    assert (subject.mask > 0.5).sum() > 1.1 * default_mask.sum()  # the supplied one, not prep's

    key = cache_key(messi_photo, Config(), None, supplied)
    assert load_cached(folder, key) is not None and key["prep"]["supplied"].keys() == {"mask", "albedo"}
    Image.fromarray(np.round(photo.rgb * 255).astype(np.uint8)).save(albedo_path)  # another albedo
    assert load_cached(folder, cache_key(messi_photo, Config(), None, supplied)) is None
    assert "supplied" not in cache_key(messi_photo, Config(), None)["prep"]  # Subjects made without stay valid


def test_supplied_maps_are_found_beside_the_photo_unless_given(tmp_path):
    from core.prep.supplied import SuppliedMaps

    photo = tmp_path / "messi5.jpg"
    assert SuppliedMaps.for_photo(photo) == SuppliedMaps() and SuppliedMaps().described() == ""
    (tmp_path / "messi5.mask.png").write_bytes(b"")
    (tmp_path / "messi5.albedo.webp").write_bytes(b"")
    (tmp_path / "messi5.albedo.txt").write_bytes(b"")
    found = SuppliedMaps.for_photo(photo)
    assert found == SuppliedMaps(tmp_path / "messi5.mask.png", tmp_path / "messi5.albedo.webp")
    assert found.described() == "mask messi5.mask.png and albedo messi5.albedo.webp"
    given = SuppliedMaps.for_photo(photo, mask=tmp_path / "sam.png")
    assert given == SuppliedMaps(tmp_path / "sam.png", tmp_path / "messi5.albedo.webp")


@pytest.mark.parametrize("which, make, words", [
    ("mask", lambda p: _grey_png(np.ones((100, 100)) * np.arange(100)[:, None] / 99, p), "aspect ratio"),
    ("mask", lambda p: _grey_png(np.zeros((171, 274)), p), "no person"),
    ("mask", lambda p: _grey_png(np.ones((342, 548)), p), "inverted"),
    ("mask", lambda p: p, "not found"),
    ("albedo", lambda p: p.write_bytes(b"not a picture") and p, "image"),
])
def test_bad_supplied_maps_fail_in_one_line_before_prep_writes(messi_photo, tmp_path, which, make, words):
    from core.prep.supplied import SuppliedMaps

    path = make(tmp_path / f"{which}.png")
    out = tmp_path / "subject"
    with pytest.raises(UserError) as err:
        prepare_subject(messi_photo, out, supplied=SuppliedMaps(**{which: path}))
    _assert_one_line_error(err.value, path)
    assert words in str(err.value).lower()
    assert not out.exists()


# --- bad input -------------------------------------------------------------------------------------


def _assert_one_line_error(err: UserError, path: Path) -> None:
    text = str(err)
    assert "\n" not in text and str(path) in text


def test_not_an_image_writes_nothing(tmp_path):
    photo = tmp_path / "notes.jpg"
    photo.write_text("this is not a photo")
    out = tmp_path / "subject"
    with pytest.raises(UserError) as err:
        prepare_subject(photo, out)
    _assert_one_line_error(err.value, photo)
    assert not out.exists()


def test_photo_without_a_person_writes_nothing(tmp_path, model):
    rows, cols = np.mgrid[0:256, 0:320]
    pixels = np.stack([rows, cols, (rows + cols) // 2], axis=-1).astype(np.uint8)
    photo = tmp_path / "wall.png"
    Image.fromarray(pixels).save(photo)
    out = tmp_path / "subject"
    with pytest.raises(UserError, match="no person") as err:
        prepare_subject(photo, out, model=model)
    _assert_one_line_error(err.value, photo)
    assert not out.exists() and list(tmp_path.iterdir()) == [photo]


def test_refuses_to_replace_a_folder_that_is_not_a_subject(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(photo)
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(UserError, match="not a Subject"):
        prepare_subject(photo, precious)
    assert (precious / "thesis.tex").read_text() == "keep me"

