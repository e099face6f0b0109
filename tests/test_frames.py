"""Generated frames and driving skeleton videos."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.avatar.build import build_avatar
from core.body import BodyModel
from core.config import AvatarConfig, FramesConfig
from core.frames.driving import OPENPOSE_18, OPENPOSE_COLORS, draw_skeleton, openpose_keypoints, project
from core.frames.frameset import STORAGE_DTYPES, FrameSet, pack_frame
from core.frames.generated import (
    POSE_TOLERANCE_RAD,
    ROOT_TOLERANCE_M,
    front_camera,
    generate_frames,
    motion_poses,
    motion_schedule,
    same_pose,
)
from core.motion import load_builtin


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def pose_gap(a: dict, b: dict) -> tuple[float, float]:
    """(largest joint rotation between, radians; largest root offset, metres) of two motion frames
    (``Motion.frame`` dicts), measured with scipy as a reference independent of ``same_pose``."""
    from scipy.spatial.transform import Rotation

    from core.motion import POSE_FIELDS

    def joints(frame):
        return Rotation.from_rotvec(np.concatenate([frame[k].reshape(-1, 3) for k in POSE_FIELDS]))

    angle = (joints(a).inv() * joints(b)).magnitude().max()
    return float(angle), float(np.abs(a["transl"] - b["transl"]).max())


def test_motion_schedule_spreads_frames_without_repeats():
    schedule = motion_schedule(["wave", "dance"], 7)
    assert len(schedule) == 7 and len(set(schedule)) == 7
    assert [m for m, _ in schedule].count("wave") == 4
    frames = [i for m, i in schedule if m == "wave"]
    assert frames[0] == 0 and frames == sorted(frames) and frames[-1] < load_builtin("wave").num_frames


@pytest.mark.parametrize("count", [24, 48])  # the quality benchmark's quick runs; the preview preset
def test_motion_schedule_picks_distinct_poses_on_every_motion(count):
    from core.config import load_preset

    frames = load_preset("preview", [f"frames.num_generated={count}"]).frames
    schedule = motion_schedule(frames.motions, frames.num_generated)
    assert schedule == motion_schedule(frames.motions, frames.num_generated)  # deterministic
    # Every motion keeps its even share (the preview's counts divide evenly over its six clips).
    share = count // len(frames.motions)
    assert [name for name, _ in schedule] == [name for name in frames.motions for _ in range(share)]
    poses = [load_builtin(name).frame(index) for name, index in schedule]
    gaps = [pose_gap(poses[i], poses[j]) for i in range(len(poses)) for j in range(i)]
    assert all(angle > POSE_TOLERANCE_RAD or root > ROOT_TOLERANCE_M for angle, root in gaps)
    # The looping clips made evenly spread frame numbers repeat poses: this is what changed.
    old = [(name, i * load_builtin(name).num_frames // share) for name in frames.motions for i in range(share)]
    old_poses = [load_builtin(name).frame(index) for name, index in old]
    repeats = sum(max(pose_gap(old_poses[i], old_poses[j])) < 1e-5 for i in range(len(old)) for j in range(i))
    assert repeats > 0


def test_same_pose_within_a_degree_and_a_centimetre():
    from core.motion import Motion

    def one_frame(elbow_deg=0.0, root_m=0.0, flip=False):
        motion = Motion.zeros(1, 30.0)
        body = motion.body_pose.copy()
        body[0, 51:54] = np.radians(elbow_deg) * np.array([0.0, 0.0, 1.0])  # right elbow (joint 18) about z
        if flip:  # the same rotation written with the axis reversed and the angle 2 pi - a
            body[0, 51:54] = (np.radians(elbow_deg) - 2 * np.pi) * np.array([0.0, 0.0, 1.0])
        transl = np.array([[root_m, 0.0, 0.0]], np.float32)
        return motion_poses(Motion(**{**motion.pose_dict(), "body_pose": body, "transl": transl}, fps=30.0))

    rest = one_frame()
    assert same_pose(rest, one_frame(elbow_deg=0.9))[0, 0]
    assert not same_pose(rest, one_frame(elbow_deg=1.1))[0, 0]
    assert same_pose(rest, one_frame(root_m=0.009))[0, 0]
    assert not same_pose(rest, one_frame(root_m=0.011))[0, 0]
    assert same_pose(one_frame(elbow_deg=30.0), one_frame(elbow_deg=30.0, flip=True))[0, 0]
    both = tuple(np.concatenate(pair) for pair in zip(rest, one_frame(elbow_deg=5.0)))
    assert same_pose(both, rest)[:, 0].tolist() == [True, False]


@pytest.fixture
def synthetic_clips(monkeypatch):
    """Built-in motions replaced by two made-up clips, 40 frames each, right elbow about z:
    ``ramp`` turns 3 degrees per frame (every frame a new pose); ``loop`` repeats a 10-frame cycle
    of 5-degree steps, so only frames 0-9 are new; its frame 0 is the rest pose, like ramp's."""
    from core.frames import generated
    from core.motion import Motion

    def clip(angles_deg):
        motion = Motion.zeros(len(angles_deg), 30.0)
        body = motion.body_pose.copy()
        body[:, 53] = np.radians(angles_deg)
        return Motion(**{**motion.pose_dict(), "body_pose": body}, fps=30.0)

    clips = {"ramp": clip(3.0 * np.arange(40)), "loop": clip(5.0 * (np.arange(40) % 10))}
    monkeypatch.setattr(generated, "load_builtin", lambda name: clips[name])
    return clips


