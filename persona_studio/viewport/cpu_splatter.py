"""A software splat compositor for the viewport: numba kernels drawing isotropic Gaussians front to back.

Why it exists: on a software OpenGL (Mesa llvmpipe, what machines without a GPU get) every splat pays
for a primitive's set-up, binning and a shaded 4x4 block per touched pixel block, and the frame rate is
bound by that, not by the pixels. Here a splat costs its projection plus the pixels inside its ellipse,
and a pixel stops taking contributions once it is opaque, like the engine's rasterizer. On the 2-core
llvmpipe machines this is 2-3x faster than drawing the same splats with GL (see benchmarks/viewport.py).

Same image model as ``shaders/`` and ``core.render.rasterize`` for isotropic Gaussians: EWA projection
with the Jacobian's lateral clamp, eps2d blur (optionally Mip-Splatting's opacity compensation),
``alpha = min(0.999, opacity * exp(-sigma))``, contributions with alpha < 1/255 skipped, and a pixel
stops before the splat that would take its transmittance to 1e-4 or below (the engine's rule).

Kernels are serial, release the GIL and work on a slice (of splats, or of image rows), so the caller
runs one slice per thread; the image is split into row bands, each band walking every splat in depth
order.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from core.render.jit_cache import configure_numba_cache

configure_numba_cache()

from numba import njit  # noqa: E402  (numba's cache directory must be set before it decorates anything)

# The engine's image rules (gsplat's conventions), not copies of them.
from core.render.kernels import ALPHA_THRESHOLD, MAX_ALPHA, MIN_TRANSMITTANCE  # noqa: E402
MAX_EXTENT_SIGMAS = 3.33
# Per projected splat (``project_splats`` output, float32): centre x, y (pixels), conic (inverse 2D
# covariance) a, b, c, opacity (compensated when antialiased), sigma cut-off (beyond it alpha < 1/255), RGB.
SPLAT_FIELDS = 10
_MX, _MY, _CA, _CB, _CC, _OPACITY, _CUTOFF, _RED, _GREEN, _BLUE = range(SPLAT_FIELDS)

BANDS_PER_THREAD = 4  # image row bands per thread, handed out as threads finish (balances the load)
CHUNK = 16  # pixels of a row composited together (see composite_rows)

# fastmath "contract" only: fused multiply-adds, as the engine's rasterizer kernels (core.render.kernels).
# Alternating runs of benchmarks/viewport.py: the 50.6k avatar at 512^2 drew in 27.0-27.3 ms instead of
# 30.1-31.8, orbiting 25.3-26.8 instead of 32.6-34.1.
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


@njit(**_JIT)
def project_splats(first, stop, order, means, scales, opacities, colors, viewmat, fx, fy, cx, cy, width, height,
                   eps2d, antialiased, near_plane, far_plane, splats, rows):
    """Project the splats ``order[first:stop]`` (``order [N]``: indices, nearest first): ``means [N, 3]``
    metres, ``scales [N]`` std-dev metres, ``opacities [N]``, ``colors [N, 3]``; world-to-camera
    ``viewmat [4, 4]`` (OpenCV axes), intrinsics in pixels.

    Writes, in draw order (splat ``order[k]`` at row ``k``, so compositing reads memory in sequence),
    ``splats [N, SPLAT_FIELDS]`` float32 and ``rows [N, 2]`` int32: the image rows ``[y0, y1)`` the splat
    reaches (empty for a culled splat: behind the near plane, beyond the far plane, invisible or
    outside the image).
    """
    lim_x = 1.3 * 0.5 * width / fx  # the reference rasterizer's clamp of the Jacobian's lateral position
    lim_y = 1.3 * 0.5 * height / fy
    max_cutoff = 0.5 * MAX_EXTENT_SIGMAS * MAX_EXTENT_SIGMAS
    for k in range(first, stop):
        g = order[k]
        rows[k, 0] = 0
        rows[k, 1] = 0
        px, py, pz = float(means[g, 0]), float(means[g, 1]), float(means[g, 2])
        x = viewmat[0, 0] * px + viewmat[0, 1] * py + viewmat[0, 2] * pz + viewmat[0, 3]
        y = viewmat[1, 0] * px + viewmat[1, 1] * py + viewmat[1, 2] * pz + viewmat[1, 3]
        z = viewmat[2, 0] * px + viewmat[2, 1] * py + viewmat[2, 2] * pz + viewmat[2, 3]
        opacity = float(opacities[g])
        if not (near_plane <= z <= far_plane) or opacity <= 0.0:
            continue
        inv_z = 1.0 / z
        tx = min(max(x * inv_z, -lim_x), lim_x)
        ty = min(max(y * inv_z, -lim_y), lim_y)
        # cov2d = sigma^2 J J^T + eps2d I with J = [[fx/z, 0, -fx tx/z], [0, fy/z, -fy ty/z]]
        var = float(scales[g]) ** 2 * inv_z * inv_z
        a = var * fx * fx * (1.0 + tx * tx) + eps2d
        b = var * fx * fy * tx * ty
        c = var * fy * fy * (1.0 + ty * ty) + eps2d
        det = a * c - b * b
        if antialiased:
            opacity *= math.sqrt(max(((a - eps2d) * (c - eps2d) - b * b) / det, 0.0))
        if not (det > 0.0 and opacity * 255.0 > 1.0):
            continue
        cutoff = min(math.log(opacity / ALPHA_THRESHOLD), max_cutoff)
        mx = fx * x * inv_z + cx
        my = fy * y * inv_z + cy
        half_x = math.sqrt(2.0 * cutoff * a)  # the cut-off ellipse's half extent along x and y
        half_y = math.sqrt(2.0 * cutoff * c)
        if mx + half_x < 0.0 or mx - half_x > width:
            continue
        y0 = max(0.0, math.ceil(my - half_y - 0.5))
        y1 = min(float(height), math.floor(my + half_y - 0.5) + 1.0)
        if y0 >= y1:
            continue
        rows[k, 0] = int(y0)
        rows[k, 1] = int(y1)
        splats[k, _MX] = mx
        splats[k, _MY] = my
        splats[k, _CA] = c / det
        splats[k, _CB] = -b / det
        splats[k, _CC] = a / det
        splats[k, _OPACITY] = opacity
        splats[k, _CUTOFF] = cutoff
        splats[k, _RED] = colors[g, 0]
        splats[k, _GREEN] = colors[g, 1]
        splats[k, _BLUE] = colors[g, 2]


# exp(-s) for s in [0, 80] in float32 without a libm call, so that LLVM vectorises a row's alphas: s = k ln2 - r
# with |r| <= ln2 / 2, exp(-s) = 2^-k exp(r), exp(r) by its degree-6 Taylor polynomial (relative error < 3e-7,
# about float32 rounding). Beyond s = 80 a splat's alpha is far below 1/255 anyway.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693145751953125)  # ln 2 in two parts, so that k * _LN2_HI is exact for k < 2^8
_LN2_LO = np.float32(1.4286067653301870e-06)
_MAX_SIGMA = np.float32(80.0)


@njit(inline="always", **_JIT)
def _exp_neg(s):
    """exp(-s) for float32 ``s`` >= 0 (clamped to 80), vectorisable."""
    s = min(max(s, np.float32(0.0)), _MAX_SIGMA)
    k = np.floor(s * _LOG2E + np.float32(0.5))
    r = (k * _LN2_HI - s) + k * _LN2_LO
    r2 = r * r
    poly = (np.float32(1.0) + r) + r2 * ((np.float32(1 / 2) + np.float32(1 / 6) * r)
                                         + r2 * ((np.float32(1 / 24) + np.float32(1 / 120) * r) + r2 * np.float32(1 / 720)))
    return poly * np.int32((127 - np.int32(k)) << 23).view(np.float32)  # times 2^-k


@njit(**_JIT)
def composite_rows(row0, row1, splats, rows, planes):
    """Composite projected splats (``project_splats``: nearest first, culled ones with no rows) into image
    rows ``[row0, row1)``.

    ``planes [4, H, W + CHUNK]`` float32 (the padding takes a row's last
    chunk) must start as R = G = B = 0, T = 1: RGB
    accumulates the weighted colours, plane 3 holds the transmittance, negated once the pixel stops.
    """
    width = planes.shape[2] - CHUNK
    stride = planes.shape[2]
    flat = planes.reshape(-1)
    plane_size = planes.shape[1] * stride
    g_at, b_at, t_at = np.uint64(plane_size), np.uint64(2 * plane_size), np.uint64(3 * plane_size)
    lanes = np.arange(CHUNK).astype(np.float32)
    one = np.float32(1.0)
    half = np.float32(0.5)
    zero = np.float32(0.0)
    max_alpha = np.float32(MAX_ALPHA)
    alpha_threshold = np.float32(ALPHA_THRESHOLD)
    min_transmittance = np.float32(MIN_TRANSMITTANCE)
    for g in range(splats.shape[0]):
        y0 = max(rows[g, 0], row0)
        y1 = min(rows[g, 1], row1)
        if y0 >= y1:
            continue
        mx, my = splats[g, _MX], splats[g, _MY]
        ca, cb, cc = splats[g, _CA], splats[g, _CB], splats[g, _CC]
        opacity, cutoff = splats[g, _OPACITY], splats[g, _CUTOFF]
        red, green, blue = splats[g, _RED], splats[g, _GREEN], splats[g, _BLUE]
        half_a = half * ca
        inv_a = 1.0 / float(ca)
        for i in range(y0, y1):
            dy = np.float32(i) + half - my
            # Columns where 0.5 ca dx^2 + cb dy dx + 0.5 cc dy^2 <= cutoff: solve the quadratic in dx
            # (in float64), widened by a pixel; the exact alpha test below decides the border pixels.
            bdy = float(cb) * float(dy)
            disc = bdy * bdy - float(ca) * (float(cc) * float(dy) * float(dy) - 2.0 * float(cutoff))
            if disc < 0.0:
                continue
            root = math.sqrt(disc)
            j0 = int(max(0.0, math.ceil(float(mx) - (bdy + root) * inv_a - 0.5) - 1.0))
            j1 = int(min(float(width), math.floor(float(mx) + (root - bdy) * inv_a - 0.5) + 2.0))
            row_sigma = half * cc * dy * dy
            cross = cb * dy
            # Fixed-width chunks without branches (selects only), so LLVM turns a chunk into a few vector
            # instructions: rows are ~10 pixels, too short for a vectorised loop of variable length, and
            # unpredictable branches on stopped or faint pixels cost more than the arithmetic. Unsigned
            # indices into the flat planes: no negative-index fix-up (it prevents vectorising) and no
            # reference counting of slice views (an atomic operation per slice).
            # Lane positions come from a float array: AVX2 cannot convert int64 lanes to float.
            for chunk in range(j0, j1, CHUNK):
                at = np.uint64(i * stride + chunk)
                dx0 = np.float32(chunk) + half - mx
                lanes_left = np.float32(j1 - chunk)
                live = False
                for c in range(CHUNK):
                    live |= flat[at + np.uint64(c) + t_at] > zero
                if not live:
                    continue  # every pixel here has stopped: hidden behind nearer splats
                for c in range(CHUNK):
                    px = at + np.uint64(c)
                    dx = dx0 + lanes[c]
                    sigma = (half_a * dx + cross) * dx + row_sigma
                    alpha = min(max_alpha, opacity * _exp_neg(sigma))
                    t = flat[px + t_at]
                    contributes = (lanes[c] < lanes_left) & (sigma >= zero) & (alpha >= alpha_threshold) & (t > zero)
                    next_t = t * (one - alpha)
                    stops = contributes & (next_t <= min_transmittance)
                    weight = alpha * t if contributes & ~stops else zero
                    flat[px] += weight * red
                    flat[px + g_at] += weight * green
                    flat[px + b_at] += weight * blue
                    flat[px + t_at] = -t if stops else (next_t if contributes else t)


@njit(**_JIT)
def finish_rows(row0, row1, planes, red, green, blue, opaque, image):
    """Rows ``[row0, row1)`` of composited ``planes [4, H, W + CHUNK]`` into ``image [H, W, 4]``: add the background
    ``(red, green, blue)`` times the transmittance; alpha = 1 - transmittance, or 1 when ``opaque``."""
    for i in range(row0, row1):
        for j in range(image.shape[1]):
            t = abs(planes[3, i, j])
            image[i, j, 0] = planes[0, i, j] + t * red
            image[i, j, 1] = planes[1, i, j] + t * green
            image[i, j, 2] = planes[2, i, j] + t * blue
            image[i, j, 3] = 1.0 if opaque else 1.0 - t


def reset_planes(planes: np.ndarray) -> None:
    """Start ``planes [4, H, W + CHUNK]`` for ``composite_rows``: no colour, transmittance 1."""
    planes[:3] = 0.0
    planes[3] = 1.0


def even_bounds(count: int, parts: int) -> list[int]:
    """Bounds ``[parts + 1]`` splitting ``count`` items into ``parts`` nearly equal slices."""
    return [count * i // parts for i in range(parts + 1)]


class CpuCompositor:
    """Draws splats with the kernels above, ``threads`` slices at a time (the calling thread runs one).

    Not thread-safe: one caller at a time (the viewport's render thread). ``close()`` stops its helpers.
    """

    def __init__(self, threads: int | None = None):
        self.threads = max(1, int(threads if threads is not None else min(2, os.cpu_count() or 1)))
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="viewport-splat") \
            if self.threads > 1 else None
        self._splats = np.empty((0, SPLAT_FIELDS), np.float32)
        self._rows = np.empty((0, 2), np.int32)
        self._planes = np.empty((4, 0, 0), np.float32)

    def _run(self, kernel, bounds: list[int], *args) -> None:
        """``kernel(bounds[i], bounds[i + 1], *args)`` for every slice, the threads taking the next slice
        as they finish one (image bands differ in cost: a head band holds fewer splats than a torso's)."""
        slices = iter(range(len(bounds) - 1))  # next() on a range iterator is atomic under the GIL

        def work() -> None:
            for i in slices:
                kernel(bounds[i], bounds[i + 1], *args)

        futures = [self._pool.submit(work) for _ in range(self.threads - 1)] if self._pool is not None else []
        try:
            work()
        finally:
            for future in futures:
                future.result()

    def draw(self, means: np.ndarray, scales: np.ndarray, opacities: np.ndarray, colors: np.ndarray,
             order: np.ndarray, viewmat: np.ndarray, K: np.ndarray, eps2d: float, antialiased: bool,
             near_plane: float, far_plane: float, background: np.ndarray, opaque: bool, out: np.ndarray) -> None:
        """Composite splats (``means [N, 3]``, ``scales [N]``, ``opacities [N]``, ``colors [N, 3]``, all
        float32) nearest first by ``order [N]`` over ``background [3]`` into ``out [H, W, 4]`` float32.
        ``viewmat [4, 4]`` world-to-camera (OpenCV axes), ``K [3, 3]`` pixels."""
        height, width = out.shape[:2]
        count = means.shape[0]
        if self._splats.shape[0] < count:
            self._splats = np.empty((count, SPLAT_FIELDS), np.float32)
            self._rows = np.empty((count, 2), np.int32)
        splats, rows = self._splats[:count], self._rows[:count]
        viewmat = np.ascontiguousarray(viewmat, dtype=np.float64)
        self._run(project_splats, even_bounds(count, self.threads), order, means, scales, opacities, colors, viewmat,
                  float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), width, height, float(eps2d),
                  bool(antialiased), float(near_plane), float(far_plane), splats, rows)
        if self._planes.shape[1:] != (height, width + CHUNK):
            self._planes = np.empty((4, height, width + CHUNK), np.float32)
        reset_planes(self._planes)
        bands = even_bounds(height, BANDS_PER_THREAD * self.threads)
        self._run(composite_rows, bands, splats, rows, self._planes)
        red, green, blue = (float(c) for c in background[:3])
        self._run(finish_rows, bands, self._planes, red, green, blue, bool(opaque), out)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
