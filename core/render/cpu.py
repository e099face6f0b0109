"""The CPU backend: numba kernels (kernels.py) wrapped as two torch autograd Functions.

Projection (3D Gaussians -> screen-space means, conics, depths) and compositing (screen-space Gaussians ->
image) are separate Functions, so the glue between them (compensated opacities, depth as a colour
channel, expected depth) is plain torch and gets its gradients from autograd. Compositing keeps a log
of every (Gaussian, pixel) contribution from the forward pass for the backward pass (5 bytes per
contribution in float32, plus 4 per tile-Gaussian pair: 3.3 MB at 20k Gaussians, 256^2), released with
the autograd graph.

Parallelism: each kernel works on a slice of its items and releases the GIL; ``_run_sliced`` runs one
slice per thread (the calling thread takes the first). Kernels are re-entrant, so rasterize() may be
called from any thread, and from several at once (their slices share one pool).

Performance note for applications: torch's OpenMP workers busy-wait for ~10 ms after each parallel
torch op by default, which on a 2-core machine takes the cores from these kernels (about 2x slower).
Set OMP_WAIT_POLICY=PASSIVE before torch is imported (or torch.set_num_threads(1)) when rendering on CPU.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from torch import Tensor

from core.render import kernels

_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0


def render_threads() -> int:
    """Threads per kernel launch: NUMBA_NUM_THREADS (defaults to the usable CPU cores)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _pool() -> ThreadPoolExecutor:
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        # a forked child inherits the executor but not its threads: start a fresh one there
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL = ThreadPoolExecutor(max_workers=max(1, render_threads() - 1),
                                       thread_name_prefix="persona-render")
            _POOL_PID = os.getpid()
        return _POOL


def _run_sliced(kernel, bounds, *args) -> None:
    """Run ``kernel(bounds[i], bounds[i + 1], *args)`` for every slice i, in parallel.

    bounds: [S + 1] increasing ints. The calling thread runs slice 0 itself.
    """
    n_slices = len(bounds) - 1
    futures = [_pool().submit(kernel, int(bounds[i]), int(bounds[i + 1]), *args) for i in range(1, n_slices)]
    try:
        if n_slices > 0:
            kernel(int(bounds[0]), int(bounds[1]), *args)
    finally:
        for future in futures:
            future.result()


