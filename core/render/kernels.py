"""numba kernels of the CPU Gaussian rasterizer: projection, tile binning, compositing, and their gradients.

Conventions follow gsplat 1.5.3's CUDA kernels, so both backends render the same image:
  * OpenCV camera (x right, y down, z forward), pixel centres at ``(j + 0.5, i + 0.5)``;
  * 2D covariance blurred by ``eps2d`` pixels^2; "antialiased" scales opacity by
    ``sqrt(det(cov2d) / det(cov2d + eps2d I))`` (Mip-Splatting);
  * ``alpha = min(0.999, opacity * exp(-sigma))``; contributions with alpha < 1/255 are skipped;
    a pixel stops before the Gaussian that would take its transmittance to 1e-4 or below;
  * radii are the opacity-aware 3.33-sigma bounding box, and 0 marks a culled Gaussian.

Arrays are numpy views of torch tensors (float32 or float64; numba compiles one version per dtype).
Scalar arithmetic runs in float64 whatever the storage dtype, so forward and backward agree on every
skip / stop decision.

Every kernel is serial, releases the GIL and works on a slice (``first, stop``) of its items; cpu.py runs
one slice per thread. That is as fast as numba's ``prange`` here, compiles in half the time (parfor
lowering took seconds per kernel), needs no OpenMP/TBB runtime (so it is fork-safe and re-entrant from
any thread), and lets us balance tiles by their estimated cost, which prange's static schedule does not.
"""
from __future__ import annotations

import math

import numpy as np

from core.render.jit_cache import configure_numba_cache

configure_numba_cache()

from numba import njit  # noqa: E402  (the cache directory must be configured before numba decorates anything)

TILE_SIZE = 16
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
MAX_EXTENT_SIGMAS = 3.33
# The cheap pre-test "sigma > log(255 * opacity)" skips exp() for pixels that are certainly below the
# alpha threshold; the margin keeps it conservative so the exact test still decides borderline pixels.
_SIGMA_CUTOFF_MARGIN = 1e-6

# nogil: kernels run in parallel threads and the GUI keeps running. cache: see jit_cache.py.
# error_model="numpy": divisions yield inf/nan instead of raising, which drops a branch per division.
_JIT = dict(cache=True, nogil=True, error_model="numpy")


# ----------------------------------------------------------------------------------------------------
# Small shared helpers (inlined by LLVM)
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _rotation_from_quat(quat, out_r):
    """Rotation matrix of a (w, x, y, z) quaternion, normalised first. quat: [4]; out_r: [3, 3]. Returns 1/|q|."""
    inv_norm = 1.0 / math.sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3])
    w = quat[0] * inv_norm
    x = quat[1] * inv_norm
    y = quat[2] * inv_norm
    z = quat[3] * inv_norm
    out_r[0, 0] = 1.0 - 2.0 * (y * y + z * z)
    out_r[0, 1] = 2.0 * (x * y - w * z)
    out_r[0, 2] = 2.0 * (x * z + w * y)
    out_r[1, 0] = 2.0 * (x * y + w * z)
    out_r[1, 1] = 1.0 - 2.0 * (x * x + z * z)
    out_r[1, 2] = 2.0 * (y * z - w * x)
    out_r[2, 0] = 2.0 * (x * z - w * y)
    out_r[2, 1] = 2.0 * (y * z + w * x)
    out_r[2, 2] = 1.0 - 2.0 * (x * x + y * y)
    return inv_norm


@njit(**_JIT)
def _world_covariance(rot, scale, out_cov):
    """cov = R diag(s^2) R^T. rot: [3, 3]; scale: [3] (metres); out_cov: [3, 3] (m^2)."""
    s0 = scale[0] * scale[0]
    s1 = scale[1] * scale[1]
    s2 = scale[2] * scale[2]
    for i in range(3):
        for j in range(3):
            out_cov[i, j] = rot[i, 0] * rot[j, 0] * s0 + rot[i, 1] * rot[j, 1] * s1 + rot[i, 2] * rot[j, 2] * s2


@njit(**_JIT)
def _rotate_covariance(view, cov, tmp, out_cov):
    """out = W cov W^T with W = view[:3, :3]. view: [4, 4]; cov, tmp, out_cov: [3, 3]."""
    for i in range(3):
        for j in range(3):
            tmp[i, j] = view[i, 0] * cov[0, j] + view[i, 1] * cov[1, j] + view[i, 2] * cov[2, j]
    for i in range(3):
        for j in range(3):
            out_cov[i, j] = tmp[i, 0] * view[j, 0] + tmp[i, 1] * view[j, 1] + tmp[i, 2] * view[j, 2]


