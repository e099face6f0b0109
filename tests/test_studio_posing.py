"""Studio logic without a window: poses and the posing thread, hands, motions, pose-to-screen latency
bookkeeping, recent projects, loss-weight edits and the export adapter."""
from __future__ import annotations

import dataclasses
import json
import math
import threading

import numpy as np
import pytest
import torch

from core.avatar.build import build_avatar
from core.avatar.bundle import load_bundle
from core.body import BodyModel
from core.body.skeleton import JOINT_INDEX
from core.config import LossConfig, load_preset
from core.errors import UserError
from core.motion import load_builtin
from core.motion.joint_limits import JOINT_LIMITS, LEFT_HAND_JOINT_NAMES, RIGHT_HAND_JOINT_NAMES
from persona_studio.exports import ENGINE_EXPORTS, ExportSource, ExportTask, default_output, manifest_for, run_export
from core.avatar.render import pose_avatar
from persona_studio.latency import ScreenLatency, stage_seconds
from persona_studio.panels.weights import preset_target, with_weight
from persona_studio.posing import (AvatarPoser, EditHistory, Pose, PosedScene, PoseTransforms, fit_length, hand_curl,
                                   joint_slot, motion_pose, pose_motion)
from persona_studio.recent import MAX_RECENT, RecentProjects


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


@pytest.fixture(scope="module")
def avatar(body):
    config = load_preset("preview", ["avatar.skinning_grid=32", "avatar.num_gaussians=14000"]).avatar
    return build_avatar(body, np.zeros(body.num_betas), config)


# -- Pose values --------------------------------------------------------------------------------------
def test_joint_slots_follow_the_smplx_order():
    assert joint_slot("left_hip") == ("body_pose", 0)
    assert joint_slot("left_elbow") == ("body_pose", 3 * (JOINT_INDEX["left_elbow"] - 1))
    assert joint_slot("jaw") == ("jaw_pose", 0)
    assert joint_slot("right_index2") == ("right_hand_pose", 3)
    with pytest.raises(KeyError):
        joint_slot("pelvis")  # the root is the body turn, not a joint slider


def test_pose_edits_are_copies_and_reach_the_body_model_arguments():
    rest = Pose.rest(np.zeros(4))
    bent = rest.with_joint("left_elbow", [0.0, -1.0, 0.0]).with_expression(2, 0.7)
    assert rest.joint("left_elbow").tolist() == [0.0, 0.0, 0.0] and rest.expression[2] == 0.0  # unchanged
    params = bent.params(np.arange(10, dtype=np.float32))
    offset = 3 * (JOINT_INDEX["left_elbow"] - 1)
    assert params["body_pose"].shape == (1, 63) and params["body_pose"][0, offset + 1] == -1.0
    assert params["expression"][0, 2] == pytest.approx(0.7) and params["betas"][0, 3] == 3.0
    with pytest.raises(ValueError):
        rest.with_values(body_pose=np.zeros(60))
    assert fit_length([1, 2, 3], 2).tolist() == [1, 2] and fit_length([1], 3).tolist() == [1, 0, 0]
    assert fit_length(None, 2).tolist() == [0, 0]