def test_motion_schedule_spreads_over_the_new_poses(synthetic_clips):
    # No repeats: the plain even spread of frame numbers.
    assert motion_schedule(["ramp"], 5) == [("ramp", i) for i in (0, 8, 16, 24, 32)]
    # A loop: spread over its cycle (frames 0-9), not over frame numbers (0, 10, 20, 30: one pose).
    assert motion_schedule(["loop"], 4) == [("loop", i) for i in (0, 2, 5, 7)]
    # Asked for more than the clip holds: each new pose once, a shorter schedule.
    assert motion_schedule(["loop"], 12) == [("loop", i) for i in range(10)]
    # Excluded poses are skipped wherever they occur (frame 12's pose is frame 2's): new frames are
    # 0, 1, 3, ..., 9 and the picks are the 1st, 4th and 7th of them.
    assert motion_schedule(["loop"], 3, exclude=[("loop", 12)]) == [("loop", i) for i in (0, 4, 7)]
    # A pose an earlier motion took is not taken again: loop's frame 0 is ramp's rest pose.
    schedule = motion_schedule(["ramp", "loop"], 4)
    assert schedule == [("ramp", 0), ("ramp", 20), ("loop", 1), ("loop", 5)]


def test_generated_frames_round_trip_and_agree_with_body(body, tmp_path):
    avatar = build_avatar(body, np.zeros(body.num_betas), AvatarConfig(num_gaussians=14000, skinning_grid=32))
    config = FramesConfig(motions=["turn_around"], num_generated=4, resolution=64)
    frames = generate_frames(avatar, body, {"betas": np.zeros(body.num_betas)}, config)
    assert len(frames) == 4 and frames.rgb.shape == (4, 64, 64, 3)
    for i in range(4):
        f = frames.frame(i)
        inside = f["mask"][..., 0] > 0.5
        assert 0.05 < inside.mean() < 0.6
        assert (f["depth"][..., 0][inside] > 2.0).all() and (f["depth"][..., 0][~inside] == 0).all()
        assert np.allclose(np.linalg.norm(f["normal"][inside], axis=-1), 1.0, atol=0.02)
    # turn_around: frame 2 of 4 is half way through the turn, so the body faces away from the camera
    from scipy.spatial.transform import Rotation

    forward = Rotation.from_rotvec(frames.params["global_orient"][2]).apply([0.0, 0.0, 1.0])
    assert forward[2] < -0.5
    path = tmp_path / "frames.npz"
    frames.save(path)
    back = FrameSet.load(path)
    assert np.array_equal(back.rgb, frames.rgb) and back.labels == frames.labels


def test_frames_are_packed_as_they_are_made(body, monkeypatch):
    """generate_frames keeps each frame in its storage dtypes (15 bytes a pixel, not 44 as float32: 0.9 instead
    of 2.8 GB for the standard preset's 240 frames at 512^2), and packing first changes nothing in the set."""
    avatar = build_avatar(body, np.zeros(body.num_betas), AvatarConfig(num_gaussians=14000, skinning_grid=32))
    kept = []
    real_from_frames = FrameSet.from_frames.__func__

    def spy(cls, frames, source, labels):
        kept.extend(frames)
        return real_from_frames(cls, frames, source, labels)

    monkeypatch.setattr(FrameSet, "from_frames", classmethod(spy))
    frames = generate_frames(avatar, body, {"betas": np.zeros(body.num_betas)},
                             FramesConfig(motions=["wave"], num_generated=3, resolution=48))
    assert len(kept) == 3
    for frame in kept:
        assert {key: frame[key].dtype for key in STORAGE_DTYPES} == STORAGE_DTYPES
        assert sum(frame[key].nbytes for key in STORAGE_DTYPES) == 15 * 48 * 48
    floats = [frames.frame(i) for i in range(3)]
    assert floats[0]["rgb"].dtype == np.float32
    once = real_from_frames(FrameSet, floats, "generated", frames.labels)
    twice = real_from_frames(FrameSet, [pack_frame(pack_frame(f)) for f in floats], "generated", frames.labels)
    for key in (*STORAGE_DTYPES, "K", "viewmat"):
        assert np.array_equal(getattr(once, key), getattr(frames, key)), key
        assert np.array_equal(getattr(twice, key), getattr(frames, key)), key
        assert getattr(twice, key).dtype == getattr(frames, key).dtype
    packed = pack_frame(floats[0])
    assert pack_frame(packed)["rgb"] is packed["rgb"]  # stored images pass through uncopied


