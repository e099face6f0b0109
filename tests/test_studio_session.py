"""The studio's reconstruction session (worker thread): stages, pause / resume / stop, live loss weights,
snapshots, inspections, bundle, and errors; no window needed.

Photo prep is replaced by a synthetic subject (the body model rendered in a known pose), so these
tests take seconds; everything after prep is the real engine.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from core.avatar.bundle import load_bundle
from core.body import BodyModel
from core.config import load_preset
from core.errors import UserError
from core.frames.frameset import FrameSet
from core.synthetic import synthetic_subject
from persona_studio.inspection import depth_image, seam_overlay
from persona_studio.session import PREP_SPANS, STAGES, ReconstructionSession, StepRate, prep_fraction

SIZE = 64
OVERRIDES = ["render.backend=cpu", "avatar.skinning_grid=32", "avatar.num_gaussians=14000", "frames.num_generated=3", f"frames.resolution={SIZE}",
             "frames.motions=['wave']", f"train.render_size={SIZE}", "train.snapshot_every=2",
             "train.checkpoint_every=1000", "frames.warmup_iterations=2"]


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def synthetic_prepare(photo, out_dir, config, model, progress, **choices):
    progress("perceive", 1.0)
    progress("fit body", 0.5)
    pose = np.zeros(63, np.float32)
    pose[15 * 3 + 2], pose[16 * 3 + 2] = -1.1, 1.1  # arms down, so the photo has seams over the torso
    return synthetic_subject(model, 96, {"body_pose": pose})


def make_session(body, out_dir, iterations: int, prepare=synthetic_prepare, extra=(), imported=()):
    config = load_preset("preview", [*OVERRIDES, f"train.iterations={iterations}", *extra])
    return ReconstructionSession(out_dir / "photo.png", out_dir, config, prepare=prepare, body=body,
                                 imported=imported)


def wait_for(condition, timeout: float = 120.0, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def settled(value, quiet: float = 1.0, timeout: float = 60.0):
    """``value()`` once it has not changed for ``quiet`` seconds (e.g. a step in flight has ended)."""
    last, since = value(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def test_prep_fraction_maps_sub_stages_onto_one_bar_that_never_goes_back():
    assert prep_fraction("load photo", 0.0, 0.0) == 0.0
    assert prep_fraction("fit body", 0.5, 0.0) == pytest.approx(0.565)
    assert prep_fraction("fit limbs", 1.0, 0.0) == pytest.approx(prep_fraction("fit body", 0.0, 0.0))
    from core.prep.fit import STAGES as FIT_STAGES
    assert all(f"fit {stage}" in PREP_SPANS for stage in FIT_STAGES)  # every stage the fitter reports moves the bar
    assert prep_fraction("fit camera", 1.0, 0.55) == 0.55  # an earlier sub-stage cannot move it back
    assert prep_fraction("something new", 0.9, 0.3) == 0.3
    assert prep_fraction("cached: same photo, body model and settings", 1.0, 0.0) == 1.0
    assert prep_fraction("done", 1.0, 0.2) == 1.0


def test_step_rate_and_eta():
    rate = StepRate(window=4)
    assert rate.rate() == 0.0 and rate.eta(10) is None
    for t in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5):  # 2 steps/s, only the last 4 intervals count
        rate.tick(t)
    assert rate.rate() == pytest.approx(2.0)
    assert rate.eta(10) == pytest.approx(5.0)


def test_a_run_goes_through_every_stage_and_writes_a_loadable_bundle(body, tmp_path):
    session = make_session(body, tmp_path, iterations=4)
    seen_stages = []
    session.start()
    try:
        assert wait_for(lambda: (seen_stages.append(session.status().stage) or not session.status().active))
        status = session.status()
        assert status.state == "finished", status.error
        order = [stage for stage in dict.fromkeys(seen_stages) if stage]  # first appearances, in order
        assert order == sorted(order, key=STAGES.index) and {"prep", "frames", "train"} <= set(order)
        assert all(status.fractions[stage] == 1.0 for stage in STAGES)
        assert status.step == status.total == 4
        assert [entry[0] for entry in session.history()] == [1, 2, 3, 4]
        # The display copy is not the trainer's avatar, and snapshots carry the trained parameters. It was
        # published when built and again after the warm-up (keeping the user's view then).
        shown = session.avatar.get()
        assert session.avatar.version == 2 and not shown.frame_camera and shown.label.endswith("(warmed up)")
        snapshot = session.snapshots.get()
        assert snapshot.step == 4 and int(snapshot.draw_counts.sum()) == 4
        assert not np.allclose(shown.avatar.colors.detach().numpy(), snapshot.avatar_state["colors"].numpy())
        assert session.thumbnails.shape == (4, 56, 56, 3)  # the photo + 3 generated frames
        assert session.frame_labels[0] == "photo" and session.frame_labels[1].startswith("wave:")
        # The bundle is the trained avatar.
        avatar, _, manifest = load_bundle(tmp_path, body)
        np.testing.assert_allclose(avatar.colors.detach().numpy(), snapshot.avatar_state["colors"].numpy())
        assert manifest["summary"]["steps"] == 4 and not manifest["summary"]["interrupted"]
        assert (tmp_path / "preview.png").exists() and (tmp_path / "work" / "checkpoint.pt").exists()
        assert len(json.loads((tmp_path / "work" / "metrics.json").read_text())) == 4
        # After the run, inspections are still answered.
        session.request_inspection(2)
        assert wait_for(lambda: session.inspections.version > 0, 60)
        inspection = session.inspections.get()
        assert inspection.frame == 2 and inspection.kind == "generated" and inspection.step == 4
        for images in (inspection.targets, inspection.render):
            assert set(images) == {"rgb", "mask", "depth", "normal", "part_seg"}
            assert all(image.shape == (SIZE, SIZE, 3) and 0 <= image.min() and image.max() <= 1
                       for image in images.values())
        # The render overlaps its target: the avatar was built from this body, in this frame's pose.
        target_mask = inspection.targets["mask"][..., 0] > 0.5
        render_mask = inspection.render["mask"][..., 0] > 0.5
        assert (target_mask & render_mask).sum() > 0.7 * target_mask.sum()
        # The photo's seam boundary (arms in front of the torso) shows as red, only on the person.
        session.request_inspection(0)
        assert wait_for(lambda: session.inspections.get().frame == 0, 60)
        photo = session.inspections.get()
        assert photo.kind == "photo" and photo.label == "photo"
        red = (photo.seam[..., 0] > 0.6) & (photo.seam[..., 1] < 0.4)
        assert red.sum() > 10 and not (red & (photo.targets["mask"][..., 0] < 0.5)).any()
    finally:
        session.close()
    assert not session.running


def test_imported_frames_are_trained_on_besides_the_generated_ones(body, tmp_path):
    first = make_session(body, tmp_path / "first", iterations=1)
    first.start()
    assert wait_for(lambda: not first.status().active)
    first.close()
    generated = FrameSet.load(tmp_path / "first" / "work" / "frames.npz")
    imported = FrameSet.from_frames([generated.frame(i) for i in range(2)], "imported", ["clip.mp4:0", "clip.mp4:1"])
    # With imported frames the photo is registered (steps 2-4 here) and the display shows it in that pose.
    session = make_session(body, tmp_path / "second", iterations=6, imported=[imported],
                           extra=["sampling.register_steps=3"])
    session.start()
    try:
        assert wait_for(lambda: not session.status().active)
        assert session.status().state == "finished", session.status().error
        assert session.status().step == session.status().total == 6 + 3
        assert session.frame_labels == ["photo", *generated.labels, "clip.mp4:0", "clip.mp4:1"]
        _, _, manifest = load_bundle(tmp_path / "second", body)
        assert manifest["summary"]["imported_frames"] == 2
        shown = session.avatar.get()
        assert shown.label.endswith("(photo registered)") and not shown.frame_camera
        for name in ("body_pose", "transl"):  # the bundle's photo pose, moved off the fit by the registration
            assert np.allclose(shown.subject_params[name], manifest["subject"][name], atol=1e-6), name
        fitted = first.avatar.get().subject_params
        assert not np.allclose(shown.subject_params["transl"], fitted.get("transl", np.zeros(3)))
    finally:
        session.close()


def test_pause_resume_stop_and_live_loss_weights(body, tmp_path):
    session = make_session(body, tmp_path, iterations=400)
    session.start()
    try:
        assert wait_for(lambda: session.status().step >= 2)
        session.pause()
        assert wait_for(lambda: session.status().state == "paused")
        paused_at = settled(lambda: session.status().step)  # a step in flight finishes
        time.sleep(1.5)
        assert session.status().step == paused_at  # nothing trains while paused
        # Weights change at the next step: with depth off for both frame types, no depth term remains.
        loss = session.config.loss
        loss.photo.depth = loss.generated.depth = 0.0
        session.set_loss_weights(loss)
        session.resume()
        assert wait_for(lambda: session.status().step >= paused_at + 3)
        assert session.status().state == "running"
        assert "base_depth" not in session.status().metrics and "base_normal" in session.status().metrics
        session.stop()
        assert wait_for(lambda: not session.status().active)
        status = session.status()
        assert status.state == "stopped" and status.bundle == tmp_path
        _, _, manifest = load_bundle(tmp_path, body)
        assert manifest["summary"]["interrupted"] and manifest["summary"]["steps"] == status.step < 400
    finally:
        session.close()


def test_a_restart_into_the_same_folder_waits_for_the_stopped_run_to_save(body, tmp_path):
    first = make_session(body, tmp_path, iterations=400)
    first.start()
    second = None
    try:
        assert wait_for(lambda: first.status().step >= 1)
        config = load_preset("preview", [*OVERRIDES, "train.iterations=2"])
        second = ReconstructionSession(tmp_path / "photo.png", tmp_path, config, prepare=synthetic_prepare, body=body,
                                       previous=first)
        second.start()
        time.sleep(1.0)
        assert second.status().step == 0 and second.status().detail == "waiting for the previous run to save"
        first.stop()
        assert wait_for(lambda: second.status().state == "finished")
        assert first.status().state == "stopped"
        assert second.avatar.version == 1  # the frames came from the cache: no warm-up, as in core.reconstruct
        _, _, manifest = load_bundle(tmp_path, body)
        assert manifest["summary"]["steps"] == 2  # the restarted run's bundle is the one left
    finally:
        first.close()
        if second is not None:
            second.close()


def test_photo_preps_warnings_reach_the_status(body, tmp_path):
    """What prep warns about the photo (several people, a cut-off person...) is in the run's status, for the
    studio's status bar, as the command line prints it."""
    said = "3 person-like regions found; using the one the pose detector picked (region 1 by size)"

    def warned(photo, out_dir, config, model, progress, **choices):
        subject = synthetic_prepare(photo, out_dir, config, model, progress)
        subject.info["warnings"] = [said]
        return subject

    session = make_session(body, tmp_path, iterations=2, prepare=warned)
    assert session.status().warnings == ()
    session.start()
    assert wait_for(lambda: session.status().warnings == (said,), 60)
    session.close(30)


