"""CPU rasterizer speed and memory: our numba backend against gsplat's pure-PyTorch reference path.

    python benchmarks/raster.py            # N in {5k, 20k, 50k} x {256^2, 512^2}
    python benchmarks/raster.py --quick    # 20k Gaussians at 256^2 only
    python benchmarks/raster.py --repeats 30 --no-baseline
    python benchmarks/raster.py --gsplat   # also gsplat's CUDA kernels (needs an NVIDIA GPU)
    python benchmarks/raster.py --gsplat --no-baseline --cases 200000,1024 1000000,1024

Scenes: Gaussians on a body-like surface (head, torso, hips, arms, legs as ellipsoids, 1.7 m tall,
seen from 2.5 m, filling 85 % of the image height), isotropic scales around 1 cm, opacities 0.6-1,
RGB colours, one camera, classic mode: per-pixel overlap like a real avatar, not uniform noise.

Baseline, measured in the same run: gsplat 1.5.3's pure-PyTorch reference path
(``gsplat.cuda._torch_impl``: ``_quat_scale_to_covar_preci``, ``_fully_fused_projection``,
``_isect_offset_encode``, ``_rasterize_to_pixels``) with minimal CPU stand-ins for the pieces it takes
from CUDA or nerfacc (``rasterize_to_indices_in_range``, ``render_weight_from_alpha``,
``accumulate_along_rays``) and a vectorised ``_isect_tiles`` (its own is a Python loop per Gaussian).

Each case runs in a fresh subprocess. Times are wall-clock milliseconds per fwd / bwd call (median and
best of the repeats, after warm-up), and "CPU ms" the process CPU time per fwd+bwd summed over threads
(what a shared machine cannot hide), and "idle ms" an estimate of the wall time on an idle machine:
the calling thread's serial CPU time plus, per parallel kernel launch, its slowest thread's CPU time.
"extra RAM" is the peak resident memory from just before the
first render to the end (VmHWM, reset through /proc/self/clear_refs; Linux only) minus the resident
memory then: JIT-compiled code and the inputs are excluded, everything a render allocates is included.
The speedup compares medians of fwd+bwd wall time.

With --gsplat (an NVIDIA GPU and the gsplat package), each case also runs ``rasterize(backend="gsplat")``
on CUDA copies of the same scene: fwd / bwd ms are synchronised wall times (median of the repeats), "GPU
MiB" the peak CUDA memory allocated during the calls beyond what the inputs hold, and max|diff| the
largest difference between gsplat's image and ours.

Cases run with OMP_WAIT_POLICY=PASSIVE unless --omp-spin (or the variable is already set): by default
torch's OpenMP workers spin for ~10 ms after every parallel torch op, which on a 2-core machine takes
the cores from the rasterizer's own threads (measured: about 2x slower at 20k, 256^2).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import torch

from timing import memory_kib, reset_peak_rss

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from core.allocator import keep_freed_memory  # noqa: E402

# (centre xyz, semi-axes xyz) in metres, y down like the camera; about 1.7 m from head to feet.
BODY_PARTS = [
    ((0.0, -0.72, 0.0), (0.10, 0.12, 0.11)),  # head
    ((0.0, -0.25, 0.0), (0.19, 0.33, 0.12)),  # torso
    ((0.0, 0.13, 0.0), (0.17, 0.12, 0.11)),  # hips
    ((-0.33, -0.33, 0.0), (0.05, 0.30, 0.05)),  # arms
    ((0.33, -0.33, 0.0), (0.05, 0.30, 0.05)),
    ((-0.10, 0.55, 0.0), (0.07, 0.40, 0.07)),  # legs
    ((0.10, 0.55, 0.0), (0.07, 0.40, 0.07)),
]
DIFFERENTIABLE = ("means", "quats", "scales", "opacities", "colors")


def _ellipsoid_area(a: float, b: float, c: float) -> float:
    """Knud Thomsen's approximation of an ellipsoid's surface area, m^2."""
    p = 1.6075
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def body_scene(n: int, size: int, seed: int = 0) -> dict:
    """``n`` Gaussians spread by area over the body's ellipsoids; one camera 2.5 m in front; float32."""
    gen = torch.Generator().manual_seed(seed)
    areas = torch.tensor([_ellipsoid_area(*axes) for _, axes in BODY_PARTS])
    part = torch.multinomial(areas / areas.sum(), n, replacement=True, generator=gen)
    directions = torch.randn(n, 3, generator=gen)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    means = torch.tensor([c for c, _ in BODY_PARTS])[part] + directions * torch.tensor([a for _, a in BODY_PARTS])[part]
    scales = (0.01 * torch.exp(0.3 * torch.randn(n, 1, generator=gen))).expand(n, 3).contiguous()
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    viewmat = torch.eye(4)
    viewmat[2, 3] = 2.5
    focal = 0.85 * size * 2.5 / 1.7
    K = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
    return dict(means=means, quats=quats, scales=scales, opacities=0.6 + 0.4 * torch.rand(n, generator=gen),
                colors=torch.rand(n, 3, generator=gen), viewmats=viewmat[None], Ks=K[None], width=size, height=size)