def _even_bounds(n_items: int) -> list[int]:
    """Slice bounds splitting n_items into one equal share per thread."""
    shares = min(render_threads(), max(n_items, 1))
    return [n_items * i // shares for i in range(shares + 1)]


def _array(tensor: Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor, made contiguous."""
    return tensor.detach().contiguous().numpy()


def _depth_order(depths: Tensor, footprints: np.ndarray) -> np.ndarray:
    """Each camera's Gaussians near to far, ties by index (as a stable sort would). [C, N] int64

    Only Gaussians with a footprint are sorted (culled ones go last, in index order). For float32 the
    sort key is (depth bits << 32 | index), since positive floats order like their bit patterns: a plain
    integer sort is several times faster than numpy's stable argsort.
    """
    n_cams, n_gauss = depths.shape
    order = np.empty((n_cams, n_gauss), np.int64)
    for c in range(n_cams):
        shown_mask = footprints[c, :, 1] > footprints[c, :, 0]
        shown = np.flatnonzero(shown_mask).astype(np.uint64)
        depth = depths[c].numpy()[shown_mask]
        if depth.dtype == np.float32:  # visible Gaussians have depth >= near_plane >= 0
            keys = (depth.view(np.uint32).astype(np.uint64) << np.uint64(32)) | shown
            order[c, :len(shown)] = np.sort(keys) & np.uint64(0xFFFFFFFF)
        else:
            order[c, :len(shown)] = shown[np.argsort(depth, kind="stable")]
        order[c, len(shown):] = np.flatnonzero(~shown_mask)
    return order


def _zeros_if_none(grad: Tensor | None, shape: tuple, dtype: torch.dtype) -> Tensor:
    return torch.zeros(shape, dtype=dtype) if grad is None else grad.contiguous()


class ProjectGaussians(torch.autograd.Function):
    """EWA projection. Differentiable w.r.t. means, quats and scales (not opacities, cameras or intrinsics)."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane,
                far_plane, antialiased):
        n_cams, n_gauss = viewmats.shape[0], means.shape[0]
        dtype = means.dtype
        means2d = torch.empty((n_cams, n_gauss, 2), dtype=dtype)
        depths = torch.empty((n_cams, n_gauss), dtype=dtype)
        conics = torch.empty((n_cams, n_gauss, 3), dtype=dtype)
        compensations = torch.empty((n_cams, n_gauss), dtype=dtype)
        radii = torch.empty((n_cams, n_gauss, 2), dtype=torch.int32)
        _run_sliced(kernels.project_forward, _even_bounds(n_gauss), _array(means), _array(quats),
                    _array(scales), _array(opacities), _array(viewmats), _array(Ks), width, height, eps2d,
                    near_plane, far_plane, antialiased, means2d.numpy(), depths.numpy(), conics.numpy(),
                    compensations.numpy(), radii.numpy())
        ctx.save_for_backward(means, quats, scales, viewmats, Ks, radii)
        ctx.image_size = (width, height)
        ctx.eps2d = eps2d
        ctx.mark_non_differentiable(radii)
        return means2d, depths, conics, compensations, radii

    @staticmethod
    def backward(ctx, v_means2d, v_depths, v_conics, v_compensations, _v_radii):
        means, quats, scales, viewmats, Ks, radii = ctx.saved_tensors
        if not any(ctx.needs_input_grad[:3]):
            return (None,) * 12
        n_cams, n_gauss = radii.shape[0], radii.shape[1]
        dtype = means.dtype
        v_means2d = _zeros_if_none(v_means2d, (n_cams, n_gauss, 2), dtype)
        v_depths = _zeros_if_none(v_depths, (n_cams, n_gauss), dtype)
        v_conics = _zeros_if_none(v_conics, (n_cams, n_gauss, 3), dtype)
        v_compensations = _zeros_if_none(v_compensations, (n_cams, n_gauss), dtype)
        v_means = torch.empty_like(means)
        v_quats = torch.empty_like(quats)
        v_scales = torch.empty_like(scales)
        width, height = ctx.image_size
        _run_sliced(kernels.project_backward, _even_bounds(n_gauss), _array(means), _array(quats),
                    _array(scales), _array(viewmats), _array(Ks), width, height, ctx.eps2d, radii.numpy(),
                    v_means2d.numpy(), v_depths.numpy(), v_conics.numpy(), v_compensations.numpy(),
                    v_means.numpy(), v_quats.numpy(), v_scales.numpy())
        wanted = ctx.needs_input_grad
        return (v_means if wanted[0] else None, v_quats if wanted[1] else None,
                v_scales if wanted[2] else None) + (None,) * 9


class CompositeGaussians(torch.autograd.Function):
    """Tile-based front-to-back compositing of screen-space Gaussians.

    Differentiable w.r.t. means2d, conics, colors, opacities and backgrounds.
    """

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, backgrounds, radii, depths, width, height):
        n_cams, n_gauss, n_channels = colors.shape
        dtype = colors.dtype
        means2d_a, conics_a, opacities_a = _array(means2d), _array(conics), _array(opacities)
        footprints = np.empty((n_cams, n_gauss, 4), np.int32)
        _run_sliced(kernels.gaussian_footprints, _even_bounds(n_cams * n_gauss), means2d_a, conics_a, opacities_a,
                    _array(radii), width, height, footprints)
        depth_order = _depth_order(depths.detach(), footprints)
        tile_offsets, isect_ids, gauss_offsets, grad_rows, tile_cost = kernels.bin_gaussians(
            footprints, depth_order, width, height)
        packed = torch.empty((n_cams, n_gauss, kernels.PACKED_FIELDS), dtype=dtype).numpy()
        packed_colors = torch.empty((n_cams, n_gauss, n_channels), dtype=dtype).numpy()
        _run_sliced(kernels.pack_gaussians, _even_bounds(n_cams * n_gauss), depth_order, means2d_a, conics_a,
                    opacities_a, _array(colors), footprints, packed, packed_colors)
        heaviest_first = np.argsort(-tile_cost, kind="stable")
        worker_bounds, worker_tiles = kernels.balance_work(tile_cost, heaviest_first, render_threads())
        # Each tile logs at most tile_cost contributions. The log is sized for that bound, but pages
        # that are never written are never touched, so only the real contributions cost memory.
        # log: pixel and falloff per contribution, contributions per task, contributions per isect_ids entry.
        task_log_start = np.zeros(len(worker_tiles) + 1, np.int64)
        np.cumsum(tile_cost[worker_tiles], out=task_log_start[1:])
        capacity = int(task_log_start[-1])
        log = (np.empty(capacity, np.uint8), torch.empty(capacity, dtype=dtype).numpy(),
               np.zeros(len(worker_tiles), np.int64), np.zeros(len(isect_ids), np.int32))
        render = torch.empty((n_cams, height, width, n_channels), dtype=dtype)
        transmittance = torch.empty((n_cams, height, width), dtype=dtype)
        alphas = torch.empty((n_cams, height, width, 1), dtype=dtype)
        backgrounds_a = _array(backgrounds)
        _run_sliced(kernels.composite_forward, worker_bounds, packed, packed_colors, backgrounds_a, width, height,
                    tile_offsets, isect_ids, worker_tiles, task_log_start, *log, render.numpy(), transmittance.numpy(),
                    alphas.numpy())
        ctx.save_for_backward(backgrounds, transmittance)
        ctx.bins = (packed, packed_colors, tile_offsets, isect_ids, gauss_offsets, grad_rows, worker_bounds,
                    worker_tiles, task_log_start, log)
        ctx.image_size = (width, height)
        return render, alphas

    @staticmethod
    def backward(ctx, v_render, v_alphas):
        backgrounds, transmittance = ctx.saved_tensors
        (packed, packed_colors, tile_offsets, isect_ids, gauss_offsets, grad_rows, worker_bounds, worker_tiles,
         task_log_start, log) = ctx.bins
        width, height = ctx.image_size
        n_cams, n_gauss, n_channels = packed_colors.shape
        dtype = transmittance.dtype
        v_render = _zeros_if_none(v_render, (n_cams, height, width, n_channels), dtype)
        v_alphas = _zeros_if_none(v_alphas, (n_cams, height, width, 1), dtype)[..., 0].contiguous()
        # zeros: entries without contributions are never written. np.zeros takes pages the OS zeroes on first
        # touch, so this costs no pass of its own.
        isect_grads = np.zeros((isect_ids.shape[0], 6 + n_channels), dtype=packed.dtype)
        _run_sliced(kernels.composite_backward, worker_bounds, packed, packed_colors, _array(backgrounds), width,
                    height, tile_offsets, isect_ids, worker_tiles, task_log_start, *log, transmittance.numpy(),
                    v_render.numpy(), v_alphas.numpy(), grad_rows, isect_grads)
        v_means2d = torch.empty((n_cams, n_gauss, 2), dtype=dtype)
        v_conics = torch.empty((n_cams, n_gauss, 3), dtype=dtype)
        v_opacities = torch.empty((n_cams, n_gauss), dtype=dtype)
        v_colors = torch.empty((n_cams, n_gauss, n_channels), dtype=dtype)
        _run_sliced(kernels.reduce_isect_grads, _even_bounds(n_cams * n_gauss), isect_grads, gauss_offsets,
                    v_means2d.numpy(), v_conics.numpy(), v_opacities.numpy(), v_colors.numpy())
        v_backgrounds = None
        if ctx.needs_input_grad[4]:
            # the background enters each pixel as T_final * background
            v_backgrounds = (transmittance.unsqueeze(-1) * v_render).sum(dim=(1, 2))
        return v_means2d, v_conics, v_colors, v_opacities, v_backgrounds, None, None, None, None