def test_user_errors_and_bugs_end_the_run_with_one_line(body, tmp_path):
    def unusable(photo, out_dir, config, model, progress, **choices):
        raise UserError("no person found in the photo", photo)

    def buggy(photo, out_dir, config, model, progress, **choices):
        raise RuntimeError("boom")

    for prepare, expected in ((unusable, f"{tmp_path / 'photo.png'}: no person found in the photo"),
                              (buggy, "internal error: RuntimeError: boom")):
        session = make_session(body, tmp_path, iterations=2, prepare=prepare)
        session.start()
        assert wait_for(lambda: not session.status().active, 30)
        status = session.status()
        assert status.state == "failed" and status.error.startswith(expected)
        assert "\n" not in status.error
        session.close(5)
        assert not session.running


def test_depth_display_normalises_inside_the_mask_and_seams_are_tinted():
    depth = np.array([[2.0, 3.0], [4.0, 9.0]], np.float32)[..., None]
    mask = np.array([[1, 1], [1, 0]], np.float32)[..., None]
    shown = depth_image(depth, mask)
    assert shown.shape == (2, 2, 3)
    np.testing.assert_allclose(shown[..., 0], [[1.0, 0.6], [0.2, 0.0]], atol=1e-6)  # near bright, outside black
    rgb = np.full((2, 2, 3), 0.5, np.float32)
    weight = np.array([[1.0, 0.1], [1.0, 1.0]], np.float32)[..., None]
    tinted = seam_overlay(rgb, weight)
    assert tinted[0, 1, 0] > 0.8 and tinted[0, 1, 1] < 0.3 and np.array_equal(tinted[0, 0], rgb[0, 0])
