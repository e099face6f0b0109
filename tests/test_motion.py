"""Motion clips: loading (AMASS layouts, bad files), saving, resampling, z-up, built-ins, joint limits."""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from core.errors import UserError
from core.motion import (
    BODY_JOINT_NAMES,
    JOINT_LIMITS,
    POSE_FIELD_JOINTS,
    Motion,
    builtin_motions,
    load_builtin,
    load_motion,
    mirror_axis_angle,
    random_plausible_pose,
    resample,
    save_motion,
    to_y_up,
)
from core.paths import MOTIONS_DIR, REPO_ROOT

POSE_KEYS = ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose", "leye_pose",
             "reye_pose")


def random_motion(rng: np.random.Generator, num_frames: int = 12, fps: float = 30.0, **extra) -> Motion:
    widths = {"global_orient": 3, "body_pose": 63, "left_hand_pose": 45, "right_hand_pose": 45, "jaw_pose": 3,
              "leye_pose": 3, "reye_pose": 3}
    arrays = {key: rng.uniform(-0.8, 0.8, (num_frames, width)) for key, width in widths.items()}
    return Motion(**arrays, transl=rng.uniform(-1, 1, (num_frames, 3)), fps=fps, name="random", **extra)


def assert_same_motion(a: Motion, b: Motion, atol: float = 0.0) -> None:
    for field in dataclasses.fields(Motion):
        va, vb = getattr(a, field.name), getattr(b, field.name)
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            np.testing.assert_allclose(va, vb, atol=atol, rtol=0, err_msg=field.name)
        else:
            assert va == vb, field.name


def rotations_of(motion: Motion) -> Rotation:
    """All joint rotations of ``motion`` as one flat scipy Rotation ([T * 55])."""
    return Rotation.from_rotvec(motion.full_pose().reshape(-1, 3).astype(np.float64))


def max_angle_between(a: Motion, b: Motion) -> float:
    return float(np.max((rotations_of(a).inv() * rotations_of(b)).magnitude()))


