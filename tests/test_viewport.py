"""Viewport: offscreen GL splat renderer, orbit camera, dirty-flag logic, scene hand-over, mouse navigation.

The GL tests need a standalone OpenGL 3.3 context (EGL, no X server); they skip only when none exists.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from persona_studio.camera import MAX_ELEVATION, Camera
from persona_studio.viewport.controller import RateMeter, ViewportController
from persona_studio.viewport.navigation import MouseButtons, MouseNavigator
from persona_studio.viewport.render_thread import InlineRenderer, RenderRequest, RenderThread
from persona_studio.viewport.scene import SceneSource, make_scene, thinned_scene

BLACK = (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def gl_context():
    from persona_studio.viewport.gl_renderer import create_gl_context

    try:
        ctx = create_gl_context()
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"no standalone OpenGL 3.3 context on this machine: {err}")
    yield ctx
    ctx.release()


@pytest.fixture(params=["gl", "cpu", "engine"])
def renderer(gl_context, request):
    """Each renderer test runs on every backend: OpenGL, the CPU compositor and the engine's rasterizer
    (gsplat on CUDA where a GPU can, else on the CPU)."""
    from persona_studio.viewport.gl_renderer import SplatRenderer

    r = SplatRenderer(160, 120, background=BLACK, context=gl_context, backend=request.param)
    yield r
    r.release()


def project_by_hand(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates of world points: K @ (R p + t), divided by depth. [N, 2]"""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    pix = cam @ K.T
    return pix[:, :2] / pix[:, 2:]


def weighted_centroid(weights: np.ndarray) -> np.ndarray:
    """(x, y) centroid of a [H, W] weight image in pixel coordinates (pixel centres at +0.5)."""
    ys, xs = np.mgrid[0:weights.shape[0], 0:weights.shape[1]]
    total = weights.sum()
    return np.array([(weights * (xs + 0.5)).sum() / total, (weights * (ys + 0.5)).sum() / total])


def three_splats():
    """A red, a green and a blue splat, well apart, off the optical axis."""
    means = np.array([[0.0, 0.1, 0.0], [0.45, 0.35, 0.2], [-0.5, -0.25, -0.3]])
    colors = np.eye(3)
    scales = np.array([0.04, 0.06, 0.08])
    return make_scene(means, colors, scales)


# ---------------------------------------------------------------------------------------------------
# Renderer correctness
# ---------------------------------------------------------------------------------------------------
def test_splat_centroids_land_on_projected_centres(renderer):
    scene = three_splats()
    camera = Camera(target=[0.0, 0.0, 0.0], distance=3.0, azimuth=math.radians(25), elevation=math.radians(15),
                    width=160, height=120)
    renderer.set_scene(scene)
    image = renderer.render(camera.viewmat(), camera.K())
    assert image.shape == (120, 160, 4) and image.dtype == np.float32
    expected = project_by_hand(scene.means.astype(np.float64), camera.viewmat(), camera.K())
    for channel in range(3):  # each splat lives in its own colour channel
        centroid = weighted_centroid(image[..., channel])
        assert np.abs(centroid - expected[channel]).max() < 1.0, (channel, centroid, expected[channel])


def test_splat_colours_and_coverage(renderer):
    scene = three_splats()
    camera = Camera(target=[0.0, 0.0, 0.0], distance=3.0, width=160, height=120)
    renderer.set_scene(scene)
    image = renderer.render(camera.viewmat(), camera.K())
    view, K = camera.viewmat(), camera.K()
    centres = project_by_hand(scene.means.astype(np.float64), view, K)
    depths = scene.means @ view[2, :3] + view[2, 3]
    for channel, (centre, depth, sigma) in enumerate(zip(centres, depths, scene.scales)):
        x, y = np.floor(centre).astype(int)
        # Expected falloff at this pixel's centre for a Gaussian of std-dev f * sigma / z pixels (+ eps2d
        # blur); near the optical axis the projection is nearly isotropic.
        variance = (K[0, 0] * sigma / depth) ** 2 + 0.3
        offset = np.array([x + 0.5, y + 0.5]) - centre
        alpha = min(0.999, math.exp(-0.5 * offset @ offset / variance))
        pixel = image[y, x]
        assert pixel[channel] == pytest.approx(alpha, abs=0.02)
        assert pixel[3] == pytest.approx(alpha, abs=0.02)
        assert np.delete(pixel[:3], channel).max() < 0.02  # other channels stay dark
    assert image[0, 0].tolist() == [0.0, 0.0, 0.0, 0.0]  # far from every splat: background, no coverage


