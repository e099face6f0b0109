"""Quality benchmark pieces: the seeded synthetic people, their renders and held-out views, the
metrics, and baseline (a) (the fitted mesh with projected photo colours)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.body import BodyModel
from core.quality.metrics import image_metrics, mask_iou, person_window
from core.render.mesh import MeshRenderer, vertex_normals
from core.synthetic_people import (
    body_landmarks, dressed_vertices, heldout_views, make_person, on_background, outfit_standoff, pattern_mask,
    person_subject, photo_camera, posed_vertices, render_person,
)

SIZE = 96


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


@pytest.fixture(scope="module")
def renderer():
    r = MeshRenderer()
    yield r
    r.close()


def test_people_are_deterministic_and_distinct(body, renderer):
    a, again, b = make_person(3), make_person(3), make_person(4)
    assert a.outfit == again.outfit and np.array_equal(a.betas, again.betas)
    assert all(np.array_equal(a.photo_pose[k], again.photo_pose[k]) for k in a.photo_pose)
    assert a.outfit != b.outfit and not np.allclose(a.betas, b.betas)
    outfits = [make_person(seed).outfit for seed in range(6)]
    assert len({o.shirt.color for o in outfits}) == 6  # six different people, not one recoloured
    view, K = photo_camera(body, a, SIZE)
    first = render_person(body, a, a.photo_pose, view, K, SIZE, renderer)
    second = render_person(body, again, again.photo_pose, view, K, SIZE, renderer)
    assert np.array_equal(first.rgb, second.rgb) and np.array_equal(first.mask, second.mask)
    other = render_person(body, b, b.photo_pose, view, K, SIZE, renderer)
    assert np.abs(first.rgb - other.rgb).mean() > 0.02


def test_photo_render_is_sane(body, renderer):
    person = make_person(0)
    view, K = photo_camera(body, person, SIZE)
    render = render_person(body, person, person.photo_pose, view, K, SIZE, renderer)
    mask, rgb = render.mask, render.rgb
    assert mask.min() >= 0 and mask.max() <= 1 and 0.05 < (mask > 0.5).mean() < 0.4
    # Framed with a margin (1.2x the height): no person on the image border.
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0 and mask[:, -1].max() == 0
    assert np.all(rgb[mask == 0] == 0) and np.all(rgb <= mask[..., None] + 1e-6)  # premultiplied
    white = on_background(render)
    assert np.allclose(white[mask == 0], 1.0)
    # Fractional coverage only on the silhouette's edge (2x2 supersampling).
    assert 0 < ((mask > 0) & (mask < 1)).sum() < 0.5 * (mask > 0).sum()


def test_clothes_and_hair_stand_off_the_skin(body):
    person = make_person(1)
    canonical = posed_vertices(body, person.betas, {})
    labels = body.part_labels.numpy()
    standoff = outfit_standoff(person.outfit, body_landmarks(body, person.betas), canonical, labels)
    from core.body import PART_NAMES

    hands = np.isin(labels, [PART_NAMES.index("left_hand"), PART_NAMES.index("right_hand")])
    assert np.all(standoff[hands] == 0) and standoff.max() > person.outfit.cloth_thickness
    chest = labels == PART_NAMES.index("chest")
    assert np.all(standoff[chest] == pytest.approx(person.outfit.cloth_thickness))  # a shirt always covers it
    zero = {"global_orient": np.zeros(3, np.float32)}
    dressed = dressed_vertices(body, person, zero)
    expected = canonical + standoff[:, None] * vertex_normals(canonical, body.faces.numpy())
    assert np.allclose(dressed, expected, atol=1e-5)
    # Posed, the offsets turn with the body but keep their length (blended rotations, near rigid).
    posed = dressed_vertices(body, person, person.photo_pose) - posed_vertices(body, person.betas, person.photo_pose)
    lengths = np.linalg.norm(posed, axis=1)
    dressed_part = standoff > 0
    assert np.median(np.abs(lengths[dressed_part] / standoff[dressed_part] - 1)) < 0.02


def test_patterns_at_known_points():
    points = np.array([[0.0, 0.01, 0], [0.0, 0.06, 0], [0.01, 0.01, 0], [0.11, 0.01, 0], [0.05, 0.05, 0],
                       [0.01, 0.05, 0]])
    assert pattern_mask("plain", points, 0.1).tolist() == [False] * 6
    # stripes: bands of half a period in y: [0, 0.05) accent, [0.05, 0.1) not
    assert pattern_mask("stripes", points, 0.1).tolist() == [True, False, True, True, False, False]
    # checks: cell (0, 0) accent, cell (1, 0) not
    assert pattern_mask("checks", points, 0.1)[[2, 3]].tolist() == [True, False]
    # dots: radius 0.3 periods around each cell's centre (0.05, 0.05)
    assert pattern_mask("dots", points, 0.1)[[4, 5]].tolist() == [True, False]
    with pytest.raises(ValueError):
        pattern_mask("tartan", points, 0.1)


def test_heldout_views(body, renderer):
    person = make_person(2)
    views = heldout_views(body, person, SIZE, ["wave", "dance"], num_random=3)
    groups = [v.group for v in views]
    assert groups.count("motion") == 4 and groups.count("random") == 3 and groups.count("view") == 4
    again = heldout_views(body, person, SIZE, ["wave", "dance"], num_random=3)
    assert all(np.array_equal(a.pose["body_pose"], b.pose["body_pose"]) for a, b in zip(views, again))
    randoms = [v.pose["body_pose"] for v in views if v.group == "random"]
    assert not np.allclose(randoms[0], randoms[1])
    renders = {v.label: render_person(body, person, v.pose, v.viewmat, v.K, SIZE, renderer) for v in views}
    for label, r in renders.items():
        assert 0.02 < (r.mask > 0.5).mean() < 0.5, label  # in frame, not empty
    # Seen from behind (180°) the silhouette is the frontal one mirrored.
    front = render_person(body, person, person.photo_pose, *photo_camera(body, person, SIZE), SIZE, renderer)
    assert mask_iou(front.mask, renders["view:+180"].mask[:, ::-1]) > 0.8


def test_metrics_on_known_inputs():
    gt = np.ones((40, 40, 3), np.float32)
    mask = np.zeros((40, 40), np.float32)
    mask[10:20, 12:18] = 1
    gt[mask > 0] = 0.3
    same = image_metrics(gt, gt, mask, mask)
    assert same["psnr"] > 100 and same["ssim"] == pytest.approx(1.0) and same["iou"] == 1.0
    brighter = gt.copy()
    brighter[mask > 0] += 0.1  # inside the person only: MSE over the window is 0.01 * 60 / window area
    rows, cols = person_window(mask, mask)
    assert (rows, cols) == (slice(2, 28), slice(4, 26))  # the box plus an 8-pixel margin
    area = 26 * 22
    assert image_metrics(brighter, gt, mask, mask)["psnr"] == pytest.approx(-10 * np.log10(0.01 * 60 / area),
                                                                            abs=1e-3)
    shifted = np.roll(mask, 3, axis=1)  # 3 of 6 columns overlap
    assert mask_iou(mask, shifted) == pytest.approx(30 / 90)


def test_mesh_baseline_projects_the_photo(body, renderer):
    from core.avatar.build import build_avatar
    from core.config import AvatarConfig
    from core.quality.alignment import EvalPose
    from core.quality.methods import eval_params, render_mesh_baseline
    from core.quality.metrics import composite_white
    from core.reconstruct import photo_colors

    person = make_person(5)
    subject = person_subject(body, person, SIZE, renderer)  # the known fit
    avatar = build_avatar(body, subject.smplx["betas"], dataclasses.replace(AvatarConfig(), num_gaussians=10000,
                                                                            skinning_grid=16))
    with torch.no_grad():
        avatar.colors.copy_(torch.as_tensor(photo_colors(avatar, body, subject)))
    view, K = photo_camera(body, person, SIZE)
    params = EvalPose(eval_params({**person.photo_pose}, subject.smplx["betas"]))
    rgb, alpha = render_mesh_baseline(avatar, body, params, view, K, SIZE, renderer)
    gt = render_person(body, person, person.photo_pose, view, K, SIZE, renderer)
    gt_white = composite_white(gt.rgb, gt.mask)
    scores = image_metrics(rgb, gt_white, gt.mask, alpha)
    with torch.no_grad():
        avatar.colors.fill_(0.5)
    grey_rgb, _ = render_mesh_baseline(avatar, body, params, view, K, SIZE, renderer)
    # The bare body lies inside the dressed one: a good but not perfect silhouette.
    assert 0.75 < scores["iou"] < 0.99 and mask_iou(gt.mask, alpha) == scores["iou"]
    # Where both cover the pixel the colours are the photo's (shading included), not a constant.
    both = (alpha > 0.99) & (gt.mask > 0.99)
    error = np.abs(rgb - gt_white)[both].mean()
    grey_error = np.abs(grey_rgb - gt_white)[both].mean()
    assert error < 0.1 and grey_error > 2 * error


def test_alignment_recovers_a_known_scale_and_shift(body):
    from core.quality.alignment import points_alignment, scale_alignment
    from core.quality.methods import eval_params

    source = torch.randn(55, 3, generator=torch.Generator().manual_seed(0))
    found = points_alignment(source, 1.08 * source + torch.tensor([0.1, -0.2, 0.05]))
    assert found.scale == pytest.approx(1.08, abs=1e-5)
    assert np.allclose(found.shift, (0.1, -0.2, 0.05), atol=1e-5)
    assert torch.allclose(found.apply(source), 1.08 * source + torch.tensor([0.1, -0.2, 0.05]), atol=1e-5)
    person = make_person(0)
    same = scale_alignment(body, eval_params(person.photo_pose, person.betas), eval_params(person.photo_pose,
                                                                                          person.betas))
    assert same.scale == pytest.approx(1.0, abs=1e-5) and np.allclose(same.shift, 0.0, atol=1e-5)


def test_vertex_areas_split_each_face_in_thirds():
    from core.quality.alignment import vertex_areas

    # a 2 m x 1 m rectangle as two triangles sharing the diagonal 0-2: each triangle 1 m²
    vertices = torch.tensor([[0.0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    assert torch.allclose(vertex_areas(vertices, faces), torch.tensor([2 / 3, 1 / 3, 2 / 3, 1 / 3]))


def _fitted_and_truth(fitted_betas, truth_betas, pose):
    from core.quality.methods import eval_params

    return eval_params(pose, fitted_betas), eval_params(pose, truth_betas)


def test_fit_alignment_recovers_a_known_pose_and_shift(body):
    """Same shape: the GT frame is the start's pose turned and bent a little and moved; the fit finds it."""
    from core.quality.alignment import EvalPose, alignment_error, fit_alignment

    person = make_person(2)
    start, truth = _fitted_and_truth(person.betas, person.betas, person.photo_pose)
    truth = {**truth, "transl": torch.tensor([[0.05, -0.03, 0.04]])}
    truth["global_orient"] = truth["global_orient"] + torch.tensor([[0.0, 0.15, 0.05]])
    truth["body_pose"] = truth["body_pose"] + 0.05 * torch.randn(1, 63, generator=torch.Generator().manual_seed(1))
    assert alignment_error(body, EvalPose(start), truth) > 0.05
    pose = fit_alignment(body, start, truth)
    assert alignment_error(body, pose, truth) < 1e-4  # from over 5 cm to under 0.1 mm
    assert pose.alignment.scale == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(pose.alignment.shift, (0.05, -0.03, 0.04), atol=1e-4)
    assert torch.allclose(pose.params["global_orient"], truth["global_orient"], atol=1e-3)


