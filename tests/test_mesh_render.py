"""Offscreen mesh renderer: every check compares against geometry worked out independently here."""
from __future__ import annotations

import threading

import moderngl
import numpy as np
import pytest
import trimesh

from core.render.mesh import MeshRenderer, visible_vertices

SIZE = 96
FOCAL = 100.0


@pytest.fixture(scope="module")
def renderer():
    renderer = MeshRenderer()
    yield renderer
    renderer.close()


def intrinsics(focal: float = FOCAL, cx: float = SIZE / 2, cy: float = SIZE / 2) -> np.ndarray:
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def quad(x0, x1, y0, y1, z) -> tuple[np.ndarray, np.ndarray]:
    """Camera-facing rectangle at depth z; winding gives the normal -z (towards the camera)."""
    vertices = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 3, 2]])
    return vertices, faces


def unproject(u: float, focal=FOCAL, centre=SIZE / 2, z=1.0) -> float:
    """Camera x (or y) that projects to pixel coordinate u at depth z."""
    return (u - centre) / focal * z


def pixel_centre_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """``[H, W, 3]`` rays through pixel centres (independent of the module's own helper)."""
    v, u = np.mgrid[0:height, 0:width] + 0.5
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera for an OpenCV camera at ``eye`` looking at ``target`` (y down)."""
    eye, target, up = (np.asarray(x, dtype=np.float64) for x in (eye, target, up))
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    viewmat = np.eye(4)
    viewmat[:3, :3] = np.stack([right, down, forward])
    viewmat[:3, 3] = -viewmat[:3, :3] @ eye
    return viewmat


# ------------------------------------------------------------------------------------------
# depth, mask, normals, face ids


def test_fronto_parallel_quad_depth_area_and_normal(renderer):
    z = 2.0
    u0, u1, v0, v1 = 20.3, 70.6, 15.8, 60.2  # edges off pixel boundaries
    vertices, faces = quad(unproject(u0, z=z), unproject(u1, z=z), unproject(v0, z=z), unproject(v1, z=z), z)
    out = renderer.render(vertices, faces, np.eye(4), intrinsics(), SIZE, SIZE)

    # Covered exactly where the pixel centre lies inside the projected rectangle.
    centres = np.arange(SIZE) + 0.5
    expected = np.outer((centres > v0) & (centres < v1), (centres > u0) & (centres < u1))
    np.testing.assert_array_equal(out["mask"], expected.astype(np.float32))
    area = (u1 - u0) * (v1 - v0)
    assert abs(out["mask"].sum() - area) <= (u1 - u0) + (v1 - v0)

    np.testing.assert_allclose(out["depth"][expected], z, rtol=1e-6)
    assert (out["depth"][~expected] == 0).all()
    np.testing.assert_allclose(out["normal"][expected], np.broadcast_to([0, 0, -1], (expected.sum(), 3)), atol=1e-6)
    assert (out["normal"][~expected] == 0).all()

    # Face 0 has corners 0, 2, 1: the triangle above the diagonal from (u0, v0) to (u1, v1).
    assert set(np.unique(out["face_id"][expected])) == {0, 1}
    assert (out["face_id"][~expected] == -1).all()
    rows, cols = np.nonzero(expected)
    above = (rows + 0.5 - v0) / (v1 - v0) < (cols + 0.5 - u0) / (u1 - u0) - 0.02
    below = (rows + 0.5 - v0) / (v1 - v0) > (cols + 0.5 - u0) / (u1 - u0) + 0.02
    assert (out["face_id"][rows[above], cols[above]] == 0).all()
    assert (out["face_id"][rows[below], cols[below]] == 1).all()


def test_nearer_surface_wins_whatever_the_draw_order(renderer):
    far_v, far_f = quad(-1, 1, -1, 1, 3.0)
    near_v, near_f = quad(-0.2, 0.2, -0.2, 0.2, 2.0)
    for first, second in (((near_v, near_f), (far_v, far_f)), ((far_v, far_f), (near_v, near_f))):
        vertices = np.concatenate([first[0], second[0]])
        faces = np.concatenate([first[1], second[1] + 4])
        out = renderer.render(vertices, faces, np.eye(4), intrinsics(), SIZE, SIZE)
        centre = out["depth"][SIZE // 2 - 3 : SIZE // 2 + 3, SIZE // 2 - 3 : SIZE // 2 + 3]
        np.testing.assert_allclose(centre, 2.0, rtol=1e-6)
        near_faces = {0, 1} if first[0] is near_v else {2, 3}
        assert set(np.unique(out["face_id"][SIZE // 2 - 3 : SIZE // 2 + 3, SIZE // 2])) <= near_faces
        np.testing.assert_allclose(out["depth"][20, 20], 3.0, rtol=1e-6)  # far quad spans pixels 15-81


def test_pixel_centre_convention_and_row_order(renderer):
    # A right triangle in the top-left: vertical edge at u = 10.0 and horizontal edge at v = 5.0.
    z = 1.0
    x10, y5 = unproject(10.0), unproject(5.0)
    vertices = np.array([[unproject(-20.0), y5, z], [x10, y5, z], [x10, unproject(-40.0), z]])
    out = renderer.render(vertices, np.array([[0, 1, 2]]), np.eye(4), intrinsics(), SIZE, SIZE)
    mask = out["mask"]
    assert mask[:5, 9].all() and not mask[:, 10].any()  # column 9 (centre 9.5) in, 10 out
    assert mask[4, :10].all() and not mask[5:].any()  # row 4 (centre 4.5) in, row 5 out
    assert mask.sum() == 50  # rows 0-4 x columns 0-9: the image is not flipped

    # A vertex projecting to u = 0.5 sits at the centre of column 0.
    vertex_u = 0.5
    tiny = np.array([[unproject(vertex_u - 0.3), unproject(30.2), z], [unproject(vertex_u + 0.3), unproject(30.2), z],
                     [unproject(vertex_u), unproject(30.8), z]])
    assert renderer.render(tiny, np.array([[0, 1, 2]]), np.eye(4), intrinsics(), SIZE, SIZE)["mask"][30, 0] == 1


def test_viewmat_equals_transforming_the_vertices(renderer):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    eye = np.array([1.5, -2.0, 1.0])
    viewmat = look_at(eye, [0.0, 0.1, 0.0])
    by_camera = renderer.render(sphere.vertices, sphere.faces, viewmat, intrinsics(), SIZE, SIZE)
    cam_vertices = sphere.vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
    by_hand = renderer.render(cam_vertices, sphere.faces, np.eye(4), intrinsics(), SIZE, SIZE)
    for name in ("mask", "depth", "normal", "face_id"):
        np.testing.assert_allclose(by_camera[name], by_hand[name], atol=1e-5, err_msg=name)
    assert by_camera["mask"].sum() > 500


def test_sphere_depth_and_smooth_normals_match_the_analytic_sphere(renderer):
    radius, distance = 0.5, 3.0
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    vertices = sphere.vertices + [0.0, 0.0, distance]
    K = intrinsics(focal=150.0)
    out = renderer.render(vertices, sphere.faces, np.eye(4), K, SIZE, SIZE)

    rays = pixel_centre_rays(K, SIZE, SIZE)
    centre = np.array([0.0, 0.0, distance])
    # |t d - c|^2 = r^2, nearer root.
    a = (rays**2).sum(-1)
    b = -2 * rays @ centre
    c = centre @ centre - radius**2
    disc = b**2 - 4 * a * c
    inner = disc > 0.05 * disc.max()  # away from the silhouette, where the polygon differs most
    t = (-b - np.sqrt(np.where(disc > 0, disc, 0))) / (2 * a)
    assert (out["mask"][inner] == 1).all()
    np.testing.assert_allclose(out["depth"][inner], t[inner], atol=2e-3)  # polygon vs sphere
    analytic_normal = (rays * t[..., None] - centre) / radius
    cosine = (out["normal"][inner] * analytic_normal[inner]).sum(-1)
    assert cosine.min() > 0.999
    assert (out["normal"][inner][:, 2] < 0).all()  # facing the camera: -z in OpenCV camera space


# ------------------------------------------------------------------------------------------
# attributes


def tilted_plane() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A plane receding in depth (z = 2 + 1.5 y): returns vertices, faces, plane normal n, offset d (n . X = d)."""
    ys = np.array([-0.6, 0.6])
    vertices = np.array([[-0.8, ys[0], 2 + 1.5 * ys[0]], [0.8, ys[0], 2 + 1.5 * ys[0]],
                         [0.8, ys[1], 2 + 1.5 * ys[1]], [-0.8, ys[1], 2 + 1.5 * ys[1]]])
    normal = np.array([0.0, -1.5, 1.0])
    return vertices, np.array([[0, 2, 1], [0, 3, 2]]), normal, 2.0