# ----------------------------------------------------------------------------------------------------
# Baseline: gsplat's pure-PyTorch path with CPU stand-ins
# ----------------------------------------------------------------------------------------------------
def _isect_tiles_vectorised(means2d, radii, depths, tile_size, tile_width, tile_height):
    """Same outputs as gsplat's ``_isect_tiles`` (one image, sorted), without its per-Gaussian Python loop."""
    n = means2d.shape[-2]
    means2d, radii, depths = means2d.reshape(n, 2), radii.reshape(n, 2).float(), depths.reshape(n)
    tile_min = torch.floor((means2d - radii) / tile_size).int()
    tile_max = torch.ceil((means2d + radii) / tile_size).int()
    limits = torch.tensor([tile_width, tile_height], dtype=torch.int32)
    tile_min = torch.minimum(torch.clamp(tile_min, min=0), limits)
    tile_max = torch.minimum(torch.clamp(tile_max, min=0), limits)
    spans = tile_max - tile_min
    tiles_per_gauss = spans.prod(dim=-1) * (radii > 0).all(dim=-1)
    gauss = torch.repeat_interleave(torch.arange(n), tiles_per_gauss)
    first = torch.cumsum(tiles_per_gauss, 0) - tiles_per_gauss
    local = torch.arange(len(gauss)) - first[gauss]
    span_x = spans[gauss, 0].clamp(min=1)
    tile_x = tile_min[gauss, 0] + local % span_x
    tile_y = tile_min[gauss, 1] + local // span_x
    tile_id = (tile_y * tile_width + tile_x).long()
    depth_bits = depths.contiguous().view(torch.int32).long() & 0xFFFFFFFF
    isect_ids = (tile_id << 32) | depth_bits[gauss]
    isect_ids, order = torch.sort(isect_ids, stable=True)
    return tiles_per_gauss.reshape(1, n).int(), isect_ids, gauss[order].int()