def test_fit_alignment_beats_scale_alignment_across_shapes(body):
    """Other shape, same GT pose: the fit lands the fitted body much closer to the GT body than GT pose
    with only a scale + shift, and far closer than no alignment; hands and face keep the GT pose."""
    from core.quality.alignment import alignment_error, eval_pose

    truth_person, fitted_person = make_person(1), make_person(3)
    views = heldout_views(body, truth_person, SIZE, ["wave"], num_random=1, view_azimuths_deg=())
    fitted, truth = _fitted_and_truth(fitted_person.betas, truth_person.betas, views[-1].pose)
    poses = {mode: eval_pose(body, fitted, truth, mode) for mode in ("none", "scale", "fit")}
    errors = {mode: alignment_error(body, pose, truth) for mode, pose in poses.items()}
    assert errors["fit"] < 0.8 * errors["scale"] and errors["scale"] < 0.5 * errors["none"], errors
    pose = poses["fit"]
    for name in ("left_hand_pose", "right_hand_pose", "jaw_pose", "betas"):
        assert torch.equal(pose.params[name], fitted[name])
    again = eval_pose(body, fitted, truth, "fit")  # deterministic: the same frame gets the same pose
    assert again.alignment == pose.alignment
    assert all(torch.equal(again.params[k], pose.params[k]) for k in pose.params)

    def joint_rms(mode):
        placed = eval_pose(body, fitted, truth, mode)
        with torch.no_grad():
            joints = placed.alignment.apply(body(**placed.params).joints[0])
            return float((joints - body(**truth).joints[0]).pow(2).sum(-1).mean().sqrt())

    assert joint_rms("fit-joints") < 0.8 * joint_rms("scale")