def test_attributes_interpolate_perspective_correctly_on_a_tilted_plane(renderer):
    vertices, faces, normal, offset = tilted_plane()
    # An attribute that is affine in 3D position: its exact value at a pixel is known analytically.
    coefficients = np.array([[0.7, -0.2, 0.4], [0.1, 0.9, -0.3]])
    attribute = vertices @ coefficients.T + [0.05, -0.1]
    K = intrinsics()
    out = renderer.render(vertices, faces, np.eye(4), K, SIZE, SIZE, vertex_attrs={"grad": attribute})

    rays = pixel_centre_rays(K, SIZE, SIZE)
    t = offset / (rays @ normal)
    points = rays * t[..., None]
    expected = points @ coefficients.T + [0.05, -0.1]
    covered = out["mask"] == 1
    assert covered.sum() > 0.4 * SIZE * SIZE
    assert out["grad"].shape == (SIZE, SIZE, 2)
    np.testing.assert_allclose(out["depth"][covered], t[covered], rtol=1e-5)
    np.testing.assert_allclose(out["grad"][covered], expected[covered], atol=1e-5)

    # The check can tell: interpolating linearly in screen space would be far off.
    projected = vertices @ K.T
    uv = projected[:, :2] / projected[:, 2:]
    screen_affine = np.linalg.lstsq(np.c_[uv[:3], np.ones(3)], attribute[:3], rcond=None)[0]
    v, u = np.nonzero(covered & (out["face_id"] == 0))
    naive = np.c_[u + 0.5, v + 0.5, np.ones(len(u))] @ screen_affine
    assert np.abs(naive - expected[v, u]).max() > 0.01

    normals_expected = -normal / np.linalg.norm(normal)  # winding faces the camera
    np.testing.assert_allclose(out["normal"][covered], np.broadcast_to(normals_expected, (covered.sum(), 3)), atol=1e-5)