# ---------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_keeps_every_field(tmp_path):
    rng = np.random.default_rng(0)
    motion = random_motion(rng, betas=rng.normal(size=10), expression=rng.normal(size=(12, 50)))
    path = tmp_path / "clip.npz"
    save_motion(motion, path)
    loaded = load_motion(path)
    assert_same_motion(loaded, motion)
    assert loaded.name == "random" and loaded.up_axis == "y" and loaded.fps == 30.0
    # The file is plain AMASS SMPL-X layout plus our version stamp, readable without pickle.
    with np.load(path, allow_pickle=False) as npz:
        assert npz["poses"].shape == (12, 165) and npz["trans"].shape == (12, 3)
        assert int(npz["format_version"]) == 1 and str(npz["up_axis"]) == "y"
    # Same motion -> same bytes (fixed zip timestamps).
    save_motion(motion, tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()


def test_amass_layouts_load_to_the_same_motion(tmp_path):
    rng = np.random.default_rng(1)
    z_up = dataclasses.replace(random_motion(rng), up_axis="z", name="x")
    # SMPL-H files have no jaw/eyes, so compare everything against a motion whose face is zero.
    no_face = dataclasses.replace(z_up, **{k: np.zeros_like(getattr(z_up, k)) for k in ("jaw_pose", "leye_pose",
                                                                                           "reye_pose")})
    poses = no_face.full_pose()
    trans = no_face.transl
    hands = np.concatenate([no_face.left_hand_pose, no_face.right_hand_pose], axis=1)
    variants = {
        "smplx.npz": dict(poses=poses, trans=trans, mocap_frame_rate=np.array(30.0), gender=np.array("neutral")),
        "smplh.npz": dict(poses=np.concatenate([no_face.global_orient, no_face.body_pose, hands], axis=1),
                          trans=trans, mocap_framerate=np.array(30.0), gender=np.array(b"male")),
        "split.npz": dict(root_orient=no_face.global_orient, pose_body=no_face.body_pose, pose_hand=hands,
                          pose_jaw=no_face.jaw_pose, pose_eye=np.zeros((12, 6)), trans=trans, fps=np.array(30)),
    }
    expected = dataclasses.replace(to_y_up(no_face), name="x")
    for filename, arrays in variants.items():
        np.savez(tmp_path / filename, **arrays)
        loaded = load_motion(tmp_path / filename)
        assert_same_motion(dataclasses.replace(loaded, name="x"), expected, atol=1e-6)
        assert loaded.name == filename[:-4]


def test_face_and_eyes_come_from_the_right_columns(tmp_path):
    rng = np.random.default_rng(2)
    motion = random_motion(rng)
    np.savez(tmp_path / "a.npz", root_orient=motion.global_orient, pose_body=motion.body_pose,
             pose_jaw=motion.jaw_pose, pose_eye=np.concatenate([motion.leye_pose, motion.reye_pose], axis=1),
             trans=motion.transl, mocap_frame_rate=30.0)
    loaded = load_motion(tmp_path / "a.npz", up_axis="y")
    np.testing.assert_array_equal(loaded.leye_pose, motion.leye_pose)
    np.testing.assert_array_equal(loaded.reye_pose, motion.reye_pose)
    np.testing.assert_array_equal(loaded.jaw_pose, motion.jaw_pose)
    assert not loaded.left_hand_pose.any()  # no pose_hand -> flat hands


def test_frame_and_slice(tmp_path):
    motion = random_motion(np.random.default_rng(3), expression=np.ones((12, 10)))
    frame = motion.frame(-1)
    assert set(frame) == {*POSE_KEYS, "transl", "expression"}
    assert frame["body_pose"].shape == (1, 63) and frame["expression"].shape == (1, 10)
    np.testing.assert_array_equal(frame["body_pose"][0], motion.body_pose[11])
    tensors = motion.frame(4, as_tensor=True)
    assert tuple(tensors["left_hand_pose"].shape) == (1, 45) and str(tensors["transl"].dtype) == "torch.float32"
    with pytest.raises(IndexError):
        motion.frame(12)
    every_third = motion.slice(0, None, 3)
    assert every_third.num_frames == 4 and every_third.fps == 10.0
    np.testing.assert_array_equal(every_third.transl, motion.transl[::3])
    assert motion.duration == pytest.approx(12 / 30)


# ---------------------------------------------------------------------------------------------- resampling


def test_resample_up_and_back_down_recovers_the_original():
    t = np.arange(30) / 30.0
    smooth = Motion.zeros(30, 30.0)
    body = np.zeros((30, 63))
    body[:, 45:48] = np.stack([0.3 * np.sin(2 * np.pi * t), 0.2 * np.cos(2 * np.pi * t), -1.2 + 0.1 * t], 1)
    smooth = dataclasses.replace(smooth, body_pose=body, transl=np.stack([t, t**2, 0 * t], 1))
    doubled = resample(smooth, 60.0)
    assert doubled.num_frames == 2 * smooth.num_frames and doubled.fps == 60.0
    assert doubled.duration == pytest.approx(smooth.duration)
    back = resample(doubled, 30.0)
    assert back.num_frames == smooth.num_frames
    assert max_angle_between(back, smooth) < 1e-5
    np.testing.assert_allclose(back.transl, smooth.transl, atol=1e-6)
    # In-between frames are the slerp of their neighbours (scipy's own Slerp as the reference).
    neighbours = Rotation.from_rotvec(body[:, 45:48])
    reference = Slerp(t, neighbours)(np.arange(59) / 60.0)
    got = Rotation.from_rotvec(doubled.body_pose[:59, 45:48].astype(np.float64))
    assert np.max((reference.inv() * got).magnitude()) < 1e-5
    np.testing.assert_allclose(doubled.transl[1, 0], 0.5 / 30.0, atol=1e-7)  # translation: linear


def test_slerp_midpoint_of_rotations_about_one_axis_is_the_mid_angle():
    axis = np.array([1.0, 2.0, -2.0]) / 3.0
    motion = Motion.zeros(2, 1.0)
    body = np.zeros((2, 63))
    body[0, 0:3], body[1, 0:3] = 0.3 * axis, 2.9 * axis  # 0.3 rad and 2.9 rad about the same axis
    halves = resample(dataclasses.replace(motion, body_pose=body), 2.0)
    np.testing.assert_allclose(halves.body_pose[1, 0:3], 1.6 * axis, atol=1e-6)
    # Linear axis-angle interpolation would agree here, so also check across the pi wrap:
    # 3.0 rad and -3.0 rad about y are 0.28 rad apart through pi; the midpoint is pi, not 0.
    body[0, 0:3], body[1, 0:3] = [0.0, 3.0, 0.0], [0.0, -3.0, 0.0]
    halves = resample(dataclasses.replace(motion, body_pose=body), 2.0)
    assert np.linalg.norm(halves.body_pose[1, 0:3]) == pytest.approx(np.pi, abs=1e-5)


def test_resampled_turn_has_no_jumps():
    turn = load_builtin("turn_around")
    fine = resample(turn, 60.0)
    root = Rotation.from_rotvec(fine.global_orient.astype(np.float64))
    step = (root[:-1].inv() * root[1:]).magnitude()
    assert step.max() < 0.1  # radians per 1/60 s; a hemisphere flip would show as ~pi


# ---------------------------------------------------------------------------------------------- bad files


unpickled: list[str] = []


class _Sentinel:
    def __reduce__(self):
        return (unpickled.append, ("unpickled!",))


def write_valid(path, **changes):
    arrays = dict(poses=np.zeros((5, 165)), trans=np.zeros((5, 3)), mocap_frame_rate=np.array(30.0))
    arrays.update(changes)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: write_valid(p, poses=np.array([_Sentinel()] * 3, dtype=object)), "object array"),
        (lambda p: write_valid(p, poses=None), "missing pose arrays"),
        (lambda p: write_valid(p, poses=None, root_orient=np.zeros((5, 3))), "missing pose arrays"),
        (lambda p: write_valid(p, poses=np.zeros((5, 100))), "expected (T, 165) SMPL-X or (T, 156)"),
        (lambda p: write_valid(p, trans=np.zeros((4, 3))), "'trans' has 4 frames; expected 5"),
        (lambda p: write_valid(p, trans=np.zeros((5, 2))), "'trans' has shape (5, 2); expected (T, 3)"),
        (lambda p: write_valid(p, poses=np.full((5, 165), np.nan)), "NaN"),
        (lambda p: write_valid(p, trans=np.full((5, 3), np.inf)), "NaN or infinite"),
        (lambda p: write_valid(p, poses=np.zeros((0, 165)), trans=np.zeros((0, 3))), "zero frames"),
        (lambda p: write_valid(p, mocap_frame_rate=np.array(0.0)), "positive"),
        (lambda p: write_valid(p, mocap_frame_rate=None), "missing frame rate"),
        (lambda p: write_valid(p, poses=np.array([["a"] * 165] * 5)), "expected numbers"),
        (lambda p: p.write_bytes(b"this is not a zip archive at all"), "not a readable .npz"),
        (lambda p: p.write_bytes(b"PK\x03\x04 truncated"), "not a readable .npz"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros(3)) or p.with_suffix(".npy").rename(p), "single .npy"),
        (lambda p: None, "not found"),
    ],
)
def test_bad_files_give_one_line_user_errors(tmp_path, make, words):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(UserError) as caught:
        load_motion(path)
    message = str(caught.value)
    assert words in message and "\n" not in message and str(path) in message
    assert not unpickled