@njit(**_JIT)
def _projection_jacobian(x, y, z, fx, fy, cx, cy, width, height):
    """Entries (j00, j02, j11, j12) of the 2x3 perspective Jacobian at camera point (x, y, z).

    As gsplat, x/z and y/z are clamped to 1.3x the field of view first, so Gaussians far off-screen do
    not get huge screen-space covariances. Also returns the clamped ratios (u, v) and whether each was
    left unclamped (the derivative w.r.t. x or y is zero when clamped).
    """
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    u_raw = x * rz
    v_raw = y * rz
    u_free = (u_raw <= lim_x_pos) and (u_raw >= -lim_x_neg)
    v_free = (v_raw <= lim_y_pos) and (v_raw >= -lim_y_neg)
    u = min(lim_x_pos, max(-lim_x_neg, u_raw))
    v = min(lim_y_pos, max(-lim_y_neg, v_raw))
    return fx * rz, -fx * u * rz, fy * rz, -fy * v * rz, u, v, u_free, v_free


@njit(**_JIT)
def _screen_covariance(j00, j02, j11, j12, cov_c):
    """cov2d = J cov_c J^T as (c00, c01, c11), plus the rows of J cov_c. cov_c: [3, 3] camera frame."""
    js00 = j00 * cov_c[0, 0] + j02 * cov_c[2, 0]
    js01 = j00 * cov_c[0, 1] + j02 * cov_c[2, 1]
    js02 = j00 * cov_c[0, 2] + j02 * cov_c[2, 2]
    js10 = j11 * cov_c[1, 0] + j12 * cov_c[2, 0]
    js11 = j11 * cov_c[1, 1] + j12 * cov_c[2, 1]
    js12 = j11 * cov_c[1, 2] + j12 * cov_c[2, 2]
    c00 = js00 * j00 + js02 * j02
    c01 = js01 * j11 + js02 * j12
    c11 = js11 * j11 + js12 * j12
    return c00, c01, c11, js00, js01, js02, js10, js11, js12


@njit(**_JIT)
def _pixel_span(centre, radius, lo, hi):
    """Pixels [first, stop) within ``radius`` of ``centre`` (pixel centres at +0.5), clipped to [lo, hi)."""
    first = max(lo, int(math.ceil(centre - radius - 0.5)))
    stop = min(hi, int(math.floor(centre + radius - 0.5)) + 1)
    return first, stop


@njit(**_JIT)
def _footprint(mx, my, ca, cb, cc, opacity, radius_x, radius_y, x_lo, x_hi, y_lo, y_hi):
    """Where one Gaussian can reach alpha >= 1/255, clipped to pixels [x_lo, x_hi) x [y_lo, y_hi).

    Returns (sigma_cutoff, x0, x1, y0, y1): pixels with sigma > sigma_cutoff are below the alpha
    threshold, and all others lie in [x0, x1) x [y0, y1): the tight box of that ellipse, intersected
    with gsplat's radii box (which only differs when opacity > 1).
    """
    sigma_cutoff = math.log(opacity / ALPHA_THRESHOLD) + _SIGMA_CUTOFF_MARGIN
    det = ca * cc - cb * cb
    if not (det > 0.0 and sigma_cutoff >= 0.0):
        return sigma_cutoff, x_lo, x_lo, y_lo, y_lo
    # the ellipse 0.5 d^T Q d <= cutoff reaches sqrt(2 cutoff (Q^-1)_xx) along x, likewise along y
    half_x = min(float(radius_x), math.sqrt(2.0 * sigma_cutoff * cc / det))
    half_y = min(float(radius_y), math.sqrt(2.0 * sigma_cutoff * ca / det))
    x0, x1 = _pixel_span(mx, half_x, x_lo, x_hi)
    y0, y1 = _pixel_span(my, half_y, y_lo, y_hi)
    return sigma_cutoff, x0, x1, y0, y1


