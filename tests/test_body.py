"""Body model layer: the embedded CC0 SMPL-X-format model, loading/validation, forward kinematics,
skinning of arbitrary points, diffused skinning weights, subdivision, star pose."""
from __future__ import annotations

import os
import shutil
import zipfile

import numpy as np
import pytest
import smplx
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from core.body import (
    EMBEDDED_MODEL_PATH, FACE_PARTS, LANDMARK_NAMES, MODEL_ENV_VAR, PARENTS, PART_NAMES, PART_PALETTE, BodyModel,
    build_weight_volume, diffused_weights, nearest_vertex_weights, skin_points, star_pose, refine_long_edges,
    subdivide, subdivide_to_spacing, unique_edges,
)
from core.body.parts import JOINT_TO_PART, PART_INDEX
from core.body.skeleton import JOINT_INDEX, SMPLX_LANDMARK_VERTEX_IDS, SMPLX_NUM_VERTICES
from core.errors import UserError


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return BodyModel(EMBEDDED_MODEL_PATH)


@pytest.fixture(scope="module")
def rest(body):
    with torch.no_grad():
        return body()


def _body_pose(**joints) -> torch.Tensor:
    """``body_pose [1, 63]`` with the given joints' axis-angle vectors."""
    pose = torch.zeros(1, 63)
    for name, rotvec in joints.items():
        i = JOINT_INDEX[name] - 1
        pose[0, 3 * i:3 * i + 3] = torch.tensor(rotvec, dtype=torch.float32)
    return pose


# ---------------------------------------------------------------------------------------------
# The embedded model


def test_embedded_model_layout(body):
    assert body.source == "embedded" and body.path == EMBEDDED_MODEL_PATH
    assert (body.num_vertices, body.num_joints, body.num_betas, body.num_expression) == (13718, 55, 10, 52)
    assert body.faces.dtype == torch.int64 and body.faces.shape[1] == 3
    assert 0 <= int(body.faces.min()) and int(body.faces.max()) < body.num_vertices
    assert body.parents.tolist() == list(PARENTS)
    assert torch.allclose(body.lbs_weights.sum(1), torch.ones(body.num_vertices), atol=1e-5)
    assert torch.allclose(body.j_regressor.sum(1), torch.ones(55), atol=1e-4)
    assert body.landmark_names == LANDMARK_NAMES
    assert int(body.landmark_vertex_ids.max()) < body.num_vertices
    assert set(body.part_labels.tolist()) == set(range(len(PART_NAMES)))  # every part is present
    assert "mouthSmileLeft" in body.expression_names and "jawOpen" in body.expression_names
    assert not body.has_pose_correctives
    assert EMBEDDED_MODEL_PATH.stat().st_size < 8e6


def test_embedded_model_has_the_51_face_landmarks_on_the_face(body):
    """tools/face_landmark_embedding.py put SMPL-X's static iBUG points 17..67 on the template: on the
    front of the head, brows over eyes over nose tip over lips, and mirror pairs across the face."""
    from core.prep.landmarks import IBUG68_SMPLX_NAMES

    faces_idx, bary = body.smplx.lmk_faces_idx.long(), body.smplx.lmk_bary_coords
    assert faces_idx.shape == (51,) and bary.shape == (51, 3)
    assert torch.allclose(bary.sum(1), torch.ones(51), atol=1e-5) and float(bary.min()) >= 0.0
    points = (bary[:, :, None] * body.v_template[body.faces[faces_idx]]).sum(1).numpy()  # [51, 3]
    at = dict(zip(IBUG68_SMPLX_NAMES[17:], points))
    assert np.isin(body.part_labels[body.faces[faces_idx]].numpy(), FACE_PARTS).all()
    ears = body.v_template[body.landmark_vertex_ids[[LANDMARK_NAMES.index("left_ear"),
                                                      LANDMARK_NAMES.index("right_ear")]]].numpy()
    assert (points[:, 2] > ears[:, 2].max() + 0.03).all()  # in front of the ears
    height = [at[name][1] for name in ("right_eye_brow3", "right_eye2", "nose4", "mouth_top", "mouth_bottom")]
    assert all(upper > lower for upper, lower in zip(height, height[1:])), height
    assert at["nose4"][2] == points[:, 2].max()  # the nose tip is the most forward point
    for right, left in (("right_eye1", "left_eye1"), ("right_mouth_1", "left_mouth_1"),
                        ("right_eye_brow1", "left_eye_brow1"), ("right_nose_1", "left_nose_1")):
        assert at[right][0] < -0.003 and at[left][0] > 0.003  # +x is the person's left
        mirrored = at[left] * np.array([-1.0, 1.0, 1.0])
        assert np.linalg.norm(at[right] - mirrored) < 0.006, (right, at[right], at[left])


