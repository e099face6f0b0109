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