# ----------------------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def project_forward(first, stop, means, quats, scales, opacities, viewmats, ks, width, height, eps2d,
                    near_plane, far_plane, antialiased, means2d, depths, conics, compensations, radii):
    """Project Gaussians [first, stop) of N into C cameras (EWA splatting). Outputs are written in place.

    means [N, 3] m, quats [N, 4] wxyz, scales [N, 3] m, opacities [N], viewmats [C, 4, 4] world-to-camera,
    ks [C, 3, 3] pixels. Outputs: means2d [C, N, 2] px, depths [C, N] m, conics [C, N, 3] (inverse blurred
    2D covariance a, b, c with sigma = a dx^2 / 2 + b dx dy + c dy^2 / 2), compensations [C, N],
    radii [C, N, 2] int32 px (0 = culled; culled entries are zero everywhere).
    """
    n_cams = viewmats.shape[0]
    rot = np.empty((3, 3))
    cov = np.empty((3, 3))
    tmp = np.empty((3, 3))
    cov_c = np.empty((3, 3))
    for n in range(first, stop):
        _rotation_from_quat(quats[n], rot)
        _world_covariance(rot, scales[n], cov)
        for c in range(n_cams):
            means2d[c, n, 0] = 0.0
            means2d[c, n, 1] = 0.0
            depths[c, n] = 0.0
            conics[c, n, 0] = 0.0
            conics[c, n, 1] = 0.0
            conics[c, n, 2] = 0.0
            compensations[c, n] = 0.0
            radii[c, n, 0] = 0
            radii[c, n, 1] = 0
            view = viewmats[c]
            px, py, pz = means[n, 0], means[n, 1], means[n, 2]
            x = view[0, 0] * px + view[0, 1] * py + view[0, 2] * pz + view[0, 3]
            y = view[1, 0] * px + view[1, 1] * py + view[1, 2] * pz + view[1, 3]
            z = view[2, 0] * px + view[2, 1] * py + view[2, 2] * pz + view[2, 3]
            if z < near_plane or z > far_plane:
                continue
            _rotate_covariance(view, cov, tmp, cov_c)
            fx, fy, cx, cy = ks[c, 0, 0], ks[c, 1, 1], ks[c, 0, 2], ks[c, 1, 2]
            j00, j02, j11, j12, _, _, _, _ = _projection_jacobian(x, y, z, fx, fy, cx, cy, width, height)
            c00, c01, c11, _, _, _, _, _, _ = _screen_covariance(j00, j02, j11, j12, cov_c)
            det_orig = c00 * c11 - c01 * c01
            b00 = c00 + eps2d
            b11 = c11 + eps2d
            det = b00 * b11 - c01 * c01
            if not det > 0.0:
                continue
            compensation = math.sqrt(max(0.0, det_orig / det))
            opacity = opacities[n] * compensation if antialiased else opacities[n]
            if opacity < ALPHA_THRESHOLD:
                continue
            extent = min(MAX_EXTENT_SIGMAS, math.sqrt(2.0 * math.log(opacity / ALPHA_THRESHOLD)))
            radius_x = math.ceil(extent * math.sqrt(b00))
            radius_y = math.ceil(extent * math.sqrt(b11))
            mx = fx * x / z + cx
            my = fy * y / z + cy
            if mx + radius_x <= 0 or mx - radius_x >= width or my + radius_y <= 0 or my - radius_y >= height:
                continue
            radii[c, n, 0] = radius_x
            radii[c, n, 1] = radius_y
            means2d[c, n, 0] = mx
            means2d[c, n, 1] = my
            depths[c, n] = z
            conics[c, n, 0] = b11 / det
            conics[c, n, 1] = -c01 / det
            conics[c, n, 2] = b00 / det
            compensations[c, n] = compensation