def test_embedded_model_frame_and_proportions(body, rest):
    """SMPL-X frame: y up, the person faces +z, +x is the person's left; an adult height."""
    v = body.v_template.numpy()
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.55 < height < 1.85
    joints = dict(zip(body.joint_names, rest.joints[0].numpy()))
    marks = dict(zip(body.landmark_names, rest.landmarks[0].numpy()))
    assert joints["head"][1] > joints["neck"][1] > joints["spine3"][1] > joints["pelvis"][1] > joints["left_knee"][1]
    assert marks["nose"][2] > joints["head"][2] + 0.05  # the face looks towards +z
    assert marks["left_big_toe"][2] > marks["left_heel"][2] + 0.15
    for side, sign in (("left", 1.0), ("right", -1.0)):
        assert sign * joints[f"{side}_wrist"][0] > 0.5  # T-pose: arms along +-x
        assert abs(joints[f"{side}_wrist"][1] - joints[f"{side}_shoulder"][1]) < 0.03
        assert sign * marks[f"{side}_middle_tip"][0] > sign * joints[f"{side}_wrist"][0] + 0.12
        assert abs(marks[f"{side}_middle_tip"][1] - joints[f"{side}_wrist"][1]) < 0.03  # flat hand
        assert sign * marks[f"{side}_ear"][0] > 0.05 and sign * marks[f"{side}_eye"][0] > 0.01
        assert marks[f"{side}_heel"][1] < v[:, 1].min() + 0.03  # heels on the floor
    left = body.part_labels == PART_INDEX["left_hand"]
    assert (body.v_template[left, 0] > 0.5).all() and (body.v_template[body.part_labels == PART_INDEX["right_hand"], 0] < -0.5).all()


def test_zero_pose_is_the_template_and_betas_reshape(body):
    with torch.no_grad():
        out = body()
        assert torch.allclose(out.vertices[0], body.v_template, atol=1e-6)
        assert torch.allclose(out.shaped[0], body.v_template, atol=1e-6)
        taller = body(betas=torch.tensor([[2.0] + [0.0] * 9]))
    heights = [float(o.vertices[0, :, 1].max() - o.vertices[0, :, 1].min()) for o in (out, taller)]
    assert heights[1] > heights[0] + 0.02  # the first shape component is stature
    assert torch.allclose(taller.vertices, taller.shaped, atol=1e-6)  # zero pose: vertices = shaped
    # Joints follow the shape (regressed from shaped vertices) and stay inside the body.
    assert (taller.rest_joints[0, JOINT_INDEX["head"], 1] - out.rest_joints[0, JOINT_INDEX["head"], 1]) > 0.02


def test_elbow_bend_rotates_wrist_about_elbow(body, rest):
    angle = np.pi / 2
    with torch.no_grad():
        out = body(body_pose=_body_pose(left_elbow=(0.0, -angle, 0.0)))
    elbow, wrist = rest.joints[0, JOINT_INDEX["left_elbow"]].numpy(), rest.joints[0, JOINT_INDEX["left_wrist"]].numpy()
    rotation = Rotation.from_rotvec([0.0, -angle, 0.0]).as_matrix()
    expected = elbow + rotation @ (wrist - elbow)
    posed = out.joints[0, JOINT_INDEX["left_wrist"]].numpy()
    np.testing.assert_allclose(posed, expected, atol=1e-5)
    forearm = np.linalg.norm(wrist - elbow)
    assert abs(np.linalg.norm(posed - elbow) - forearm) < 1e-5
    assert posed[2] - elbow[2] > 0.95 * forearm  # -y bends the left forearm forward (+z)
    # Vertices rigidly attached to the forearm turn with it.
    rigid = (body.lbs_weights[:, JOINT_INDEX["left_elbow"]] > 0.9999).numpy()
    assert rigid.sum() > 50
    v = body.v_template.numpy()[rigid]
    np.testing.assert_allclose(out.vertices[0].numpy()[rigid], elbow + (v - elbow) @ rotation.T, atol=1e-5)
    # Nothing on the other side moves.
    right = (body.part_labels == PART_INDEX["right_hand"]).numpy()
    np.testing.assert_allclose(out.vertices[0].numpy()[right], body.v_template.numpy()[right], atol=1e-6)