def test_unneeded_object_arrays_are_skipped_not_unpickled(tmp_path):
    path = write_valid(tmp_path / "a.npz", gender=np.array([_Sentinel()], dtype=object),
                       name=np.array([_Sentinel()], dtype=object))
    motion = load_motion(path)
    assert motion.num_frames == 5 and motion.name == "a" and not unpickled


def test_bad_up_axis_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="up_axis"):
        load_motion(write_valid(tmp_path / "a.npz"), up_axis="x")
    with pytest.raises(UserError, match="up_axis"):
        load_motion(write_valid(tmp_path / "b.npz", up_axis=np.array("w")))


# ---------------------------------------------------------------------------------------------- up axis


def test_z_up_amass_standing_pose_becomes_y_up_standing(tmp_path):
    # AMASS (z-up): a person standing upright has root_orient = +90 deg about x, so the body's up (+y)
    # points along world +z and the body's front (+z) along world -y; trans z is the pelvis height.
    root = np.array([[np.pi / 2, 0.0, 0.0]])
    amass_root = Rotation.from_rotvec(root[0])
    np.testing.assert_allclose(amass_root.apply([0, 1, 0]), [0, 0, 1], atol=1e-12)
    path = write_valid(tmp_path / "stand.npz", poses=np.pad(root, ((0, 0), (0, 162))),
                       trans=np.array([[0.1, 0.2, 0.95]]))
    motion = load_motion(path)  # no up_axis entry -> AMASS rule: z-up, converted
    assert motion.up_axis == "y"
    y_up_root = Rotation.from_rotvec(motion.global_orient[0].astype(np.float64))
    np.testing.assert_allclose(y_up_root.apply([0, 1, 0]), [0, 1, 0], atol=1e-6)  # head up
    np.testing.assert_allclose(y_up_root.apply([0, 0, 1]), [0, 0, 1], atol=1e-6)  # faces +z
    np.testing.assert_allclose(motion.transl[0], [0.1, 0.95, -0.2], atol=1e-6)  # height is now y
    # Declaring the file y-up leaves it untouched.
    as_is = load_motion(path, up_axis="y")
    np.testing.assert_allclose(as_is.global_orient[0], root[0], atol=1e-6)