@njit(**_JIT)
def project_backward(first, stop, means, quats, scales, viewmats, ks, width, height, eps2d, radii,
                     v_means2d, v_depths, v_conics, v_compensations, v_means, v_quats, v_scales):
    """Gradients of project_forward's outputs w.r.t. means [N, 3], quats [N, 4], scales [N, 3], for [first, stop).

    v_means2d [C, N, 2], v_depths [C, N], v_conics [C, N, 3], v_compensations [C, N] are the upstream
    gradients; results are written to v_means, v_quats, v_scales (overwritten). Culled pairs get none.
    """
    n_cams = viewmats.shape[0]
    rot = np.empty((3, 3))
    cov = np.empty((3, 3))
    tmp = np.empty((3, 3))
    cov_c = np.empty((3, 3))
    jac = np.empty((2, 3))
    v_cov_c = np.empty((3, 3))
    v_cov = np.empty((3, 3))
    v_m = np.empty((3, 3))
    for n in range(first, stop):
        inv_norm = _rotation_from_quat(quats[n], rot)
        _world_covariance(rot, scales[n], cov)
        v_px = 0.0
        v_py = 0.0
        v_pz = 0.0
        v_cov[:, :] = 0.0
        for c in range(n_cams):
            if radii[c, n, 0] <= 0 or radii[c, n, 1] <= 0:
                continue
            view = viewmats[c]
            px, py, pz = means[n, 0], means[n, 1], means[n, 2]
            x = view[0, 0] * px + view[0, 1] * py + view[0, 2] * pz + view[0, 3]
            y = view[1, 0] * px + view[1, 1] * py + view[1, 2] * pz + view[1, 3]
            z = view[2, 0] * px + view[2, 1] * py + view[2, 2] * pz + view[2, 3]
            _rotate_covariance(view, cov, tmp, cov_c)
            fx, fy, cx, cy = ks[c, 0, 0], ks[c, 1, 1], ks[c, 0, 2], ks[c, 1, 2]
            j00, j02, j11, j12, u, v, u_free, v_free = _projection_jacobian(
                x, y, z, fx, fy, cx, cy, width, height)
            c00, c01, c11, js00, js01, js02, js10, js11, js12 = _screen_covariance(j00, j02, j11, j12, cov_c)
            b00 = c00 + eps2d
            b11 = c11 + eps2d
            det = b00 * b11 - c01 * c01
            q0 = b11 / det
            q1 = -c01 / det
            q2 = b00 / det
            # conic = inverse(B), B = cov2d + eps2d I:  dL/dB = -Q G Q, G the symmetric gradient of Q
            # (the off-diagonal conic entry stands for both Q01 and Q10, hence the half).
            g0 = v_conics[c, n, 0]
            gh = 0.5 * v_conics[c, n, 1]
            g2 = v_conics[c, n, 2]
            t00 = g0 * q0 + gh * q1
            t01 = g0 * q1 + gh * q2
            t10 = gh * q0 + g2 * q1
            t11 = gh * q1 + g2 * q2
            d00 = -(q0 * t00 + q1 * t10)
            d01 = -(q0 * t01 + q1 * t11)
            d11 = -(q1 * t01 + q2 * t11)
            # compensation = sqrt(det(cov2d) / det(B))
            det_orig = c00 * c11 - c01 * c01
            ratio = det_orig / det
            v_comp = v_compensations[c, n]
            if ratio > 0.0 and v_comp != 0.0:
                scale_r = v_comp * 0.5 / math.sqrt(ratio) / (det * det)
                d00 += scale_r * (c11 * det - det_orig * b11)
                d11 += scale_r * (c00 * det - det_orig * b00)
                d01 += scale_r * (-c01 * det + det_orig * c01)
            # cov2d = J cov_c J^T:  dL/dcov_c = J^T D J;  dL/dJ = 2 D J cov_c
            jac[0, 0] = j00
            jac[0, 1] = 0.0
            jac[0, 2] = j02
            jac[1, 0] = 0.0
            jac[1, 1] = j11
            jac[1, 2] = j12
            for a in range(3):
                for b in range(3):
                    v_cov_c[a, b] = (jac[0, a] * (d00 * jac[0, b] + d01 * jac[1, b])
                                     + jac[1, a] * (d01 * jac[0, b] + d11 * jac[1, b]))
            v_j00 = 2.0 * (d00 * js00 + d01 * js10)
            v_j02 = 2.0 * (d00 * js02 + d01 * js12)
            v_j11 = 2.0 * (d01 * js01 + d11 * js11)
            v_j12 = 2.0 * (d01 * js02 + d11 * js12)
            rz = 1.0 / z
            rz2 = rz * rz
            # camera-space point: from the projected mean, the depth, and the Jacobian entries
            gm0 = v_means2d[c, n, 0]
            gm1 = v_means2d[c, n, 1]
            v_x = fx * rz * gm0
            v_y = fy * rz * gm1
            v_z = -(fx * x * gm0 + fy * y * gm1) * rz2 + v_depths[c, n]
            v_z += -fx * rz2 * v_j00 - fy * rz2 * v_j11
            # j02 = -fx u / z with u = x / z unless clamped (then u is constant)
            if u_free:
                v_x += -fx * rz2 * v_j02
                v_z += 2.0 * fx * u * rz2 * v_j02
            else:
                v_z += fx * u * rz2 * v_j02
            if v_free:
                v_y += -fy * rz2 * v_j12
                v_z += 2.0 * fy * v * rz2 * v_j12
            else:
                v_z += fy * v * rz2 * v_j12
            # back to world: p_c = W p + t, cov_c = W cov W^T
            v_px += view[0, 0] * v_x + view[1, 0] * v_y + view[2, 0] * v_z
            v_py += view[0, 1] * v_x + view[1, 1] * v_y + view[2, 1] * v_z
            v_pz += view[0, 2] * v_x + view[1, 2] * v_y + view[2, 2] * v_z
            for i in range(3):
                for j in range(3):
                    tmp[i, j] = view[0, i] * v_cov_c[0, j] + view[1, i] * v_cov_c[1, j] + view[2, i] * v_cov_c[2, j]
            for i in range(3):
                for j in range(3):
                    v_cov[i, j] += tmp[i, 0] * view[0, j] + tmp[i, 1] * view[1, j] + tmp[i, 2] * view[2, j]
        v_means[n, 0] = v_px
        v_means[n, 1] = v_py
        v_means[n, 2] = v_pz
        # cov = M M^T with M = R diag(s):  dL/dM = (V + V^T) M
        for i in range(3):
            for j in range(3):
                v_m[i, j] = ((v_cov[i, 0] + v_cov[0, i]) * rot[0, j] * scales[n, j]
                             + (v_cov[i, 1] + v_cov[1, i]) * rot[1, j] * scales[n, j]
                             + (v_cov[i, 2] + v_cov[2, i]) * rot[2, j] * scales[n, j])
        for j in range(3):
            v_scales[n, j] = v_m[0, j] * rot[0, j] + v_m[1, j] * rot[1, j] + v_m[2, j] * rot[2, j]
        # dL/dR = dL/dM diag(s); reuse v_m in place
        for i in range(3):
            for j in range(3):
                v_m[i, j] *= scales[n, j]
        w = quats[n, 0] * inv_norm
        qx = quats[n, 1] * inv_norm
        qy = quats[n, 2] * inv_norm
        qz = quats[n, 3] * inv_norm
        v_w = 2.0 * (-qz * v_m[0, 1] + qy * v_m[0, 2] + qz * v_m[1, 0] - qx * v_m[1, 2]
                     - qy * v_m[2, 0] + qx * v_m[2, 1])
        v_qx = 2.0 * (qy * v_m[0, 1] + qz * v_m[0, 2] + qy * v_m[1, 0] - 2.0 * qx * v_m[1, 1]
                      - w * v_m[1, 2] + qz * v_m[2, 0] + w * v_m[2, 1] - 2.0 * qx * v_m[2, 2])
        v_qy = 2.0 * (-2.0 * qy * v_m[0, 0] + qx * v_m[0, 1] + w * v_m[0, 2] + qx * v_m[1, 0]
                      + qz * v_m[1, 2] - w * v_m[2, 0] + qz * v_m[2, 1] - 2.0 * qy * v_m[2, 2])
        v_qz = 2.0 * (-2.0 * qz * v_m[0, 0] - w * v_m[0, 1] + qx * v_m[0, 2] + w * v_m[1, 0]
                      - 2.0 * qz * v_m[1, 1] + qy * v_m[1, 2] + qx * v_m[2, 0] + qy * v_m[2, 1])
        # through the normalisation q / |q|: remove the radial part, scale by 1/|q|
        radial = w * v_w + qx * v_qx + qy * v_qy + qz * v_qz
        v_quats[n, 0] = (v_w - w * radial) * inv_norm
        v_quats[n, 1] = (v_qx - qx * radial) * inv_norm
        v_quats[n, 2] = (v_qy - qy * radial) * inv_norm
        v_quats[n, 3] = (v_qz - qz * radial) * inv_norm