def test_background_colour_and_opaque_alpha(renderer):
    renderer.set_background((0.2, 0.4, 0.6))
    renderer.set_scene(None)
    camera = Camera(width=160, height=120)
    image = renderer.render(camera.viewmat(), camera.K())
    np.testing.assert_allclose(image[..., :3], np.broadcast_to([0.2, 0.4, 0.6], (120, 160, 3)), atol=1e-6)
    assert image[..., 3].max() == 0.0
    assert renderer.render(camera.viewmat(), camera.K(), opaque=True)[..., 3].min() == 1.0


def test_half_transparent_splat_blends_with_background(renderer):
    renderer.set_background((0.0, 0.0, 1.0))
    renderer.set_scene(make_scene([[0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]], [0.1], opacities=[0.5]))
    camera = Camera(target=[0.0, 0.0, 0.0], width=160, height=120)
    centre = renderer.render(camera.viewmat(), camera.K())[60, 80]
    # "over" compositing: 0.5 red + (1 - 0.5) blue background (the centre pixel's falloff is ~1)
    np.testing.assert_allclose(centre, [0.5, 0.0, 0.5, 0.5], atol=0.01)


def test_front_splat_covers_back_splat_from_either_side(renderer):
    # Red at z = +0.3 (nearer the front camera), blue at z = -0.3, both opaque and big enough to overlap.
    renderer.set_scene(make_scene([[0.0, 0.0, 0.3], [0.0, 0.0, -0.3]], [[1, 0, 0], [0, 0, 1]], [0.15, 0.15]))
    camera = Camera(target=[0.0, 0.0, 0.0], distance=3.0, width=160, height=120)
    front = renderer.render(camera.viewmat(), camera.K())[60, 80]
    assert front[0] > 0.95 and front[2] < 0.05
    camera.view_preset("back")  # now blue is nearer: the order must flip
    back = renderer.render(camera.viewmat(), camera.K())[60, 80]
    assert back[2] > 0.95 and back[0] < 0.05


@pytest.mark.parametrize("mode, eps2d", [("classic", 0.3), ("antialiased", 0.1)])
def test_matches_engine_rasterizer(renderer, mode, eps2d):
    torch = pytest.importorskip("torch")
    rasterize = pytest.importorskip("core.render.rasterize").rasterize
    rng = np.random.default_rng(3)
    n = 40
    scene = make_scene(rng.uniform(-0.4, 0.4, (n, 3)), rng.uniform(0, 1, (n, 3)), rng.uniform(0.01, 0.06, n),
                       opacities=rng.uniform(0.3, 1.0, n))
    camera = Camera(target=[0.0, 0.0, 0.0], distance=2.0, azimuth=0.7, elevation=0.3, width=160, height=120)
    renderer.set_scene(scene)
    renderer.eps2d, renderer.antialiased = eps2d, mode == "antialiased"
    ours = renderer.render(camera.viewmat(), camera.K())

    def t(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32)

    colors, alphas, _ = rasterize(
        t(scene.means), t(np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))), t(np.repeat(scene.scales[:, None], 3, 1)),
        t(scene.opacities), t(scene.colors), t(camera.viewmat()[None]), t(camera.K()[None]), 160, 120,
        eps2d=eps2d, backgrounds=torch.zeros(1, 3), rasterize_mode=mode, backend="cpu")
    theirs_rgb, theirs_alpha = colors[0].numpy(), alphas[0, ..., 0].numpy()
    silhouette_ours, silhouette_theirs = ours[..., 3] > 0.5, theirs_alpha > 0.5
    iou = (silhouette_ours & silhouette_theirs).sum() / (silhouette_ours | silhouette_theirs).sum()
    assert iou > 0.99
    # Same projection, cut-offs and order: pixels agree closely (the engine also stops at T < 1e-4).
    assert np.abs(ours[..., :3] - theirs_rgb).mean() < 2e-3
    assert np.abs(ours[..., :3] - theirs_rgb).max() < 0.05