def test_eval_pose_modes(body):
    from core.quality.alignment import EvalPose, ScaleAlignment, eval_pose, fit_alignment, scale_alignment

    person = make_person(0)
    fitted, truth = _fitted_and_truth(make_person(4).betas, person.betas, person.photo_pose)
    assert eval_pose(body, fitted, truth, "none") == EvalPose(fitted, ScaleAlignment())
    assert eval_pose(body, fitted, truth, "scale").alignment == scale_alignment(body, fitted, truth)
    with pytest.raises(ValueError, match="unknown alignment"):
        eval_pose(body, fitted, truth, "procrustes")
    with pytest.raises(ValueError, match="vertices"):
        fit_alignment(body, fitted, truth, on="landmarks")


# -- oracle training frames (core/quality/oracle.py) ------------------------------------------------

ORACLE_MOTIONS = ["walk_in_place", "wave"]  # both loop every 30 frames: the evenly spread picks repeat poses


@pytest.fixture(scope="module")
def oracle_setup(body, renderer):
    """Person 2, a fitted shape that differs from its GT one, and oracle frames at 64² pixels."""
    import types

    from core.config import FramesConfig
    from core.quality.oracle import oracle_frames

    person = make_person(2)
    fitted = {"betas": person.betas * 0.8 + 0.1, "expression": np.zeros(body.num_expression, np.float32)}
    # body_extent reads only the canonical shaped body; the oracle does not render the avatar
    avatar = types.SimpleNamespace(shaped_zero=torch.as_tensor(posed_vertices(body, fitted["betas"], {})))
    config = FramesConfig(motions=ORACLE_MOTIONS, num_generated=8, resolution=64, camera_distance=3.0)
    return person, fitted, avatar, config, oracle_frames(avatar, body, person, fitted, config, renderer)