# ----------------------------------------------------------------------------------------------------
# Tile binning
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def bin_gaussians(means2d, conics, opacities, radii, depth_order, width, height):
    """List, for every 16x16 tile, the Gaussians whose bounding box touches it, front to back.

    means2d [C, N, 2] px, conics [C, N, 3], opacities [C, N], radii [C, N, 2] int px, depth_order [C, N]
    int (each camera's Gaussians sorted near to far, stable). A Gaussian is listed in the tiles its
    footprint box touches (see _footprint). Returns
      tile_offsets [C*T + 1] int64: tile t's entries are isect_ids[tile_offsets[t]:tile_offsets[t+1]];
      isect_ids [M] int32: Gaussian index within its camera;
      gauss_offsets [C*N + 1] int64 and gauss_slots [M] int64: for Gaussian (c, n), the positions in
        isect_ids of its entries, so the backward pass can gather per-Gaussian sums without races;
      tile_cost [C*T] int64: pixel-Gaussian pairs in footprint boxes per tile, which bounds the tile's
        contributions (sizes the contribution log) and estimates its work (load balancing);
      footprints [C, N, 4] int32: pixel box (x0, x1, y0, y1), half-open, clipped to the image;
      sigma_cutoffs [C, N] float64: see _footprint.
    Computing footprints once here saves a log and two square roots per (tile, Gaussian) later.
    """
    n_cams, n_gauss = radii.shape[0], radii.shape[1]
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE
    tiles_per_cam = tiles_x * tiles_y
    tile_counts = np.zeros(n_cams * tiles_per_cam + 1, np.int64)
    gauss_counts = np.zeros(n_cams * n_gauss + 1, np.int64)
    tile_cost = np.zeros(n_cams * tiles_per_cam, np.int64)
    footprints = np.zeros((n_cams, n_gauss, 4), np.int32)
    sigma_cutoffs = np.zeros((n_cams, n_gauss), np.float64)
    for c in range(n_cams):
        for n in range(n_gauss):
            if radii[c, n, 0] <= 0 or radii[c, n, 1] <= 0:
                continue
            cutoff, x0, x1, y0, y1 = _footprint(means2d[c, n, 0], means2d[c, n, 1], conics[c, n, 0],
                                                conics[c, n, 1], conics[c, n, 2], opacities[c, n], radii[c, n, 0],
                                                radii[c, n, 1], 0, width, 0, height)
            if x0 >= x1 or y0 >= y1:
                continue
            footprints[c, n, 0] = x0
            footprints[c, n, 1] = x1
            footprints[c, n, 2] = y0
            footprints[c, n, 3] = y1
            sigma_cutoffs[c, n] = cutoff
            for ty in range(y0 // TILE_SIZE, (y1 - 1) // TILE_SIZE + 1):
                rows = min(y1, (ty + 1) * TILE_SIZE) - max(y0, ty * TILE_SIZE)
                for tx in range(x0 // TILE_SIZE, (x1 - 1) // TILE_SIZE + 1):
                    cols = min(x1, (tx + 1) * TILE_SIZE) - max(x0, tx * TILE_SIZE)
                    tile = c * tiles_per_cam + ty * tiles_x + tx
                    tile_counts[tile + 1] += 1
                    tile_cost[tile] += rows * cols
                    gauss_counts[c * n_gauss + n + 1] += 1
    tile_offsets = np.cumsum(tile_counts)
    gauss_offsets = np.cumsum(gauss_counts)
    n_isects = tile_offsets[-1]
    isect_ids = np.empty(n_isects, np.int32)
    gauss_slots = np.empty(n_isects, np.int64)
    cursor = tile_offsets[:-1].copy()
    for c in range(n_cams):
        for rank in range(n_gauss):
            n = depth_order[c, rank]
            slot_out = gauss_offsets[c * n_gauss + n]
            if slot_out == gauss_offsets[c * n_gauss + n + 1]:
                continue
            x0, x1, y0, y1 = footprints[c, n, 0], footprints[c, n, 1], footprints[c, n, 2], footprints[c, n, 3]
            for ty in range(y0 // TILE_SIZE, (y1 - 1) // TILE_SIZE + 1):
                for tx in range(x0 // TILE_SIZE, (x1 - 1) // TILE_SIZE + 1):
                    tile = c * tiles_per_cam + ty * tiles_x + tx
                    slot = cursor[tile]
                    cursor[tile] += 1
                    isect_ids[slot] = n
                    gauss_slots[slot_out] = slot
                    slot_out += 1
    return tile_offsets, isect_ids, gauss_offsets, gauss_slots, tile_cost, footprints, sigma_cutoffs


@njit(**_JIT)
def balance_work(cost, order, n_workers):
    """Assign items to workers, heaviest first to the least-loaded worker (LPT).

    cost [K] float, order [K] int: items by decreasing cost (sorted by the caller; numba's argsort
    takes seconds to compile). Returns worker_offsets [W + 1] and items [K]: worker w runs
    items[worker_offsets[w]:worker_offsets[w + 1]], heaviest first.
    """
    load = np.zeros(n_workers, np.float64)
    owner = np.empty(cost.shape[0], np.int64)
    counts = np.zeros(n_workers + 1, np.int64)
    for item in order:
        best = 0
        for w in range(1, n_workers):
            if load[w] < load[best]:
                best = w
        load[best] += cost[item] + 1.0  # +1: even an empty tile costs a little
        owner[item] = best
        counts[best + 1] += 1
    worker_offsets = np.cumsum(counts)
    items = np.empty(cost.shape[0], np.int64)
    cursor = worker_offsets[:-1].copy()
    for item in order:
        items[cursor[owner[item]]] = item
        cursor[owner[item]] += 1
    return worker_offsets, items


# ----------------------------------------------------------------------------------------------------
# Compositing
#
# Per tile, Gaussians are visited front to back and each one only touches the pixels of its footprint
# box that are still accumulating. Every contribution (alpha >= 1/255, before the pixel saturates) is
# appended to a log: entry in isect_ids, pixel, exp(-sigma) and the transmittance before it. The backward
# pass replays the log in reverse: no exp(), no search for contributing pixels, no division to recover T.
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def composite_forward(task_first, task_stop, means2d, conics, colors, opacities, footprints, sigma_cutoffs,
                      backgrounds, width, height, tile_offsets, isect_ids, worker_tiles, task_log_start,
                      log_entry, log_pixel, log_falloff, log_trans, log_count, out_colors, out_transmittance):
    """Front-to-back alpha compositing of tiles worker_tiles[task_first:task_stop].

    means2d [C, N, 2], conics [C, N, 3], colors [C, N, D], opacities [C, N] (already compensated),
    footprints [C, N, 4] and sigma_cutoffs [C, N] from bin_gaussians, backgrounds [C, D] (zeros for
    none). Task j logs its contributions at log_*[task_log_start[j]:], at most the tile's cost, and
    stores how many in log_count[j]: log_entry (int32, index into isect_ids), log_pixel (uint8,
    row * 16 + column in the tile), log_falloff (exp(-sigma)), log_trans (T before the Gaussian).
    Writes out_colors [C, H, W, D] and out_transmittance [C, H, W] (final T; alpha = 1 - T).
    """
    n_channels = colors.shape[2]
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_per_cam = tiles_x * ((height + TILE_SIZE - 1) // TILE_SIZE)
    n_pix_tile = TILE_SIZE * TILE_SIZE
    trans = np.empty(n_pix_tile)
    accum = np.empty((n_pix_tile, n_channels))
    done = np.empty(n_pix_tile, np.bool_)
    # per tile row, the tile-local columns [alive_first, alive_stop) hold every pixel still accumulating
    alive_first = np.empty(TILE_SIZE, np.int64)
    alive_stop = np.empty(TILE_SIZE, np.int64)
    for task in range(task_first, task_stop):
        tile = worker_tiles[task]
        c = tile // tiles_per_cam
        tx = (tile % tiles_per_cam) % tiles_x
        ty = (tile % tiles_per_cam) // tiles_x
        x_lo = tx * TILE_SIZE
        y_lo = ty * TILE_SIZE
        x_hi = min(x_lo + TILE_SIZE, width)
        y_hi = min(y_lo + TILE_SIZE, height)
        n_pix = (x_hi - x_lo) * (y_hi - y_lo)
        trans[:] = 1.0
        accum[:, :] = 0.0
        done[:] = False
        alive_first[:] = 0
        alive_stop[:] = x_hi - x_lo
        n_done = 0
        log_at = task_log_start[task]
        for k in range(tile_offsets[tile], tile_offsets[tile + 1]):
            if n_done == n_pix:
                break
            n = isect_ids[k]
            x0 = max(x_lo, footprints[c, n, 0]) - x_lo
            x1 = min(x_hi, footprints[c, n, 1]) - x_lo
            y0 = max(y_lo, footprints[c, n, 2]) - y_lo
            y1 = min(y_hi, footprints[c, n, 3]) - y_lo
            mx = means2d[c, n, 0] - x_lo  # tile-local pixel coordinates from here on
            my = means2d[c, n, 1] - y_lo
            half_a = 0.5 * conics[c, n, 0]
            cb = conics[c, n, 1]
            half_c = 0.5 * conics[c, n, 2]
            opacity = opacities[c, n]
            sigma_cutoff = sigma_cutoffs[c, n]
            for r in range(y0, y1):
                first = max(x0, alive_first[r])
                stop = min(x1, alive_stop[r])
                if first >= stop:
                    continue
                dy = my - (r + 0.5)
                row_sigma = half_c * dy * dy
                cross = cb * dy
                for col in range(first, stop):
                    p = r * TILE_SIZE + col
                    if done[p]:
                        continue
                    dx = mx - (col + 0.5)
                    sigma = half_a * dx * dx + cross * dx + row_sigma
                    if sigma > sigma_cutoff or sigma < 0.0:
                        continue
                    falloff = math.exp(-sigma)
                    alpha = min(MAX_ALPHA, opacity * falloff)
                    if alpha < ALPHA_THRESHOLD:
                        continue
                    t_before = trans[p]
                    next_t = t_before * (1.0 - alpha)
                    if next_t <= MIN_TRANSMITTANCE:
                        done[p] = True
                        n_done += 1
                        while alive_first[r] < alive_stop[r] and done[r * TILE_SIZE + alive_first[r]]:
                            alive_first[r] += 1
                        while alive_stop[r] > alive_first[r] and done[r * TILE_SIZE + alive_stop[r] - 1]:
                            alive_stop[r] -= 1
                        continue
                    weight = alpha * t_before
                    for ch in range(n_channels):
                        accum[p, ch] += weight * colors[c, n, ch]
                    trans[p] = next_t
                    log_entry[log_at] = k
                    log_pixel[log_at] = p
                    log_falloff[log_at] = falloff
                    log_trans[log_at] = t_before
                    log_at += 1
        log_count[task] = log_at - task_log_start[task]
        for py in range(y_lo, y_hi):
            for px in range(x_lo, x_hi):
                p = (py - y_lo) * TILE_SIZE + (px - x_lo)
                for ch in range(n_channels):
                    out_colors[c, py, px, ch] = accum[p, ch] + trans[p] * backgrounds[c, ch]
                out_transmittance[c, py, px] = trans[p]


@njit(**_JIT)
def composite_backward(task_first, task_stop, means2d, conics, colors, opacities, backgrounds, width, height,
                       tile_offsets, isect_ids, worker_tiles, task_log_start, log_entry, log_pixel, log_falloff,
                       log_trans, log_count, out_transmittance, v_out_colors, v_out_alphas, isect_grads):
    """Gradients of composite_forward for tiles worker_tiles[task_first:task_stop], replaying its log.

    v_out_colors [C, H, W, D], v_out_alphas [C, H, W]. isect_grads [M, 6 + D] receives, per entry of
    isect_ids: d/d(mean x, mean y, conic a, conic b, conic c, opacity, colours...). Each tile owns its
    rows, so threads never write the same memory; reduce_isect_grads then sums them per Gaussian.
    """
    n_channels = colors.shape[2]
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_per_cam = tiles_x * ((height + TILE_SIZE - 1) // TILE_SIZE)
    n_pix_tile = TILE_SIZE * TILE_SIZE
    behind = np.empty(n_pix_tile)  # (sum of weight * colour behind the current Gaussian) . dL/dcolour
    tail = np.empty(n_pix_tile)  # T_final * (background . dL/dcolour - dL/dalpha)
    v_pix = np.empty((n_pix_tile, n_channels))
    v_colour = np.empty(n_channels)
    for task in range(task_first, task_stop):
        tile = worker_tiles[task]
        isect_grads[tile_offsets[tile]:tile_offsets[tile + 1], :] = 0.0
        c = tile // tiles_per_cam
        tx = (tile % tiles_per_cam) % tiles_x
        ty = (tile % tiles_per_cam) // tiles_x
        x_lo = tx * TILE_SIZE
        y_lo = ty * TILE_SIZE
        x_hi = min(x_lo + TILE_SIZE, width)
        y_hi = min(y_lo + TILE_SIZE, height)
        for py in range(y_lo, y_hi):
            for px in range(x_lo, x_hi):
                p = (py - y_lo) * TILE_SIZE + (px - x_lo)
                behind[p] = 0.0
                bg_dot = 0.0
                for ch in range(n_channels):
                    v_pix[p, ch] = v_out_colors[c, py, px, ch]
                    bg_dot += backgrounds[c, ch] * v_pix[p, ch]
                tail[p] = out_transmittance[c, py, px] * (bg_dot - v_out_alphas[c, py, px])
        log_first = task_log_start[task]
        j = log_first + log_count[task] - 1
        # entries of one Gaussian are contiguous in the log: accumulate them, then store once
        while j >= log_first:
            k = log_entry[j]
            n = isect_ids[k]
            mx = means2d[c, n, 0] - x_lo
            my = means2d[c, n, 1] - y_lo
            ca = conics[c, n, 0]
            cb = conics[c, n, 1]
            cc = conics[c, n, 2]
            opacity = opacities[c, n]
            g_mx = 0.0
            g_my = 0.0
            g_a = 0.0
            g_b = 0.0
            g_c = 0.0
            g_o = 0.0
            v_colour[:] = 0.0
            while j >= log_first and log_entry[j] == k:
                p = log_pixel[j]
                falloff = log_falloff[j]
                t_before = log_trans[j]
                j -= 1
                raw_alpha = opacity * falloff
                alpha = min(MAX_ALPHA, raw_alpha)
                keep = 1.0 - alpha
                weight = alpha * t_before
                colour_dot = 0.0
                for ch in range(n_channels):
                    colour_dot += colors[c, n, ch] * v_pix[p, ch]
                    v_colour[ch] += weight * v_pix[p, ch]
                v_alpha = t_before * colour_dot - (behind[p] + tail[p]) / keep
                behind[p] += weight * colour_dot
                if raw_alpha <= MAX_ALPHA:
                    # alpha = opacity exp(-sigma): d alpha / d sigma = -alpha
                    v_sigma = -raw_alpha * v_alpha
                    g_o += falloff * v_alpha
                    dx = mx - (p % TILE_SIZE + 0.5)
                    dy = my - (p // TILE_SIZE + 0.5)
                    g_mx += v_sigma * (ca * dx + cb * dy)
                    g_my += v_sigma * (cb * dx + cc * dy)
                    g_a += 0.5 * v_sigma * dx * dx
                    g_b += v_sigma * dx * dy
                    g_c += 0.5 * v_sigma * dy * dy
            isect_grads[k, 0] = g_mx
            isect_grads[k, 1] = g_my
            isect_grads[k, 2] = g_a
            isect_grads[k, 3] = g_b
            isect_grads[k, 4] = g_c
            isect_grads[k, 5] = g_o
            for ch in range(n_channels):
                isect_grads[k, 6 + ch] = v_colour[ch]


@njit(**_JIT)
def reduce_isect_grads(first, stop, isect_grads, gauss_offsets, gauss_slots, v_means2d, v_conics, v_opacities,
                       v_colors):
    """Sum isect_grads [M, 6 + D] per Gaussian into v_means2d [C, N, 2], v_conics [C, N, 3],
    v_opacities [C, N], v_colors [C, N, D], for flat indices c * N + n in [first, stop) (overwritten)."""
    n_gauss = v_opacities.shape[1]
    n_channels = v_colors.shape[2]
    for flat in range(first, stop):
        c = flat // n_gauss
        n = flat - c * n_gauss
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        s5 = 0.0
        for ch in range(n_channels):
            v_colors[c, n, ch] = 0.0
        for j in range(gauss_offsets[flat], gauss_offsets[flat + 1]):
            row = gauss_slots[j]
            s0 += isect_grads[row, 0]
            s1 += isect_grads[row, 1]
            s2 += isect_grads[row, 2]
            s3 += isect_grads[row, 3]
            s4 += isect_grads[row, 4]
            s5 += isect_grads[row, 5]
            for ch in range(n_channels):
                v_colors[c, n, ch] += isect_grads[row, 6 + ch]
        v_means2d[c, n, 0] = s0
        v_means2d[c, n, 1] = s1
        v_conics[c, n, 0] = s2
        v_conics[c, n, 1] = s3
        v_conics[c, n, 2] = s4
        v_opacities[c, n] = s5