def test_backends_agree_on_a_dense_figure(gl_context):
    """The CPU compositor against GL on thousands of overlapping splats, with splats cut by the image
    border: the same image except where the CPU stops a pixel (the engine's rule: before the splat that
    would take its transmittance to 1e-4, so that splat's share is missing; GL never stops)."""
    from persona_studio.viewport.demo_figure import demo_figure
    from persona_studio.viewport.gl_renderer import SplatRenderer

    scene = demo_figure(6000)
    camera = Camera(width=96, height=128)
    camera.frame(*scene.bounds())
    camera.zoom(8)  # the figure overflows the image: splats straddle every border
    camera.orbit(30, 10)
    images = {}
    for backend in ("gl", "cpu", "engine"):
        r = SplatRenderer(96, 128, background=(0.2, 0.3, 0.4), context=gl_context, backend=backend)
        r.set_scene(scene)
        images[backend] = r.render(camera.viewmat(), camera.K())
        r.release()
    difference = np.abs(images["gl"] - images["cpu"])
    alpha = images["cpu"][..., 3]
    assert alpha.mean() > 0.4 and min(alpha[0].max(), alpha[-1].max(), alpha[:, 0].max()) > 0.99
    assert difference.mean() < 1e-3 and (difference > 0.01).mean() < 0.01 and difference.max() < 0.15
    # The engine follows the same rules, the pixel stop included.
    engine = np.abs(images["engine"] - images["cpu"])
    assert engine.mean() < 1e-4 and engine.max() < 0.02


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs an NVIDIA GPU")
def test_engine_backend_draws_on_the_gpu_where_it_can():
    """With a CUDA GPU and gsplat, the engine backend renders there and reads the frame back through
    pinned memory; its image equals the CPU compositor's (the CPU path runs in the tests above)."""
    from persona_studio.viewport.demo_figure import demo_figure
    from persona_studio.viewport.engine_splatter import gpu_splatting_problem
    from persona_studio.viewport.gl_renderer import SplatRenderer

    assert gpu_splatting_problem() is None, gpu_splatting_problem()
    scene = demo_figure(6000)
    camera = Camera(width=96, height=128)
    camera.frame(*scene.bounds())
    images = {}
    for backend in ("cpu", "engine"):
        r = SplatRenderer(96, 128, background=(0.2, 0.3, 0.4), backend=backend)  # no GL needed
        r.set_scene(scene)
        images[backend] = r.render(camera.viewmat(), camera.K())
        if backend == "engine":
            assert r._engine.device.type == "cuda" and r._engine._host.is_pinned()
        r.release()
    assert np.abs(images["engine"] - images["cpu"]).mean() < 1e-4


def test_auto_backend_picks_the_cpu_compositor_on_software_gl(gl_context, monkeypatch):
    from persona_studio.viewport.gl_renderer import BACKEND_ENV, SplatRenderer, is_software_gl

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    from persona_studio.viewport.engine_splatter import gpu_splatting_problem
    from persona_studio.viewport.gl_renderer import auto_backend

    r = SplatRenderer(8, 8, context=gl_context)
    software = is_software_gl(gl_context)
    assert r.backend == ("engine" if gpu_splatting_problem() is None else "gl" if not software else "cpu")
    r.release()
    assert [auto_backend(False, True), auto_backend(True, True), auto_backend(True, False), auto_backend(False, False)] \
        == ["engine", "engine", "cpu", "gl"]
    described = {"gl": "OpenGL", "cpu": "CPU compositor",
                 "engine": "gsplat (CUDA)" if gpu_splatting_problem() is None else "engine (CPU)"}
    for forced in ("gl", "cpu", "engine"):
        monkeypatch.setenv(BACKEND_ENV, forced)
        r = SplatRenderer(8, 8, context=gl_context)
        assert r.backend == forced and r.description == described[forced]
        r.release()
    with pytest.raises(ValueError, match="backend must be one of"):
        SplatRenderer(8, 8, context=gl_context, backend="vulkan")