@torch.no_grad()
def _rasterize_to_indices_in_range_cpu(range_start, range_end, transmittances, means2d, conics, opacities,
                                       image_width, image_height, tile_size, isect_offsets, flatten_ids):
    """CPU stand-in for gsplat's CUDA ``rasterize_to_indices_in_range`` (one image): the (Gaussian, pixel)
    pairs with alpha >= 1/255 before each pixel's transmittance would drop to 1e-4, grouped by pixel and
    front to back within a pixel. Vectorised per tile (an index computation: no gradients, as in CUDA)."""
    tile_width = isect_offsets.shape[-1]
    offsets = torch.cat([isect_offsets.reshape(-1).long(), torch.tensor([flatten_ids.numel()])]).tolist()
    block = tile_size * tile_size
    means2d, conics, opacities = means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1)
    trans0 = transmittances.reshape(-1)
    local = torch.arange(block)
    out_g, out_p = [], []
    for tile in range(len(offsets) - 1):
        start = offsets[tile] + range_start * block
        stop = min(offsets[tile + 1], offsets[tile] + range_end * block)
        if stop <= start:
            continue
        gauss = flatten_ids[start:stop].long()  # [K], front to back
        px = (tile % tile_width) * tile_size + local % tile_size  # [P]
        py = (tile // tile_width) * tile_size + local // tile_size
        inside = (px < image_width) & (py < image_height)
        px, py = px[inside], py[inside]
        dx = means2d[gauss, 0][None, :] - (px[:, None] + 0.5)  # [P, K]
        dy = means2d[gauss, 1][None, :] - (py[:, None] + 0.5)
        con = conics[gauss]
        sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
        alpha = torch.clamp(opacities[gauss] * torch.exp(-sigma), max=0.999)
        valid = (sigma >= 0) & (alpha >= 1.0 / 255.0)
        pixel = py * image_width + px
        after = trans0[pixel][:, None] * torch.cumprod(torch.where(valid, 1.0 - alpha, 1.0), dim=1)
        p_idx, k_idx = (valid & (after > 1e-4)).nonzero(as_tuple=True)  # pixel-major, front to back
        out_g.append(gauss[k_idx])
        out_p.append(pixel[p_idx])
    if not out_g:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty
    gauss_ids, pixel_ids = torch.cat(out_g), torch.cat(out_p)
    return gauss_ids, pixel_ids, torch.zeros_like(gauss_ids)


def _render_weight_from_alpha(alphas, ray_indices, n_rays):
    """Stand-in for nerfacc: weights = alpha * exclusive product of (1 - alpha) along each ray.
    Samples of a ray are contiguous and ordered (as rasterize_to_indices_in_range returns them)."""
    log_keep = torch.log1p(-alphas.double())  # float64: one cumsum runs over every ray
    inclusive = torch.cumsum(log_keep, 0)
    is_first = torch.ones_like(ray_indices, dtype=torch.bool)
    is_first[1:] = ray_indices[1:] != ray_indices[:-1]
    first_idx = torch.cummax(torch.where(is_first, torch.arange(len(alphas)), 0), 0).values
    exclusive = inclusive - log_keep - (inclusive[first_idx] - log_keep[first_idx])
    trans = torch.exp(exclusive).to(alphas.dtype)
    return alphas * trans, trans


def _accumulate_along_rays(weights, values, ray_indices, n_rays):
    """Stand-in for nerfacc: per-ray sums of weight * value (or of weight)."""
    src = weights[:, None] if values is None else weights[:, None] * values
    return torch.zeros(n_rays, src.shape[-1], dtype=src.dtype).index_add(0, ray_indices, src)


def install_gsplat_cpu_standins():
    """Point gsplat's torch reference path at the CPU stand-ins above (benchmark process only)."""
    import gsplat.cuda._torch_impl as torch_impl
    import gsplat.cuda._wrapper as wrapper

    wrapper.rasterize_to_indices_in_range = _rasterize_to_indices_in_range_cpu
    fake_nerfacc = types.ModuleType("nerfacc")
    fake_nerfacc.render_weight_from_alpha = _render_weight_from_alpha
    fake_nerfacc.accumulate_along_rays = _accumulate_along_rays
    sys.modules["nerfacc"] = fake_nerfacc
    return torch_impl


def gsplat_torch_rasterize(torch_impl, means, quats, scales, opacities, colors, viewmats, Ks, width, height):
    """gsplat 1.5.3's reference path (classic mode, one camera, RGB) on the CPU."""
    covars, _ = torch_impl._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = torch_impl._fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=0.3)
    tile_size = 16
    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    _, isect_ids, flatten_ids = _isect_tiles_vectorised(means2d, radii, depths, tile_size, tile_width, tile_height)
    isect_offsets = torch_impl._isect_offset_encode(isect_ids, 1, tile_width, tile_height)
    opacities_view = opacities[None].expand(1, -1)
    colors_view = colors[None].expand(1, -1, -1)
    return torch_impl._rasterize_to_pixels(means2d, conics, colors_view, opacities_view, width, height, tile_size,
                                           isect_offsets, flatten_ids)


# ----------------------------------------------------------------------------------------------------
# Measurement (one case per subprocess)
# ----------------------------------------------------------------------------------------------------
class _CriticalPath:
    """Estimates the wall time an idle machine would need: serial CPU time of the calling thread plus,
    for every parallel kernel launch, the CPU time of its slowest slice. CPU time is what a shared
    machine cannot take away (waiting for a core is not counted)."""

    def __init__(self):
        import core.render.cpu as cpu_backend

        self.slowest = 0.0
        self.own = 0.0
        sliced, shared, beside = cpu_backend._run_sliced, cpu_backend._run_shared, cpu_backend._run_beside

        def timed_kernel(kernel, times):
            def run(*args):
                start = time.thread_time()
                kernel(*args)
                times.append((threading.get_ident(), time.thread_time() - start))
            return run

        def account(times):
            self.slowest += max((t for _, t in times), default=0.0)
            self.own += sum(t for ident, t in times if ident == threading.get_ident())

        def timed(runner):
            def run(kernel, *args):
                times = []
                runner(timed_kernel(kernel, times), *args)
                account(times)
            return run

        def timed_beside(call, kernel, *args):
            times = []
            beside((timed_kernel(call[0], times), *call[1:]), timed_kernel(kernel, times), *args)
            account(times)

        cpu_backend._run_sliced, cpu_backend._run_shared = timed(sliced), timed(shared)
        cpu_backend._run_beside = timed_beside

    def start(self):
        self.slowest = self.own = 0.0
        self.thread_start = time.thread_time()

    def stop_ms(self) -> float:
        serial = time.thread_time() - self.thread_start - self.own
        return (serial + self.slowest) * 1e3


