"""SSIM maps on the CPU in two numba passes (forward and backward) instead of some forty torch ops.

``core.losses.ssim_map_torch`` is the definition in torch ops (``ssim_map`` uses it for CUDA and float64); this
computes the same map for float32 CPU images with its gradient: local moments over a uniform window with
edge-replicated borders, separable into a running sum along each row, then along each column.

Measured on the 2-core machine, a [1, 247, 128, 3] loss window (a preview training render) inside
``image_loss``'s weighted mean, forward and backward: 7.5 ms against 19-22 ms through torch's ops; in training,
steps alternating at random between the two in one process, photo steps (three SSIM maps) 5-10 % shorter,
generated steps (two) 1-6 % (``benchmarks/results/session14_allocator_binning.md``). The moments are summed in
float64, so the map is closer to a float64 evaluation than the float32 torch ops are.
"""
from __future__ import annotations

import numpy as np
import torch

from core.render.jit_cache import configure_numba_cache

configure_numba_cache()

from numba import njit  # noqa: E402  (the cache directory must be configured before numba decorates anything)

_JIT = dict(cache=True, nogil=True, error_model="numpy")
# Moments per pixel and channel: mean of x, of y, of x², of y², of x·y.
_MU_X, _MU_Y, _XX, _YY, _XY = range(5)


@njit(**_JIT)
def _window_rows(plane, radius, out):  # pragma: no cover - compiled
    """``out[h, w] = sum of plane[h, clamp(w + d)]`` over ``d`` in [-radius, radius]: running sums. [H, W]"""
    height, width = plane.shape
    for h in range(height):
        total = 0.0
        for d in range(-radius, radius + 1):
            total += plane[h, min(max(d, 0), width - 1)]
        for w in range(width):
            out[h, w] = total
            total += plane[h, min(w + radius + 1, width - 1)] - plane[h, max(w - radius, 0)]


@njit(**_JIT)
def _window_columns(plane, radius, scale, out):  # pragma: no cover - compiled
    """``out[h, w] = scale * sum of plane[clamp(h + d), w]`` over ``d`` in [-radius, radius]. [H, W]"""
    height, width = plane.shape
    total = np.zeros(width)
    for d in range(-radius, radius + 1):
        row = min(max(d, 0), height - 1)
        for w in range(width):
            total[w] += plane[row, w]
    for h in range(height):
        enter = min(h + radius + 1, height - 1)
        leave = max(h - radius, 0)
        for w in range(width):
            out[h, w] = scale * total[w]
            total[w] += plane[enter, w] - plane[leave, w]


@njit(**_JIT)
def _edge_count(position, edge, radius, length):  # pragma: no cover - compiled
    """How many offsets d in [-radius, radius] take ``position`` to the border index ``edge`` (0 or
    length - 1) once clamped to [0, length)."""
    if length == 1:
        return 2 * radius + 1
    if edge == 0:
        return max(0, radius - position + 1)
    return max(0, position + radius - length + 2)


@njit(**_JIT)
def _window_rows_adjoint(grads, radius, out):  # pragma: no cover - compiled
    """The adjoint of _window_rows: ``out[h, j] = sum over w, d with clamp(w + d) == j of grads[h, w]``.

    Inside, the window sum of ``grads`` with zeros beyond the edges; the two border columns also collect
    what the clamp folded onto them."""
    height, width = grads.shape
    for h in range(height):
        total = 0.0
        for w in range(min(radius, width - 1) + 1):
            total += grads[h, w]
        for j in range(width):
            out[h, j] = total
            if j + radius + 1 < width:
                total += grads[h, j + radius + 1]
            if j - radius >= 0:
                total -= grads[h, j - radius]
        for edge in (0, width - 1):
            total = 0.0
            for w in range(max(0, edge - radius), min(width - 1, edge + radius) + 1):
                total += _edge_count(w, edge, radius, width) * grads[h, w]
            out[h, edge] = total


@njit(**_JIT)
def _window_columns_adjoint(grads, radius, scale, out):  # pragma: no cover - compiled
    """The adjoint of _window_columns: ``out[j, w] = scale * sum over h, d with clamp(h + d) == j of
    grads[h, w]`` (as _window_rows_adjoint, down the columns)."""
    height, width = grads.shape
    total = np.zeros(width)
    for h in range(min(radius, height - 1) + 1):
        for w in range(width):
            total[w] += grads[h, w]
    for j in range(height):
        for w in range(width):
            out[j, w] = scale * total[w]
        if j + radius + 1 < height:
            for w in range(width):
                total[w] += grads[j + radius + 1, w]
        if j - radius >= 0:
            for w in range(width):
                total[w] -= grads[j - radius, w]
    for edge in (0, height - 1):
        total[:] = 0.0
        for h in range(max(0, edge - radius), min(height - 1, edge + radius) + 1):
            count = _edge_count(h, edge, radius, height)
            for w in range(width):
                total[w] += count * grads[h, w]
        for w in range(width):
            out[edge, w] = scale * total[w]


@njit(**_JIT)
def _ssim_terms(moments, b, c, h, w, c1, c2):  # pragma: no cover - compiled
    """(mx, my, A1, A2, B1, B2) of the SSIM formula s = A1 A2 / (B1 B2) at one pixel and channel."""
    mu_x = moments[b, c, _MU_X, h, w]
    mu_y = moments[b, c, _MU_Y, h, w]
    a1 = 2.0 * mu_x * mu_y + c1
    a2 = 2.0 * (moments[b, c, _XY, h, w] - mu_x * mu_y) + c2
    b1 = mu_x * mu_x + mu_y * mu_y + c1
    b2 = (moments[b, c, _XX, h, w] - mu_x * mu_x) + (moments[b, c, _YY, h, w] - mu_y * mu_y) + c2
    return mu_x, mu_y, a1, a2, b1, b2