def test_auto_backend_draws_without_offscreen_gl(monkeypatch):
    """No EGL/GLX context can be made: "auto" still draws (CPU compositor, or the GPU), "gl" says why not."""
    from persona_studio.viewport import gl_renderer
    from persona_studio.viewport.engine_splatter import gpu_splatting_problem

    def no_gl():
        raise RuntimeError("no EGL display")

    monkeypatch.delenv(gl_renderer.BACKEND_ENV, raising=False)
    monkeypatch.setattr(gl_renderer, "create_gl_context", no_gl)
    r = gl_renderer.SplatRenderer(32, 24)
    assert r.backend == ("engine" if gpu_splatting_problem() is None else "cpu") and r.ctx is None
    r.set_scene(make_scene([[0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]], [0.2]))
    camera = Camera(target=[0.0, 0.0, 0.0], width=32, height=24)
    assert r.render(camera.viewmat(), camera.K())[12, 16, 0] > 0.9
    r.release()
    with pytest.raises(RuntimeError, match="no EGL display"):
        gl_renderer.SplatRenderer(32, 24, backend="gl")


def test_splats_behind_the_camera_are_culled(renderer):
    renderer.set_scene(make_scene([[0.0, 0.0, 5.0]], [[1, 1, 1]], [0.5]))  # behind a front camera at z = 3
    camera = Camera(target=[0.0, 0.0, 0.0], distance=3.0, width=160, height=120)
    assert renderer.render(camera.viewmat(), camera.K())[..., 3].max() == 0.0


def test_resize_changes_the_output_size(renderer):
    renderer.resize(64, 48)
    camera = Camera(width=64, height=48)
    assert renderer.render(camera.viewmat(), camera.K()).shape == (48, 64, 4)


# ---------------------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------------------
def test_front_preset_looks_at_the_avatars_face():
    camera = Camera(target=[0.0, 1.0, 0.0], distance=2.5)
    camera.view_preset("front")
    np.testing.assert_allclose(camera.eye(), [0.0, 1.0, 2.5], atol=1e-9)
    view = camera.viewmat()
    np.testing.assert_allclose(view[2, :3], [0.0, 0.0, -1.0], atol=1e-9)  # camera forward is world -z
    # The face (+z side) is nearer than the back of the head; world +x (avatar's left) is on the image
    # right and world +y is up in the image (smaller row).
    face, back = project_depth(view, [0, 1, 0.1]), project_depth(view, [0, 1, -0.1])
    assert face < back
    centre, left, up = camera.project(np.array([[0, 1, 0], [0.1, 1, 0], [0, 1.1, 0]]))
    assert left[0] > centre[0] and up[1] < centre[1]
    np.testing.assert_allclose(centre, [camera.width / 2, camera.height / 2], atol=1e-9)


def project_depth(view: np.ndarray, point) -> float:
    return float(view[2, :3] @ np.asarray(point, float) + view[2, 3])


def test_side_back_top_presets():
    camera = Camera(target=[0.0, 0.0, 0.0], distance=2.0)
    camera.view_preset("side")
    np.testing.assert_allclose(camera.eye(), [2.0, 0.0, 0.0], atol=1e-9)
    camera.view_preset("back")
    np.testing.assert_allclose(camera.eye(), [0.0, 0.0, -2.0], atol=1e-9)
    camera.view_preset("top")
    view = camera.viewmat()
    assert view[2, 1] < -0.99    # looking down
    assert view[1, 2] > 0.99     # the avatar's front (+z) is at the bottom of the image
    with pytest.raises(ValueError, match="unknown view preset"):
        camera.view_preset("diagonal")


def test_orbit_keeps_distance_and_clamps_elevation():
    camera = Camera(target=[0.1, 0.9, -0.2], distance=2.7)
    for dx, dy in [(40, 10), (-300, 25), (1000, -5000), (3, 9000)]:
        camera.orbit(dx, dy)
        assert np.linalg.norm(camera.eye() - camera.target) == pytest.approx(2.7)
        assert abs(camera.elevation) <= MAX_ELEVATION
    assert camera.elevation == pytest.approx(MAX_ELEVATION)  # the last drag pushed past the pole
    np.testing.assert_allclose(camera.target, [0.1, 0.9, -0.2])