def test_generated_frames_match_the_avatars_own_render(body):
    """The frames' mask is the avatar's alpha in that pose: training starts with no silhouette error
    (mesh-drawn frames were a splat radius tighter, so the mask term shrank the avatar)."""
    from core.avatar.render import pose_avatar, render_posed
    from core.config import RenderConfig
    from core.training_frames import generated_frame

    avatar = build_avatar(body, np.zeros(body.num_betas), AvatarConfig(num_gaussians=14000, skinning_grid=32))
    config = FramesConfig(motions=["wave"], num_generated=2, resolution=96)
    frames = generate_frames(avatar, body, {"betas": np.zeros(body.num_betas)}, config)
    frame = generated_frame(frames, 1, np.zeros(body.num_betas), None)
    with torch.no_grad():
        posed = pose_avatar(avatar, body, frame.params, refined=False)
        out = render_posed(posed, frame.viewmat, frame.K, 96, 96, RenderConfig(), torch.zeros(3))
    assert (out.alpha - frame.mask[0]).abs().max() <= 1.0 / 255.0
    assert (out.rgb - frame.rgb[0]).abs().max() <= 1.0 / 255.0
    # soft edges are kept: a tighter hard silhouette would have no alpha between 0.1 and 0.9
    edge = (frame.mask > 0.1) & (frame.mask < 0.9)
    assert 0 < int(edge.sum()) < 0.5 * int((frame.mask > 0.5).sum())


def test_driving_skeleton_draws_joints_where_the_body_is(body):
    view, K = front_camera(128, 3.0, 0.03, 1.7)
    params = {k: v for k, v in load_builtin("wave").frame(60, as_tensor=True).items() if k != "expression"}
    points = openpose_keypoints(body, params)
    uv = project(points, view, K)
    image = draw_skeleton(uv, 128, 128)
    wrist = [n for n, _ in OPENPOSE_18].index("right_wrist")
    col, row = (uv[wrist] - 0.5).round().astype(int)
    assert np.abs(image[row, col].astype(int) - OPENPOSE_COLORS[wrist].astype(int)).max() < 40
    # the waving right wrist is above the right shoulder (image rows grow downwards)
    shoulder = [n for n, _ in OPENPOSE_18].index("right_shoulder")
    assert uv[wrist, 1] < uv[shoulder, 1]
    # the person's right side appears on the image's left in a front view
    assert uv[shoulder, 0] < uv[[n for n, _ in OPENPOSE_18].index("left_shoulder"), 0]


def test_frames_cache_key_follows_what_the_warm_up_depends_on(body, monkeypatch):
    from core.config import load_preset
    from core.reconstruct import frames_key
    from core.synthetic import synthetic_subject

    subject = synthetic_subject(body, 48)
    key = frames_key(subject, load_preset("preview"))
    assert key == frames_key(subject, load_preset("preview"))
    # Settings the photo warm-up uses (or the frames themselves) make new frames ...
    for change in ("train.background=black", "loss.photo.mask=2.0", "avatar.init_scale=0.6",
                   "frames.num_generated=7", "train.seed=3"):
        assert frames_key(subject, load_preset("preview", [change])) != key, change
    # ... while the generated frames' own loss weights and the training length do not.
    for change in ("loss.generated.normal=2.0", "train.iterations=9"):
        assert frames_key(subject, load_preset("preview", [change])) == key, change
    # A new generator version (what generate_frames draws changed) makes new frames too.
    import core.reconstruct

    monkeypatch.setattr(core.reconstruct, "GENERATOR_VERSION", core.reconstruct.GENERATOR_VERSION + 1)
    assert frames_key(subject, load_preset("preview")) != key