def test_a_pose_saved_as_a_one_frame_motion_reads_back_whole(tmp_path):
    from core.motion import load_motion, save_motion

    pose = Pose.rest(np.zeros(10)).with_joint("left_elbow", [0.0, -1.1, 0.2]).with_joint("jaw", [0.3, 0.0, 0.0])
    pose = pose.with_values(transl=np.array([0.1, 0.0, -0.2], np.float32)).with_expression(4, 1.5)
    save_motion(pose_motion(pose, name="bent"), tmp_path / "bent.npz")
    back = motion_pose(load_motion(tmp_path / "bent.npz"), 0, Pose.rest(np.zeros(10)))
    for key, value in pose.values.items():
        np.testing.assert_allclose(back.values[key], value, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(back.expression, pose.expression)
    assert pose.arrays()["expression"][4] == pytest.approx(1.5) and set(pose.arrays()) == {*pose.values, "expression"}


def test_edit_history_merges_a_drag_and_keeps_redo_until_a_new_edit():
    history = EditHistory(limit=3, merge_seconds=1.0)
    assert history.undo("now") is None and not history.can_undo
    history.record("a", "elbow", now=0.0)  # a drag: three events of one slider within a second
    history.record("a1", "elbow", now=0.4)
    history.record("a2", "elbow", now=0.8)
    history.record("b", "knee", now=0.9)  # another slider: a new step
    history.record("c", "knee", now=3.0)  # the same slider after a pause: a new step
    assert history.undo("d") == "c" and history.undo("c") == "b" and history.undo("b") == "a"
    assert history.undo("a") is None
    assert history.redo("a") == "b" and history.can_redo
    history.record("b", "elbow", now=10.0)  # an edit clears the redo list
    assert history.redo("x") is None and not history.can_redo
    for step in range(5):  # Reset / Photo pose (no control) are always steps; only the last 3 are kept
        history.record(f"r{step}", None, now=11.0)
    assert [history.undo("cur") for _ in range(4)] == ["r4", "r3", "r2", None]


def test_hand_curl_stays_in_the_joint_ranges_and_closes_the_hand(body):
    assert not hand_curl(0.0, "left").any()
    for side, names in (("left", LEFT_HAND_JOINT_NAMES), ("right", RIGHT_HAND_JOINT_NAMES)):
        fist = hand_curl(1.0, side).reshape(15, 3)
        for name, rotation in zip(names, fist):
            low, high = np.array(JOINT_LIMITS[name]).T
            assert (rotation >= low - 1e-6).all() and (rotation <= high + 1e-6).all(), name
    np.testing.assert_allclose(hand_curl(0.5, "right").reshape(15, 3) * [1, -1, -1], hand_curl(0.5, "left").reshape(15, 3))

    def fingertip_spread(amount: float, side: str) -> float:
        pose = Pose.rest().with_values(**{f"{side}_hand_pose": hand_curl(amount, side)})
        with torch.no_grad():
            out = body(**pose.params(np.zeros(body.num_betas)))
        wrist = out.joints[0, JOINT_INDEX[f"{side}_wrist"]]
        tips = [body.landmark_names.index(f"{side}_{finger}_tip") for finger in ("index", "middle", "ring", "pinky")]
        return float((out.landmarks[0, tips] - wrist).norm(dim=-1).mean())

    for side in ("left", "right"):  # a fist brings the fingertips much closer to the wrist
        assert fingertip_spread(1.0, side) < 0.7 * fingertip_spread(0.0, side)


def test_motion_pose_takes_every_pose_argument_of_the_frame():
    motion = load_builtin("wave")
    base = Pose.rest(np.full(5, 0.3))
    pose = motion_pose(motion, 40, base)
    frame = motion.frame(40)
    for key, value in pose.values.items():
        np.testing.assert_allclose(value, frame[key].reshape(-1))
    np.testing.assert_allclose(pose.expression, base.expression)  # the clip has no expression: keep the face


# -- the posing thread ----------------------------------------------------------------------------------
class Recorder:
    """Stands in for ``viewport.set_scene``: keeps what the poser publishes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []

    def __call__(self, posed, label, frame_camera, moving):
        with self.lock:
            self.calls.append((posed.means.clone(), label, frame_camera, moving))
            return len(self.calls)


def drain(scenes) -> list[PosedScene]:
    """Everything in a poser's ``published`` queue."""
    out = []
    while not scenes.empty():
        out.append(scenes.get_nowait())
    return out


def test_poser_skips_the_quick_preview_when_refined_posing_is_fast_enough(avatar, body):
    publish = Recorder()
    poser = AvatarPoser(publish, refine_delay=0.0, preview_gain=math.inf)  # refined is never "too slow"
    try:
        poser.set_avatar(avatar, body, np.zeros(body.num_betas, np.float32), "test avatar")
        assert poser.wait_idle(60)
        drain(poser.published)
        poser.set_pose(Pose.rest().with_joint("left_elbow", [0.0, -0.5, 0.0]), interactive=True)
        assert poser.wait_idle(60)
        # The base posing was never timed yet: one preview, which times it.
        assert [scene.refined for scene in drain(poser.published)] == [False, True]
        assert poser.pose_seconds[False] > 0 and poser.pose_seconds[True] > 0
        poser.set_pose(Pose.rest().with_joint("left_elbow", [0.0, -0.9, 0.0]), interactive=True)
        assert poser.wait_idle(60)
        assert [scene.refined for scene in drain(poser.published)] == [True]  # straight to the refined pose
        poser.quick_preview = False
        poser.preview_gain = -math.inf
        poser.set_pose(Pose.rest().with_joint("left_elbow", [0.0, -0.2, 0.0]), interactive=True)
        assert poser.wait_idle(60)
        assert [scene.refined for scene in drain(poser.published)] == [True]  # previews switched off
    finally:
        poser.close()


def test_pose_transforms_equal_the_body_models_and_keep_the_shape_until_it_changes(body):
    transforms = PoseTransforms(body)
    g = torch.Generator().manual_seed(5)
    betas = (0.5 * torch.randn(body.num_betas, generator=g)).numpy()
    expression = (0.5 * torch.randn(body.num_expression, generator=g)).numpy()
    pose = Pose.rest(expression).with_joint("left_elbow", [0.1, -0.8, 0.2]).with_values(
        transl=[0.1, -0.2, 0.3], jaw_pose=[0.2, 0.0, 0.0], right_hand_pose=0.1 * np.ones(45))
    for current in (pose, pose.with_joint("right_knee", [0.5, 0.0, 0.0]), pose.with_expression(0, 1.0)):
        shaped, joint_transforms = transforms(current, betas)
        with torch.no_grad():
            out = body(**current.params(betas))
        torch.testing.assert_close(shaped, out.shaped[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(joint_transforms, out.joint_transforms[0], atol=1e-6, rtol=0)
    kept = transforms(pose.with_expression(0, 1.0), betas)[0]
    assert transforms(pose.with_expression(0, 1.0).with_joint("neck", [0.3, 0, 0]), betas)[0] is kept  # cached


def test_posing_without_normals_gives_the_same_gaussians(avatar, body):
    params = Pose.rest().with_joint("left_shoulder", [0.0, 0.0, -0.7]).params(np.zeros(body.num_betas))
    with torch.no_grad():
        full = pose_avatar(avatar, body, params, refined=True)
        out = body(**params)
        lean = avatar.pose(out.shaped[0], out.joint_transforms[0], params["body_pose"].reshape(-1), normals=False)
    assert lean.normals is None and full.normals.shape == full.means.shape
    for name in ("means", "scales", "colors", "opacities", "offsets"):
        assert torch.equal(getattr(lean, name), getattr(full, name)), name


def dominant_points(avatar, means: torch.Tensor, joint: str) -> torch.Tensor:
    """Posed means of the Gaussians skinned mostly to ``joint``."""
    return means[avatar.weights.argmax(dim=1) == JOINT_INDEX[joint]]


def test_poser_shows_the_avatar_in_the_requested_pose(avatar, body):
    publish = Recorder()
    poser = AvatarPoser(publish, refine_delay=0.0, preview_gain=-math.inf)  # a quick preview every time
    try:
        betas = np.zeros(body.num_betas, np.float32)
        poser.set_avatar(avatar, body, betas, "test avatar")
        assert poser.wait_idle(60)
        rest_means, label, framed, moving = publish.calls[-1]
        assert label == "test avatar" and framed and not moving
        # Lower the left arm: the left hand's Gaussians follow the body model's left wrist down.
        lowered = Pose.rest().with_joint("left_shoulder", [0.0, 0.0, -1.2])
        drain(poser.published)
        poser.set_pose(lowered, interactive=True)
        assert poser.wait_idle(60)
        quick, final = publish.calls[-2], publish.calls[-1]
        # A quick preview first, then the final pose, both steps of an interactive change (reduced
        # resolution in the viewport); each says when and how it was posed.
        scenes = drain(poser.published)
        assert [scene.refined for scene in scenes] == [False, True] and quick[3] and final[3]
        stages = [name for name, _ in scenes[1].stamps]
        assert stages == ["poser wake-up", "preview: body model", "preview: skinning", "wait for the preview on screen",
                          "body model", "pose offsets + skinning"]
        times = [at for _, at in scenes[1].stamps]
        assert times == sorted(times) and scenes[1].requested_at <= times[0]
        assert not quick[2] and not final[2]  # the camera stays where the user put it
        with torch.no_grad():
            wrist = body(**lowered.params(betas)).joints[0, JOINT_INDEX["left_wrist"]]
        hand = dominant_points(avatar, final[0], "left_wrist")
        assert (hand.mean(0) - wrist).norm() < 0.06  # metres
        rest_hand = dominant_points(avatar, rest_means, "left_wrist")
        assert hand[:, 1].mean() < rest_hand[:, 1].mean() - 0.3  # the hand went down
        # The right side did not move.
        right = avatar.weights.argmax(dim=1) == JOINT_INDEX["right_wrist"]
        torch.testing.assert_close(final[0][right], rest_means[right], atol=1e-5, rtol=0)
        # Non-interactive requests (a training snapshot, a motion pause) go straight to the final pose.
        count = len(publish.calls)
        poser.set_pose(lowered, interactive=False)
        assert poser.wait_idle(60) and len(publish.calls) == count + 1 and not publish.calls[-1][3]
        assert not poser.published.empty() and isinstance(poser.published.get_nowait(), PosedScene)
    finally:
        poser.close()


def test_poser_latest_wins_and_snapshots_change_the_parameters(avatar, body):
    publish = Recorder()
    poser = AvatarPoser(publish, refine_delay=0.0)
    try:
        poser.set_avatar(avatar, body, np.zeros(body.num_betas), "a")
        angles = np.linspace(0.0, -1.2, 15)
        for angle in angles:  # faster than the poser: most are skipped
            poser.set_pose(Pose.rest().with_joint("left_elbow", [0.0, angle, 0.0]), interactive=True)
        assert poser.wait_idle(120)
        assert len(publish.calls) < 2 * len(angles) + 1
        with torch.no_grad():
            last = Pose.rest().with_joint("left_elbow", [0.0, angles[-1], 0.0])
            elbow = body(**last.params(np.zeros(body.num_betas))).joints[0, JOINT_INDEX["left_wrist"]]
        assert (dominant_points(avatar, publish.calls[-1][0], "left_wrist").mean(0) - elbow).norm() < 0.06
        # A snapshot's parameters are loaded into the shown avatar (here: every Gaussian moved 10 cm up).
        state = {k: v.clone() for k, v in avatar.state_dict().items()}
        state["offsets"] = state["offsets"] + torch.tensor([0.0, 0.1, 0.0])
        before = publish.calls[-1][0]
        shown = _copy_avatar(avatar)
        poser.set_avatar(shown, body, np.zeros(body.num_betas), "b", frame_camera=False)
        poser.set_state(state, "b: step 10")
        assert poser.wait_idle(60)
        after, label = publish.calls[-1][:2]
        assert label == "b: step 10"
        # Head and hands follow the body model exactly, so their shift is exactly the offset.
        rigid = avatar.rigid & (avatar.weights.argmax(dim=1) == JOINT_INDEX["head"])
        np.testing.assert_allclose((after - before)[rigid, 1].numpy(), 0.1, atol=2e-3)
    finally:
        poser.close()


def _copy_avatar(avatar):
    import copy

    return copy.deepcopy(avatar)


# -- latency bookkeeping --------------------------------------------------------------------------------
def test_screen_latency_counts_from_request_to_the_frame_that_shows_it():
    latency = ScreenLatency()
    assert "move a slider" in latency.summary()
    latency.watch(PosedScene(scene_version=3, requested_at=10.0, refined=False, pose_seconds=0.01))
    latency.watch(PosedScene(scene_version=4, requested_at=10.0, refined=True, pose_seconds=0.1))
    latency.update(shown_version=2, now=10.05)  # an older scene on screen
    assert not latency.first
    latency.update(shown_version=3, now=10.08)
    assert latency.first[-1] == pytest.approx(0.08) and not latency.refined
    latency.update(shown_version=4, now=10.3)
    assert list(latency.refined) == [pytest.approx(0.3)] and len(latency.first) == 1  # same request: counted once
    assert "80 ms first image, 300 ms with pose offsets" in latency.summary()
    # A preview skipped by the viewport counts as shown with the final scene that replaced it.
    latency.watch(PosedScene(scene_version=5, requested_at=11.0, refined=False, pose_seconds=0.01))
    latency.watch(PosedScene(scene_version=6, requested_at=11.0, refined=True, pose_seconds=0.1))
    latency.update(shown_version=6, now=11.5)
    assert latency.first[-1] == pytest.approx(0.5) and latency.refined[-1] == pytest.approx(0.5)


def test_screen_latency_splits_a_sample_into_stages_and_waits_for_full_resolution():
    latency = ScreenLatency()
    poser_stamps = (("poser wake-up", 10.001), ("body model", 10.004), ("pose offsets + skinning", 10.030))
    latency.watch(PosedScene(scene_version=2, requested_at=10.0, refined=True, pose_seconds=0.029,
                             stamps=poser_stamps))
    assert latency.waiting
    frame_stamps = (("hand-off to the viewport", 10.031), ("render wake-up", 10.032), ("sort", 10.036),
                    ("composite", 10.050), ("frame taken", 10.060), ("texture upload", 10.061))
    latency.update(shown_version=2, now=10.090, frame_stamps=frame_stamps, full_resolution=False)
    assert not latency.waiting and latency.refined[-1] == pytest.approx(0.09) and not latency.full
    stages = latency.refined_stages[-1]
    assert list(stages) == [name for name, _ in poser_stamps + frame_stamps] + ["shown (UI frame drawn)"]
    assert stages["composite"] == pytest.approx(0.014) and stages["shown (UI frame drawn)"] == pytest.approx(0.029)
    assert sum(stages.values()) == pytest.approx(latency.refined[-1])
    latency.update(shown_version=2, now=10.3, full_resolution=False)
    latency.update(shown_version=2, now=10.5, full_resolution=True)  # the frame once the pose rested
    assert list(latency.full) == [pytest.approx(0.5)]
    assert "90 ms with pose offsets, 500 ms full resolution" in latency.summary()
    latency.update(shown_version=2, now=11.0, full_resolution=True)
    assert len(latency.full) == 1  # counted once
    medians = dict(ScreenLatency.stage_medians_ms([{"a": 0.01, "b": 0.03}, {"a": 0.03}, {"a": 0.02, "b": 0.01}]))
    assert medians == {"a": pytest.approx(20.0), "b": pytest.approx(10.0)}  # missing counts as 0
    assert stage_seconds(1.0, (("x", 1.5), ("y", 1.75), ("x", 2.0))) == {"x": 0.75, "y": 0.25}


# -- recent projects, weights ----------------------------------------------------------------------------
def test_recent_projects_are_newest_first_unique_bounded_and_survive_a_bad_file(tmp_path):
    path = tmp_path / "config" / "recent.json"
    recent = RecentProjects(path)
    assert recent.entries == []
    for k in range(MAX_RECENT + 3):
        recent.add("photo", tmp_path / f"p{k}.jpg", tmp_path / "out")
    recent.add("bundle", tmp_path / "avatar")
    recent.add("photo", tmp_path / "p5.jpg")
    again = RecentProjects(path)
    assert [e.path for e in again.entries[:3]] == [str(tmp_path / n) for n in ("p5.jpg", "avatar", f"p{MAX_RECENT + 2}.jpg")]
    assert len(again.entries) == MAX_RECENT and len({(e.kind, e.path) for e in again.entries}) == MAX_RECENT
    assert json.loads(path.read_text())["format"] == "persona-studio-recent/1"
    path.write_text("{not json")
    assert RecentProjects(path).entries == []
    with pytest.raises(ValueError):
        recent.add("video", tmp_path / "x")


def test_recent_projects_default_to_the_user_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert RecentProjects().path == tmp_path / "persona-studio" / "recent.json"


def test_weight_edits_copy_the_loss_config_and_preset_names_resolve(tmp_path):
    loss = LossConfig()
    changed = with_weight(loss, "generated", "normal", 2.5)
    assert changed.generated.normal == 2.5 and loss.generated.normal == 1.0 and changed.photo == loss.photo
    assert with_weight(loss, "photo", "depth", -1.0).photo.depth == 0.0
    with pytest.raises(ValueError):
        with_weight(loss, "video", "normal", 1.0)
    with pytest.raises(ValueError):
        with_weight(loss, "photo", "colour", 1.0)
    assert preset_target("", tmp_path) == tmp_path / "my-weights.toml"
    assert preset_target("strong-geometry", tmp_path) == tmp_path / "strong-geometry.toml"
    assert preset_target(str(tmp_path / "x" / "mine.toml"), tmp_path) == tmp_path / "x" / "mine.toml"
    with pytest.raises(UserError, match="preset name"):
        preset_target("a/b", tmp_path)


# -- exports -----------------------------------------------------------------------------------------------
def test_bundle_export_writes_a_bundle_that_loads_bit_exact(avatar, body, tmp_path):
    params = {"betas": np.zeros(body.num_betas, np.float32), "body_pose": np.full(63, 0.1, np.float32)}
    source = ExportSource(avatar, body, manifest_for(params), "mine")
    fractions = []
    out = run_export("bundle", source, tmp_path / "b", load_preset("preview"), fractions.append)
    loaded, _, manifest = load_bundle(out, body)
    for key, value in avatar.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0)
    assert manifest["subject"]["body_pose"] == pytest.approx([0.1] * 63)
    assert fractions[-1] == 1.0
    assert default_output("turntable", tmp_path, "mine") == tmp_path / "mine-turntable.mp4"
    assert default_output("animation", tmp_path, "mine", transparent=True) == tmp_path / "mine-animation.webm"
    assert default_output("ply", tmp_path, "mine", transparent=True) == tmp_path / "mine-ply.ply"  # videos only
    assert default_output("bundle", tmp_path, "mine") == tmp_path / "mine-bundle"


def export_text(path) -> str:
    """A .glb's JSON chunk (after the 12-byte header and the chunk's 8-byte header)."""
    data = path.read_bytes()
    return data[20:20 + int.from_bytes(data[12:16], "little")].decode()


def test_every_export_kind_writes_what_it_says(avatar, body, tmp_path, monkeypatch):
    pytest.importorskip("core.export.outputs")
    from plyfile import PlyData

    from core.export.persona_file import load_avatar

    source = ExportSource(avatar, body, manifest_for({"betas": np.zeros(body.num_betas)}), "mine")
    config = load_preset("preview", ["export.frames=3", "export.resolution=48", "render.backend=cpu"])

    def export(kind, output, settings=None, **options):
        task = ExportTask(kind, lambda: source, output, settings or config, **options).start()
        task.join(180)
        status = task.status()
        assert status.state == "done", status.message
        assert status.path == output and str(output) in status.message and status.fraction == 1.0
        return output

    from PIL import Image

    with Image.open(export("turntable", tmp_path / "t.gif")) as gif:
        assert gif.n_frames == 3
    clear = dataclasses.replace(config, export=dataclasses.replace(config.export, transparent=True))
    with Image.open(export("turntable", tmp_path / "clear", clear) / "frame_0000.png") as frame:
        assert frame.mode == "RGBA" and frame.getpixel((0, 0))[3] == 0  # the Export tab's "transparent videos"
    clip = load_builtin("wave").slice(0, 2)
    with Image.open(export("animation", tmp_path / "a.gif", motion=clip)) as gif:
        assert gif.n_frames == 2  # one video frame per motion frame
    assert PlyData.read(str(export("ply", tmp_path / "s.ply"))).elements[0].count == avatar.num_gaussians
    assert export("splat", tmp_path / "s.splat").stat().st_size == 32 * avatar.num_gaussians
    import gzip
    import struct

    header = gzip.decompress(export("spz", tmp_path / "s.spz").read_bytes())[:16]
    assert struct.unpack("<III", header[:12]) == (0x5053474E, 3, avatar.num_gaussians)
    import trimesh

    mesh = trimesh.load(export("mesh", tmp_path / "m.glb"), force="mesh")
    assert len(mesh.faces) == len(body.faces)
    # the rigged body: posed without a motion, animated by the timeline's; the motion as .bvh on the skeleton
    from core.motion.bvh import read_bvh

    for name, options in (("r.glb", {}), ("ra.glb", {"motion": clip})):
        rigged = trimesh.load(export("rigged", tmp_path / name, **options))
        assert len(rigged.geometry) == 1 and "skin" in export_text(tmp_path / name)
    assert '"animations"' in export_text(tmp_path / "ra.glb")
    assert '"animations"' not in export_text(tmp_path / "r.glb")
    assert read_bvh(export("motion", tmp_path / "m.bvh", motion=clip)).num_frames == 2
    loaded, _, manifest = load_avatar(export("persona", tmp_path / "x.persona"), body)
    torch.testing.assert_close(loaded.colors, avatar.colors, atol=0, rtol=0)
    assert manifest["format"] == "persona-avatar/1"
    # An animation needs a motion; a kind missing from the engine is a clear line, not a crash.
    task = ExportTask("animation", lambda: source, tmp_path / "b.gif", config).start()
    task.join(30)
    assert task.status().state == "failed" and "choose a motion" in task.status().message
    task = ExportTask("motion", lambda: source, tmp_path / "n.bvh", config).start()
    task.join(30)
    assert task.status().state == "failed" and "choose a motion" in task.status().message
    monkeypatch.setitem(ENGINE_EXPORTS, "ply", ("core.export.nothing_here", "export_file"))
    task = ExportTask("ply", lambda: source, tmp_path / "c.ply", config).start()
    task.join(30)
    assert task.status().state == "failed" and "not available in this build" in task.status().message