def test_expression_moves_only_the_face_and_no_joint(body, rest):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = body(expression=torch.rand(1, body.num_expression, generator=generator))
    shift = (out.vertices[0] - rest.vertices[0]).norm(dim=1).numpy()
    moved = shift > 5e-4
    assert moved.sum() > 500
    face_or_neck = np.isin(body.part_labels.numpy(), [*FACE_PARTS, PART_INDEX["neck"]])
    assert face_or_neck[moved].all()
    assert shift[~face_or_neck].max() < 5e-4  # (jawOpen nudges a few neck-base vertices by 0.1 mm)
    assert (out.shaped[0, moved, 1] > rest.joints[0, JOINT_INDEX["neck"], 1] - 0.05).all()
    assert (out.rest_joints - rest.rest_joints).norm(dim=-1).max() < 1e-3


def test_smile_and_blink_move_the_right_places(body, rest):
    names = body.expression_names
    expression = torch.zeros(1, body.num_expression)
    expression[0, names.index("eyeBlinkLeft")] = 1.0
    with torch.no_grad():
        blink = body(expression=expression)
    shift = (blink.vertices[0] - rest.vertices[0]).norm(dim=1)
    eye = rest.landmarks[0, body.landmark_names.index("left_eye")]
    assert (rest.vertices[0, shift.argmax()] - eye).norm() < 0.02  # the eyelid moves most
    assert (rest.vertices[0, shift > 2e-3] - eye).norm(dim=1).max() < 0.07
    x = rest.vertices[0, :, 0]
    assert shift[x > 0].sum() > 5 * shift[x < 0].sum()  # mostly the person's left (+x) eye
    expression[0] = 0.0
    expression[0, names.index("mouthSmileLeft")] = expression[0, names.index("mouthSmileRight")] = 1.0
    with torch.no_grad():
        smile = body(expression=expression)
    corners = (smile.vertices[0] - rest.vertices[0]).norm(dim=1) > 5e-3
    assert corners.any() and (rest.vertices[0, corners, 1] < eye[1] - 0.03).all()  # around the mouth
    assert (smile.vertices[0, corners, 1] - rest.vertices[0, corners, 1]).mean() > 0  # corners go up


def test_jaw_opening_moves_chin_down(body, rest):
    with torch.no_grad():
        out = body(jaw_pose=torch.tensor([[0.35, 0.0, 0.0]]))
    jaw = rest.joints[0, JOINT_INDEX["jaw"]]
    chin = (body.lbs_weights[:, JOINT_INDEX["jaw"]] > 0.9) & (rest.vertices[0, :, 2] > jaw[2] + 0.03)
    assert chin.sum() > 20
    drop = (out.vertices[0, chin, 1] - rest.vertices[0, chin, 1])
    assert drop.mean() < -0.01 and drop.max() < 1e-3
    skull = body.lbs_weights[:, JOINT_INDEX["head"]] > 0.9999
    assert torch.allclose(out.vertices[0, skull], rest.vertices[0, skull], atol=1e-6)


def test_gradients_reach_every_input(body):
    generator = torch.Generator().manual_seed(1)
    widths = {"betas": 10, "global_orient": 3, "body_pose": 63, "left_hand_pose": 45, "right_hand_pose": 45,
              "jaw_pose": 3, "leye_pose": 3, "reye_pose": 3, "expression": 52, "transl": 3}
    inputs = {k: (0.1 * torch.randn(2, w, generator=generator)).requires_grad_() for k, w in widths.items()}
    out = body(**inputs)
    probe = torch.randn(out.vertices.shape, generator=generator)
    loss = (out.vertices * probe).sum() + out.joints.square().sum() + out.landmarks.sum() \
        + out.joint_transforms.square().sum()
    loss.backward()
    for name, value in inputs.items():
        assert value.grad is not None and torch.isfinite(value.grad).all(), name
        assert value.grad.abs().sum() > 0, name
        assert (value.grad.abs().sum(1) > 0).all(), name  # both batch items


def test_batch_and_array_inputs_and_bad_widths(body):
    pose = star_pose()  # numpy, unbatched
    with torch.no_grad():
        single = body(**pose)
        batched = body(body_pose=torch.from_numpy(pose["body_pose"]).expand(3, -1), jaw_pose=pose["jaw_pose"])
    assert batched.vertices.shape == (3, body.num_vertices, 3)
    assert torch.allclose(batched.vertices[2], single.vertices[0], atol=1e-6)
    with pytest.raises(ValueError, match="body_pose"):
        body(body_pose=torch.zeros(1, 60))