def test_oracle_frames_have_the_generated_layout(body, oracle_setup):
    from core.frames.generated import front_camera

    person, fitted, avatar, config, frames = oracle_setup
    n = len(frames)
    assert n == 8 and len(frames.labels) == n
    assert frames.rgb.shape == (n, 64, 64, 3) and frames.rgb.dtype == np.uint8
    assert frames.mask.shape == (n, 64, 64) and frames.mask.dtype == np.uint8
    assert frames.depth.shape == (n, 64, 64) and frames.depth.dtype == np.float16
    assert frames.normal.shape == (n, 64, 64, 3) and frames.normal.dtype == np.float16
    assert frames.part_seg.shape == (n, 64, 64, 3) and frames.part_seg.dtype == np.uint8
    # The generator's camera: front_camera framing the (fitted) avatar's rest body.
    y = avatar.shaped_zero[:, 1].numpy()
    view, K = front_camera(64, 3.0, float(y.min() + y.max()) / 2, float(y.max() - y.min()))
    assert np.allclose(frames.viewmat, view, atol=1e-5) and np.allclose(frames.K, K, atol=1e-4)
    # Parameters: the fitted shape (not the GT one) in every frame, the motion's pose and root.
    assert np.allclose(frames.params["betas"], fitted["betas"])
    assert not np.allclose(frames.params["betas"], person.betas)
    assert {"global_orient", "body_pose", "transl", "expression"} <= set(frames.params)
    first = frames.frame(0)
    assert np.all(first["rgb"] <= first["mask"] + 1.5 / 255)  # premultiplied, like generated frames
    # Geometry of the fitted body in the frame's pose sits where the GT person is (similar shapes).
    body_seen, person_seen = frames.depth > 0, frames.mask > 127
    assert (body_seen & person_seen).sum() / (body_seen | person_seen).sum() > 0.7
    normals = frames.normal[body_seen].astype(np.float32)
    assert np.allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=0.01)