def test_near_plane_clips_but_depths_stay_exact(renderer):
    vertices, faces, normal, offset = tilted_plane()  # depth runs from 1.1 to 2.9 metres
    K = intrinsics()
    near = 1.8
    out = renderer.render(vertices, faces, np.eye(4), K, SIZE, SIZE, near=near)
    rays = pixel_centre_rays(K, SIZE, SIZE)
    t = offset / (rays @ normal)
    full = renderer.render(vertices, faces, np.eye(4), K, SIZE, SIZE)["mask"] == 1
    covered = out["mask"] == 1
    assert (t[covered] > near - 1e-3).all()
    assert covered[full & (t > near + 1e-3)].all()
    assert not covered[full & (t < near - 1e-3)].any()
    np.testing.assert_allclose(out["depth"][covered], t[covered], rtol=1e-5)


def test_flat_attributes_never_blend_and_take_the_nearest_corner(renderer):
    z = 2.0
    x0, x1 = unproject(10.0, z=z), unproject(86.0, z=z)
    vertices, faces = quad(x0, x1, unproject(10.0, z=z), unproject(86.0, z=z), z)
    labels = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    out = renderer.render(vertices, faces, np.eye(4), intrinsics(), SIZE, SIZE,
                          vertex_attrs={"part": labels, "smooth": labels}, flat_attrs=["part"])
    covered = out["mask"] == 1
    values = out["part"][covered]
    is_a_label = (np.abs(values[:, None, :] - labels[None]).max(-1) < 1e-6).any(1)
    assert is_a_label.all()
    smooth_is_label = (np.abs(out["smooth"][covered][:, None, :] - labels[None]).max(-1) < 1e-6).any(1)
    assert not smooth_is_label.all()  # the smooth version does blend
    # Near each corner the corner's own label wins.
    for (row, col), label in zip(((12, 12), (12, 83), (83, 83), (83, 12)), labels):
        np.testing.assert_array_equal(out["part"][row, col], label)
    assert (out["part"][~covered] == 0).all()