def test_orbit_drag_right_turns_the_avatar_to_the_right():
    camera = Camera(target=[0.0, 0.0, 0.0], distance=3.0)
    camera.orbit(50, 0)
    # The avatar's face point (+z) moved right in the image.
    assert camera.project(np.array([[0.0, 0.0, 0.2]]))[0, 0] > camera.width / 2


def test_pan_moves_target_so_the_scene_follows_the_mouse():
    camera = Camera(target=[0.0, 1.0, 0.0], distance=3.0, azimuth=0.4, elevation=0.2)
    old_target = camera.target.copy()
    before = camera.project(old_target[None])[0]
    forward = camera.viewmat()[2, :3]
    camera.pan(30, -12)
    assert np.linalg.norm(camera.target - old_target) > 0
    after = camera.project(old_target[None])[0]
    np.testing.assert_allclose(after - before, [30, -12], atol=1e-6)
    np.testing.assert_allclose(camera.viewmat()[2, :3], forward, atol=1e-12)  # direction unchanged
    assert camera.distance == 3.0


def test_zoom_fov_and_intrinsics():
    camera = Camera(distance=3.0, fov_y=40.0, width=640, height=480)
    camera.zoom(2)
    assert camera.distance == pytest.approx(3.0 * 0.81)
    camera.zoom(-2)
    assert camera.distance == pytest.approx(3.0)
    K = camera.K()
    assert math.degrees(2 * math.atan(240 / K[1, 1])) == pytest.approx(40.0)
    assert (K[0, 2], K[1, 2]) == (320, 240)
    camera.set_fov(500)
    assert camera.fov_y == 120.0


def test_frame_fits_the_sphere_and_reset_returns_home():
    camera = Camera(width=400, height=300, fov_y=30.0, azimuth=0.5)
    center, radius = np.array([0.3, 1.0, -0.2]), 0.9
    camera.frame(center, radius)
    np.testing.assert_allclose(camera.target, center)
    # Points on the sphere's boundary perpendicular to the view stay inside the image.
    rot = camera.viewmat()[:3, :3]
    edge = center + radius * np.stack([rot[0], -rot[0], rot[1], -rot[1]])
    pixels = camera.project(edge)
    assert (pixels >= 0).all() and (pixels[:, 0] <= 400).all() and (pixels[:, 1] <= 300).all()
    home = camera.state()
    camera.orbit(100, 40)
    camera.pan(10, 10)
    camera.zoom(3)
    camera.set_fov(70)
    camera.reset()
    assert camera.state() == home


# ---------------------------------------------------------------------------------------------------
# Controller: dirty flag, scene hand-over, render thread
# ---------------------------------------------------------------------------------------------------
def test_renders_only_when_something_changed(renderer):
    backend = InlineRenderer(renderer)
    # moving_scale=1: no reduced-resolution frames here (the next test covers them), so no timing enters.
    controller = ViewportController(backend, Camera(width=160, height=120), background=BLACK, moving_scale=1.0)
    scene = three_splats()
    controller.set_scene(scene.means, scene.colors, scene.scales)
    assert controller.tick() is not None and renderer.renders == 1
    for _ in range(5):
        assert controller.tick() is None
    assert renderer.renders == 1 and not controller.dirty and controller.up_to_date

    changes = [
        lambda: controller.camera.orbit(10, 0),
        lambda: controller.camera.pan(5, 0),
        lambda: controller.camera.zoom(1),
        lambda: controller.camera.set_fov(55),
        lambda: controller.camera.set_size(100, 80),
        lambda: controller.set_background((0.5, 0.5, 0.5)),
        lambda: controller.set_scene(scene.means, scene.colors * 0.5, scene.scales),
    ]
    for count, change in enumerate(changes, start=2):
        change()
        assert controller.dirty
        assert controller.tick() is not None
        assert controller.tick() is None
        assert renderer.renders == count
    # Re-sorting follows the view direction only: pan, zoom, FOV, size and background reuse the order.
    # (The engine's rasterizer orders the Gaussians inside every render: nothing to reuse.)
    assert renderer.sorts == (0 if renderer.backend == "engine" else 3)  # first scene, orbit, new scene