def test_oracle_mask_is_the_gt_render(body, renderer, oracle_setup):
    from core.frames.driving import driving_camera
    from core.io.images import to_uint8

    person, _, _, config, frames = oracle_setup
    view, K = driving_camera(body, person.betas, 64, 3.0)
    for i in (0, len(frames) - 1):
        params = frames.frame(i)["params"]
        pose = {k: v for k, v in params.items() if k not in ("betas", "expression")}
        truth = render_person(body, person, pose, view, K, 64, renderer)
        assert np.array_equal(frames.mask[i], to_uint8(truth.mask))
        assert np.abs(frames.rgb[i].astype(int) - to_uint8(truth.rgb).astype(int)).max() <= 1


def test_oracle_poses_are_distinct_and_not_held_out(body, oracle_setup):
    from scipy.spatial.transform import Rotation

    from core.frames.generated import POSE_TOLERANCE_RAD, ROOT_TOLERANCE_M, motion_schedule
    from core.motion import POSE_FIELDS, load_builtin
    from core.quality.oracle import oracle_schedule

    def same(a, b):
        """Whether two pose dicts are one pose: every joint within the tolerance (scipy's angle of the
        relative rotation), the root translation within its own."""
        joints = [Rotation.from_rotvec(np.concatenate([np.reshape(p[k], (-1, 3)) for k in POSE_FIELDS]))
                  for p in (a, b)]
        angle = (joints[0].inv() * joints[1]).magnitude().max()
        root = np.abs(np.reshape(a["transl"], -1) - np.reshape(b["transl"], -1)).max()
        return angle <= POSE_TOLERANCE_RAD and root <= ROOT_TOLERANCE_M

    person, _, _, config, frames = oracle_setup
    poses = [frames.frame(i)["params"] for i in range(len(frames))]
    assert not any(same(poses[i], poses[j]) for i in range(len(poses)) for j in range(i))
    held = [v.pose for v in heldout_views(body, person, 64, ORACLE_MOTIONS, num_random=0,
                                                         view_azimuths_deg=())]
    assert len(held) == 4
    assert not any(same(p, h) for p in poses for h in held)
    assert frames.labels == [f"{m}:{i}" for m, i in oracle_schedule(ORACLE_MOTIONS, 8)]
    # 30 picks take every walk_in_place pose (15): the generator's schedule then holds a held-out
    # pose, the oracle's does not and stays distinct.
    generator = [load_builtin(m).frame(i) for m, i in motion_schedule(ORACLE_MOTIONS, 30)]
    assert any(same(g, h) for g in generator for h in held)
    oracle = [load_builtin(m).frame(i) for m, i in oracle_schedule(ORACLE_MOTIONS, 30)]
    assert not any(same(o, h) for o in oracle for h in held)
    assert not any(same(oracle[i], oracle[j]) for i in range(len(oracle)) for j in range(i))