def test_lambert_shading_matches_the_cosine_law(renderer):
    vertices, faces = quad(-0.5, 0.5, -0.5, 0.5, 2.0)  # world normal (0, 0, -1)
    albedo = np.tile([0.8, 0.5, 0.2], (4, 1))
    light = {"direction": np.array([0.0, -3.0, -3.0]), "ambient": 0.1, "diffuse": 0.6}  # 45 degrees off the normal
    expected = albedo[0] * (0.1 + 0.6 * np.cos(np.pi / 4))
    # The light lives in world space: turning the camera must not change the shading.
    for viewmat in (np.eye(4), look_at([0.0, 0.0, 0.0], [0.5, 0.2, 2.0], up=(0.0, -1.0, 0.0))):
        out = renderer.render(vertices, faces, viewmat, intrinsics(), SIZE, SIZE, vertex_attrs={"albedo": albedo},
                              light=light)
        covered = out["mask"] == 1
        assert covered.sum() > 200
        np.testing.assert_allclose(out["shaded"][covered], np.broadcast_to(expected, (covered.sum(), 3)), atol=1e-5)
    # A light behind the surface leaves only the ambient term.
    back = renderer.render(vertices, faces, np.eye(4), intrinsics(), SIZE, SIZE, vertex_attrs={"albedo": albedo},
                           light={"direction": [0.0, 0.0, 1.0], "ambient": 0.1, "diffuse": 0.6})
    covered = back["mask"] == 1
    np.testing.assert_allclose(back["shaded"][covered], np.broadcast_to(albedo[0] * 0.1, (covered.sum(), 3)), atol=1e-6)


def test_texture_sampling_follows_uvs_with_v_up(renderer):
    vertices, faces, normal, offset = tilted_plane()
    # u follows x, v follows -y (up in the image), both spanning the texture.
    uvs = np.c_[(vertices[:, 0] + 0.8) / 1.6, (0.6 - vertices[:, 1]) / 1.2]
    height, width = 16, 32
    texture = np.zeros((height, width, 2), dtype=np.float32)
    texture[..., 0] = np.arange(width)[None, :]  # column index
    texture[..., 1] = np.arange(height)[:, None]  # row index (row 0 = top = v 1)
    K = intrinsics()
    out = renderer.render(vertices, faces, np.eye(4), K, SIZE, SIZE, texture=texture, uvs=uvs)

    rays = pixel_centre_rays(K, SIZE, SIZE)
    points = rays * (offset / (rays @ normal))[..., None]
    u = (points[..., 0] + 0.8) / 1.6
    v = (0.6 - points[..., 1]) / 1.2
    # Bilinear sampling of a ramp is the ramp itself (clamped at the outer texel centres).
    expected_col = np.clip(u * width - 0.5, 0, width - 1)
    expected_row = np.clip((1 - v) * height - 0.5, 0, height - 1)
    covered = out["mask"] == 1
    np.testing.assert_allclose(out["textured"][..., 0][covered], expected_col[covered], atol=1e-3)
    np.testing.assert_allclose(out["textured"][..., 1][covered], expected_row[covered], atol=1e-3)

    # uint8 textures are scaled to 0..1
    grey = renderer.render(vertices, faces, np.eye(4), K, SIZE, SIZE, texture=np.full((4, 4, 3), 51, np.uint8), uvs=uvs)
    np.testing.assert_allclose(grey["textured"][covered], 0.2, atol=1e-6)


