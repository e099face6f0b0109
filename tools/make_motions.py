"""Generate the built-in motion clips into presets/motions/ (procedural, deterministic).

    python tools/make_motions.py [--out DIR]

Every clip is a smooth function of time (sinusoids and eased keyframes) in the y-up SMPL-X frame
(person faces +z, +x is the person's left; see core/motion/joint_limits.py for the joint-sign
conventions). Clips are 30 fps and loop: frame k sits at t = k / 30 s and every periodic term
completes whole cycles over the clip, so frame T would equal frame 0. Arm, hand and leg poses are
written for the left side and mirrored to the right (x, y, z) -> (x, -y, -z). Each clip is checked
against JOINT_LIMITS before it is written; the same inputs give the same bytes on every run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from core.motion import Motion, mirror_axis_angle, pose_limits, save_motion  # noqa: E402
from core.motion.joint_limits import HAND_JOINT_NAMES, POSE_FIELD_JOINTS  # noqa: E402
from core.motion.rotations import axis_angle_to_matrix, compose_axis_angle  # noqa: E402
from core.paths import MOTIONS_DIR  # noqa: E402

FPS = 30.0
THIGH, SHIN = 0.38, 0.40  # metres, about the SMPL-X neutral hip->knee and knee->ankle lengths
ARM_DOWN = -1.2  # left shoulder z rotation (radians) that brings the T-pose arm down beside the body
FIST = {1: 1.3, 2: 1.5, 3: 1.0}  # finger flexion (radians) of a closed fist per segment
THUMB_FIST = {1: 0.45, 2: 0.55, 3: 0.7}
THUMB_AXIS = np.array([1.0, 0.0, -1.0]) / np.sqrt(2.0)  # left thumb curls about this axis

Joints = dict[str, np.ndarray]  # joint name (or "global_orient") -> axis-angle [T, 3]


# ---------------------------------------------------------------------------------------------- curves


def clip_times(duration: float) -> np.ndarray:
    """Frame times ``[T]`` in seconds for a ``duration``-second clip at FPS."""
    return np.arange(int(round(duration * FPS))) / FPS


def smootherstep(x: np.ndarray) -> np.ndarray:
    """0 -> 1 ease with zero first and second derivatives at both ends; clamps outside [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x**3 * (x * (6.0 * x - 15.0) + 10.0)


def keyframes(t: np.ndarray, key_times, key_values) -> np.ndarray:
    """Eased interpolation ``[T]`` through (time, value) keys; held before the first and after the last."""
    key_times = np.asarray(key_times, dtype=np.float64)
    key_values = np.asarray(key_values, dtype=np.float64)
    segment = np.clip(np.searchsorted(key_times, t, side="right") - 1, 0, len(key_times) - 2)
    t0, t1 = key_times[segment], key_times[segment + 1]
    ease = smootherstep((t - t0) / (t1 - t0))
    return key_values[segment] + (key_values[segment + 1] - key_values[segment]) * ease


def lift(phase: np.ndarray) -> np.ndarray:
    """Foot-lift profile ``[T]`` in [0, 1]: sin^2 during the first half of each cycle, 0 in the second (C1)."""
    return np.maximum(np.sin(phase), 0.0) ** 2


def about(axis: str, angle) -> np.ndarray:
    """Rotations ``[T, 3]`` by ``angle`` (radians, scalar or ``[T]``) about the x, y or z axis."""
    angle = np.atleast_1d(np.asarray(angle, dtype=np.float64))
    out = np.zeros((angle.shape[0], 3))
    out[:, "xyz".index(axis)] = angle
    return out


def set_pair(joints: Joints, joint: str, left: np.ndarray, right_as_left: np.ndarray | None = None) -> None:
    """Set ``left_<joint>`` and ``right_<joint>``; the right one is given in left-side terms and mirrored."""
    joints[f"left_{joint}"] = left
    joints[f"right_{joint}"] = mirror_axis_angle(left if right_as_left is None else right_as_left)


def finger_pose(joint: str, curl: np.ndarray) -> np.ndarray:
    """Left-hand rotation ``[T, 3]`` of ``joint`` (e.g. ``index2``) for curl ``[T]``: 0 = flat, 1 = fist."""
    segment = int(joint[-1])
    if joint.startswith("thumb"):
        return curl[:, None] * THUMB_FIST[segment] * THUMB_AXIS
    # The pinky closes a little ahead of the others, as real hands do.
    lead = 1.15 if joint.startswith("pinky") else 1.0
    return about("z", -np.minimum(curl * lead, 1.0) * FIST[segment])


def set_hands(joints: Joints, left_curl: np.ndarray, right_curl: np.ndarray) -> None:
    """Fingers and thumbs of both hands: curl ``[T]`` 0 = flat open hand, 1 = fist."""
    for joint in HAND_JOINT_NAMES:
        set_pair(joints, joint, finger_pose(joint, left_curl), finger_pose(joint, right_curl))


def planted_legs(joints: Joints, tilt: np.ndarray, flex: np.ndarray) -> np.ndarray:
    """Pose both legs so the feet stay flat at their rest place; returns the pelvis translation ``[T, 3]``.

    ``tilt [T]`` leans both legs about z (pelvis sways sideways), ``flex [T]`` bends both knees by that
    angle with the hips taking half (a squat). The root rotation must be identity for the feet to stay put.
    """
    hip = compose_axis_angle(about("z", tilt), about("x", -flex / 2.0))
    knee = about("x", flex)
    shin = compose_axis_angle(hip, knee)  # world rotation of the shin (the root is identity)
    for side in ("left", "right"):
        # The ankle undoes the shin's rotation, so the foot stays flat and facing forward.
        joints[f"{side}_hip"], joints[f"{side}_knee"], joints[f"{side}_ankle"] = hip, knee, -shin
    down = np.array([0.0, -1.0, 0.0])
    ankle_offset = THIGH * axis_angle_to_matrix(hip) @ down + SHIN * axis_angle_to_matrix(shin) @ down  # [T, 3]
    return np.array([0.0, -(THIGH + SHIN), 0.0]) - ankle_offset


def marching_legs(joints: Joints, phase: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Step in place: each foot lifts in turn (left while sin(phase) > 0); returns the root roll ``[T]``.

    ``amount [T]`` scales the step (0 = standing). The pelvis drops a little on the swinging side; the
    hips and the lower spine undo that roll so the standing leg and the torso stay upright.
    """
    lift_left, lift_right = amount * lift(phase), amount * lift(phase + np.pi)
    roll = -0.04 * (lift_left - lift_right)  # -z lowers the person's left side
    unroll = about("z", -roll)

    def leg(amount_lifted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (compose_axis_angle(unroll, about("x", -0.75 * amount_lifted)),
                about("x", 1.3 * amount_lifted), about("x", -0.25 * amount_lifted))

    for side, lifted in (("left", lift_left), ("right", lift_right)):
        joints[f"{side}_hip"], joints[f"{side}_knee"], joints[f"{side}_ankle"] = leg(lifted)
    joints["spine1"] = unroll
    return roll


def hanging_arms(joints: Joints, swing: np.ndarray, left_bend: np.ndarray, right_bend: np.ndarray) -> None:
    """Arms down beside the body: the left arm swung forward by ``swing [T]`` radians and the right arm
    by ``-swing``; elbows bent forward by ``left_bend`` / ``right_bend`` ``[T]`` radians."""
    def shoulder(forward: np.ndarray) -> np.ndarray:
        # Lower the T-pose arm, then swing it about the world x axis (-x = forward for a hanging arm).
        return compose_axis_angle(about("x", -forward), about("z", np.full_like(forward, ARM_DOWN)))

    set_pair(joints, "shoulder", shoulder(swing), shoulder(-swing))
    set_pair(joints, "elbow", about("y", -left_bend), about("y", -right_bend))


def assemble(name: str, t: np.ndarray, joints: Joints, transl: np.ndarray | None = None) -> Motion:
    """Pack named joint rotations ``[T, 3]`` (missing ones are zero) into a y-up ``Motion``."""
    num_frames = t.shape[0]
    known = {"global_orient"}.union(*POSE_FIELD_JOINTS.values())
    unknown = sorted(set(joints) - known)
    if unknown:
        raise KeyError(f"unknown joints {unknown}")

    def rotations(names) -> np.ndarray:
        return np.concatenate([joints.get(joint, np.zeros((num_frames, 3))) for joint in names], axis=1)

    fields = {field: rotations(names) for field, names in POSE_FIELD_JOINTS.items()}
    transl = np.zeros((num_frames, 3)) if transl is None else transl
    return Motion(global_orient=rotations(["global_orient"]), **fields, transl=transl, fps=FPS, name=name)


def check_limits(motion: Motion) -> None:
    """Raise ValueError naming every joint axis of ``motion`` outside JOINT_LIMITS."""
    problems = []
    for field, (low, high) in pose_limits().items():
        values = getattr(motion, field)
        for column in np.flatnonzero(np.any((values < low - 1e-6) | (values > high + 1e-6), axis=0)):
            joint = POSE_FIELD_JOINTS[field][column // 3]
            problems.append(f"{joint}.{'xyz'[column % 3]} in [{values[:, column].min():.3f}, "
                            f"{values[:, column].max():.3f}] outside [{low[column]}, {high[column]}]")
    if problems:
        raise ValueError(f"{motion.name}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------- clips


def idle() -> Motion:
    """6 s: standing, breathing (3 s cycles), slow side-to-side weight shift, a glance around."""
    t = clip_times(6.0)
    breath = np.sin(2 * np.pi * t / 3.0)
    sway = np.sin(2 * np.pi * t / 6.0)
    joints: Joints = {}
    transl = planted_legs(joints, tilt=0.02 * sway, flex=np.full_like(t, 0.04))
    joints["spine1"] = about("z", -0.012 * sway)  # the torso leans back over the feet
    joints["spine3"] = about("x", -0.02 * breath)  # the chest lifts on the in-breath
    set_pair(joints, "collar", about("z", 0.02 * breath))
    hanging_arms(joints, 0.03 * sway, np.full_like(t, 0.15), np.full_like(t, 0.15))
    joints["neck"] = about("x", 0.05 + 0.01 * breath)
    joints["head"] = about("y", 0.12 * np.sin(2 * np.pi * t / 6.0 + 1.0))
    set_hands(joints, np.full_like(t, 0.15), np.full_like(t, 0.15))
    return assemble("idle", t, joints, transl)


def walk_in_place() -> Motion:
    """4 s: marching on the spot, one step every 0.5 s, arms swinging against the legs."""
    t = clip_times(4.0)
    phase = 2 * np.pi * t / 1.0
    joints: Joints = {}
    roll = marching_legs(joints, phase, np.ones_like(t))
    joints["global_orient"] = about("z", roll)
    # The left arm swings back while the left leg is up.
    hanging_arms(joints, -0.35 * np.sin(phase), 0.3 - 0.15 * np.sin(phase), 0.3 + 0.15 * np.sin(phase))
    joints["spine2"] = about("y", 0.06 * np.sin(phase))  # shoulders counter-rotate
    joints["head"] = about("y", -0.06 * np.sin(phase))
    set_hands(joints, np.full_like(t, 0.25), np.full_like(t, 0.25))
    return assemble("walk_in_place", t, joints)


def wave() -> Motion:
    """4 s: the right arm rises (0-0.8 s), waves from the elbow (2.5 Hz), and comes down (3.2-4 s)."""
    t = clip_times(4.0)
    raised = keyframes(t, [0.0, 0.8, 3.2, 4.0], [0.0, 1.0, 1.0, 0.0])
    waving = keyframes(t, [0.0, 0.7, 1.0, 3.0, 3.3, 4.0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    beat = np.sin(2 * np.pi * 2.5 * t) * waving
    joints: Joints = {}
    transl = planted_legs(joints, tilt=-0.015 * raised, flex=np.full_like(t, 0.04))
    hanging_arms(joints, np.zeros_like(t), np.full_like(t, 0.15), np.full_like(t, 0.15))
    # Right arm, in left-side terms: up and out, slightly forward, turned so the bent forearm points up.
    shoulder = compose_axis_angle(about("y", -0.3 * raised), about("z", ARM_DOWN + 1.55 * raised),
                                  about("x", -1.4 * raised))
    joints["right_shoulder"] = mirror_axis_angle(shoulder)
    joints["right_elbow"] = mirror_axis_angle(about("y", -(0.15 + 1.25 * raised + 0.35 * beat)))
    joints["right_wrist"] = mirror_axis_angle(about("z", 0.15 * beat))
    joints["right_collar"] = mirror_axis_angle(about("z", 0.12 * raised))
    joints["spine2"] = about("z", -0.04 * raised)  # lean away from the raised arm
    joints["head"] = compose_axis_angle(about("y", -0.1 * raised), about("z", 0.05 * raised))
    set_hands(joints, np.full_like(t, 0.15), 0.15 * (1.0 - raised))
    return assemble("wave", t, joints, transl)


def turn_around() -> Motion:
    """6 s: a full 360 degree turn on the spot (eased start and stop), stepping while turning."""
    t = clip_times(6.0)
    u = t / 6.0
    yaw = 2 * np.pi * (u - np.sin(2 * np.pi * u) / (2 * np.pi))
    speed = 0.5 * (1.0 - np.cos(2 * np.pi * u))  # 0 at rest, 1 at full turning speed
    phase = 2 * np.pi * t / 1.0
    joints: Joints = {}
    roll = marching_legs(joints, phase, 0.7 * speed)
    joints["global_orient"] = compose_axis_angle(about("y", yaw), about("z", roll))
    hanging_arms(joints, -0.2 * speed * np.sin(phase), np.full_like(t, 0.25), np.full_like(t, 0.25))
    joints["head"] = about("y", 0.2 * speed)  # the head leads the turn
    set_hands(joints, np.full_like(t, 0.2), np.full_like(t, 0.2))
    return assemble("turn_around", t, joints)


def dance() -> Motion:
    """4 s at 120 bpm: knees bounce on every beat, hips sway over 2 beats, arms pump in turn."""
    t = clip_times(4.0)
    beat = np.sin(np.pi * t / 0.5) ** 2  # one bounce per 0.5 s beat
    sway = np.sin(2 * np.pi * t / 1.0)
    joints: Joints = {}
    transl = planted_legs(joints, tilt=-0.06 * sway, flex=0.15 + 0.3 * beat)
    joints["spine1"] = about("z", 0.08 * sway)  # the torso leans back over the swaying hips
    joints["spine2"] = compose_axis_angle(about("y", 0.15 * sway), about("z", 0.04 * sway))
    joints["spine3"] = about("x", 0.05 * beat)
    joints["head"] = about("x", 0.1 * beat - 0.05)
    up_left = 0.5 * (1.0 + sway)

    def arm(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shoulder = compose_axis_angle(about("x", -0.5), about("z", ARM_DOWN + 1.0 * up))
        return shoulder, about("y", -(1.7 - 0.9 * up))

    (left_shoulder, left_elbow), (right_shoulder, right_elbow) = arm(up_left), arm(1.0 - up_left)
    set_pair(joints, "shoulder", left_shoulder, right_shoulder)
    set_pair(joints, "elbow", left_elbow, right_elbow)
    set_hands(joints, 0.6 + 0.3 * beat, 0.6 + 0.3 * beat)
    return assemble("dance", t, joints, transl)


def talk() -> Motion:
    """4 s: speaking (jaw syllables at 4 Hz), forearms up gesturing, hands opening and closing in turn."""
    t = clip_times(4.0)
    loudness = 0.55 + 0.45 * np.sin(np.pi * t / 2.0) ** 2
    syllables = np.sin(np.pi * 4.0 * t) ** 2
    gesture = np.sin(2 * np.pi * t / 2.0)
    joints: Joints = {}
    transl = planted_legs(joints, tilt=np.full_like(t, 0.0), flex=np.full_like(t, 0.04))
    joints["jaw"] = about("x", 0.25 * syllables * loudness)
    gaze = keyframes(t, [0.0, 0.4, 1.3, 1.7, 2.6, 3.0, 4.0], [0.0, 0.12, 0.12, -0.1, -0.1, 0.0, 0.0])
    joints["left_eye_smplhf"] = joints["right_eye_smplhf"] = about("y", gaze)
    joints["head"] = compose_axis_angle(about("y", 0.5 * gaze), about("x", 0.04 * np.sin(2 * np.pi * t)))

    def arm(swing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shoulder = compose_axis_angle(about("x", -0.35 - 0.15 * swing), about("z", np.full_like(swing, -1.15)))
        return shoulder, about("y", -(1.35 + 0.25 * swing))

    (left_shoulder, left_elbow), (right_shoulder, right_elbow) = arm(gesture), arm(-gesture)
    set_pair(joints, "shoulder", left_shoulder, right_shoulder)
    set_pair(joints, "elbow", left_elbow, right_elbow)
    set_pair(joints, "wrist", about("z", 0.2 * gesture), about("z", -0.2 * gesture))
    set_hands(joints, np.sin(np.pi * t / 2.0) ** 2, np.cos(np.pi * t / 2.0) ** 2)
    return assemble("talk", t, joints, transl)


CLIPS: dict[str, Callable[[], Motion]] = {
    "idle": idle,
    "walk_in_place": walk_in_place,
    "wave": wave,
    "turn_around": turn_around,
    "dance": dance,
    "talk": talk,
}


def write_clips(out_dir: Path) -> dict[str, Path]:
    """Build, check and save every clip as ``out_dir/<name>.npz``; returns name -> path."""
    paths = {}
    for name, build in CLIPS.items():
        motion = build()
        check_limits(motion)
        paths[name] = out_dir / f"{name}.npz"
        save_motion(motion, paths[name])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MOTIONS_DIR, help="output folder (default: presets/motions)")
    args = parser.parse_args(argv)
    for name, path in write_clips(args.out).items():
        print(f"{name:14s} {path.stat().st_size / 1024:6.1f} KiB  {path}")


if __name__ == "__main__":
    main()