def test_camera_motion_renders_reduced_resolution_then_one_full_frame(renderer):
    now = [0.0]
    controller = ViewportController(InlineRenderer(renderer), Camera(width=160, height=120), background=BLACK,
                                    moving_scale=0.5, settle_seconds=0.3, clock=lambda: now[0])
    scene = three_splats()
    controller.set_scene(scene.means, scene.colors, scene.scales)
    assert controller.tick().image.shape == (120, 160, 4)  # framing the first scene is not a movement
    controller.camera.orbit(20, 5)
    low = controller.tick().image
    assert low.shape == (60, 80, 4)
    # The half-size image is the same view: its splat centroids, doubled, land on the full-size projections.
    expected = project_by_hand(scene.means.astype(np.float64), controller.camera.viewmat(), controller.camera.K())
    for channel in range(3):
        assert np.abs(2 * weighted_centroid(low[..., channel]) - expected[channel]).max() < 1.0
    now[0] += 0.2
    assert controller.tick() is None and not controller.dirty  # still settling, nothing new to draw
    assert not controller.up_to_date  # ... but the final image is still to come
    now[0] += 0.2
    assert controller.dirty
    assert controller.tick().image.shape == (120, 160, 4)
    now[0] += 5.0
    assert controller.tick() is None and controller.up_to_date


def test_interactive_scenes_render_reduced_then_one_full_frame_when_they_rest(renderer):
    now = [0.0]
    controller = ViewportController(InlineRenderer(renderer), Camera(width=160, height=120), background=BLACK,
                                    moving_scale=0.5, settle_seconds=0.3, clock=lambda: now[0])
    scene = three_splats()
    controller.set_scene(scene.means, scene.colors, scene.scales)
    assert controller.tick().image.shape == (120, 160, 4) and controller.shown_full_resolution
    # A pose slider moves: each of its scenes is drawn at half size at once.
    for step in range(1, 4):
        version = controller.set_scene(scene.means + 0.01 * step, scene.colors, scene.scales, moving=True)
        assert controller.shown_scene_version == version - 1
        assert controller.tick().image.shape == (60, 80, 4)
        assert controller.shown_scene_version == version and not controller.shown_full_resolution
        now[0] += 0.1
    assert controller.tick() is None and not controller.up_to_date  # still settling
    # Once the pose has rested for settle_seconds, one full-size frame of the last scene follows.
    now[0] += 0.25
    frame = controller.tick()
    assert frame.image.shape == (120, 160, 4) and controller.shown_full_resolution and controller.up_to_date
    assert controller.shown_scene_version == version
    now[0] += 5.0
    assert controller.tick() is None
    # A non-interactive scene (a training update) is drawn at full size straight away.
    controller.set_scene(scene.means, scene.colors, scene.scales)
    assert controller.tick().image.shape == (120, 160, 4) and controller.up_to_date