# ------------------------------------------------------------------------------------------
# supersampling and background


def test_ssaa_gives_fractional_coverage_and_premultiplied_colour(renderer):
    z = 1.0
    # Right edge at u = 10.25: with 4x4 samples (at 10.125, 10.375, ...) column 10 is 1/4 covered.
    vertices, faces = quad(unproject(2.0), unproject(10.25), unproject(2.0), unproject(20.0), z)
    colour = np.tile([0.2, 0.4, 1.0], (4, 1))
    out = renderer.render(vertices, faces, np.eye(4), intrinsics(), SIZE, SIZE, vertex_attrs={"rgb": colour}, ssaa=4)
    np.testing.assert_allclose(out["mask"][5, 9], 1.0)
    np.testing.assert_allclose(out["mask"][5, 10], 0.25)
    np.testing.assert_allclose(out["mask"][5, 11], 0.0)
    np.testing.assert_allclose(out["rgb"][5, 10], 0.25 * colour[0], atol=1e-6)
    np.testing.assert_allclose(out["depth"][5, 10], z, rtol=1e-6)  # depth is not premultiplied
    np.testing.assert_allclose(out["normal"][5, 10], [0, 0, -1], atol=1e-6)
    assert out["face_id"][5, 10] >= 0 and out["face_id"][5, 11] == -1
    np.testing.assert_allclose(out["mask"].sum(), (10.25 - 2.0) * 18.0, atol=1e-4)

    on_grey = renderer.render(vertices, faces, np.eye(4), intrinsics(), SIZE, SIZE, vertex_attrs={"rgb": colour},
                              ssaa=4, background=[0.5, 0.5, 0.5])
    np.testing.assert_allclose(on_grey["rgb"][5, 10], 0.25 * colour[0] + 0.75 * 0.5, atol=1e-6)
    np.testing.assert_allclose(on_grey["rgb"][50, 50], 0.5)


def test_flat_attributes_with_ssaa_and_background(renderer):
    vertices, faces = quad(unproject(2.0), unproject(10.25), unproject(2.0), unproject(20.0), 1.0)
    labels = np.array([[1.0], [2.0], [3.0], [4.0]])
    out = renderer.render(vertices, faces, np.eye(4), intrinsics(), SIZE, SIZE, vertex_attrs={"part": labels},
                          flat_attrs={"part"}, ssaa=4, background=-1.0)
    assert set(np.unique(out["part"])) <= {1.0, 2.0, 3.0, 4.0, -1.0}
    assert out["part"][5, 10] in (1.0, 2.0, 3.0, 4.0)  # partly covered: keeps a label, unblended
    assert out["part"][50, 50] == -1.0


# ------------------------------------------------------------------------------------------
# visibility