def test_oracle_degradation_is_seeded_and_rgb_only(oracle_setup):
    from core.quality.oracle import degrade_frames

    frames = oracle_setup[-1]
    a, again, other = degrade_frames(frames, 5), degrade_frames(frames, 5), degrade_frames(frames, 6)
    assert np.array_equal(a.rgb, again.rgb) and not np.array_equal(a.rgb, other.rgb)
    for key in ("mask", "depth", "normal", "part_seg", "K", "viewmat"):
        assert np.array_equal(getattr(a, key), getattr(frames, key))
    assert all(np.array_equal(a.params[k], frames.params[k]) for k in frames.params)
    inside = frames.mask == 255
    change = np.abs(a.rgb.astype(int) - frames.rgb.astype(int))[inside].mean()
    assert 1.0 < change < 0.15 * 255  # visible but mild (gain ±8 %, offset ±0.03, 0.6 px blur)
    assert np.all(a.rgb[frames.mask == 0] <= 3)  # the black around the person stays (nearly) black
    assert np.all(a.rgb <= frames.mask[..., None].astype(int) + 1)  # still premultiplied
    # Frames differ in their shift: the mean colour ratio per frame is not one shared gain.
    ratios = [a.rgb[i][inside[i]].mean(0) / np.maximum(frames.rgb[i][inside[i]].mean(0), 1) for i in range(len(a))]
    assert np.ptp(np.array(ratios), axis=0).max() > 0.02


# -- identity drift of oracle frames (core.synthetic_people.drift_outfit, oracle_frames(drift=True)) -------


def test_shift_hsv_on_known_colours():
    from core.synthetic_people import shift_hsv

    assert np.allclose(shift_hsv((1.0, 0.0, 0.0), 1 / 3, 1.0, 1.0), (0.0, 1.0, 0.0))  # red turned a third: green
    assert np.allclose(shift_hsv((1.0, 0.0, 0.0), -1 / 3, 1.0, 1.0), (0.0, 0.0, 1.0))  # the other way: blue
    assert np.allclose(shift_hsv((1.0, 0.5, 0.5), 0.0, 0.0, 1.0), (1.0, 1.0, 1.0))  # no saturation: grey of its value
    assert np.allclose(shift_hsv((0.8, 0.4, 0.2), 0.0, 1.0, 0.5), (0.4, 0.2, 0.1))  # value halves every channel
    assert np.allclose(shift_hsv((0.8, 0.4, 0.2), 0.0, 1.0, 2.0), (1.0, 0.5, 0.25))  # clipped at a value of 1


def test_pattern_shift_moves_the_pattern():
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.5, 0.5, (500, 3))
    for pattern in ("stripes", "checks", "dots"):
        base = pattern_mask(pattern, points, 0.1)
        # a pattern shifted by (dx, dy) shows at p what the unshifted one shows at p - (dx, dy)
        moved = pattern_mask(pattern, points, 0.1, (0.03, -0.02))
        assert np.array_equal(moved, pattern_mask(pattern, points - np.array([0.03, -0.02, 0.0]), 0.1))
        assert not np.array_equal(moved, base)
    # half a period down, stripes swap exactly (points off the band edges)
    stripes = pattern_mask("stripes", points, 0.1)
    assert np.array_equal(pattern_mask("stripes", points, 0.1, (0.0, 0.05)), ~stripes)