def rasterize_cpu(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                  viewmats: Tensor, Ks: Tensor, width: int, height: int, near_plane: float, far_plane: float,
                  eps2d: float, backgrounds: Tensor | None, render_mode: str, rasterize_mode: str):
    """The CPU backend behind ``core.render.rasterize`` (inputs already validated, same dtype, on CPU)."""
    n_cams, n_gauss = viewmats.shape[0], means.shape[0]
    antialiased = rasterize_mode == "antialiased"
    means2d, depths, conics, compensations, radii = ProjectGaussians.apply(
        means, quats, scales, opacities.detach(), viewmats.detach(), Ks.detach(), width, height, float(eps2d),
        float(near_plane), float(far_plane), antialiased)
    if antialiased:
        view_opacities = opacities.unsqueeze(0) * compensations
    else:
        view_opacities = opacities.unsqueeze(0).expand(n_cams, n_gauss)

    per_view_colors = colors if colors.dim() == 3 else colors.unsqueeze(0).expand(n_cams, -1, -1)
    n_colour_channels = per_view_colors.shape[-1]
    if render_mode in ("D", "ED"):
        channels = depths.unsqueeze(-1)
    elif render_mode in ("RGB+D", "RGB+ED"):
        channels = torch.cat([per_view_colors, depths.unsqueeze(-1)], dim=-1)
    else:
        channels = per_view_colors
    # Depth channels always composite over a zero background, as in gsplat.
    channel_backgrounds = torch.zeros((n_cams, channels.shape[-1]), dtype=means.dtype)
    if backgrounds is not None and render_mode not in ("D", "ED"):
        channel_backgrounds = torch.cat([backgrounds, channel_backgrounds[:, n_colour_channels:]], dim=-1)

    render_colors, render_alphas = CompositeGaussians.apply(
        means2d, conics, channels, view_opacities, channel_backgrounds, radii, depths, width, height)
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1)

    meta = {
        "backend": "cpu",
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": view_opacities,
        "width": width,
        "height": height,
        "tile_size": kernels.TILE_SIZE,
        "n_cameras": n_cams,
    }
    return render_colors, render_alphas, meta
