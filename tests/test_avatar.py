"""Avatar: posing follows the body model, expressions move the face, bundles load back bit-exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.avatar.bundle import load_bundle, save_bundle
from core.avatar.build import build_avatar, fill_unseen_colors
from core.avatar.render import pose_avatar, render_posed
from core.body import BodyModel
from core.config import AvatarConfig, RenderConfig
from core.errors import UserError


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


@pytest.fixture(scope="module")
def avatar(body):
    return build_avatar(body, np.zeros(body.num_betas), AvatarConfig(num_gaussians=14000, skinning_grid=32))


def _params(**kw):
    return {k: torch.as_tensor(np.asarray(v, np.float32)).reshape(1, -1) for k, v in kw.items()}


def test_base_avatar_reproduces_the_body_in_any_pose(body, avatar):
    # A fresh avatar has zero offsets: its Gaussians are points of the body's surface (the upsampling
    # of its vertices), so posing must agree with the body model's own skinning, carried to the same
    # points, up to the diffused-weight smoothing.
    pose = np.zeros(63, np.float32)
    pose[17 * 3 + 1] = 1.2  # right elbow
    pose[0 * 3 + 0] = -0.8  # left hip forward
    params = _params(body_pose=pose, transl=[0.1, 0.0, 0.2])
    with torch.no_grad():
        posed = pose_avatar(avatar, body, params, refined=False)
        verts = avatar.upsample @ body(**params).vertices[0]
    err = (posed.means - verts).norm(dim=1)
    assert torch.quantile(err, 0.99) < 0.03 and err.median() < 0.005


def test_expression_moves_only_the_face(body, avatar):
    expr = np.zeros(body.num_expression, np.float32)
    expr[:5] = 1.0
    with torch.no_grad():
        neutral = pose_avatar(avatar, body, _params(), refined=False).means
        smiling = pose_avatar(avatar, body, _params(expression=expr), refined=False).means
    moved = (smiling - neutral).norm(dim=1) > 1e-4
    assert moved.any()
    head_y = neutral[moved, 1].min()
    assert head_y > neutral[:, 1].max() - 0.35  # everything that moved lies in the top 35 cm


def test_refined_render_differs_only_with_trained_offsets(body, avatar):
    pose = _params(body_pose=np.full(63, 0.1, np.float32))
    with torch.no_grad():
        base = pose_avatar(avatar, body, pose, refined=False).means
        refined = pose_avatar(avatar, body, pose, refined=True).means
    assert torch.equal(base, refined)  # the MLP's last layer starts at zero


def test_render_shapes_and_silhouette(body, avatar):
    from core.camera import intrinsics, orbit_camera

    with torch.no_grad():
        posed = pose_avatar(avatar, body, _params(), refined=False)
        view = orbit_camera(torch.tensor([0.0, 0.0, 0.0]), 3.0, 0.0)
        out = render_posed(posed, view, intrinsics(120.0, 64, 96), 64, 96, RenderConfig(backend="cpu"),
                           torch.ones(3))
    assert out.rgb.shape == (96, 64, 3) and out.alpha.shape == (96, 64, 1)
    assert out.alpha[48, 32, 0] > 0.9 and out.alpha[2, 2, 0] < 0.01  # body in the middle, empty corner
    assert 2.5 < float(out.depth[48, 32, 0] / out.alpha[48, 32, 0]) < 3.5
    assert torch.allclose(out.rgb[2, 2], torch.ones(3), atol=1e-3)  # white background


def test_bundle_round_trip_is_bit_exact(tmp_path, body, avatar):
    with torch.no_grad():
        avatar.offsets.normal_(0, 0.001)
        avatar.colors.uniform_(0, 1)
    save_bundle(tmp_path / "a", avatar, body, {"betas": np.zeros(body.num_betas)})
    loaded, _, manifest = load_bundle(tmp_path / "a", body)
    for k, v in avatar.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert manifest["num_gaussians"] == avatar.num_gaussians


def test_bundle_bad_inputs(tmp_path, body):
    with pytest.raises(UserError, match="not an avatar bundle"):
        load_bundle(tmp_path, body)
    (tmp_path / "manifest.json").write_text('{"format": "persona-avatar/99"}')
    with pytest.raises(UserError, match="unsupported avatar format"):
        load_bundle(tmp_path, body)


def test_unseen_colors_copy_the_front():
    xs, ys = np.meshgrid(np.linspace(-0.5, 0.5, 11), np.linspace(0, 1, 11))
    front = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 0.1)], 1)
    back = front * np.array([1, 1, -1])
    canonical = np.concatenate([front, back])
    colors = np.zeros((len(canonical), 3), np.float32)
    colors[: len(front)] = np.where(front[:, :1] < 0, [1.0, 0, 0], [0, 0, 1.0])
    seen = np.arange(len(canonical)) < len(front)
    out = fill_unseen_colors(colors, seen, canonical)
    left_back = (~seen) & (canonical[:, 0] < -0.15)
    right_back = (~seen) & (canonical[:, 0] > 0.15)
    assert (out[left_back, 0] > 0.99).all() and (out[right_back, 2] > 0.99).all()
    assert np.array_equal(out[seen], colors[seen])


def test_unseen_head_takes_its_sides_not_the_face():
    """A head-like sphere seen from the front: face (skin) in the middle, hair at the top and sides. Its
    unseen back gets the hair when the head is filled in 3D (``nearest_in_3d``), the face when copied front
    to back. A shirt below, also seen from the front only, still gets its front's colour on its back."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(4000, 3))
    head = 0.1 * direction / np.linalg.norm(direction, axis=1, keepdims=True) + [0.0, 1.6, 0.0]
    rel = head - [0.0, 1.6, 0.0]
    seen_head = rel[:, 2] > 0.0  # the camera sees the front half
    face = seen_head & (np.hypot(rel[:, 0], rel[:, 1] + 0.02) < 0.06)
    shirt = np.concatenate([rng.uniform(-0.2, 0.2, (2000, 1)), rng.uniform(1.0, 1.4, (2000, 1)),
                            rng.choice([-0.1, 0.1], (2000, 1))], 1)
    canonical = np.concatenate([head, shirt])
    seen = np.concatenate([seen_head, shirt[:, 2] > 0])
    skin, hair, red = np.array([0.9, 0.7, 0.6]), np.array([0.1, 0.05, 0.0]), np.array([1.0, 0.0, 0.0])
    colors = np.zeros((len(canonical), 3), np.float32)
    colors[:len(head)] = np.where(face[:, None], skin, hair)
    colors[len(head):] = red
    in_3d = np.arange(len(canonical)) < len(head)
    back_of_head = np.zeros(len(canonical), bool)
    back_of_head[:len(head)] = (rel[:, 2] < -0.05) & (np.hypot(rel[:, 0], rel[:, 1] + 0.02) < 0.04)
    flat = fill_unseen_colors(colors, seen, canonical)
    grouped = fill_unseen_colors(colors, seen, canonical, in_3d)
    assert np.allclose(flat[back_of_head], skin, atol=0.05)  # the face copied to the back of the head
    assert np.allclose(grouped[back_of_head], hair, atol=0.05)
    back_of_shirt = ~seen & ~in_3d
    assert np.allclose(grouped[back_of_shirt], red) and np.array_equal(grouped[seen], colors[seen])