def _time_case(render, scene: dict, repeats: int, critical: _CriticalPath | None = None) -> dict:
    """Wall and CPU ms of forward / backward (median, best), the peak extra RSS in MiB, and (for our
    backend) the idle-machine estimate from ``critical``.

    Extra RSS counts from just before the first call (warm-up included), so memory the allocator keeps
    after a call is not hidden by the warm-up.
    """
    inputs = {k: (v.clone().requires_grad_(k in DIFFERENTIABLE) if torch.is_tensor(v) else v)
              for k, v in scene.items()}
    reset_peak_rss()
    rss_before = memory_kib()["VmRSS"]
    for _ in range(2):  # warm-up: page faults, allocator growth
        render(inputs).sum().backward()
    forward, backward, cpu, idle = [], [], [], []
    for _ in range(repeats):
        if critical is not None:
            critical.start()
        cpu_start = time.process_time()
        start = time.perf_counter()
        image = render(inputs)
        middle = time.perf_counter()
        image.sum().backward()
        forward.append((middle - start) * 1e3)
        backward.append((time.perf_counter() - middle) * 1e3)
        cpu.append((time.process_time() - cpu_start) * 1e3)
        if critical is not None:
            idle.append(critical.stop_ms())
        del image
    peak = memory_kib()["VmHWM"]
    total = [f + b for f, b in zip(forward, backward)]
    return {"fwd_med": statistics.median(forward), "bwd_med": statistics.median(backward),
            "total_med": statistics.median(total), "total_best": min(total), "cpu_med": statistics.median(cpu),
            "idle_est": statistics.median(idle) if idle else float("nan"), "extra_mib": (peak - rss_before) / 1024.0}


def _time_cuda_case(render, scene: dict, repeats: int) -> dict:
    """Synchronised wall ms of forward / backward on the GPU (median, best) and the peak extra CUDA MiB."""
    inputs = {k: (v.cuda().requires_grad_(k in DIFFERENTIABLE) if torch.is_tensor(v) else v)
              for k, v in scene.items()}
    for _ in range(3):  # warm-up: kernel loading, allocator growth
        render(inputs).sum().backward()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated()
    forward, backward = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        image = render(inputs)
        torch.cuda.synchronize()
        middle = time.perf_counter()
        image.sum().backward()
        torch.cuda.synchronize()
        forward.append((middle - start) * 1e3)
        backward.append((time.perf_counter() - middle) * 1e3)
        del image
    total = [f + b for f, b in zip(forward, backward)]
    return {"fwd_med": statistics.median(forward), "bwd_med": statistics.median(backward),
            "total_med": statistics.median(total), "total_best": min(total),
            "extra_mib": (torch.cuda.max_memory_allocated() - held) / 2**20}


def run_gsplat(scene: dict, repeats: int, ours_image: torch.Tensor) -> dict:
    """gsplat's CUDA kernels on the same scene through our ``rasterize``; timings and the image difference."""
    from core.render import rasterize

    def theirs(inputs):
        return rasterize(**inputs, backend="gsplat")[0]

    result = _time_cuda_case(theirs, scene, repeats)
    with torch.no_grad():
        cuda_scene = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in scene.items()}
        image = rasterize(**cuda_scene, backend="gsplat")[0].cpu()
    result["max_abs_diff"] = float((image - ours_image).abs().max())
    result["device"] = torch.cuda.get_device_name()
    return result