def test_smplx_loads_the_embedded_file_and_agrees_with_us(body):
    direct = smplx.create(str(EMBEDDED_MODEL_PATH), use_pca=False, flat_hand_mean=True, num_betas=10,
                          num_expression_coeffs=52)
    assert isinstance(direct, smplx.SMPLX)
    generator = torch.Generator().manual_seed(2)
    params = {"betas": torch.randn(1, 10, generator=generator), "expression": torch.rand(1, 52, generator=generator),
              "global_orient": 0.3 * torch.randn(1, 3, generator=generator),
              "body_pose": 0.3 * torch.randn(1, 63, generator=generator),
              "left_hand_pose": 0.3 * torch.randn(1, 45, generator=generator),
              "right_hand_pose": 0.3 * torch.randn(1, 45, generator=generator),
              "jaw_pose": 0.2 * torch.randn(1, 3, generator=generator), "leye_pose": torch.zeros(1, 3),
              "reye_pose": torch.zeros(1, 3), "transl": torch.tensor([[0.1, -0.2, 0.3]])}
    with torch.no_grad():
        theirs = direct(**params)
        ours = body(**params)
    assert torch.allclose(theirs.vertices, ours.vertices, atol=2e-5)
    assert torch.allclose(theirs.joints[:, :55], ours.joints, atol=2e-5)