def test_transforms_on_cpu_match_the_einsum_definition_values_and_gradients():
    """apply_transforms / rotate_vectors run one numba pass each way on CPU tensors: the same values and gradients
    as the plain einsum (float32 and float64), also when only the points need a gradient (the constant star
    inverse) or only the transforms."""
    from core.avatar.gaussians import apply_transforms, rotate_vectors

    g = torch.Generator().manual_seed(4)
    for dtype in (torch.float32, torch.float64):
        transforms = torch.randn(300, 4, 4, generator=g, dtype=dtype)
        points = torch.randn(300, 3, generator=g, dtype=dtype)
        upstream = torch.randn(300, 3, generator=g, dtype=dtype)
        for translate, function in ((True, apply_transforms), (False, rotate_vectors)):
            for wanted in ((True, True), (False, True), (True, False)):
                t = transforms.clone().requires_grad_(wanted[0])
                p = points.clone().requires_grad_(wanted[1])
                linear = torch.einsum("nab,nb->na", t[:, :3, :3], p)
                reference = linear + t[:, :3, 3] if translate else linear / linear.norm(dim=-1, keepdim=True)
                ours = function(t, p)
                assert torch.allclose(ours, reference, atol=1e-6, rtol=1e-5)
                inputs = [x for x, w in zip((t, p), wanted) if w]
                mine = torch.autograd.grad((ours * upstream).sum(), inputs)
                theirs = torch.autograd.grad((reference * upstream).sum(), inputs)
                for a, b in zip(mine, theirs):
                    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()


def test_vertex_normal_sums_match_gathered_cross_products_in_both_float_types():
    """The numba pass behind Avatar.surface_normals, on a small closed mesh in float32 and float64: the per-vertex
    sums of face cross products and their gradient equal a plain gather / index_add computation."""
    from core.avatar.gaussians import vertex_normal_sums

    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [1, 2, 3], [2, 0, 3]])  # a tetrahedron, outward winding
    g = torch.Generator().manual_seed(9)
    for dtype in (torch.float32, torch.float64):
        points = (torch.eye(4, 3, dtype=dtype) + 0.1 * torch.randn(4, 3, generator=g, dtype=dtype)).requires_grad_()
        v0, v1, v2 = points[faces[:, 0]], points[faces[:, 1]], points[faces[:, 2]]
        face_normals = torch.cross(v1 - v0, v2 - v0, dim=-1)
        reference = torch.zeros_like(points)
        for corner in range(3):
            reference = reference.index_add(0, faces[:, corner], face_normals)
        ours = vertex_normal_sums(points, faces)
        assert ours.dtype == dtype and torch.allclose(ours, reference, atol=1e-6)
        upstream = torch.randn(points.shape, generator=g, dtype=dtype)
        (grad,) = torch.autograd.grad((ours * upstream).sum(), points)
        (grad_ref,) = torch.autograd.grad((reference * upstream).sum(), points)
        assert torch.allclose(grad, grad_ref, atol=1e-6)
    assert vertex_normal_sums(points.detach().half(), faces) is None  # other dtypes: the caller's sparse path
