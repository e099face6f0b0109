"""BVH motions: the parser's channel conventions, joint-name mapping of common rigs, retargeting a skeleton
with another rest pose, units, proportions and up axis onto SMPL-X (checked through the body model's own
kinematics), the SMPL-X round trip, the .bvh export, and one-line errors for bad files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from core.body import BodyModel
from core.body.model_file import rest_joints
from core.body.skeleton import JOINT_INDEX, JOINT_NAMES, PARENTS
from core.errors import UserError
from core.export import export_file
from core.export.poses import motion_at_fps, resolve_motion
from core.motion import Motion, load_builtin, load_motion
from core.motion.bvh import bvh_text, forward_kinematics, local_rotations, parse_bvh, save_bvh, smplx_joint_map
from core.motion.rotations import axis_angle_to_matrix


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


@pytest.fixture(scope="module")
def smplx_rest():
    return rest_joints()


def joints_of(body: BodyModel, motion: Motion) -> np.ndarray:
    """``[T, 55, 3]`` the mean shape's joints in every frame of ``motion``, by the body model (smplx's LBS)."""
    with torch.no_grad():
        return body(**motion.pose_dict(as_tensor=True)).joints[:, :55].numpy().astype(np.float64)


def angle_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


TWO_JOINTS = """HIERARCHY
ROOT Hips
{{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition {order}
  JOINT LeftUpLeg
  {{
    OFFSET 0 0 10
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {{
      OFFSET 0 -5 0
    }}
  }}
}}
MOTION
Frames: 1
Frame Time: 0.04
1 2 3 {angles} 0 0 0
"""


def test_rotation_channels_apply_in_the_files_order():
    # Rz(90) Rx(90) takes +z to +x; Rx(90) Rz(90) takes it to -y: the channel order decides.
    for order, angles, expected in (("Zrotation Xrotation Yrotation", "90 90 0", [10, 0, 0]),
                                    ("Xrotation Zrotation Yrotation", "90 90 0", [0, -10, 0]),
                                    ("Yrotation Xrotation Zrotation", "90 0 0", [10, 0, 0])):
        clip = parse_bvh(TWO_JOINTS.format(order=order, angles=angles))
        assert clip.frame_time == pytest.approx(0.04)
        assert clip.names == ("Hips", "LeftUpLeg")
        _, positions = forward_kinematics(clip.parents, clip.offsets, local_rotations(clip), clip.positions)
        np.testing.assert_allclose(positions[0, 0], [1, 2, 3])
        np.testing.assert_allclose(positions[0, 1], np.array([1, 2, 3]) + expected, atol=1e-9)


@pytest.mark.parametrize("names, expected", [
    # Mixamo: LeftShoulder is the clavicle, LeftFoot the ankle, three spine joints
    (["mixamorig:Hips", "mixamorig:Spine", "mixamorig:Spine1", "mixamorig:Spine2", "mixamorig:Neck",
      "mixamorig:Head", "mixamorig:LeftShoulder", "mixamorig:LeftArm", "mixamorig:LeftForeArm", "mixamorig:LeftHand",
      "mixamorig:LeftHandIndex1", "mixamorig:LeftUpLeg", "mixamorig:LeftLeg", "mixamorig:LeftFoot",
      "mixamorig:LeftToeBase"],
     ["pelvis", "spine1", "spine2", "spine3", "neck", "head", "left_collar", "left_shoulder", "left_elbow",
      "left_wrist", "left_index1", "left_hip", "left_knee", "left_ankle", "left_foot"]),
    # CMU (cgspeed's conversion): LowerBack, Spine, Spine1 between the hips and the neck; Neck1 unused
    (["Hips", "LowerBack", "Spine", "Spine1", "Neck", "Neck1", "Head", "RightShoulder", "RightArm", "RightForeArm",
      "RightHand", "RThumb", "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase"],
     ["pelvis", "spine1", "spine2", "spine3", "neck", None, "head", "right_collar", "right_shoulder", "right_elbow",
      "right_wrist", None, "right_hip", "right_knee", "right_ankle", "right_foot"]),
    # CMU's original names: two spine joints become spine1 and spine3
    (["hip", "abdomen", "chest", "neck", "head", "lCollar", "lShldr", "lForeArm", "lHand", "lThigh", "lShin",
      "lFoot"],
     ["pelvis", "spine1", "spine3", "neck", "head", "left_collar", "left_shoulder", "left_elbow", "left_wrist",
      "left_hip", "left_knee", "left_ankle"]),
    # Unreal's mannequin
    (["pelvis", "spine_01", "spine_02", "spine_03", "neck_01", "head", "clavicle_l", "upperarm_l", "lowerarm_l",
      "hand_l", "thumb_01_l", "thigh_r", "calf_r", "foot_r", "ball_r"],
     ["pelvis", "spine1", "spine2", "spine3", "neck", "head", "left_collar", "left_shoulder", "left_elbow",
      "left_wrist", "left_thumb1", "right_hip", "right_knee", "right_ankle", "right_foot"]),
    # 3ds Max Biped: one spine joint becomes spine2
    (["Bip01 Pelvis", "Bip01 Spine", "Bip01 Neck", "Bip01 Head", "Bip01 L Clavicle", "Bip01 L UpperArm",
      "Bip01 L Forearm", "Bip01 L Hand", "Bip01 L Thigh", "Bip01 L Calf", "Bip01 L Foot", "Bip01 L Toe0"],
     ["pelvis", "spine2", "neck", "head", "left_collar", "left_shoulder", "left_elbow", "left_wrist", "left_hip",
      "left_knee", "left_ankle", "left_foot"]),
])
def test_common_rigs_map_onto_smplx_joints(names, expected):
    # a chain in the order given, except that arms hang off the last spine joint before the neck and legs off
    # the hips: enough structure for the spine rule, which walks from the neck down to the hips
    parents, spine_top, hips = [], None, 0
    for index, name in enumerate(names):
        side_limb = any(w in name.lower() for w in ("left", "right", "l ", "_l", "_r", "lcollar", "lshldr", "lforearm",
                                                    "lhand", "lthigh", "lshin", "lfoot", "thumb"))
        if index == 0:
            parents.append(-1)
        elif expected[index] in ("left_collar", "right_collar"):
            parents.append(spine_top)
        elif expected[index] in ("left_hip", "right_hip"):
            parents.append(hips)
        else:
            parents.append(index - 1)
        if not side_limb and expected[index] in ("spine1", "spine2", "spine3"):
            spine_top = index
    found = smplx_joint_map(tuple(names), np.array(parents))
    got = [None] * len(names)
    for joint, index in found.items():
        got[index] = JOINT_NAMES[joint]
    assert got == expected


def test_smplx_motion_round_trips_through_bvh(body, smplx_rest, tmp_path):
    motion = load_builtin("dance")
    path = tmp_path / "dance.bvh"
    save_bvh(motion, path, smplx_rest)
    assert path.read_text().startswith("HIERARCHY\nROOT pelvis")
    back = load_motion(path)  # by the suffix
    assert back.num_frames == motion.num_frames and back.fps == pytest.approx(motion.fps)
    original = Rotation.from_rotvec(motion.full_pose().reshape(-1, 3))
    returned = Rotation.from_rotvec(back.full_pose().reshape(-1, 3))
    assert np.degrees((original.inv() * returned).magnitude()).max() < 0.01  # 6 decimals of degrees
    # the path starts over the origin; its shape is kept
    np.testing.assert_allclose(back.transl - back.transl[0], motion.transl - motion.transl[0], atol=1e-5)
    joints, joints_back = joints_of(body, motion), joints_of(body, back)
    np.testing.assert_allclose(joints_back - joints_back[:1, :1], joints - joints[:1, :1], atol=1e-4)


# Mixamo-like rig built from SMPL-X's joints: (name, SMPL-X joint); parents follow SMPL-X's tree.
MIXAMO = [("mixamorig:Hips", "pelvis"), ("mixamorig:Spine", "spine1"), ("mixamorig:Spine1", "spine2"),
          ("mixamorig:Spine2", "spine3"), ("mixamorig:Neck", "neck"), ("mixamorig:Head", "head")] + [
    (f"mixamorig:{side.title()}{bvh}", f"{side}_{ours}") for side in ("left", "right") for bvh, ours in (
        ("Shoulder", "collar"), ("Arm", "shoulder"), ("ForeArm", "elbow"), ("Hand", "wrist"),
        ("HandIndex1", "index1"), ("HandIndex2", "index2"), ("UpLeg", "hip"), ("Leg", "knee"),
        ("Foot", "ankle"), ("ToeBase", "foot"))]


def mixamo_like_file(motion: Motion, smplx_rest: np.ndarray, body: BodyModel, z_up: bool) -> str:
    """``motion`` written on another rig: Mixamo's names, centimetres, limbs 10 % longer, an A-pose rest
    (arms 40 degrees down, legs 8 degrees apart), ZYX channels, and optionally a z-up world."""
    ours = [JOINT_INDEX[j] for _, j in MIXAMO]
    position_of = {j: i for i, j in enumerate(ours)}
    parents = np.array([-1] + [position_of[_nearest_listed_ancestor(j, set(ours))] for j in ours[1:]])
    # the A-pose: world rotations B_j of the rest pose, applied to SMPL-X's bones
    a_pose = np.zeros((55, 3))
    a_pose[JOINT_INDEX["left_shoulder"]] = [0, 0, -np.radians(40)]
    a_pose[JOINT_INDEX["right_shoulder"]] = [0, 0, np.radians(40)]
    for side, sign in (("left", 1), ("right", -1)):  # legs apart: the thigh turned 8 degrees, without twist
        thigh = smplx_rest[JOINT_INDEX[f"{side}_knee"]] - smplx_rest[JOINT_INDEX[f"{side}_hip"]]
        spread = Rotation.from_euler("z", sign * 8, degrees=True).apply(thigh)
        axis = np.cross(thigh, spread)
        angle = np.radians(angle_degrees(thigh, spread))
        a_pose[JOINT_INDEX[f"{side}_hip"]] = axis / np.linalg.norm(axis) * angle
    rest_world = _world_rotations(axis_angle_to_matrix(a_pose)[None])[0]
    with torch.no_grad():
        posed_rest = body(**Motion(**_pose_fields(a_pose[None]), transl=np.zeros((1, 3)), fps=1).pose_dict(
            as_tensor=True)).joints[0, :55].numpy().astype(np.float64)
    units = 100.0 * 1.1  # centimetres, and a performer 10 % larger
    rest = posed_rest[ours] * units
    offsets = rest - np.where(parents[:, None] >= 0, rest[np.maximum(parents, 0)], 0.0)
    offsets[0] = rest[0]
    # each frame: the BVH joint's world rotation G_smplx(t) B_j^-1 (its rest is the A-pose, with identity rotations)
    world = _world_rotations(axis_angle_to_matrix(motion.full_pose().reshape(-1, 55, 3).astype(np.float64)))
    theirs = world[:, ours] @ np.swapaxes(rest_world[ours], -1, -2)[None]
    local = theirs.copy()
    local[:, 1:] = np.swapaxes(theirs[:, parents[1:]], -1, -2) @ theirs[:, 1:]
    pelvis_path = joints_of(body, motion)[:, 0] * units
    root_channels = pelvis_path - offsets[0]
    if z_up:  # y-up -> z-up: (x, y, z) -> (x, -z, y)
        turn = Rotation.from_euler("x", 90, degrees=True).as_matrix()
        offsets = offsets @ turn.T
        root_channels = root_channels @ turn.T
        local[:, 0] = turn @ local[:, 0] @ turn.T
        local[:, 1:] = turn @ local[:, 1:] @ turn.T  # every rest frame turns with the world
    return bvh_text(tuple(n for n, _ in MIXAMO), parents, offsets, local, root_channels, 1.0 / motion.fps, order="ZYX")


def _nearest_listed_ancestor(joint: int, listed: set[int]) -> int:
    parent = PARENTS[joint]
    while parent not in listed:
        parent = PARENTS[parent]
    return parent


def _world_rotations(local: np.ndarray) -> np.ndarray:
    world = np.empty_like(local)
    for joint, parent in enumerate(PARENTS):
        world[:, joint] = local[:, joint] if parent < 0 else world[:, parent] @ local[:, joint]
    return world


def _pose_fields(full_pose: np.ndarray) -> dict:
    from core.motion.clip import _split_columns, POSE_FIELDS

    return _split_columns(full_pose.reshape(full_pose.shape[0], -1), tuple(POSE_FIELDS))


BONES = [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
         ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
         ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("left_ankle", "left_foot"),
         ("spine3", "neck"), ("neck", "head"), ("left_collar", "left_shoulder"), ("left_wrist", "left_index1"),
         ("left_hip", "right_hip")]


@pytest.mark.parametrize("z_up", [False, True])
def test_another_rig_in_an_a_pose_drives_smplx_along_the_same_bones(body, smplx_rest, tmp_path, z_up):
    motion = load_builtin("dance").slice(0, 120, 3)
    path = tmp_path / "mixamo.bvh"
    path.write_text(mixamo_like_file(motion, smplx_rest, body, z_up))
    back = resolve_motion(str(path))  # as the commands take it
    assert back.name == "mixamo" and back.fps == pytest.approx(motion.fps)
    joints, joints_back = joints_of(body, motion), joints_of(body, back)
    pairs = np.array([(JOINT_INDEX[a], JOINT_INDEX[b]) for a, b in BONES])
    errors = angle_degrees(joints[:, pairs[:, 1]] - joints[:, pairs[:, 0]],
                           joints_back[:, pairs[:, 1]] - joints_back[:, pairs[:, 0]])
    # bone directions carry over exactly; ignoring the A-pose rest would leave the arms 40 degrees off
    assert errors.max() < 0.05, dict(zip(BONES, errors.max(0).round(3)))
    # the hips' path: centimetres and the 10 % larger performer scaled away, starting over the origin
    np.testing.assert_allclose(joints_back[:, 0] - joints_back[:1, 0], joints[:, 0] - joints[:1, 0], atol=2e-3)
    # on the floor: the lowest foot of the clip where the rest pose's feet are
    feet = [JOINT_INDEX[j] for j in ("left_ankle", "right_ankle", "left_foot", "right_foot")]
    assert joints_back[:, feet, 1].min() == pytest.approx(smplx_rest[feet, 1].min(), abs=1e-3)


def test_bvh_export_writes_the_motion_on_the_subjects_skeleton(body, tmp_path):
    from core.avatar.build import build_avatar
    from core.config import AvatarConfig

    betas = np.zeros(body.num_betas, np.float32)
    betas[:2] = (1.5, -1.0)
    manifest = {"subject": {"betas": betas.tolist()}}
    avatar = build_avatar(body, betas, AvatarConfig(num_gaussians=2000, skinning_grid=16))
    motion = load_builtin("wave").slice(0, 60)
    out = tmp_path / "wave.bvh"
    said = export_file(out, avatar, body, manifest, motion=motion, fps=15)
    assert "15 frames/s" in said
    with torch.no_grad():
        shaped = body(betas=torch.as_tensor(betas)[None]).rest_joints[0].numpy()
    text = out.read_text()
    clip = parse_bvh(text)
    assert sorted(clip.names) == sorted(JOINT_NAMES) and clip.frame_time == pytest.approx(1 / 15)
    assert clip.num_frames == round(motion.num_frames * 15 / motion.fps)
    offsets = shaped - np.where(np.array(PARENTS)[:, None] >= 0, shaped[np.maximum(PARENTS, 0)], 0.0)
    offsets[0] = 0.0  # the root's position channels carry the pelvis
    in_file = clip.offsets[[clip.names.index(name) for name in JOINT_NAMES]]  # the file lists them depth first
    np.testing.assert_allclose(in_file, offsets, atol=1e-5)  # the subject's bones, not the mean shape's
    with torch.no_grad():
        pelvis = body(**motion_at_fps(motion, 15).pose_dict(as_tensor=True),
                      betas=torch.as_tensor(betas)[None].expand(clip.num_frames, -1)).joints[:, 0].numpy()
    np.testing.assert_allclose(clip.positions[:, 0], pelvis, atol=1e-5)
    assert not np.allclose(shaped, rest_joints(), atol=1e-3)
    with pytest.raises(UserError, match="needs --motion"):
        export_file(tmp_path / "x.bvh", avatar, body, manifest)


@pytest.mark.parametrize("text, problem", [
    ("", "ends early"),
    ("just some words", "expected 'HIERARCHY'"),
    (TWO_JOINTS.format(order="Zrotation Xrotation Yrotation", angles="0 0 0").replace("Frames: 1", "Frames: 2"),
     "2 frames of 9 channels need 18 numbers"),
    (TWO_JOINTS.format(order="Zrotation Xrotation Yrotation", angles="0 x 0"), "'x', which is not a number"),
    (TWO_JOINTS.format(order="Zrotation Xrotation Yrotation", angles="0 0 0").replace("0.04", "0"),
     "Frame Time is 0.0"),
    (TWO_JOINTS.format(order="Zrotation Xscale Yrotation", angles="0 0 0"), "expected X/Y/Z position and rotation"),
    (TWO_JOINTS.format(order="Zrotation Xrotation Yrotation", angles="0 0 0").replace("Frames: 1", "Frames: 0"),
     "no frames"),
    (TWO_JOINTS.format(order="Zrotation Xrotation Yrotation", angles="0 0 0").replace("Hips", "Body"),
     "no hips / pelvis joint recognised among the file's joints \\(Body, LeftUpLeg\\)"),
    (TWO_JOINTS.format(order="Zrotation Xrotation Yrotation", angles="0 0 0"),
     "only 1 of the 12 arm and leg joints recognised among the file's joints \\(Hips, LeftUpLeg\\); need 6"),
])
def test_bad_bvh_files_are_one_line_errors_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.bvh"
    path.write_text(text)
    with pytest.raises(UserError, match=problem) as caught:
        load_motion(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)
    with pytest.raises(UserError, match="motion file not found"):
        load_motion(tmp_path / "missing.bvh")