def test_moving_frames_draw_a_thinned_scene_that_covers_the_same_figure(renderer):
    """While something moves, a large scene is drawn from half its splats (or ``moving_splats``), larger,
    covering what the whole figure covers; the resting frame draws every splat."""
    from persona_studio.viewport.demo_figure import demo_figure

    figure = demo_figure(6000)
    thin = thinned_scene(figure, 3000)
    assert thin.count == 3000 and thinned_scene(figure, 3000).means.tobytes() == thin.means.tobytes()
    assert np.allclose(np.median(thin.scales), np.sqrt(2.0) * np.median(figure.scales), rtol=0.1)
    assert thinned_scene(figure, 10_000) is figure
    camera = Camera(width=160, height=160)
    camera.frame(*figure.bounds())
    coverage = []
    for scene in (figure, thin):
        renderer.resize(160, 160)
        renderer.set_background((0.0, 0.0, 0.0))
        renderer.set_scene(scene)
        image = renderer.render(camera.viewmat(), camera.K(), opaque=True)
        coverage.append(image[..., :3].max(axis=-1) > 0.05)
    iou = (coverage[0] & coverage[1]).sum() / (coverage[0] | coverage[1]).sum()
    assert iou > 0.9, iou

    backend = RecordingBackend()
    now = [0.0]
    controller = ViewportController(backend, Camera(width=160, height=120), moving_scale=0.5, settle_seconds=0.3,
                                    clock=lambda: now[0], moving_splats=2000)
    controller.set_scene(figure.means, figure.colors, figure.scales)
    controller.tick()
    controller.set_scene(figure.means + 0.01, figure.colors, figure.scales, moving=True)
    controller.tick()
    controller.tick()
    now[0] += 1.0
    controller.tick()
    counts = [r.scene.count for r in backend.requests]
    assert counts == [figure.count, figure.count // 2, figure.count], counts


class RecordingBackend:
    """A thread-safe stand-in for ``RenderThread`` that keeps the requests and answers none."""

    def __init__(self):
        self.requests: list[RenderRequest] = []
        self.lock = threading.Lock()

    def submit(self, request: RenderRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def take_frame(self):
        return None


def test_render_on_publish_submits_a_published_scene_without_waiting_for_the_ui():
    now = [0.0]
    backend = RecordingBackend()
    controller = ViewportController(backend, Camera(width=160, height=120), moving_scale=0.5, settle_seconds=0.3,
                                    clock=lambda: now[0], render_on_publish=True)
    scene = three_splats()
    controller.set_scene(scene.means, scene.colors, scene.scales, frame_camera=True)
    assert backend.requests == []  # the first scene is framed by the UI's tick (the camera's owner)
    controller.tick()
    first = backend.requests[-1]
    assert first.scene is controller.scene and (first.width, first.height) == (160, 120)

    def publish(**flags):  # from another thread, like the posing thread
        worker = threading.Thread(target=lambda: controller.set_scene(scene.means + 0.1, scene.colors,
                                                                      scene.scales, **flags))
        worker.start()
        worker.join()

    publish()
    assert len(backend.requests) == 2  # no tick in between
    request = backend.requests[-1]
    assert request.scene is controller.scene and request.serial == controller.requests == 2
    np.testing.assert_allclose(request.scene.means, scene.means + 0.1)
    assert np.array_equal(request.viewmat, first.viewmat) and (request.width, request.height) == (160, 120)
    controller.tick()
    assert len(backend.requests) == 2 and not controller.dirty  # the tick has nothing left to submit
    # An interactive scene goes out at once too, at the reduced size, with the intrinsics scaled with it.
    publish(moving=True)
    request = backend.requests[-1]
    assert (request.width, request.height) == (80, 60)
    np.testing.assert_allclose(request.K[:2], first.K[:2] / 2)
    # A scene that asks to reframe the camera waits for the tick.
    publish(frame_camera=True)
    assert len(backend.requests) == 3
    controller.tick()
    assert len(backend.requests) == 4 and backend.requests[-1].scene is controller.scene


def test_first_scene_is_framed_and_later_ones_keep_the_view(renderer):
    controller = ViewportController(InlineRenderer(renderer), Camera(width=160, height=120))
    scene = three_splats()
    controller.set_scene(scene.means, scene.colors, scene.scales)
    controller.tick()
    np.testing.assert_allclose(controller.camera.target, scene.bounds()[0])
    controller.camera.orbit(30, 0)
    view = controller.camera.state()
    controller.set_scene(scene.means + 1.0, scene.colors, scene.scales)  # a training update
    controller.tick()
    assert controller.camera.state() == view
    controller.set_scene(scene.means + 1.0, scene.colors, scene.scales, frame_camera=True)  # a new avatar
    controller.tick()
    np.testing.assert_allclose(controller.camera.target, scene.bounds()[0] + 1.0, atol=1e-6)


def test_scene_source_latest_wins_across_threads():
    source = SceneSource()
    assert source.poll(0) is None
    scenes = [make_scene(np.full((k + 1, 3), float(k)), np.zeros((k + 1, 3)), np.ones(k + 1)) for k in range(50)]

    def publish_all():
        for k, scene in enumerate(scenes):
            source.publish(scene, frame_camera=(k == 10))

    worker = threading.Thread(target=publish_all)
    worker.start()
    worker.join()
    entry = source.poll(0)
    assert entry.version == 50 and entry.scene is scenes[-1]
    assert entry.frame_camera  # requested by a skipped scene, not lost
    assert source.poll(entry.version) is None
    source.publish(scenes[0])
    assert not source.poll(entry.version).frame_camera


def test_make_scene_validates_and_copies():
    torch = pytest.importorskip("torch")
    means = np.zeros((4, 3))
    scene = make_scene(torch.zeros(4, 3), np.full((4, 3), 2.0), torch.full((4, 1), 0.01))
    assert scene.scales.shape == (4,) and scene.colors.max() == 1.0 and scene.opacities.tolist() == [1.0] * 4
    source = np.zeros((4, 3), np.float32)
    kept = make_scene(source, source, np.ones(4, np.float32))
    source[:] = 7.0
    assert kept.means.max() == 0.0  # a publisher may keep editing its arrays
    with pytest.raises(ValueError, match=r"means must have shape \[N, 3\]"):
        make_scene(np.zeros((4, 2)), means, np.ones(4))
    with pytest.raises(ValueError, match=r"colors must have shape \[4, 3\]"):
        make_scene(means, np.zeros((3, 3)), np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        make_scene(means, means, np.array([1.0, np.nan, 1.0, 1.0]))
    with pytest.raises(ValueError, match="log-scales"):
        make_scene(means, means, -np.ones(4))


def test_render_thread_renders_requests_and_reports_failures(gl_context):
    from persona_studio.viewport.gl_renderer import SplatRenderer

    thread = RenderThread(lambda: SplatRenderer(64, 48))  # its own context, made inside the thread
    camera = Camera(width=64, height=48)
    scene = three_splats()
    thread.submit(RenderRequest(scene, camera.viewmat(), camera.K(), 64, 48, (1.0, 1.0, 1.0), serial=7))
    assert thread.wait_idle(timeout=30)
    assert thread.wait_frame(timeout=1.0)
    frame = thread.take_frame()
    assert frame.serial == 7 and frame.image.shape == (48, 64, 4) and frame.image[..., 3].min() == 1.0
    stages = [name for name, _ in frame.stamps]
    assert stages == ["render wake-up", "sort", "composite"]
    times = [at for _, at in frame.stamps]
    assert times == sorted(times) and times[-1] - times[0] <= frame.render_seconds + 0.05
    assert thread.take_frame() is None and not thread.wait_frame(timeout=0.05)
    thread.close()

    def broken():
        raise RuntimeError("no GPU here")

    failing = RenderThread(broken)
    assert not failing.wait_idle(timeout=10)
    assert failing.error == "viewport renderer unavailable: RuntimeError: no GPU here"
    failing.close()


def test_rate_meter_counts_events_in_its_window():
    meter = RateMeter(window=1.0)
    for t in np.arange(0.0, 2.0, 0.1):
        meter.tick(now=float(t))
    assert meter.rate(now=1.95) == pytest.approx(10, abs=1)
    assert meter.rate(now=10.0) == 0


# ---------------------------------------------------------------------------------------------------
# Mouse navigation
# ---------------------------------------------------------------------------------------------------
def test_mouse_drags_orbit_pan_and_wheel_zooms():
    camera = Camera()
    nav = MouseNavigator(camera)
    left = MouseButtons(left=True)
    released = MouseButtons()
    start = camera.state()
    assert not nav.update((100, 100), left, hovered=True)      # press starts an orbit
    assert nav.update((120, 100), left, hovered=False)         # keeps going outside the image
    assert camera.azimuth != start[2] and camera.target.tolist() == list(start[0])
    nav.update((120, 100), released, hovered=True)
    assert nav.mode is None

    target = camera.target.copy()
    nav.update((50, 50), MouseButtons(right=True), hovered=True)
    assert nav.update((60, 40), MouseButtons(right=True), hovered=True)
    assert not np.allclose(camera.target, target)

    state = camera.state()
    nav.update((0, 0), released, hovered=False)
    nav.update((0, 0), left, hovered=False)                    # press outside the image (e.g. a slider)
    assert not nav.update((40, 40), left, hovered=True)       # then dragging over it does nothing
    assert camera.state() == state

    distance = camera.distance
    assert not nav.wheel(1.0, hovered=False)
    assert nav.wheel(1.0, hovered=True) and camera.distance < distance