def test_visible_vertices_front_back_and_occluded():
    radius, distance = 0.5, 3.0
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    vertices = sphere.vertices + [0.0, 0.0, distance]
    K = intrinsics(focal=150.0)
    to_camera = -vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    facing = (sphere.vertex_normals * to_camera).sum(1)
    visible = visible_vertices(vertices, sphere.faces, np.eye(4), K, SIZE, SIZE)
    assert visible[facing > 0.2].all()
    assert not visible[facing < -0.05].any()

    # A card in front of the sphere's left half hides those front vertices.
    card_v, card_f = quad(-1.0, 0.0, -1.0, 1.0, 2.0)
    all_v = np.concatenate([vertices, card_v])
    all_f = np.concatenate([sphere.faces, card_f + len(vertices)])
    with_card = visible_vertices(all_v, all_f, np.eye(4), K, SIZE, SIZE)[: len(vertices)]
    left = vertices[:, 0] < -0.05
    right = vertices[:, 0] > 0.05
    assert not with_card[left].any()
    assert with_card[right & (facing > 0.2)].all()


def grid(n: int, half: float, z: float) -> tuple[np.ndarray, np.ndarray]:
    """An n x n vertex grid spanning [-half, half]^2 at depth z, facing the camera."""
    xs = np.linspace(-half, half, n)
    x, y = np.meshgrid(xs, xs)
    vertices = np.stack([x.ravel(), y.ravel(), np.full(n * n, z)], axis=1)
    index = np.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, 1:].ravel(), index[1:, :-1].ravel()
    return vertices, np.concatenate([np.stack([a, c, b], 1), np.stack([a, d, c], 1)])


def test_visible_vertices_outside_the_view_or_behind_are_hidden(renderer):
    vertices, faces = grid(5, 0.5, 2.0)
    K = intrinsics(focal=60.0)
    interior = (np.abs(vertices[:, :2]) < 0.4).all(1)
    visible = renderer.visible_vertices(vertices, faces, np.eye(4), K, SIZE, SIZE)
    assert visible[interior].all()
    shifted = vertices + [10.0, 0.0, 0.0]  # off to the right, outside the image
    assert not renderer.visible_vertices(shifted, faces, np.eye(4), K, SIZE, SIZE).any()
    behind = vertices * [1, 1, -1]
    assert not renderer.visible_vertices(behind, faces, np.eye(4), K, SIZE, SIZE).any()
    # A steep surface (70 degrees from the view direction) stays visible: no slope error.
    angle = np.radians(70)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    steep = (vertices - [0, 0, 2.0]) @ rotation.T + [0, 0, 2.0]
    assert renderer.visible_vertices(steep, faces, np.eye(4), K, SIZE, SIZE, tolerance=1e-4)[interior].all()


# ------------------------------------------------------------------------------------------
# threads, context failure, bad input


def test_renders_from_a_worker_thread_and_guards_foreign_threads(renderer):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    vertices = sphere.vertices + [0.0, 0.0, 2.5]
    expected = renderer.render(vertices, sphere.faces, np.eye(4), intrinsics(), SIZE, SIZE)
    results, errors = {}, []

    def worker():
        try:
            own = MeshRenderer()  # created and used in this thread
            results["own"] = own.render(vertices, sphere.faces, np.eye(4), intrinsics(), SIZE, SIZE)
            results["again"] = own.render(vertices, sphere.faces, np.eye(4), intrinsics(), SIZE, SIZE)
            own.close()
            results["visible"] = visible_vertices(vertices, sphere.faces, np.eye(4), intrinsics(), SIZE, SIZE)
            renderer.render(vertices, sphere.faces, np.eye(4), intrinsics(), SIZE, SIZE)
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    for key in ("own", "again"):
        for name in ("mask", "depth", "normal", "face_id"):
            np.testing.assert_array_equal(results[key][name], expected[name])
    assert results["visible"].sum() > 0
    # The main thread's renderer refused to be used from the worker.
    assert len(errors) == 1 and "one MeshRenderer per thread" in errors[0]