@njit(**_JIT)
def ssim_forward(x, y, radius, c1, c2, ssim, moments):  # pragma: no cover - compiled
    """SSIM map of ``x`` and ``y`` ``[B, H, W, C]`` (float32) over (2 radius + 1)² windows into ``ssim`` (same
    shape); the local moments go to ``moments [B, C, 5, H, W]`` (float64) for the backward pass."""
    batch, height, width, channels = x.shape
    planes = np.empty((5, height, width))
    rows = np.empty((height, width))
    scale = 1.0 / ((2 * radius + 1) ** 2)
    for b in range(batch):
        for c in range(channels):
            for h in range(height):
                for w in range(width):
                    xv = np.float64(x[b, h, w, c])
                    yv = np.float64(y[b, h, w, c])
                    planes[_MU_X, h, w] = xv
                    planes[_MU_Y, h, w] = yv
                    planes[_XX, h, w] = xv * xv
                    planes[_YY, h, w] = yv * yv
                    planes[_XY, h, w] = xv * yv
            for k in range(5):
                _window_rows(planes[k], radius, rows)
                _window_columns(rows, radius, scale, moments[b, c, k])
            for h in range(height):
                for w in range(width):
                    _, _, a1, a2, b1, b2 = _ssim_terms(moments, b, c, h, w, c1, c2)
                    ssim[b, h, w, c] = (a1 * a2) / (b1 * b2)


@njit(**_JIT)
def ssim_backward(x, y, moments, grad_ssim, radius, c1, c2, want_y, grad_x, grad_y):  # pragma: no cover
    """Gradients of ssim_forward's map w.r.t. ``x`` (and ``y`` when ``want_y``) from ``grad_ssim [B, H, W, C]``.

    Per pixel, the map's derivatives w.r.t. its moments (s = A1 A2 / (B1 B2), A1 = 2 mx my + c1,
    A2 = 2 (sxy - mx my) + c2, B1 = mx² + my² + c1, B2 = sxx - mx² + syy - my² + c2):
      ds/dmx = 2 my (A2 - A1) / (B1 B2) - 2 mx s (B2 - B1) / (B1 B2),  ds/dsxx = -s / B2,  ds/dsxy = 2 A1 / (B1 B2)
    (and the same with x and y swapped); then back through the window sums (their adjoints) to the pixels:
    dL/dx = G_mx + 2 x G_sxx + y G_sxy, with G each moment's gradient summed over the windows holding the pixel.
    """
    batch, height, width, channels = x.shape
    grads = np.empty((5, height, width))
    columns = np.empty((height, width))
    scale = 1.0 / ((2 * radius + 1) ** 2)
    for b in range(batch):
        for c in range(channels):
            for h in range(height):
                for w in range(width):
                    g = np.float64(grad_ssim[b, h, w, c])
                    mu_x, mu_y, a1, a2, b1, b2 = _ssim_terms(moments, b, c, h, w, c1, c2)
                    denominator = b1 * b2
                    s = a1 * a2 / denominator
                    grads[_MU_X, h, w] = g * (2.0 * mu_y * (a2 - a1) - 2.0 * mu_x * s * (b2 - b1)) / denominator
                    grads[_MU_Y, h, w] = g * (2.0 * mu_x * (a2 - a1) - 2.0 * mu_y * s * (b2 - b1)) / denominator
                    grads[_XX, h, w] = -g * s / b2
                    grads[_YY, h, w] = -g * s / b2
                    grads[_XY, h, w] = g * 2.0 * a1 / denominator
            for k in range(5):
                if want_y or (k != _MU_Y and k != _YY):
                    _window_columns_adjoint(grads[k], radius, scale, columns)
                    _window_rows_adjoint(columns, radius, grads[k])
            for h in range(height):
                for w in range(width):
                    xv = np.float64(x[b, h, w, c])
                    yv = np.float64(y[b, h, w, c])
                    grad_x[b, h, w, c] = grads[_MU_X, h, w] + 2.0 * xv * grads[_XX, h, w] + yv * grads[_XY, h, w]
                    if want_y:
                        grad_y[b, h, w, c] = (grads[_MU_Y, h, w] + 2.0 * yv * grads[_YY, h, w]
                                              + xv * grads[_XY, h, w])


class SSIMMap(torch.autograd.Function):
    """``core.losses.ssim_map`` for float32 CPU images ``[B, H, W, C]``, differentiable w.r.t. both."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, window: int, c1: float, c2: float) -> torch.Tensor:
        x, y = a.detach().contiguous(), b.detach().contiguous()
        ssim = torch.empty_like(x)
        moments = np.empty((x.shape[0], x.shape[3], 5, x.shape[1], x.shape[2]))
        ssim_forward(x.numpy(), y.numpy(), window // 2, c1, c2, ssim.numpy(), moments)
        ctx.save_for_backward(x, y)
        ctx.moments = moments
        ctx.settings = (window // 2, c1, c2)
        return ssim

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, y = ctx.saved_tensors
        radius, c1, c2 = ctx.settings
        want_x, want_y = ctx.needs_input_grad[:2]
        grad_x = torch.empty_like(x)
        grad_y = torch.empty_like(y) if want_y else y.new_empty((0, 0, 0, 0))
        ssim_backward(x.numpy(), y.numpy(), ctx.moments, grad.contiguous().numpy(), radius, c1, c2, want_y,
                      grad_x.numpy(), grad_y.numpy())
        return (grad_x if want_x else None), (grad_y if want_y else None), None, None, None