def test_drift_changes_the_look_not_the_layout(body):
    from core.synthetic_people import OFF_FRAME_PROBABILITY, drifted_person

    person = make_person(1)
    canonical = posed_vertices(body, person.betas, {})
    labels = body.part_labels.numpy()
    marks = body_landmarks(body, person.betas)
    drifted = [drifted_person(person, k).outfit for k in range(400)]
    layout = ("bottom_kind", "sleeve", "hair_length", "cloth_thickness", "hair_volume", "skirt_flare")
    for outfit in drifted[:5]:
        assert all(getattr(outfit, f) == getattr(person.outfit, f) for f in layout)
        assert np.array_equal(outfit_standoff(outfit, marks, canonical, labels),
                              outfit_standoff(person.outfit, marks, canonical, labels))
        assert outfit.shirt.color != person.outfit.shirt.color and outfit.skin != person.outfit.skin
    # "off" frames (a garment's pattern swapped or rescaled) come at about OFF_FRAME_PROBABILITY
    off = [any(getattr(o, g).pattern != getattr(person.outfit, g).pattern
               or getattr(o, g).period != getattr(person.outfit, g).period for g in ("shirt", "bottom"))
           for o in drifted]
    assert abs(np.mean(off) - OFF_FRAME_PROBABILITY) < 0.07
    # the other frames keep each garment's pattern and its colours near the person's (plausible drift)
    for outfit, is_off in zip(drifted, off):
        if not is_off:
            for g in ("shirt", "bottom"):
                assert np.abs(np.subtract(getattr(outfit, g).color, getattr(person.outfit, g).color)).max() < 0.3
    # seeded by (person seed, frame): the same pair gives the same look, another seed another one
    assert drifted_person(person, 7) == drifted_person(person, 7)
    assert drifted_person(person, 7).outfit != drifted_person(dataclasses.replace(person, seed=2), 7).outfit


@pytest.fixture(scope="module")
def drift_frames(body, renderer, oracle_setup):
    from core.quality.oracle import oracle_frames

    person, fitted, avatar, config, _ = oracle_setup
    return oracle_frames(avatar, body, person, fitted, config, renderer, drift=True)


def test_drifted_oracle_frames_differ_in_colour_only(oracle_setup, drift_frames):
    clean, drifted = oracle_setup[-1], drift_frames
    assert drifted.source == "oracle-drift" and drifted.labels == clean.labels
    for key in ("mask", "depth", "normal", "part_seg", "K", "viewmat"):
        assert np.array_equal(getattr(drifted, key), getattr(clean, key)), key
    assert all(np.array_equal(drifted.params[k], clean.params[k]) for k in clean.params)
    assert np.all(drifted.rgb[clean.mask == 0] == 0) and np.all(drifted.rgb <= drifted.mask[..., None].astype(int) + 1)
    inside = clean.mask == 255
    change = [np.abs(drifted.rgb[i].astype(int) - clean.rgb[i].astype(int))[inside[i]].mean()
              for i in range(len(clean))]
    assert min(change) > 2.0  # every frame drifts
    assert np.median(change) < 0.2 * 255  # most frames stay near the person's colours


def test_drifted_oracle_frames_are_seeded(body, renderer, oracle_setup, drift_frames):
    from core.quality.oracle import oracle_frames

    person, fitted, avatar, config, _ = oracle_setup
    again = oracle_frames(avatar, body, person, fitted, config, renderer, drift=True)
    assert np.array_equal(again.rgb, drift_frames.rgb)
    other = oracle_frames(avatar, body, dataclasses.replace(person, seed=9), fitted, config, renderer, drift=True)
    assert np.array_equal(other.mask, drift_frames.mask) and not np.array_equal(other.rgb, drift_frames.rgb)
    # frames draw their own drift: the colour change is not one shared shift
    clean = oracle_setup[-1]
    shifts = [(drift_frames.rgb[i].astype(int) - clean.rgb[i].astype(int))[clean.mask[i] == 255].mean(0)
              for i in range(len(clean))]
    assert np.ptp(np.array(shifts), axis=0).max() > 3.0


