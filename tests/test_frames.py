"""Generated frames and driving skeleton videos."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.avatar.build import build_avatar
from core.body import BodyModel
from core.config import AvatarConfig, FramesConfig
from core.frames.driving import OPENPOSE_18, OPENPOSE_COLORS, draw_skeleton, openpose_keypoints, project
from core.frames.frameset import FrameSet
from core.frames.generated import front_camera, generate_frames, motion_schedule
from core.motion import load_builtin


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def test_motion_schedule_spreads_frames_without_repeats():
    schedule = motion_schedule(["wave", "dance"], 7)
    assert len(schedule) == 7 and len(set(schedule)) == 7
    assert [m for m, _ in schedule].count("wave") == 4
    frames = [i for m, i in schedule if m == "wave"]
    assert frames[0] == 0 and frames == sorted(frames) and frames[-1] < load_builtin("wave").num_frames


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


def test_frames_cache_key_follows_what_the_warm_up_depends_on(body):
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