def test_to_y_up_with_pelvis_moves_every_body_point_like_a_world_rotation():
    rng = np.random.default_rng(4)
    motion = dataclasses.replace(random_motion(rng, num_frames=3), up_axis="z")
    pelvis = np.array([0.003, -0.35, 0.012])  # rest-pose root joint, metres
    points = rng.normal(size=(7, 3))  # points of the rest body

    def posed(m: Motion) -> np.ndarray:  # the root-joint rigid motion the body model applies: [T, 7, 3]
        root = Rotation.from_rotvec(m.global_orient.astype(np.float64))
        return np.stack([root[i].apply(points - pelvis) + pelvis + m.transl[i] for i in range(m.num_frames)])

    world_to_y_up = Rotation.from_euler("x", -90, degrees=True)
    expected = world_to_y_up.apply(posed(motion).reshape(-1, 3)).reshape(3, 7, 3)
    np.testing.assert_allclose(posed(to_y_up(motion, pelvis=pelvis)), expected, atol=1e-5)
    assert to_y_up(to_y_up(motion)) .up_axis == "y"


# ---------------------------------------------------------------------------------------------- built-ins


def load_tool():
    spec = importlib.util.spec_from_file_location("make_motions", REPO_ROOT / "tools" / "make_motions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builtins_regenerate_bit_identically(tmp_path):
    written = load_tool().write_clips(tmp_path)
    shipped = builtin_motions()
    assert set(written) == set(shipped) >= {"idle", "walk_in_place", "wave", "turn_around", "dance", "talk"}
    for name, path in written.items():
        assert path.read_bytes() == shipped[name].read_bytes(), f"{name}: rerun tools/make_motions.py"
        assert shipped[name].stat().st_size < 200_000


@pytest.mark.parametrize("name", sorted(builtin_motions()))
def test_builtin_is_a_short_30fps_clip_inside_the_joint_ranges(name):
    motion = load_builtin(name)
    assert motion.fps == 30.0 and 2.0 <= motion.duration <= 6.0 and motion.up_axis == "y"
    assert np.abs(motion.transl).max() < 0.1  # metres: the person stays on the spot
    for field, joints in POSE_FIELD_JOINTS.items():
        values = getattr(motion, field).reshape(motion.num_frames, len(joints), 3)
        for j, joint in enumerate(joints):
            for axis in range(3):
                low, high = JOINT_LIMITS[joint][axis]
                assert low - 1e-6 <= values[:, j, axis].min() and values[:, j, axis].max() <= high + 1e-6, (
                    f"{name}: {joint} axis {'xyz'[axis]}")
    # Smooth: no joint turns more than 0.35 rad between frames (root wrap at pi compared as rotations).
    rotations = rotations_of(motion)
    per_frame = Rotation.from_rotvec(rotations.as_rotvec().reshape(motion.num_frames, 55, 3)[1:].reshape(-1, 3))
    previous = Rotation.from_rotvec(rotations.as_rotvec().reshape(motion.num_frames, 55, 3)[:-1].reshape(-1, 3))
    assert (previous.inv() * per_frame).magnitude().max() < 0.35


def test_unknown_builtin_names_the_available_ones():
    with pytest.raises(UserError, match="available: .*idle"):
        load_builtin("moonwalk")


# Approximate SMPL-X neutral rest joints (metres, pelvis at the origin) and parents, to pose the clips
# with scipy rotations independently of the generator and check what the motions look like.
SKELETON_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
SKELETON_REST = np.array([
    [0, 0, 0], [0.06, -0.09, 0], [-0.06, -0.09, 0], [0, 0.11, -0.02], [0.11, -0.47, 0], [-0.11, -0.47, 0],
    [0, 0.24, 0], [0.08, -0.87, -0.04], [-0.08, -0.87, -0.04], [0, 0.30, 0.02], [0.12, -0.93, 0.08],
    [-0.12, -0.93, 0.08], [0, 0.52, -0.01], [0.07, 0.42, 0], [-0.07, 0.42, 0], [0, 0.60, 0.05],
    [0.17, 0.45, -0.01], [-0.17, 0.45, -0.01], [0.43, 0.43, -0.03], [-0.43, 0.43, -0.03],
    [0.68, 0.43, -0.02], [-0.68, 0.43, -0.02],
])


def joint_positions(motion: Motion) -> dict[str, np.ndarray]:
    """Forward kinematics of the pelvis + 21 body joints: name -> ``[T, 3]`` world positions."""
    local = np.concatenate([motion.global_orient[:, None], motion.body_pose.reshape(-1, 21, 3)], axis=1)
    world_rot, positions = [], []
    for j, parent in enumerate(SKELETON_PARENTS):
        rotation = Rotation.from_rotvec(local[:, j].astype(np.float64))
        if parent < 0:
            world_rot.append(rotation)
            positions.append(SKELETON_REST[j] + motion.transl)
        else:
            world_rot.append(world_rot[parent] * rotation)
            positions.append(positions[parent] + world_rot[parent].apply(SKELETON_REST[j] - SKELETON_REST[parent]))
    return dict(zip(("pelvis", *BODY_JOINT_NAMES), positions))


def test_builtins_look_like_their_names():
    idle = joint_positions(load_builtin("idle"))
    for side in ("left", "right"):  # arms hang down
        assert np.all(idle[f"{side}_wrist"][:, 1] < idle[f"{side}_shoulder"][:, 1] - 0.35)
    wave = joint_positions(load_builtin("wave"))
    middle = slice(40, 80)
    assert np.all(wave["right_wrist"][middle, 1] > wave["head"][middle, 1])  # the right hand is up
    assert np.all(wave["left_wrist"][:, 1] < wave["left_shoulder"][:, 1] - 0.35)
    assert np.ptp(wave["right_wrist"][middle, 0]) > 0.1  # and moves side to side
    walk = joint_positions(load_builtin("walk_in_place"))
    left_up = walk["left_ankle"][:, 1] - walk["left_ankle"][0, 1]
    right_up = walk["right_ankle"][:, 1] - walk["right_ankle"][0, 1]
    assert left_up.max() > 0.1 and right_up.max() > 0.1 and np.min(np.maximum(left_up, right_up)) >= -1e-3
    assert np.max(np.minimum(left_up, right_up)) < 0.01  # one foot always on the ground
    turn = load_builtin("turn_around")
    facing = Rotation.from_rotvec(turn.global_orient.astype(np.float64)).apply([0, 0, 1])
    heading = np.unwrap(np.arctan2(facing[:, 0], facing[:, 2]))
    assert heading[-1] + (heading[-1] - heading[-2]) - heading[0] == pytest.approx(2 * np.pi, abs=0.05)
    talk = load_builtin("talk")
    assert talk.jaw_pose[:, 0].max() > 0.15 and talk.jaw_pose[:, 0].min() >= 0.0  # mouth opens and closes
    fingers = talk.left_hand_pose.reshape(-1, 15, 3)[:, 0, 2]  # left index1 flexion
    assert fingers.min() < -1.0 and fingers.max() > -0.1  # fist and open hand
    for name in ("idle", "wave", "dance", "talk"):  # both feet planted
        positions = joint_positions(load_builtin(name))
        for side in ("left", "right"):
            ankle = positions[f"{side}_ankle"]
            assert np.abs(ankle - ankle[0]).max() < 0.015, f"{name} {side} foot slides"


# ---------------------------------------------------------------------------------------------- joint limits


def test_joint_names_follow_smplx_order():
    from smplx.joint_names import JOINT_NAMES

    ours = [joint for field in ("body_pose", "jaw_pose", "leye_pose", "reye_pose", "left_hand_pose",
                                "right_hand_pose") for joint in POSE_FIELD_JOINTS[field]]
    assert ours == list(JOINT_NAMES[1:55])


def test_joint_limit_table_covers_every_joint_and_mirrors_left_to_right():
    assert set(JOINT_LIMITS) == {joint for joints in POSE_FIELD_JOINTS.values() for joint in joints}
    for joint, limits in JOINT_LIMITS.items():
        assert all(low <= 0.0 <= high for low, high in limits), joint  # the zero pose is allowed
        if joint.startswith("left_") and not joint.startswith("left_eye"):
            right = JOINT_LIMITS["right_" + joint[5:]]
            corners = np.array(limits).T  # [2, 3]: low and high corners
            mirrored = np.sort(mirror_axis_angle(corners), axis=0)
            np.testing.assert_allclose(mirrored, np.array(right).T, err_msg=joint)
    # Sign conventions from the module docstring: knees bend +x, left elbow bends -y, left shoulder down -z.
    assert JOINT_LIMITS["left_knee"][0][1] > 2.0 and JOINT_LIMITS["left_elbow"][1][0] < -2.0
    assert JOINT_LIMITS["left_shoulder"][2][0] < -1.2 < 1.2 < JOINT_LIMITS["right_shoulder"][2][1]


def test_random_plausible_pose_is_seeded_and_inside_the_limits():
    first = random_plausible_pose(np.random.default_rng(7))
    again = random_plausible_pose(np.random.default_rng(7))
    other = random_plausible_pose(np.random.default_rng(8))
    assert all(np.array_equal(first[key], again[key]) for key in first)
    assert not np.array_equal(first["body_pose"], other["body_pose"])
    assert set(first) == {*POSE_KEYS, "transl"} and first["body_pose"].shape == (1, 63)
    np.testing.assert_array_equal(first["leye_pose"], first["reye_pose"])  # eyes look the same way
    rng = np.random.default_rng(9)
    samples = [random_plausible_pose(rng, max_yaw=1.0) for _ in range(200)]
    for field, joints in POSE_FIELD_JOINTS.items():
        values = np.concatenate([sample[field] for sample in samples]).reshape(200, len(joints), 3)
        limits = np.array([JOINT_LIMITS[joint] for joint in joints])  # [J, 3, 2]
        assert np.all(values >= limits[..., 0] - 1e-6) and np.all(values <= limits[..., 1] + 1e-6), field
        # Uniform draws reach most of each range.
        span = values.max(axis=0) - values.min(axis=0)
        assert np.all(span >= 0.8 * (limits[..., 1] - limits[..., 0]) - 1e-6), field
    yaws = np.array([sample["global_orient"][0, 1] for sample in samples])
    assert np.abs(yaws).max() <= 1.0 and np.ptp(yaws) > 1.5
    neutral = random_plausible_pose(np.random.default_rng(0), spread=0.0)
    assert not any(neutral[key].any() for key in neutral)