def test_oracle_geometry_of_the_dressed_person_covers_its_mask(body, renderer, oracle_setup):
    from core.quality.oracle import oracle_frames

    person, fitted, avatar, config, bare = oracle_setup
    dressed = oracle_frames(avatar, body, person, fitted, config, renderer, geometry="person")
    assert np.array_equal(dressed.rgb, bare.rgb) and np.array_equal(dressed.mask, bare.mask)  # targets only
    person_seen = dressed.mask > 127
    coverage = {name: ((frames.depth > 0) & person_seen).sum() / person_seen.sum()
                for name, frames in (("bare", bare), ("dressed", dressed))}
    # the dressed person's own geometry lines up with its mask (but for edge pixels, many at 64²: 0.93 measured,
    # 0.999 at 96²); the fitted body's (another shape, no clothes) falls short of it (0.84)
    assert coverage["dressed"] > 0.9 and coverage["dressed"] > coverage["bare"] + 0.05, coverage
    both = (dressed.depth > 0) & (bare.depth > 0)
    assert not np.allclose(dressed.depth[both], bare.depth[both], atol=1e-3)
    with pytest.raises(ValueError, match="geometry must be one of"):
        oracle_frames(avatar, body, person, fitted, config, renderer, geometry="estimated")


def test_photometric_pose_moves_the_avatar_onto_its_image(body):
    """--align photometric: the avatar rendered in a known pose is the target; from a turned and shifted
    start, fitting the pose to that image brings its body most of the way back, the avatar left untouched."""
    from core.avatar.build import build_avatar
    from core.config import AvatarConfig, load_preset
    from core.quality.alignment import EvalPose, ScaleAlignment, alignment_error
    from core.quality.methods import eval_params, photometric_pose, render_avatar

    person = make_person(1)
    config = load_preset("preview")
    avatar = build_avatar(body, person.betas, AvatarConfig(num_gaussians=6000, skinning_grid=32))
    with torch.no_grad():  # colours that vary over the body, so the image pins the pose down
        avatar.colors.copy_(0.5 + 0.5 * torch.sin(12.0 * avatar.template))
    before = {k: v.detach().clone() for k, v in avatar.state_dict().items()}
    size = 64
    view, K = photo_camera(body, person, size)
    truth = EvalPose(eval_params(person.photo_pose, person.betas), ScaleAlignment(1.0, (0.03, -0.02, 0.0)))
    target_rgb, target_alpha = render_avatar(avatar, body, truth, view, K, size, config, refined=False)
    turned = {**truth.params, "global_orient": truth.params["global_orient"] + torch.tensor([[0.0, 0.2, 0.1]])}
    start = EvalPose(turned, ScaleAlignment())

    def image_error(pose):
        rgb, alpha = render_avatar(avatar, body, pose, view, K, size, config, refined=False)
        return float(np.abs(rgb - target_rgb).mean() + np.abs(alpha - target_alpha).mean())

    fitted = photometric_pose(avatar, body, start, view, K, size, config, False, target_rgb, target_alpha, steps=40)
    truth_params = {**truth.params, "transl": torch.tensor([truth.alignment.shift])}
    assert image_error(fitted) < 0.5 * image_error(start)
    assert alignment_error(body, fitted, truth_params) < 0.5 * alignment_error(body, start, truth_params)
    assert fitted.alignment.scale == 1.0
    assert all(torch.equal(v, before[k]) for k, v in avatar.state_dict().items())
    assert all(p.requires_grad for p in avatar.parameters())