def test_skin_points_with_nearest_weights_reproduces_lbs(body):
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        out = body(body_pose=0.4 * torch.randn(2, 63, generator=generator), transl=torch.tensor([[0.0, 1.0, 0.0]]),
                   betas=torch.randn(1, 10, generator=generator))
    shaped = out.shaped[0].numpy()
    weights = nearest_vertex_weights(shaped + 1e-5, shaped, body.lbs_weights.numpy())
    skinned = skin_points(torch.from_numpy(shaped), torch.from_numpy(weights), out.joint_transforms)
    assert torch.allclose(skinned, out.vertices, atol=1e-5)
    # A point rigidly attached to one joint follows that joint's transform.
    one_hot = torch.zeros(1, 55)
    one_hot[0, JOINT_INDEX["left_wrist"]] = 1.0
    wrist = out.rest_joints[:, JOINT_INDEX["left_wrist"]]
    assert torch.allclose(skin_points(wrist[:1], one_hot, out.joint_transforms), out.joints[:, None, JOINT_INDEX["left_wrist"]],
                          atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Diffused skinning weights


@pytest.fixture(scope="module")
def volume(body):
    return build_weight_volume(body.v_template.numpy(), body.lbs_weights.numpy(), resolution=64)


def test_diffused_weights_normalised_and_match_vertices_near_surface(body, volume):
    vertices, weights = body.v_template.numpy(), body.lbs_weights.numpy()
    assert volume.grid.shape == (55, 64, 64, 64)
    sampled = volume.sample(vertices).numpy()
    assert np.allclose(sampled.sum(1), 1.0, atol=1e-5) and sampled.min() >= 0.0
    assert (sampled.argmax(1) == weights.argmax(1)).mean() > 0.85
    # Where the weights are constant over a few centimetres, the volume reproduces them.
    # (Sampling at a vertex reads grid nodes that average vertices up to two cells, ~6 cm, away.)
    pairs = cKDTree(vertices).query_pairs(r=0.06, output_type="ndarray")
    pairs = np.concatenate([pairs, pairs[:, ::-1]])
    dominant, certain = weights.argmax(1), weights.max(1) > 0.99
    spoiled = (dominant[pairs[:, 0]] != dominant[pairs[:, 1]]) | ~certain[pairs[:, 1]]
    interior = certain & (np.bincount(pairs[spoiled, 0], minlength=len(vertices)) == 0)
    assert interior.sum() > 100
    assert np.abs(sampled[interior] - weights[interior]).sum(1).max() < 0.02
    assert np.median(np.abs(sampled - weights).sum(1)) < 0.15  # elsewhere blurred over a 3 cm cell


def test_diffused_weights_blend_between_the_legs_and_keep_mask(body, volume, rest):
    vertices, weights = body.v_template.numpy(), body.lbs_weights.numpy()
    between_knees = rest.joints[0, [JOINT_INDEX["left_knee"], JOINT_INDEX["right_knee"]]].mean(0).numpy()
    diffused = volume.sample(between_knees[None]).numpy()[0]
    nearest = nearest_vertex_weights(between_knees[None], vertices, weights)[0]
    left = diffused[[JOINT_INDEX["left_hip"], JOINT_INDEX["left_knee"]]].sum()
    right = diffused[[JOINT_INDEX["right_hip"], JOINT_INDEX["right_knee"]]].sum()
    assert abs(left - right) < 0.1 and left > 0.3 and right > 0.3  # a smooth, symmetric blend
    assert max(nearest[[JOINT_INDEX["left_hip"], JOINT_INDEX["left_knee"]]].sum(),
               nearest[[JOINT_INDEX["right_hip"], JOINT_INDEX["right_knee"]]].sum()) > 0.95  # nearest picks a side
    points = vertices[::50] + 0.01
    keep = body.part_labels.numpy()[::50] == PART_INDEX["left_hand"]
    own = weights[::50]
    out = diffused_weights(points, vertices, weights, keep_mask=keep, keep_weights=own, volume=volume)
    assert np.allclose(out.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[keep], own[keep], atol=1e-6)
    np.testing.assert_allclose(out[~keep], volume.sample(points[~keep]).numpy(), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Subdivision


def _tetrahedron():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # outward-facing
    return vertices, faces


def _signed_volume(vertices, faces):
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0


def test_subdivision_counts_transfer_and_keeps_the_surface():
    vertices, faces = _tetrahedron()
    new_vertices, new_faces, upsample = subdivide(vertices, faces, levels=2)
    assert len(new_vertices) == 4 + 6 + 24 and len(new_faces) == 16 * 4  # V' = V + E per level
    np.testing.assert_allclose(upsample @ vertices, new_vertices)
    np.testing.assert_allclose(upsample.sum(axis=1), 1.0)
    np.testing.assert_allclose(new_vertices[:4], vertices)
    assert abs(_signed_volume(new_vertices, new_faces) - _signed_volume(vertices, faces)) < 1e-12  # same surface
    edges, _ = unique_edges(new_faces)
    assert len(edges) == 3 * len(new_faces) // 2  # closed: every edge has two faces
    one_level, _, up1 = subdivide(vertices, faces, levels=1)
    midpoint = np.flatnonzero((np.abs(one_level - 0.5 * (vertices[0] + vertices[3])) < 1e-12).all(1))
    assert len(midpoint) == 1 and up1[midpoint[0], 0] == 0.5 and up1[midpoint[0], 3] == 0.5


def test_subdivision_of_the_body_transfers_weights_and_labels(body):
    vertices, faces = body.v_template.numpy(), body.faces.numpy()
    new_vertices, new_faces, upsample = subdivide(vertices, faces, levels=1)
    assert len(new_vertices) == len(vertices) + len(unique_edges(faces)[0]) and len(new_faces) == 4 * len(faces)
    weights = upsample @ body.lbs_weights.numpy()
    assert np.allclose(weights.sum(1), 1.0, atol=1e-5)
    labels = (upsample @ np.eye(len(PART_NAMES))[body.part_labels.numpy()]).argmax(1)
    np.testing.assert_array_equal(labels[:len(vertices)], body.part_labels.numpy())


def _directed_edges_are_unique(faces):
    half = np.stack([faces, np.roll(faces, -1, axis=1)], axis=-1).reshape(-1, 2)
    return len(np.unique(half, axis=0)) == len(half)  # consistent winding, no edge used twice one way


def test_refining_long_edges_keeps_a_closed_surface_and_bounds_every_edge():
    vertices, faces = _tetrahedron()
    vertices = vertices * np.array([3.0, 1.0, 0.5])  # edges of very different lengths
    edges, _ = unique_edges(faces)
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    limit = 0.3 * lengths.max()
    new_vertices, new_faces, upsample = refine_long_edges(vertices, faces, limit)
    new_edges, _ = unique_edges(new_faces)
    assert np.linalg.norm(new_vertices[new_edges[:, 0]] - new_vertices[new_edges[:, 1]], axis=1).max() <= limit
    assert len(new_edges) == 3 * len(new_faces) // 2 and _directed_edges_are_unique(new_faces)
    assert abs(_signed_volume(new_vertices, new_faces) - _signed_volume(vertices, faces)) < 1e-12
    np.testing.assert_allclose(upsample @ vertices, new_vertices)
    np.testing.assert_allclose(upsample.sum(axis=1), 1.0)
    np.testing.assert_allclose(new_vertices[:4], vertices)
    same_vertices, same_faces, _ = refine_long_edges(vertices, faces, lengths.max())
    np.testing.assert_array_equal(same_faces, faces)  # nothing longer than the limit: unchanged


def test_spacing_subdivision_evens_out_the_body_density(body, rest):
    vertices, faces = rest.vertices[0].numpy(), body.faces.numpy()
    labels = body.part_labels.numpy()
    area = _part_areas(vertices, faces, labels)
    uniform, _, up_uniform = subdivide(vertices, faces, levels=1)
    target = len(uniform)
    spaced, spaced_faces, up_spaced = subdivide_to_spacing(vertices, faces, target)
    assert abs(len(spaced) - target) <= 0.02 * target
    assert _directed_edges_are_unique(spaced_faces)
    one_hot = np.eye(len(PART_NAMES))[labels]

    def density_spread(upsample):  # vertices per m² of the densest part / of the sparsest part
        counts = np.bincount(np.asarray(upsample @ one_hot).argmax(1), minlength=len(PART_NAMES))
        density = counts / np.maximum(area, 1e-9)
        return density[area > 0].max() / density[area > 0].min()

    assert density_spread(up_spaced) < 0.5 * density_spread(up_uniform)
    thigh, head = PART_NAMES.index("left_thigh"), PART_NAMES.index("head")
    spaced_labels = np.asarray(up_spaced @ one_hot).argmax(1)
    assert (spaced_labels == thigh).sum() > 2 * (np.asarray(up_uniform @ one_hot).argmax(1) == thigh).sum()
    assert (spaced_labels == head).sum() < (np.asarray(up_uniform @ one_hot).argmax(1) == head).sum()


def _part_areas(vertices, faces, labels):
    """Surface area per part [P] (m²), each face counted for its first vertex's part."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    face_area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return np.bincount(labels[faces[:, 0]], weights=face_area, minlength=len(PART_NAMES))


# ---------------------------------------------------------------------------------------------
# Star pose and parts


def test_star_pose_spreads_the_feet_and_opens_the_jaw(body, rest):
    with torch.no_grad():
        star = body(**star_pose())
    for side, sign in (("left", 1.0), ("right", -1.0)):
        ankle = JOINT_INDEX[f"{side}_ankle"]
        moved = sign * (star.joints[0, ankle, 0] - rest.joints[0, ankle, 0])
        leg = (rest.joints[0, ankle] - rest.joints[0, JOINT_INDEX[f"{side}_hip"]]).norm()
        assert abs(moved - leg * np.sin(1 / 3)) < 0.02  # swung sideways about the hip by 1/3 rad
        wrist = JOINT_INDEX[f"{side}_wrist"]
        assert torch.allclose(star.joints[0, wrist], rest.joints[0, wrist], atol=1e-6)  # arms stay
    jaw = (body.lbs_weights[:, JOINT_INDEX["jaw"]] > 0.9).nonzero()[:, 0]
    chin = jaw[rest.vertices[0, jaw, 1].argmin()]  # the lowest jaw vertex
    assert star.vertices[0, chin, 1] < rest.vertices[0, chin, 1] - 0.01


def test_part_palette_distinguishes_parts_and_sides():
    assert PART_PALETTE.shape == (len(PART_NAMES), 3) and PART_PALETTE.min() >= 0 and PART_PALETTE.max() <= 1
    distances = np.linalg.norm(PART_PALETTE[:, None] - PART_PALETTE[None], axis=-1) + np.eye(len(PART_NAMES))
    assert distances.min() > 0.15


# ---------------------------------------------------------------------------------------------
# User models and bad files


def _tripwire_array(folder):
    """An object array whose unpickling creates ``folder / "fired"``: proof that something unpickled it."""

    class Tripwire:
        def __reduce__(self):
            return os.mkdir, (str(folder / "fired"),)

    array = np.empty(1, dtype=object)
    array[0] = Tripwire()
    return array


def _fake_smplx_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays in the layout of the licensed SMPL-X v1.0 npz (10,475 vertices, 20 blend shapes)."""
    rng = np.random.default_rng(seed)
    v = SMPLX_NUM_VERTICES
    template = rng.uniform(-0.5, 0.5, (v, 3))
    faces = rng.integers(0, v, (20908, 3)).astype(np.uint32)
    weights = rng.random((v, 55)) ** 8
    regressor = np.zeros((55, v))
    for j in range(55):
        regressor[j, rng.choice(v, 8, replace=False)] = 1.0 / 8
    posedirs = np.zeros((v, 3, 486))
    posedirs[:300] = 0.01 * rng.standard_normal((300, 3, 486))
    kintree = np.stack([np.array(PARENTS), np.arange(55)]).astype(np.int64).astype(np.uint32)  # root: 2^32 - 1
    return {
        "v_template": template, "f": faces, "shapedirs": 0.01 * rng.standard_normal((v, 3, 20)),
        "posedirs": posedirs, "J_regressor": regressor, "weights": weights / weights.sum(1, keepdims=True),
        "kintree_table": kintree, "hands_componentsl": np.eye(45), "hands_componentsr": np.eye(45),
        "hands_meanl": 0.1 * rng.standard_normal(45), "hands_meanr": 0.1 * rng.standard_normal(45),
        "lmk_faces_idx": rng.integers(0, 20908, 51).astype(np.uint32), "lmk_bary_coords": np.full((51, 3), 1 / 3),
    }


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_model")
    path = folder / "SMPLX_NEUTRAL.npz"
    np.savez_compressed(path, **_fake_smplx_arrays(), joint2num=_tripwire_array(folder),
                        part2num=_tripwire_array(folder))
    return path


def test_user_model_in_smplx_layout_loads_without_unpickling(fake_model):
    model = BodyModel(fake_model)
    assert not (fake_model.parent / "fired").exists()
    assert model.source == "user" and model.num_vertices == SMPLX_NUM_VERTICES
    assert (model.num_betas, model.num_expression) == (10, 10)  # v1.0 layout: 10 shape + 10 expression
    assert model.expression_range is None  # PCA coefficients, unbounded
    assert model.has_pose_correctives
    assert model.landmark_names == LANDMARK_NAMES
    assert model.landmark_vertex_ids.tolist() == list(SMPLX_LANDMARK_VERTEX_IDS)
    expected_labels = np.asarray(model.lbs_weights.argmax(1))
    assert model.part_labels.shape == (SMPLX_NUM_VERTICES,) and int(model.part_labels.max()) < len(PART_NAMES)
    np.testing.assert_array_equal(model.part_labels.numpy(), JOINT_TO_PART[expected_labels])
    # Our forward (pose correctives included) equals smplx's own forward on the same buffers.
    generator = torch.Generator().manual_seed(4)
    params = {"betas": torch.randn(2, 10, generator=generator), "expression": torch.randn(2, 10, generator=generator),
              "global_orient": 0.3 * torch.randn(2, 3, generator=generator),
              "body_pose": 0.3 * torch.randn(2, 63, generator=generator),
              "left_hand_pose": 0.3 * torch.randn(2, 45, generator=generator),
              "right_hand_pose": 0.3 * torch.randn(2, 45, generator=generator),
              "jaw_pose": 0.2 * torch.randn(2, 3, generator=generator),
              "leye_pose": 0.2 * torch.randn(2, 3, generator=generator),
              "reye_pose": 0.2 * torch.randn(2, 3, generator=generator), "transl": torch.randn(2, 3, generator=generator)}
    with torch.no_grad():
        ours = model(**params)
        theirs = model.smplx(**params)
    assert torch.allclose(ours.vertices, theirs.vertices, atol=1e-5)
    assert torch.allclose(ours.joints, theirs.joints[:, :55], atol=1e-5)
    assert torch.allclose(ours.landmarks, theirs.joints[:, 55:76], atol=1e-5)  # smplx's own extra joints
    # Control: the tripwire does fire when something unpickles the file.
    with np.load(fake_model, allow_pickle=True) as data:
        data["joint2num"]
    assert (fake_model.parent / "fired").exists()


def test_model_path_resolution(fake_model, monkeypatch):
    from core.body.model_file import resolve_model_path

    monkeypatch.delenv(MODEL_ENV_VAR, raising=False)
    assert resolve_model_path() == (EMBEDDED_MODEL_PATH, "embedded")
    monkeypatch.setenv(MODEL_ENV_VAR, str(fake_model.parent))  # a folder means its SMPLX_NEUTRAL.npz
    assert resolve_model_path() == (fake_model, "user")
    assert resolve_model_path(EMBEDDED_MODEL_PATH) == (EMBEDDED_MODEL_PATH, "embedded")  # argument beats env
    missing = fake_model.parent / "gone.npz"
    monkeypatch.setenv(MODEL_ENV_VAR, str(missing))
    with pytest.raises(UserError, match=r"not found .*PERSONA_SMPLX_MODEL") as info:
        BodyModel()
    assert str(missing) in str(info.value)


def _write(path, arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case", ["missing", "empty", "text", "pickle_file", "truncated", "corrupt_member",
                                  "missing_key", "wrong_shape", "pickled_key", "wrong_tree", "faces_out_of_range"])
def test_bad_model_files_give_one_line_user_errors(tmp_path, case):
    path = tmp_path / "bad_model.npz"
    arrays = _fake_smplx_arrays()
    if case == "missing":
        path = tmp_path / "does_not_exist.npz"
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not a model\n")
    elif case == "pickle_file":
        path = tmp_path / "SMPLX_NEUTRAL.pkl"
        path.write_bytes(b"\x80\x04K\x01.")  # pickle of the int 1: must never be unpickled
    elif case == "truncated":
        data = EMBEDDED_MODEL_PATH.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "corrupt_member":
        shutil.copy(EMBEDDED_MODEL_PATH, path)
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("shapedirs.npy")
        with open(path, "r+b") as f:  # scramble compressed data well past the member's header
            f.seek(info.header_offset + 400_000)
            f.write(os.urandom(4096))
    elif case == "missing_key":
        del arrays["weights"]
        _write(path, arrays)
    elif case == "wrong_shape":
        arrays["weights"] = arrays["weights"][:, :54]
        _write(path, arrays)
    elif case == "pickled_key":
        arrays["f"] = _tripwire_array(tmp_path)
        _write(path, arrays)
    elif case == "wrong_tree":
        arrays["kintree_table"][0, 5] = 3
        _write(path, arrays)
    elif case == "faces_out_of_range":
        arrays["f"][0, 0] = SMPLX_NUM_VERTICES
        _write(path, arrays)
    with pytest.raises(UserError) as info:
        BodyModel(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert not (tmp_path / "fired").exists()


# ---------------------------------------------------------------------------------------------
# Builder maths (no anny needed)


@pytest.fixture(scope="module")
def builder():
    """tools/build_body_model.py as a module (tools/ is not an installed package)."""
    import importlib.util

    from core.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("build_body_model", REPO_ROOT / "tools" / "build_body_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builder_joint_regressor_is_exact_over_the_shape_space(builder):
    fit_joint_regressor = builder.fit_joint_regressor
    rng = np.random.default_rng(5)
    template = rng.uniform(-1, 1, (400, 3))
    shape_dirs = 0.05 * rng.standard_normal((400, 3, 4))
    expression = np.zeros((3, 400, 3))
    expression[:, :40] = 0.01 * rng.standard_normal((3, 40, 3))  # a "face" region
    mean_joints = rng.uniform(-0.3, 0.3, (55, 3))
    joint_dirs = 0.02 * rng.standard_normal((4, 55, 3))
    regressor = fit_joint_regressor(template, shape_dirs, mean_joints, joint_dirs, expression)
    np.testing.assert_allclose(regressor @ template, mean_joints, atol=1e-7)
    np.testing.assert_allclose(np.einsum("jv,vck->kjc", regressor, shape_dirs), joint_dirs, atol=1e-7)
    np.testing.assert_allclose(np.einsum("jv,evc->ejc", regressor, expression), 0.0, atol=1e-7)
    np.testing.assert_allclose(regressor.sum(1), 1.0, atol=1e-7)
    betas = rng.standard_normal(4)  # hence exact for any shape, and rigid motions carry the joints along
    rotation = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    moved = (template + shape_dirs @ betas) @ rotation.T + 0.7
    joints = mean_joints + np.einsum("kjc,k->jc", joint_dirs, betas)
    np.testing.assert_allclose(regressor @ moved, joints @ rotation.T + 0.7, atol=1e-7)


def test_builder_shape_basis_is_in_standard_deviations(builder):
    shape_basis = builder.shape_basis

    rng = np.random.default_rng(6)
    mean = rng.standard_normal((50, 3))
    directions = np.linalg.qr(rng.standard_normal((150, 2)))[0].T.reshape(2, 50, 3)
    coefficients = rng.standard_normal((400, 2)) * [0.3, 0.1]
    samples = mean + np.einsum("nk,kvc->nvc", coefficients, directions)
    template, dirs, ratio, fitted = shape_basis(samples, 2)
    np.testing.assert_allclose(template, samples.mean(0), atol=1e-12)
    np.testing.assert_allclose(fitted.std(0, ddof=1), 1.0, atol=1e-6)  # betas ~ N(0, 1) over the samples
    np.testing.assert_allclose(ratio.sum(), 1.0, atol=1e-9)
    np.testing.assert_allclose(template + np.einsum("nk,vck->nvc", fitted, dirs), samples, atol=1e-9)


@pytest.fixture(scope="module")
def landmark_tool():
    """tools/face_landmark_embedding.py as a module."""
    import importlib.util

    from core.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("face_landmark_embedding",
                                                  REPO_ROOT / "tools" / "face_landmark_embedding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_landmark_tool_triangulates_rays_and_snaps_to_the_surface(landmark_tool):
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.1, 0.1, (5, 3))
    origins = np.array([[0.0, 0.0, 1.0], [0.3, 0.0, 0.9], [0.0, 0.3, 0.9]])
    directions = points[None] - origins[:, None]
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    found, miss = landmark_tool.triangulate(origins, directions)
    assert np.allclose(found, points, atol=1e-9) and miss.max() < 1e-9
    # Two triangles of a unit square in z = 0; points 1 cm above them snap straight down.
    triangles = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[1, 0, 0], [1, 1, 0], [0, 1, 0]]], float)
    above = np.array([[0.2, 0.3, 0.01], [0.8, 0.9, 0.01], [1.5, 0.5, 0.0]])  # the last is off the square
    which, bary = landmark_tool.snap_to_triangles(above, triangles)
    assert which.tolist() == [0, 1, 1]
    snapped = (bary[:, :, None] * triangles[which]).sum(1)
    assert np.allclose(snapped[:2], [[0.2, 0.3, 0.0], [0.8, 0.9, 0.0]]) and np.allclose(bary.sum(1), 1.0)
    assert snapped[2, 0] == pytest.approx(1.0) and (bary >= 0).all()  # clamped onto the square's edge
