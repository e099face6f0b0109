"""core.render: the CPU rasterizer against a dense torch reference, gsplat's own torch code, and gradcheck."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from torch import Tensor

import render_reference as ref
from core.render import available_backends, backend_info, jit_cache_warm, rasterize, warmup
from core.render.backends import resolve_backend, training_device
from core.render.jit_cache import configure_numba_cache, default_numba_cache_dir, numba_cache_dir

DIFFERENTIABLE = ("means", "quats", "scales", "opacities", "colors")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _cast(scene: dict, dtype: torch.dtype, requires_grad: bool = False) -> dict:
    return {k: (v.to(dtype).clone().requires_grad_(requires_grad and k in DIFFERENTIABLE) if torch.is_tensor(v) else v)
            for k, v in scene.items()}


def _weighted_loss(render: Tensor, alpha: Tensor, seed: int = 7) -> Tensor:
    """A loss whose gradient reaches every pixel and channel with different weights."""
    gen = torch.Generator().manual_seed(seed)
    w_render = torch.randn(render.shape, generator=gen, dtype=torch.float64).to(render.device, render.dtype)
    w_alpha = torch.randn(alpha.shape, generator=gen, dtype=torch.float64).to(alpha.device, alpha.dtype)
    return (render * w_render).sum() + (alpha * w_alpha).sum()


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp(min=1e-30))


CASES = [
    # render_mode, rasterize_mode, channels, cameras, background, per-camera colours
    ("RGB", "classic", 3, 1, False, False),
    ("RGB", "antialiased", 7, 2, True, False),
    ("RGB+D", "classic", 3, 2, True, True),
    ("RGB+ED", "antialiased", 3, 1, False, False),
    ("D", "classic", 3, 2, True, False),
    ("ED", "antialiased", 7, 1, False, False),
]


def _case_inputs(case, seed: int) -> tuple[dict, dict]:
    render_mode, rasterize_mode, channels, cams, background, per_camera = case
    scene = ref.random_scene(seed, n=240, n_channels=channels, n_cams=cams)
    if per_camera:
        gen = torch.Generator().manual_seed(seed + 100)
        scene["colors"] = torch.rand(cams, scene["means"].shape[0], channels, generator=gen, dtype=torch.float64)
    options = {"render_mode": render_mode, "rasterize_mode": rasterize_mode}
    if background:
        options["backgrounds"] = torch.rand(cams, channels, generator=torch.Generator().manual_seed(seed),
                                            dtype=torch.float64)
    return scene, options


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-D{c[2]}-C{c[3]}{'-bg' if c[4] else ''}")
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-10)], ids=["f32", "f64"])
def test_forward_matches_dense_reference(case, dtype, tolerance):
    scene, options = _case_inputs(case, seed=1)
    want_render, want_alpha = ref.render(**scene, **options)
    backgrounds = options.get("backgrounds")
    got_options = dict(options, backgrounds=None if backgrounds is None else backgrounds.to(dtype))
    got_render, got_alpha, meta = rasterize(**_cast(scene, dtype), **got_options, backend="cpu")
    assert got_render.dtype == dtype and got_render.shape == want_render.shape
    assert got_alpha.shape == want_alpha.shape
    assert float(want_alpha.max()) > 0.5, "scene should cover part of the image"
    assert float((got_render.double() - want_render).abs().max()) <= tolerance
    assert float((got_alpha.double() - want_alpha).abs().max()) <= tolerance
    assert meta["radii"].shape == (scene["viewmats"].shape[0], scene["means"].shape[0], 2)


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: f"{c[0]}-{c[1]}-D{c[2]}-C{c[3]}{'-bg' if c[4] else ''}")
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-3), (torch.float64, 1e-9)], ids=["f32", "f64"])
def test_gradients_match_dense_reference(case, dtype, tolerance):
    scene, options = _case_inputs(case, seed=2)
    want_in = _cast(scene, torch.float64, requires_grad=True)
    got_in = _cast(scene, dtype, requires_grad=True)
    want_opts, got_opts = dict(options), dict(options)
    if "backgrounds" in options:
        want_opts["backgrounds"] = options["backgrounds"].clone().requires_grad_()
        got_opts["backgrounds"] = options["backgrounds"].to(dtype).requires_grad_()
    _weighted_loss(*ref.render(**want_in, **want_opts)).backward()
    _weighted_loss(*rasterize(**got_in, **got_opts, backend="cpu")[:2]).backward()
    for name in DIFFERENTIABLE:
        assert want_in[name].grad.abs().sum() > 0, name
        assert _relative_error(got_in[name].grad, want_in[name].grad) <= tolerance, name
    if "backgrounds" in options:
        assert _relative_error(got_opts["backgrounds"].grad, want_opts["backgrounds"].grad) <= tolerance


@pytest.mark.parametrize("render_mode", ["D", "ED"])
def test_depth_only_gradients_match_dense_reference(render_mode):
    """Depth-only renders composite no colour channel: the depth (and its expected-depth division) alone
    carries the gradients, over two cameras; colours get none."""
    scene, options = _case_inputs((render_mode, "antialiased", 3, 2, False, False), seed=4)
    want_in = _cast(scene, torch.float64, requires_grad=True)
    got_in = _cast(scene, torch.float32, requires_grad=True)
    _weighted_loss(*ref.render(**want_in, **options)).backward()
    _weighted_loss(*rasterize(**got_in, **options, backend="cpu")[:2]).backward()
    for name in ("means", "quats", "scales", "opacities"):
        assert want_in[name].grad.abs().sum() > 0, name
        assert _relative_error(got_in[name].grad, want_in[name].grad) <= 1e-3, name
    assert got_in["colors"].grad is None or float(got_in["colors"].grad.abs().max()) == 0.0


def _gradcheck_scene() -> dict:
    """Four overlapping anisotropic Gaussians a few pixels wide on an 8x9 image, two of them unrotated: every
    pixel is well inside every footprint, so no (Gaussian, pixel) pair sits near the 1/255 or 1e-4 cut-offs,
    where the render is not differentiable."""
    gen = torch.Generator().manual_seed(3)
    n = 4
    means = torch.tensor([[-0.05, -0.04, 1.0], [0.04, 0.0, 1.1], [0.0, 0.05, 1.2], [0.02, -0.01, 0.9]],
                         dtype=torch.float64)
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    quats[2:, 1:] = 0.0  # two unrotated (pure-w quaternions, one negative): the projection's shortcut
    quats[3, 0] = -0.8
    return dict(means=means, quats=quats,
                scales=torch.tensor([[0.3, 0.45, 0.35]] * n, dtype=torch.float64) * (1 + 0.1 * torch.arange(n))[:, None],
                opacities=torch.tensor([0.7, 0.5, 0.9, 0.4], dtype=torch.float64),
                colors=torch.rand(n, 3, generator=gen, dtype=torch.float64),
                viewmats=torch.eye(4, dtype=torch.float64)[None],
                Ks=ref.intrinsics(10.0, 8, 9)[None], width=8, height=9)


@pytest.mark.parametrize("rasterize_mode, render_mode", [("classic", "RGB+D"), ("antialiased", "RGB+ED")])
def test_gradcheck_float64(rasterize_mode, render_mode):
    scene = _gradcheck_scene()
    names = DIFFERENTIABLE + ("backgrounds",)
    inputs = [scene[k].clone().requires_grad_() for k in DIFFERENTIABLE]
    inputs.append(torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64, requires_grad=True))

    def render(*tensors):
        args = dict(zip(names, tensors))
        out = rasterize(**args, viewmats=scene["viewmats"], Ks=scene["Ks"], width=8, height=9,
                        render_mode=render_mode, rasterize_mode=rasterize_mode, backend="cpu")
        return out[0], out[1]

    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_alpha_clamp_and_saturation_at_a_pixel_centre():
    """Opaque Gaussians centred on pixel (4, 4): alpha is capped at 0.999, and a Gaussian that would take
    the transmittance to 1e-6 (<= 1e-4) is left out entirely, as in gsplat."""
    scene = dict(means=torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]], dtype=torch.float64),
                 quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2, dtype=torch.float64),
                 scales=torch.tensor([[0.05] * 3, [0.1] * 3], dtype=torch.float64),
                 opacities=torch.tensor([1.0, 1.0], dtype=torch.float64),
                 colors=torch.tensor([[0.2, 0.4, 0.6], [1.0, 1.0, 1.0]], dtype=torch.float64),
                 viewmats=torch.eye(4, dtype=torch.float64)[None], Ks=ref.intrinsics(20.0, 9, 9)[None],
                 width=9, height=9)
    inputs = _cast(scene, torch.float64, requires_grad=True)
    render, alpha, _ = rasterize(**inputs, backend="cpu")
    assert float(alpha[0, 4, 4, 0].detach()) == pytest.approx(0.999, abs=1e-12)
    torch.testing.assert_close(render[0, 4, 4], 0.999 * scene["colors"][0], rtol=0, atol=1e-12)
    want_render, want_alpha = ref.render(**scene)
    torch.testing.assert_close(render, want_render, rtol=0, atol=1e-10)
    _weighted_loss(render, alpha).backward()
    want = _cast(scene, torch.float64, requires_grad=True)
    _weighted_loss(*ref.render(**want)).backward()
    for name in DIFFERENTIABLE:
        torch.testing.assert_close(inputs[name].grad, want[name].grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-3), (torch.float64, 1e-9)], ids=["f32", "f64"])
def test_gradients_through_deep_stacks_down_to_saturation(dtype, tolerance):
    """60 layers of fairly opaque Gaussians over a 12x10 image: pixels composite dozens of Gaussians and
    most stop at T <= 1e-4. The backward recovers each transmittance by dividing back from the final one,
    so this is where its rounding would pile up; gradients must still match the dense float64 reference."""
    gen = torch.Generator().manual_seed(11)
    n = 60
    means = torch.cat([(torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * 0.3,
                       1.0 + torch.arange(n, dtype=torch.float64)[:, None] * 0.01], dim=1)
    scene = dict(means=means, quats=torch.randn(n, 4, generator=gen, dtype=torch.float64),
                 scales=0.12 + 0.1 * torch.rand(n, 3, generator=gen, dtype=torch.float64),
                 opacities=0.3 + 0.69 * torch.rand(n, generator=gen, dtype=torch.float64),
                 colors=torch.rand(n, 3, generator=gen, dtype=torch.float64),
                 viewmats=torch.eye(4, dtype=torch.float64)[None], Ks=ref.intrinsics(30.0, 12, 10)[None],
                 width=12, height=10)
    want_in = _cast(scene, torch.float64, requires_grad=True)
    got_in = _cast(scene, dtype, requires_grad=True)
    want_render, want_alpha = ref.render(**want_in)
    assert float((want_alpha > 0.999).double().mean()) > 0.8, "most pixels should saturate"
    got_render, got_alpha, _ = rasterize(**got_in, backend="cpu")
    assert float((got_render.detach().double() - want_render.detach()).abs().max()) <= 1e-4
    _weighted_loss(want_render, want_alpha).backward()
    _weighted_loss(got_render, got_alpha).backward()
    for name in DIFFERENTIABLE:
        assert _relative_error(got_in[name].grad, want_in[name].grad) <= tolerance, name


def test_projection_matches_gsplat_torch_reference():
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    scene = ref.random_scene(4, n=300, n_cams=2)
    scene["opacities"] = torch.ones_like(scene["opacities"])  # gsplat's torch code has no opacity-aware radius
    _, _, meta = rasterize(**scene, backend="cpu")
    covars, _ = torch_impl._quat_scale_to_covar_preci(scene["quats"], scene["scales"], compute_preci=False)
    radii, means2d, depths, conics, compensations = torch_impl._fully_fused_projection(
        scene["means"], covars, scene["viewmats"], scene["Ks"], scene["width"], scene["height"], eps2d=0.3,
        calc_compensations=True)
    both = (meta["radii"] > 0).all(-1) & (radii > 0).all(-1)
    assert int(both.sum()) > 200
    torch.testing.assert_close(meta["means2d"][both], means2d[both], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(meta["depths"][both], depths[both], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(meta["conics"][both], conics[both], rtol=1e-9, atol=1e-12)
    # gsplat culls with a 3.33-sigma box, we with min(3.33, sqrt(2 ln 255)) = 3.329: the same Gaussians
    # are culled unless a box edge falls in between (rare), and sizes differ by at most that rounding
    mismatch = ((meta["radii"] > 0).all(-1) != (radii > 0).all(-1)).float().mean()
    assert mismatch < 0.01
    assert int((meta["radii"][both] - radii[both]).abs().max()) <= 1
    _, _, meta_aa = rasterize(**scene, rasterize_mode="antialiased", backend="cpu")
    visible = (meta_aa["radii"] > 0).all(-1) & both
    torch.testing.assert_close(meta_aa["opacities"][visible], compensations[visible], rtol=1e-9, atol=1e-12)


def test_radii_follow_documented_formula_and_bound_every_visible_pixel():
    scene = ref.random_scene(5, n=200)
    _, _, meta = rasterize(**scene, rasterize_mode="antialiased", backend="cpu")
    proj = ref.project(scene["means"], scene["quats"], scene["scales"], scene["viewmats"][0], scene["Ks"][0],
                       scene["width"], scene["height"], 0.3)
    opacity = scene["opacities"] * proj["compensations"]
    radii = meta["radii"][0]
    visible = (radii > 0).all(-1)
    want = ref.expected_radii(proj["blurred"], opacity)
    assert torch.equal(radii[visible].double(), want[visible])
    # culled ones: behind the near plane, too faint, or entirely off-screen
    depth_ok = proj["depths"] >= 0.01
    onscreen = ((proj["means2d"] + want > 0) & (proj["means2d"] - want < torch.tensor([40.0, 32.0]))).all(-1)
    assert torch.equal(visible, depth_ok & (opacity >= 1 / 255) & onscreen)


def test_empty_scene_and_all_culled_render_background():
    empty = ref.random_scene(6, n=10)
    background = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        empty[name] = empty[name][:0]
    render, alpha, meta = rasterize(**empty, backgrounds=background, backend="cpu")
    assert torch.equal(render, background[:, None, None, :].expand(1, 32, 40, 3)) and alpha.abs().max() == 0
    assert meta["radii"].shape == (1, 0, 2)

    behind = _cast(ref.random_scene(6, n=50), torch.float32, requires_grad=True)
    with torch.no_grad():
        behind["means"][:, 2] = -5.0  # camera 0 looks along +z from z = -2: all behind it
    render, alpha, meta = rasterize(**behind, backgrounds=background.float(), render_mode="RGB+D", backend="cpu")
    assert (meta["radii"] == 0).all() and alpha.abs().max() == 0
    assert torch.allclose(render[..., :3], background.float()[:, None, None, :].expand(1, 32, 40, 3))
    render.sum().backward()
    assert behind["means"].grad.abs().max() == 0


def test_gaussians_at_the_camera_and_huge_ones_render_finite_images():
    """Depths at / just past a zero near plane and enormous screen footprints must not break binning."""
    scene = ref.random_scene(12, n=30)
    camera_to_world = torch.linalg.inv(scene["viewmats"][0])
    at_camera = torch.tensor([[0.0, 0.0, 0.0], [0.01, 0.0, 1e-9], [0.0, 0.02, 1e-4], [0.0, 0.0, -0.0]],
                             dtype=torch.float64)
    scene["means"][:4] = at_camera @ camera_to_world[:3, :3].T + camera_to_world[:3, 3]
    scene["scales"][4:6] = 1e6
    render, alpha, meta = rasterize(**scene, near_plane=0.0, backend="cpu")
    assert torch.isfinite(render).all() and torch.isfinite(alpha).all()
    assert (meta["radii"] >= 0).all()
    want_render, _ = ref.render(**scene, near_plane=0.0)
    finite = torch.isfinite(want_render).all(-1)  # the reference itself may produce inf at z = 0
    assert float((render[finite] - want_render[finite]).abs().max()) <= 1e-9


@pytest.mark.parametrize("name, bad", [("means", float("nan")), ("colors", float("inf")), ("viewmats", float("nan")),
                                       ("opacities", float("-inf"))])
def test_non_finite_inputs_raise(name, bad):
    scene = ref.random_scene(7, n=20)
    scene[name] = scene[name].clone()
    scene[name].view(-1)[0] = bad
    with pytest.raises(ValueError, match=name):
        rasterize(**scene, backend="cpu")


@pytest.mark.parametrize("change, message", [
    (dict(width=0), "image size"),
    (dict(height=-3), "image size"),
    (dict(render_mode="RGBD"), "render_mode"),
    (dict(rasterize_mode="fancy"), "rasterize_mode"),
    (dict(backend="vulkan"), "backend"),
    (dict(backend="gsplat"), "gsplat"),
    (dict(near_plane=2.0, far_plane=1.0), "near_plane"),
])
def test_bad_arguments_raise_one_line_errors(change, message):
    scene = ref.random_scene(8, n=20)
    scene.update(change)
    with pytest.raises(ValueError, match=message) as info:
        rasterize(**scene)
    assert "\n" not in str(info.value)


def test_bad_shapes_and_quaternions_raise():
    scene = ref.random_scene(8, n=20)
    with pytest.raises(ValueError, match="quats"):
        rasterize(**dict(scene, quats=scene["quats"][:, :3]), backend="cpu")
    with pytest.raises(ValueError, match="backgrounds"):
        rasterize(**scene, backgrounds=torch.zeros(1, 4, dtype=torch.float64), backend="cpu")
    with pytest.raises(ValueError, match="Ks"):
        rasterize(**dict(scene, Ks=scene["Ks"].repeat(2, 1, 1)), backend="cpu")
    zero_quat = scene["quats"].clone()
    zero_quat[3] = 0.0
    with pytest.raises(ValueError, match="zero-length"):
        rasterize(**dict(scene, quats=zero_quat), backend="cpu")
    with pytest.raises(ValueError, match="float32 or float64"):
        rasterize(**_cast(scene, torch.float16), backend="cpu")


def test_meta_means2d_collects_screen_space_gradients():
    scene = _cast(ref.random_scene(9, n=60), torch.float32, requires_grad=True)
    render, _, meta = rasterize(**scene, backend="cpu")
    meta["means2d"].retain_grad()
    render.sum().backward()
    visible = (meta["radii"] > 0).all(-1)
    assert meta["radii"].dtype == torch.int32
    assert meta["means2d"].grad[visible].abs().sum() > 0
    assert meta["means2d"].grad[~visible].abs().sum() == 0


def test_rendering_from_other_threads_is_identical():
    scene = _cast(ref.random_scene(10, n=200, n_cams=2), torch.float32)
    want = rasterize(**scene, render_mode="RGB+D", backend="cpu")[0]
    results = [None] * 4

    def worker(slot):
        results[slot] = rasterize(**scene, render_mode="RGB+D", backend="cpu")[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got in results:
        assert torch.equal(got, want)


def test_renders_whose_graphs_overlap_keep_their_own_logs():
    """The compositing log's buffer is reused between renders (core.render.scratch): while a render's graph is
    alive, another render must not write into its log. Two graphs alive at once, the second rendered from other
    inputs, backward in either order: each gives the gradients it gives alone."""
    scene_a = _cast(ref.random_scene(11, n=300), torch.float32, requires_grad=True)
    scene_b = _cast(ref.random_scene(12, n=300), torch.float32, requires_grad=True)
    alone = []
    for scene in (scene_a, scene_b):
        _weighted_loss(*rasterize(**scene, backend="cpu")[:2]).backward()
        alone.append({k: scene[k].grad.clone() for k in DIFFERENTIABLE})
        for k in DIFFERENTIABLE:
            scene[k].grad = None
    loss_a = _weighted_loss(*rasterize(**scene_a, backend="cpu")[:2])
    loss_b = _weighted_loss(*rasterize(**scene_b, backend="cpu")[:2])
    loss_b.backward()
    loss_a.backward()
    for scene, want in zip((scene_a, scene_b), alone):
        for k in DIFFERENTIABLE:
            assert torch.equal(scene[k].grad, want[k]), k


def test_scratch_pool_reuses_a_buffer_only_after_its_lease_is_gone():
    from core.render.scratch import ALIGNMENT, ScratchPool

    pool = ScratchPool(max_free=2)
    first, lease = pool.take(1000)
    second, lease_2 = pool.take(1000)
    assert not np.shares_memory(first, second)
    del lease
    assert pool.free_bytes() == first.nbytes
    again, lease = pool.take(900)
    assert np.shares_memory(again, first)  # the freed buffer, not a new one
    too_big, lease_3 = pool.take(first.nbytes + 1)
    assert not np.shares_memory(too_big, first) and not np.shares_memory(too_big, second)
    del lease, lease_2, lease_3
    assert pool.free_bytes() == first.nbytes + too_big.nbytes  # at most max_free kept: the largest ones
    parts = [(7, np.uint8), (5, np.float32), (3, np.int64)]
    arrays, lease = pool.take_arrays(parts)
    assert [(a.size, a.dtype) for a in arrays] == [(n, np.dtype(t)) for n, t in parts]
    assert all(a.ctypes.data % ALIGNMENT == 0 for a in arrays)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])


def test_run_beside_runs_the_call_on_the_calling_thread_and_every_slice_once():
    """Binning runs beside packing (core.threads.run_beside): the serial call stays on the calling thread, and
    the kernel's slices cover every item exactly once."""
    import threading
    from core.threads import run_beside
    seen, caller = [], []
    for n_items in (0, 1, 7, 1000):
        seen.clear()
        caller.clear()
        run_beside((lambda: caller.append(threading.get_ident()),),
                   lambda first, stop, tag: seen.append((first, stop, tag)), n_items, "x")
        assert caller == [threading.get_ident()]
        covered = sorted(i for first, stop, tag in seen for i in range(first, stop))
        assert covered == list(range(n_items)) and all(tag == "x" for *_, tag in seen)