def run_case(n: int, size: int, repeats: int, baseline: bool, gsplat: bool = False) -> dict:
    """Measure one scene with our CPU backend and (optionally) the baseline and gsplat on CUDA; returns a
    JSON-able dict."""
    from core.render import rasterize, warmup

    warm = warmup()
    scene = body_scene(n, size)

    def ours(inputs):
        return rasterize(**inputs, backend="cpu")[0]

    result = {"n": n, "size": size, "warmup_s": warm, "threads": int(os.environ.get("NUMBA_NUM_THREADS", 0) or 0),
              "ours": _time_case(ours, scene, repeats, _CriticalPath())}
    if baseline:
        torch_impl = install_gsplat_cpu_standins()

        def reference(inputs):
            return gsplat_torch_rasterize(torch_impl, **inputs)[0]

        with torch.no_grad():
            ours_image = rasterize(**scene, backend="cpu")[0]
            ref_image = gsplat_torch_rasterize(torch_impl, **scene)[0]
        result["max_abs_diff"] = float((ours_image - ref_image).abs().max())
        result["baseline"] = _time_case(reference, scene, max(3, repeats // 4))
    if gsplat:
        with torch.no_grad():
            ours_image = rasterize(**scene, backend="cpu")[0]
        result["gsplat"] = run_gsplat(scene, repeats, ours_image)
    return result


def _row(result: dict) -> str:
    ours = result["ours"]
    cells = [f"{result['n'] // 1000:>3}k", f"{result['size']:>4}^2", f"{ours['fwd_med']:7.1f}", f"{ours['bwd_med']:7.1f}",
             f"{ours['total_med']:7.1f}", f"{ours['total_best']:7.1f}", f"{ours['cpu_med']:7.1f}", f"{ours['idle_est']:7.1f}",
             f"{ours['extra_mib']:7.0f}"]
    if "baseline" in result:
        base = result["baseline"]
        cells += [f"{base['total_med']:9.1f}", f"{base['extra_mib']:7.0f}", f"{base['total_med'] / ours['total_med']:6.1f}x",
                  f"{result['max_abs_diff']:.1e}"]
    if "gsplat" in result:
        cuda = result["gsplat"]
        cells += [f"{cuda['fwd_med']:6.2f}", f"{cuda['bwd_med']:6.2f}", f"{cuda['extra_mib']:7.0f}",
                  f"{ours['total_med'] / cuda['total_med']:6.0f}x", f"{cuda['max_abs_diff']:.1e}"]
    return " | ".join(cells)


HEADER = ("   N |  image |  fwd ms |  bwd ms | fwd+bwd | best ms |  CPU ms | idle ms | RAM MiB | base ms   | b. MiB | speedup | max|diff|\n"
          "     |        |  (med)  |  (med)  |  (med)  |         |  (med)  |  (est.) | (extra) | (fwd+bwd) |        |         | vs base")
GSPLAT_HEADER = (" | gsplat fwd | gsplat bwd | GPU MiB | ours/gsplat | max|diff|", " |  ms (med)  |  ms (med)  | (extra) |  fwd+bwd    | vs ours")


def _header(baseline: bool, gsplat: bool) -> str:
    top, bottom = HEADER.split("\n")
    if not baseline:
        cut = top.index(" | base ms")
        top, bottom = top[:cut], bottom[:cut]
    if gsplat:
        top, bottom = top + GSPLAT_HEADER[0], bottom + GSPLAT_HEADER[1]
    return top + "\n" + bottom


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only 20k Gaussians at 256^2")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case (default 20)")
    parser.add_argument("--no-baseline", action="store_true", help="skip gsplat's reference path")
    parser.add_argument("--omp-spin", action="store_true", help="leave OpenMP's default busy-waiting on")
    parser.add_argument("--gsplat", action="store_true", help="also time gsplat's CUDA kernels (NVIDIA GPU)")
    parser.add_argument("--cases", nargs="+", metavar="N,SIZE", help="these cases instead of the default grid")
    parser.add_argument("--json", type=Path, help="also write every case's measurements to this JSON file")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's malloc settings alone (the command line keeps freed memory for reuse)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: "N,SIZE" run in this process
    args = parser.parse_args(argv)
    if args.case:
        if not args.malloc_default:
            keep_freed_memory()
        n, size = (int(v) for v in args.case.split(","))
        print(json.dumps(run_case(n, size, args.repeats, not args.no_baseline, args.gsplat)))
        return 0
    if args.gsplat:
        from core.render import available_backends

        if "gsplat" not in available_backends():
            parser.error("--gsplat needs an NVIDIA GPU (torch.cuda) and the gsplat package")
    if args.cases:
        cases = [tuple(int(v) for v in case.split(",")) for case in args.cases]
    elif args.quick:
        cases = [(20_000, 256)]
    else:
        cases = [(n, s) for n in (5_000, 20_000, 50_000) for s in (256, 512)]
    policy = os.environ.get("OMP_WAIT_POLICY") or ("default (spinning)" if args.omp_spin else "PASSIVE")
    malloc = "glibc defaults" if args.malloc_default else "keeps freed memory (as the command line)"
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_WAIT_POLICY {policy}, malloc {malloc}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    if args.gsplat:
        print(f"GPU: {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}")
    print(_header(not args.no_baseline, args.gsplat))
    results = []
    for n, size in cases:
        command = [sys.executable, __file__, "--case", f"{n},{size}", "--repeats", str(args.repeats)]
        command += ["--no-baseline"] * args.no_baseline + ["--gsplat"] * args.gsplat
        command += ["--malloc-default"] * args.malloc_default
        env = dict(os.environ)
        if not args.omp_spin:
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            print(f"{n} x {size}^2 failed:\n{done.stderr[-2000:]}")
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(_row(results[-1]), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