def test_missing_gl_reports_how_to_install_mesa(monkeypatch):
    def no_gl(*args, **kwargs):
        raise Exception("cannot open libEGL.so\nsecond line")

    monkeypatch.setattr(moderngl, "create_standalone_context", no_gl)
    vertices, faces = quad(-0.5, 0.5, -0.5, 0.5, 2.0)
    with pytest.raises(RuntimeError) as info:
        MeshRenderer().render(vertices, faces, np.eye(4), intrinsics(), SIZE, SIZE)
    message = str(info.value)
    assert "apt-get install libegl1 libgl1-mesa-dri" in message and "\n" not in message
    assert "libEGL" in message


@pytest.mark.parametrize(
    "change, fragment",
    [
        (dict(width=0), "width"),
        (dict(height=-3), "height"),
        (dict(width=12.5), "width"),
        (dict(ssaa=0), "ssaa"),
        (dict(vertices=np.zeros((4, 2))), "vertices"),
        (dict(vertices=np.full((4, 3), np.nan)), "NaN"),
        (dict(faces=np.array([[0, 1, 4]])), "out of range"),
        (dict(faces=np.array([[0, -1, 2]])), "out of range"),
        (dict(faces=np.array([[0.0, 1.0, 2.0]])), "integer"),
        (dict(faces=np.array([0, 1, 2])), "faces"),
        (dict(K=np.eye(4)), "K"),
        (dict(K=np.diag([0.0, 100.0, 1.0])), "fx"),
        (dict(viewmat=np.eye(3)), "viewmat"),
        (dict(near=0.0), "near"),
        (dict(near=5.0, far=1.0), "near"),
        (dict(vertex_attrs={"rgb": np.zeros((3, 3))}), "rgb"),
        (dict(vertex_attrs={"rgb": np.zeros((4, 0))}), "rgb"),
        (dict(vertex_attrs={"depth": np.zeros((4, 1))}), "output names"),
        (dict(vertex_attrs={"rgb": np.zeros((4, 3))}, flat_attrs=["seg"]), "flat_attrs"),
        (dict(texture=np.zeros((4, 4, 3))), "together"),
        (dict(texture=np.zeros((4, 4, 3)), uvs=np.zeros((4, 3))), "uvs"),
        (dict(light={"direction": [0, 0, 1]}), "albedo"),
        (dict(light={"direction": [0, 0, 0]}, vertex_attrs={"albedo": np.ones((4, 3))}), "direction"),
        (dict(light={"direction": [0, 0, 1], "colour": 1}, vertex_attrs={"albedo": np.ones((4, 3))}), "colour"),
        (dict(light={"direction": [0, 0, 1], "ambient": [0.1, 0.2]}, vertex_attrs={"albedo": np.ones((4, 3))}),
         "ambient"),
        (dict(vertex_attrs={"rgb": np.ones((4, 3))}, background=[0.0, 0.0]), "background"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(renderer, change, fragment):
    vertices, faces = quad(-0.5, 0.5, -0.5, 0.5, 2.0)
    kwargs = dict(vertices=vertices, faces=faces, viewmat=np.eye(4), K=intrinsics(), width=SIZE, height=SIZE)
    kwargs.update(change)
    with pytest.raises(ValueError, match=fragment):
        renderer.render(**kwargs)


def test_per_corner_attributes_and_empty_faces(renderer):
    vertices, faces = quad(-0.5, 0.5, -0.5, 0.5, 2.0)
    # Per face-corner values: one constant per face, so each triangle renders its own colour.
    per_corner = np.repeat(np.array([[[0.25]], [[0.75]]]), 3, axis=1)  # [F=2, 3, 1]
    out = renderer.render(vertices, faces, np.eye(4), intrinsics(), SIZE, SIZE, vertex_attrs={"id": per_corner})
    covered = out["mask"] == 1
    np.testing.assert_allclose(out["id"][..., 0][covered], np.where(out["face_id"][covered] == 0, 0.25, 0.75))

    empty = renderer.render(vertices, np.zeros((0, 3), dtype=np.int64), np.eye(4), intrinsics(), SIZE, SIZE)
    assert empty["mask"].sum() == 0 and (empty["face_id"] == -1).all()