def test_images_and_gradients_do_not_depend_on_the_thread_count(tmp_path):
    """Threads take tiles from a shared queue in whatever order they finish: one, two or three threads must give
    the same image and the same gradients, to the bit.

    The scene is made once here and read by every process: made in each (torch's float64 exp splits a tensor
    this size over its OpenMP threads), the worker thread's half came out different in one process of ~50 on a
    loaded machine, 50 of the 9000 float32 scales a rounding step apart, and that input difference is what this
    test caught in sessions 11, 17 and the session 17 CI run (the rasterizer's own output is the same for any
    tile order: checked with shuffled task orders and buffers filled with NaN before use, session 18)."""
    raw = ref.random_scene(4, n=3000, n_cams=2, width=200, height=120)
    inputs = {k: v.float().numpy() for k, v in raw.items() if torch.is_tensor(v)}
    weights = np.linspace(-1.0, 1.0, 2 * 120 * 200 * 4, dtype=np.float32)
    scene_file = tmp_path / "scene.npz"
    np.savez(scene_file, weights=weights, **inputs)
    script = tmp_path / "threads_render.py"
    script.write_text(
        "import sys, numpy as np, torch\n"
        "from core.render import rasterize\n"
        "data = np.load(sys.argv[1])\n"
        "wanted = ('means', 'quats', 'scales', 'opacities', 'colors')\n"
        "scene = {k: torch.from_numpy(data[k]).requires_grad_(k in wanted) for k in data.files if k != 'weights'}\n"
        "image, alpha, _ = rasterize(**scene, width=200, height=120, render_mode='RGB+ED', backend='cpu')\n"
        "((image * torch.from_numpy(data['weights']).reshape(image.shape)).sum() + alpha.sum()).backward()\n"
        "np.savez(sys.argv[2], image=image.detach().numpy(), **{k: scene[k].grad.numpy() for k in wanted})\n")
    outputs = []
    for threads in (1, 2, 3):
        out = tmp_path / f"threads{threads}.npz"
        done = subprocess.run([sys.executable, str(script), str(scene_file), str(out)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "NUMBA_NUM_THREADS": str(threads)})
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(dict(np.load(out)))
    assert outputs[0]["image"].std() > 0 and np.abs(outputs[0]["scales"]).max() > 0
    for threads, other in zip((2, 3), outputs[1:]):
        for key, value in outputs[0].items():
            differ = value != other[key]
            assert not differ.any(), (key, threads, int(differ.sum()), value.size,
                                      float(np.abs(value - other[key]).max()), float(np.abs(value).max()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_rendering_in_a_forked_child(tmp_path):
    """A child forked after a render (e.g. a fork-based worker pool) must not hang on the dead parent's threads."""
    script = tmp_path / "fork_render.py"
    script.write_text(
        "import os, sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import render_reference as ref\n"
        "from core.render import rasterize\n"
        "scene = {k: (v.float() if torch.is_tensor(v) else v) for k, v in ref.random_scene(1, n=100).items()}\n"
        "want = rasterize(**scene, backend='cpu')[0]\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if torch.equal(rasterize(**scene, backend='cpu')[0], want) else 3)\n"
        "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n")
    done = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_backend_selection_and_info():
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert "cpu" in available_backends()
    info = backend_info()
    assert set(info) >= {"available", "auto", "cuda", "numba_cache_dir", "jit_cache_warm", "gsplat_version"}
    assert info["auto"] in info["available"]
    assert info["cuda"] == torch.cuda.is_available()


def test_training_device_follows_the_machine_and_rejects_impossible_settings():
    gpu_ready = "gsplat" in available_backends()
    assert training_device("auto", "auto").type == ("cuda" if gpu_ready else "cpu")
    assert training_device("auto", "cpu") == torch.device("cpu")
    assert training_device("cpu", "auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CPU rasterizer renders CPU tensors only"):
        training_device("cuda", "cpu")
    with pytest.raises(ValueError, match="render.backend 'gsplat' needs train.device"):
        training_device("cpu", "gsplat")
    if gpu_ready:
        assert training_device("cuda", "gsplat") == torch.device("cuda", torch.cuda.current_device())
    else:  # what a user without a GPU (or without gsplat) is told
        for device, backend in (("cuda", "auto"), ("auto", "gsplat")):
            with pytest.raises(ValueError, match="needs an NVIDIA GPU|needs gsplat") as err:
                training_device(device, backend)
            assert "\n" not in str(err.value)


def test_a_gpu_whose_gsplat_cannot_build_trains_on_the_cpu_or_says_why(monkeypatch):
    # A CUDA machine with gsplat installed but no CUDA toolkit: pip's torch wheels bring no nvcc, so
    # gsplat imports and has no kernels. Simulated: the checks that would find CUDA and gsplat pass.
    from core.render import backends

    monkeypatch.setattr(backends, "available_backends", lambda: ["cpu", "gsplat"])
    monkeypatch.setattr(backends, "gsplat_installed", lambda: True)
    monkeypatch.setattr(backends.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "gsplat_extension_problem", lambda: "gsplat found no CUDA toolkit (nvcc)")
    with pytest.warns(RuntimeWarning, match="training on the CPU: gsplat found no CUDA toolkit"):
        assert training_device("auto", "auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="train.device 'cuda': gsplat found no CUDA toolkit"):
        training_device("cuda", "auto")
    monkeypatch.setattr(backends, "gsplat_extension_problem", lambda: None)
    monkeypatch.setattr(backends.torch.cuda, "current_device", lambda: 0)
    assert training_device("auto", "auto") == torch.device("cuda", 0)  # with a working extension: the GPU


def test_warmup_marks_the_jit_cache_warm(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # the marker goes here; kernels stay where they are
    assert not jit_cache_warm()
    seconds = warmup()
    assert seconds >= 0
    assert jit_cache_warm()
    assert not jit_cache_warm(dtypes=(torch.float64,))


def test_numba_cache_dir_defaults_to_user_cache_and_respects_the_user(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_numba_cache_dir() == tmp_path / "xdg" / "persona-studio" / "numba"
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
        assert default_numba_cache_dir().is_relative_to(tempfile.gettempdir())
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", numba.core.config.CACHE_DIR)  # restored afterwards
    assert numba_cache_dir() == tmp_path / "mine"
    assert configure_numba_cache() == tmp_path / "mine"
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_kernels_cache_under_the_configured_directory(tmp_path):
    """In a fresh interpreter (as an installed app starts), numba must cache our kernels in our directory."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    code = ("import numba; from core.render import kernels; "
            "print(numba.config.CACHE_DIR); print(kernels.project_forward.stats.cache_path)")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True)
    cache_dir, kernel_cache = done.stdout.split()
    assert Path(cache_dir) == tmp_path / "persona-studio" / "numba"
    assert Path(kernel_cache).is_relative_to(cache_dir)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for the gsplat backend")
def test_gsplat_and_cpu_backends_agree():
    pytest.importorskip("gsplat")
    scene, options = _case_inputs(("RGB+ED", "antialiased", 7, 2, True, False), seed=11)
    cpu_in = _cast(scene, torch.float32, requires_grad=True)
    gpu_in = {k: (v.cuda().detach().requires_grad_(v.requires_grad) if torch.is_tensor(v) else v)
              for k, v in cpu_in.items()}
    backgrounds = options.pop("backgrounds").float()
    cpu_out = rasterize(**cpu_in, **options, backgrounds=backgrounds, backend="cpu")
    gpu_out = rasterize(**gpu_in, **options, backgrounds=backgrounds.cuda(), backend="gsplat")
    torch.testing.assert_close(gpu_out[0].cpu(), cpu_out[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu_out[1].cpu(), cpu_out[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu_out[2]["radii"].cpu(), cpu_out[2]["radii"])
    _weighted_loss(cpu_out[0], cpu_out[1]).backward()
    _weighted_loss(gpu_out[0], gpu_out[1]).backward()
    for name in DIFFERENTIABLE:
        assert _relative_error(gpu_in[name].grad.cpu(), cpu_in[name].grad) <= 1e-3, name


@pytest.mark.parametrize("lanes", [8, 16])
def test_float32_row_falloff_matches_exp_and_skips_non_contributions(lanes):
    # The float32 compositing kernels use their own vectorised exp(-sigma); check it against numpy's in
    # float64 over the whole clamped range, and the contribution rules (sigma < 0 or alpha < 1/255 -> 0),
    # for both window widths.
    import numpy as np

    from core.render import kernels

    row_alphas = kernels._row_alphas_8 if lanes == 8 else kernels._row_alphas_16

    @numba.njit
    def row(sigmas, opacity):
        out = np.full((sigmas.shape[0], 2 * kernels.TILE_SIZE), np.float32(-1.0))
        zero = np.float32(0.0)
        for i in range(sigmas.shape[0]):
            # half_a = cross = 0: every column gets sigma = row_sigma
            row_alphas(zero, zero, zero, sigmas[i], opacity, out[i])
        return out[:, :kernels.TILE_SIZE], out[:, kernels.TILE_SIZE:]

    sigmas = np.concatenate([np.linspace(0.0, 80.0, 4001), [-0.5, 1e-7, 5.54, 5.55]]).astype(np.float32)
    falloffs, alphas = row(sigmas, np.float32(1.0))
    assert np.all(falloffs[:, lanes:] == -1.0) and np.all(alphas[:, lanes:] == -1.0)  # nothing beyond the window
    exact = np.exp(-sigmas.astype(np.float64))
    keep = sigmas >= 0
    relative = np.abs(falloffs[keep, 0] - exact[keep]) / exact[keep]
    assert relative.max() < 5e-7
    assert np.all(falloffs[:, :lanes] == falloffs[:, :1])  # the same for every column
    expected = np.where(keep & (np.minimum(0.999, exact) >= 1 / 255), np.minimum(0.999, exact), 0.0)
    np.testing.assert_allclose(alphas[:, 0], expected, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(alphas[:, :lanes], np.repeat(alphas[:, :1], lanes, axis=1))


def test_row_window_columns_follow_the_quadratic_form():
    # Lane i of a window evaluates column first + i: sigma = (half_a dx + cross) dx + row_sigma with
    # dx = mx_centre - i, where the caller passes mx_centre already shifted by the window start.
    import numpy as np

    from core.render import kernels

    @numba.njit
    def window(mx, half_a, cross, row_sigma, opacity):
        out8 = np.zeros(2 * kernels.TILE_SIZE, np.float32)
        out16 = np.zeros(2 * kernels.TILE_SIZE, np.float32)
        kernels._row_alphas_8(mx - np.float32(5.0), half_a, cross, row_sigma, opacity, out8)
        kernels._row_alphas_16(mx, half_a, cross, row_sigma, opacity, out16)
        return out8, out16

    mx, half_a, cross, row_sigma, opacity = (np.float32(v) for v in (8.3, 0.21, -0.13, 0.4, 0.8))
    out8, out16 = window(mx, half_a, cross, row_sigma, opacity)
    dx = mx.astype(np.float64) - np.arange(kernels.TILE_SIZE)
    sigma = (0.21 * dx - 0.13) * dx + 0.4
    np.testing.assert_allclose(out16[:kernels.TILE_SIZE], np.exp(-sigma), rtol=2e-6)
    alpha = np.minimum(0.999, 0.8 * np.exp(-sigma))
    np.testing.assert_allclose(out16[kernels.TILE_SIZE:], np.where(alpha >= 1 / 255, alpha, 0.0), rtol=2e-6)
    # the 8-lane window starting at column 5 holds columns 5..12
    np.testing.assert_array_equal(out8[:8], out16[5:13])
    np.testing.assert_array_equal(out8[kernels.TILE_SIZE:kernels.TILE_SIZE + 8],
                                  out16[kernels.TILE_SIZE + 5:kernels.TILE_SIZE + 13])
