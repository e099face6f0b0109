"""The CPU backend: numba kernels (kernels.py) wrapped as two torch autograd Functions.

Projection (3D Gaussians -> screen-space means, conics, depths, each camera's opacities and footprint
boxes) and compositing (screen-space Gaussians -> image, with the depth as an extra channel and the
expected-depth division done in the kernels) are separate Functions, so ``meta["means2d"]`` stays in the
autograd graph; there is no other torch op between them (each one's backward cost more than the kernels'
share of that work). Compositing keeps a log of every (Gaussian, pixel) contribution from the forward pass
for the backward pass (5 bytes per contribution in float32, plus 4 per tile-Gaussian pair: 3.3 MB at 20k
Gaussians, 256^2), in a buffer that goes back to a pool for the next render when the autograd graph is
released (scratch.py: a fresh one cost a page fault per 4 KiB written).

Parallelism: every kernel releases the GIL and runs on all kernel threads (the calling thread too): the
per-Gaussian ones on one slice of the Gaussians each (``core.threads.run_sliced``), the compositing ones
taking tiles from a shared queue (``core.threads.run_shared``); the serial tile binning runs on the calling
thread while the others pack (``core.threads.run_beside``: 2.5-3 % off a 2-thread fwd+bwd). Kernels are
re-entrant, so rasterize() may be called from any thread, and from several at once (they share one pool).

Performance note for applications: torch's OpenMP workers busy-wait for ~10 ms after each parallel
torch op by default, which on a 2-core machine takes the cores from these kernels (about 2x slower).
Set OMP_WAIT_POLICY=PASSIVE before torch is imported (or torch.set_num_threads(1)) when rendering on CPU.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from core.render import kernels
from core.render.scratch import ScratchPool
from core.threads import even_bounds as _even_bounds
from core.threads import run_beside as _run_beside
from core.threads import run_shared as _run_shared
from core.threads import run_sliced as _run_sliced


# The contribution logs' buffers, reused between renders (see scratch.py).
_LOG_POOL = ScratchPool()


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


def _append_result(results: list, function, *args) -> None:
    results.append(function(*args))


def _zeros_if_none(grad: Tensor | None, shape: tuple, dtype: torch.dtype) -> Tensor:
    return torch.zeros(shape, dtype=dtype) if grad is None else grad.contiguous()


class ProjectGaussians(torch.autograd.Function):
    """EWA projection, with each camera's opacities and footprint boxes.

    Differentiable w.r.t. means, quats, scales and opacities (not cameras or intrinsics).
    """

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane,
                far_plane, antialiased):
        n_cams, n_gauss = viewmats.shape[0], means.shape[0]
        dtype = means.dtype
        means2d = torch.empty((n_cams, n_gauss, 2), dtype=dtype)
        depths = torch.empty((n_cams, n_gauss), dtype=dtype)
        conics = torch.empty((n_cams, n_gauss, 3), dtype=dtype)
        view_opacities = torch.empty((n_cams, n_gauss), dtype=dtype)
        radii = torch.empty((n_cams, n_gauss, 2), dtype=torch.int32)
        footprints = torch.empty((n_cams, n_gauss, 4), dtype=torch.int32)
        # contiguous once, for both passes (a training render's scales are an expanded [N] tensor)
        inputs = [t.detach().contiguous() for t in (means, quats, scales, opacities, viewmats, Ks)]
        _run_sliced(kernels.project_forward, _even_bounds(n_gauss), *(t.numpy() for t in inputs), width, height,
                    eps2d, near_plane, far_plane, antialiased, means2d.numpy(), depths.numpy(), conics.numpy(),
                    view_opacities.numpy(), radii.numpy(), footprints.numpy())
        ctx.save_for_backward(*inputs, radii)
        ctx.settings = (width, height, eps2d, antialiased)
        ctx.mark_non_differentiable(radii, footprints)
        return means2d, depths, conics, view_opacities, radii, footprints

    @staticmethod
    def backward(ctx, v_means2d, v_depths, v_conics, v_view_opacities, _v_radii, _v_footprints):
        means, quats, scales, opacities, viewmats, Ks, radii = ctx.saved_tensors
        if not any(ctx.needs_input_grad[:4]):
            return (None,) * 12
        n_cams, n_gauss = radii.shape[0], radii.shape[1]
        dtype = means.dtype
        v_means2d = _zeros_if_none(v_means2d, (n_cams, n_gauss, 2), dtype)
        v_depths = _zeros_if_none(v_depths, (n_cams, n_gauss), dtype)
        v_conics = _zeros_if_none(v_conics, (n_cams, n_gauss, 3), dtype)
        v_view_opacities = _zeros_if_none(v_view_opacities, (n_cams, n_gauss), dtype)
        grads = [torch.empty((n_gauss, k), dtype=dtype) for k in (3, 4, 3)] + [torch.empty(n_gauss, dtype=dtype)]
        width, height, eps2d, antialiased = ctx.settings
        _run_sliced(kernels.project_backward, _even_bounds(n_gauss), means.numpy(), quats.numpy(), scales.numpy(),
                    opacities.numpy(), viewmats.numpy(), Ks.numpy(), width, height, eps2d, antialiased, radii.numpy(),
                    v_means2d.numpy(), v_depths.numpy(), v_conics.numpy(), v_view_opacities.numpy(),
                    *(g.numpy() for g in grads))
        return tuple(g if wanted else None for g, wanted in zip(grads, ctx.needs_input_grad)) + (None,) * 8


class CompositeGaussians(torch.autograd.Function):
    """Tile-based front-to-back compositing of screen-space Gaussians, with an optional depth channel.

    colors [1 or C, N, D] (shared by the cameras or per camera); with depth_channel, depths [C, N] are
    composited as channel D (over a zero background), and with expected_depth that channel is divided by
    the pixel's alpha. Differentiable w.r.t. means2d, conics, colors, opacities, depths and backgrounds.
    """

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, depths, backgrounds, footprints, width, height,
                depth_channel, expected_depth):
        n_cams, n_gauss = depths.shape
        n_channels = colors.shape[2] + int(depth_channel)
        dtype = depths.dtype
        footprints_a = footprints.numpy()
        depth_order = _depth_order(depths.detach(), footprints_a)
        packed = torch.empty((n_cams, n_gauss, kernels.PACKED_FIELDS), dtype=dtype).numpy()
        packed_colors = torch.empty((n_cams, n_gauss, n_channels), dtype=dtype).numpy()
        bins = []  # binning is serial: the other threads pack meanwhile
        _run_beside((_append_result, bins, kernels.bin_gaussians, footprints_a, depth_order, width, height),
                    kernels.pack_gaussians, n_cams * n_gauss, depth_order, _array(means2d), _array(conics),
                    _array(opacities), _array(colors), _array(depths), depth_channel, footprints_a, packed,
                    packed_colors)
        tile_offsets, isect_ids, gauss_offsets, grad_rows, tile_cost = bins[0]
        task_tiles = np.argsort(-tile_cost, kind="stable")  # heaviest first (see kernels.take_task)
        # Each tile logs at most tile_cost contributions. The log is sized for that bound, but pages
        # that are never written are never touched, so only the real contributions cost memory.
        # log: pixel and falloff per contribution, contributions per task, contributions per isect_ids entry.
        task_log_start = np.zeros(len(task_tiles) + 1, np.int64)
        np.cumsum(tile_cost[task_tiles], out=task_log_start[1:])
        capacity = int(task_log_start[-1])
        log_arrays, lease = _LOG_POOL.take_arrays([(capacity, np.uint8), (capacity, packed.dtype)])
        log = (*log_arrays, np.zeros(len(task_tiles), np.int64), np.zeros(len(isect_ids), np.int32))
        render = torch.empty((n_cams, height, width, n_channels), dtype=dtype)
        transmittance = torch.empty((n_cams, height, width), dtype=dtype)
        alphas = torch.empty((n_cams, height, width, 1), dtype=dtype)
        channel_backgrounds = np.zeros((n_cams, n_channels), packed.dtype)  # depth: zero background, as gsplat
        if backgrounds is not None:
            channel_backgrounds[:, :backgrounds.shape[1]] = _array(backgrounds)
        _run_shared(kernels.composite_forward, np.zeros(1, np.int64), np.arange(len(task_tiles)), packed,
                    packed_colors, channel_backgrounds, expected_depth, width, height, tile_offsets, isect_ids,
                    task_tiles, task_log_start, *log, render.numpy(), transmittance.numpy(), alphas.numpy())
        ctx.save_for_backward(transmittance, render)
        ctx.bins = (packed, packed_colors, channel_backgrounds, tile_offsets, isect_ids, gauss_offsets, grad_rows,
                    task_tiles, task_log_start, log)
        ctx.log_lease = lease  # the log's buffer goes back to the pool with this graph node
        ctx.settings = (width, height, colors.shape[0], depth_channel, expected_depth)
        return render, alphas

    @staticmethod
    def backward(ctx, v_render, v_alphas):
        transmittance, render = ctx.saved_tensors
        (packed, packed_colors, channel_backgrounds, tile_offsets, isect_ids, gauss_offsets, grad_rows,
         task_tiles, task_log_start, log) = ctx.bins
        width, height, colour_cams, depth_channel, expected_depth = ctx.settings
        n_cams, n_gauss, n_channels = packed_colors.shape
        dtype = transmittance.dtype
        v_render = _zeros_if_none(v_render, (n_cams, height, width, n_channels), dtype)
        v_alphas = _zeros_if_none(v_alphas, (n_cams, height, width, 1), dtype)[..., 0].contiguous()
        n_fields = 6 + n_channels
        (flat_grads,), _lease = _LOG_POOL.take_arrays([(isect_ids.shape[0] * n_fields, packed.dtype)])
        isect_grads = flat_grads.reshape(-1, n_fields)
        row_written = np.zeros(isect_ids.shape[0], np.uint8)  # rows without contributions are not written
        heaviest_first = np.argsort(-log[2], kind="stable")  # by the contributions the forward logged
        _run_shared(kernels.composite_backward, np.zeros(1, np.int64), heaviest_first, packed, packed_colors,
                    channel_backgrounds, expected_depth, width, height, tile_offsets, isect_ids, task_tiles,
                    task_log_start, *log, render.numpy(), transmittance.numpy(), v_render.numpy(), v_alphas.numpy(),
                    grad_rows, isect_grads, row_written)
        v_means2d = torch.empty((n_cams, n_gauss, 2), dtype=dtype)
        v_conics = torch.empty((n_cams, n_gauss, 3), dtype=dtype)
        v_opacities = torch.empty((n_cams, n_gauss), dtype=dtype)
        v_channels = torch.empty((n_cams, n_gauss, n_channels), dtype=dtype)
        _run_sliced(kernels.reduce_isect_grads, _even_bounds(n_cams * n_gauss), isect_grads, row_written, gauss_offsets,
                    v_means2d.numpy(), v_conics.numpy(), v_opacities.numpy(), v_channels.numpy())
        wanted = ctx.needs_input_grad
        n_colours = n_channels - int(depth_channel)
        v_colors = v_depths = v_backgrounds = None
        if wanted[2]:
            v_colors = v_channels[..., :n_colours]
            if colour_cams == 1 and n_cams > 1:
                v_colors = v_colors.sum(dim=0, keepdim=True)
        if wanted[4] and depth_channel:
            v_depths = v_channels[..., n_colours]
        if wanted[5]:
            # the background enters each pixel as T_final * background
            v_backgrounds = torch.einsum("chw,chwd->cd", transmittance, v_render[..., :n_colours])
        return v_means2d, v_conics, v_colors, v_opacities, v_depths, v_backgrounds, None, None, None, None, None


def rasterize_cpu(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                  viewmats: Tensor, Ks: Tensor, width: int, height: int, near_plane: float, far_plane: float,
                  eps2d: float, backgrounds: Tensor | None, render_mode: str, rasterize_mode: str):
    """The CPU backend behind ``core.render.rasterize`` (inputs already validated, same dtype, on CPU)."""
    n_cams, n_gauss = viewmats.shape[0], means.shape[0]
    means2d, depths, conics, view_opacities, radii, footprints = ProjectGaussians.apply(
        means, quats, scales, opacities, viewmats.detach(), Ks.detach(), width, height, float(eps2d),
        float(near_plane), float(far_plane), rasterize_mode == "antialiased")
    depth_only = render_mode in ("D", "ED")
    if depth_only:
        colors = colors.new_zeros((1, n_gauss, 0))
        backgrounds = None
    elif colors.dim() == 2:
        colors = colors.unsqueeze(0)
    render_colors, render_alphas = CompositeGaussians.apply(
        means2d, conics, colors, view_opacities, depths, backgrounds, footprints, width, height,
        render_mode != "RGB", render_mode.endswith("ED"))
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
