"""numba kernels of the CPU Gaussian rasterizer: projection, tile binning, compositing, and their gradients.

Conventions follow gsplat 1.5.3's CUDA kernels, so both backends render the same image:
  * OpenCV camera (x right, y down, z forward), pixel centres at ``(j + 0.5, i + 0.5)``;
  * 2D covariance blurred by ``eps2d`` pixels^2; "antialiased" scales opacity by
    ``sqrt(det(cov2d) / det(cov2d + eps2d I))`` (Mip-Splatting);
  * ``alpha = min(0.999, opacity * exp(-sigma))``; contributions with alpha < 1/255 are skipped;
    a pixel stops before the Gaussian that would take its transmittance to 1e-4 or below;
  * radii are the opacity-aware 3.33-sigma bounding box, and 0 marks a culled Gaussian.

Arrays are numpy views of torch tensors (float32 or float64; numba compiles one version per dtype).
Per-pixel compositing arithmetic runs in the storage dtype (float32 as gsplat's CUDA kernels, or float64
for gradchecks); projection and per-Gaussian set-up run in float64. The forward pass logs every contribution
it makes, and the backward pass replays that log, so both always agree on what was skipped or stopped.

Every kernel is serial and releases the GIL; cpu.py runs it on every thread. Per-Gaussian kernels work on
a slice (``first, stop``) of the items, one slice per thread; the compositing kernels take tiles, heaviest
first, from a queue the threads share (take_task), since a tile's cost is known only roughly in advance.
That is as fast as numba's ``prange`` here, compiles in half the time (parfor lowering took seconds per
kernel), and needs no OpenMP/TBB runtime (so it is fork-safe and re-entrant from any thread).
"""
from __future__ import annotations

import math

import numpy as np

from core.render.jit_cache import configure_numba_cache

configure_numba_cache()

from llvmlite import ir  # noqa: E402
from numba import njit, types  # noqa: E402  (the cache directory must be configured before numba decorates anything)
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402
from numba.cpython.unsafe.numbers import trailing_zeros  # noqa: E402

TILE_SIZE = 16
_TILE_SHIFT = 4  # log2(TILE_SIZE): tile pixel p sits in row p >> 4, column p & 15
assert TILE_SIZE == 1 << _TILE_SHIFT
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
MAX_EXTENT_SIGMAS = 3.33
MIN_DEPTH_ALPHA = 1e-10  # expected depth divides by max(alpha, this), as gsplat
# Footprint boxes hold every pixel with sigma <= log(255 * opacity); the margin keeps them conservative so
# the exact alpha test (on the stored float32 conic and opacity) still decides borderline pixels.
_SIGMA_CUTOFF_MARGIN = 1e-5  # well above a float32 rounding of the cutoff (< 1e-6 for cutoffs < 16)

# nogil: kernels run in parallel threads and the GUI keeps running. cache: see jit_cache.py.
# error_model="numpy": divisions yield inf/nan instead of raising, which drops a branch per division.
# fastmath "contract" (only that flag): LLVM may fuse a multiply and an add into one FMA instruction. Results
# move by an ulp at most (each fused pair rounds once instead of twice); NaN, inf and signed-zero handling
# and the order of operations stay as written. Same-process A/B, one thread: compositing backward 25 % and
# forward 7-9 % faster at 20k @256^2 and 50k @512^2 (the kernels are mostly multiply-adds).
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


# ----------------------------------------------------------------------------------------------------
# Small shared helpers (inlined by LLVM)
# ----------------------------------------------------------------------------------------------------
# Entries this many places ahead in a tile's list have their packed row and colours prefetched: the rows of
# one tile's Gaussians lie scattered over arrays larger than the core's cache (a miss at every entry was 8 %
# of the forward's time at 50k Gaussians; prefetched, the forward takes 4 % less, the backward 7 %).
PREFETCH_AHEAD = 4


@intrinsic
def _prefetch_row(typingctx, array, i, j):
    """Ask the CPU to fetch the cache line holding ``array[i, j, 0]`` (a 3-D array), without waiting for it
    (LLVM's prefetch: a hint, never a fault, so any in-bounds i, j will do)."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        data = context.make_array(array_type)(context, builder, args[0])
        index = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:])]
        pointer = cgutils.get_item_pointer(context, builder, array_type, data,
                                           index + [context.get_constant(types.intp, 0)], wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0i8")
        # read, keep in all cache levels, data cache
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), ir.Constant(i32, 0), ir.Constant(i32, 3),
                                ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(array, i, j), codegen


@intrinsic
def _add_scaled_rgb(typingctx, accum, p, weight, c0, c1, c2):
    """accum[p, 0:4] += weight * (c0, c1, c2, 0) as one 4-lane vector multiply-add (accum [P, 4], float32 or
    float64): LLVM keeps the three channels' loads, multiply-adds and stores scalar by itself."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        element = context.get_data_type(array_type.dtype)
        vector = ir.VectorType(element, 4)
        data = context.make_array(array_type)(context, builder, args[0]).data
        index = builder.mul(context.cast(builder, args[1], signature.args[1], types.intp),
                            ir.Constant(ir.IntType(64), 4))
        pointer = builder.bitcast(builder.gep(data, [index]), vector.as_pointer())
        align = context.get_abi_sizeof(element)
        colours = ir.Constant(vector, ir.Undefined)
        for lane, value in enumerate(args[3:6]):
            colours = builder.insert_element(colours, value, ir.Constant(ir.IntType(32), lane))
        colours = builder.insert_element(colours, ir.Constant(element, 0.0), ir.Constant(ir.IntType(32), 3))
        weights = builder.insert_element(ir.Constant(vector, ir.Undefined), args[2], ir.Constant(ir.IntType(32), 0))
        weights = builder.shuffle_vector(weights, ir.Constant(vector, ir.Undefined),
                                         ir.Constant(ir.VectorType(ir.IntType(32), 4), [0] * 4))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                             f"llvm.fma.v4f{64 if element == ir.DoubleType() else 32}")
        builder.store(builder.call(fma, [weights, colours, builder.load(pointer, align=align)]), pointer, align=align)
        return context.get_dummy_value()
    return types.void(accum, p, weight, c0, c1, c2), codegen


@intrinsic
def take_task(typingctx, queue):
    """Atomically add 1 to ``queue[0]`` (an int64 array) and return its value before: the next work item
    of a queue that several threads share (LLVM's atomicrmw add)."""
    def codegen(context, builder, signature, args):
        counter = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", counter, ir.Constant(ir.IntType(64), 1), "monotonic")
    return types.int64(queue), codegen


@njit(**_JIT)
def _rotation_from_quat(qw, qx, qy, qz):
    """Rotation matrix of a (w, x, y, z) quaternion, normalised first.

    Returns (1/|q|, w, x, y, z normalised, r00, r01, r02, r10, r11, r12, r20, r21, r22). Small
    matrices travel as tuples of scalars so they stay in registers.
    """
    inv_norm = 1.0 / math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    w = qw * inv_norm
    x = qx * inv_norm
    y = qy * inv_norm
    z = qz * inv_norm
    return (inv_norm, w, x, y, z,
            1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
            2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
            2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y))


@njit(**_JIT)
def _sandwich(m, s00, s01, s02, s11, s12, s22):
    """M S M^T for a 3x3 M (row-major 9-tuple) and symmetric S; returns its 6 unique entries
    (00, 01, 02, 11, 12, 22)."""
    a00 = m[0] * s00 + m[1] * s01 + m[2] * s02
    a01 = m[0] * s01 + m[1] * s11 + m[2] * s12
    a02 = m[0] * s02 + m[1] * s12 + m[2] * s22
    a10 = m[3] * s00 + m[4] * s01 + m[5] * s02
    a11 = m[3] * s01 + m[4] * s11 + m[5] * s12
    a12 = m[3] * s02 + m[4] * s12 + m[5] * s22
    a20 = m[6] * s00 + m[7] * s01 + m[8] * s02
    a21 = m[6] * s01 + m[7] * s11 + m[8] * s12
    a22 = m[6] * s02 + m[7] * s12 + m[8] * s22
    return (a00 * m[0] + a01 * m[1] + a02 * m[2], a00 * m[3] + a01 * m[4] + a02 * m[5],
            a00 * m[6] + a01 * m[7] + a02 * m[8], a10 * m[3] + a11 * m[4] + a12 * m[5],
            a10 * m[6] + a11 * m[7] + a12 * m[8], a20 * m[6] + a21 * m[7] + a22 * m[8])


@njit(**_JIT)
def _sandwich_diagonal(m, d0, d1, d2):
    """M diag(d) M^T for a 3x3 M (row-major 9-tuple): _sandwich's 6 entries for a diagonal S, in 18
    multiplications instead of 45."""
    a0 = m[0] * d0
    a1 = m[1] * d1
    a2 = m[2] * d2
    a3 = m[3] * d0
    a4 = m[4] * d1
    a5 = m[5] * d2
    return (a0 * m[0] + a1 * m[1] + a2 * m[2], a0 * m[3] + a1 * m[4] + a2 * m[5],
            a0 * m[6] + a1 * m[7] + a2 * m[8], a3 * m[3] + a4 * m[4] + a5 * m[5],
            a3 * m[6] + a4 * m[7] + a5 * m[8], (m[6] * d0) * m[6] + (m[7] * d1) * m[7] + (m[8] * d2) * m[8])


@njit(**_JIT)
def _unrotated(quats, n):
    """Whether quaternion n (quats [N, 4], wxyz) is a pure w: rotation matrix exactly the identity, so the
    world covariance is diag(s^2). Every avatar Gaussian is (isotropic, identity rotation): the projection
    then skips the quaternion's normalisation and two 3x3 sandwiches, with the same results."""
    return quats[n, 1] == 0.0 and quats[n, 2] == 0.0 and quats[n, 3] == 0.0 and quats[n, 0] != 0.0


@njit(**_JIT)
def _world_covariance(rot, scales, n):
    """cov = R diag(s^2) R^T as its 6 unique entries. rot: 9-tuple; scales: [N, 3] (metres), row n.

    Arrays are indexed to scalars, never sliced, in the per-Gaussian kernels: a slice such as scales[n] is
    a new array, and numba counts references to it with atomic operations (measured: a third of the
    projection's time)."""
    sx, sy, sz = scales[n, 0], scales[n, 1], scales[n, 2]
    return _sandwich(rot, sx * sx, 0.0, 0.0, sy * sy, 0.0, sz * sz)


@njit(**_JIT)
def _view_rotation(viewmats, c):
    """The 3x3 rotation of world-to-camera matrix viewmats[c] ([C, 4, 4]) as a row-major 9-tuple."""
    return (viewmats[c, 0, 0], viewmats[c, 0, 1], viewmats[c, 0, 2], viewmats[c, 1, 0], viewmats[c, 1, 1],
            viewmats[c, 1, 2], viewmats[c, 2, 0], viewmats[c, 2, 1], viewmats[c, 2, 2])


@njit(**_JIT)
def _camera_point(viewmats, c, means, n):
    """Gaussian n's centre (means [N, 3]) in camera c's frame (viewmats [C, 4, 4]): (x, y, z) metres."""
    px, py, pz = means[n, 0], means[n, 1], means[n, 2]
    return (viewmats[c, 0, 0] * px + viewmats[c, 0, 1] * py + viewmats[c, 0, 2] * pz + viewmats[c, 0, 3],
            viewmats[c, 1, 0] * px + viewmats[c, 1, 1] * py + viewmats[c, 1, 2] * pz + viewmats[c, 1, 3],
            viewmats[c, 2, 0] * px + viewmats[c, 2, 1] * py + viewmats[c, 2, 2] * pz + viewmats[c, 2, 3])


@njit(**_JIT)
def _fov_limits(ks, c, width, height):
    """Camera c's (fx, fy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg): focal lengths (ks [C, 3, 3], pixels)
    and the bounds that _projection_jacobian clamps x/z and y/z to (1.3x the field of view, as gsplat)."""
    fx, fy, cx, cy = ks[c, 0, 0], ks[c, 1, 1], ks[c, 0, 2], ks[c, 1, 2]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    return (fx, fy, (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx,
            (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy)


@njit(**_JIT)
def _all_fov_limits(ks, width, height):
    """_fov_limits of every camera, [C, 6]: computed once per kernel call rather than per Gaussian."""
    fovs = np.empty((ks.shape[0], 6))
    for c in range(ks.shape[0]):
        fovs[c, 0], fovs[c, 1], fovs[c, 2], fovs[c, 3], fovs[c, 4], fovs[c, 5] = _fov_limits(ks, c, width, height)
    return fovs


@njit(**_JIT)
def _projection_jacobian(x, y, z, fovs, c):
    """Entries (j00, j02, j11, j12) of the 2x3 perspective Jacobian at camera point (x, y, z).

    fovs: _all_fov_limits, of which camera c's row is used. As gsplat, x/z and y/z are clamped to 1.3x the field of view first, so
    Gaussians far off-screen do not get huge screen-space covariances. Also returns the clamped ratios
    (u, v) and whether each was left unclamped (the derivative w.r.t. x or y is zero when clamped).
    """
    fx, fy, lim_x_pos, lim_x_neg = fovs[c, 0], fovs[c, 1], fovs[c, 2], fovs[c, 3]
    lim_y_pos, lim_y_neg = fovs[c, 4], fovs[c, 5]
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
    """cov2d = J cov_c J^T as (c00, c01, c11), plus the rows of J cov_c.

    cov_c: camera-frame covariance as its 6 unique entries (00, 01, 02, 11, 12, 22).
    """
    k00, k01, k02, k11, k12, k22 = cov_c
    js00 = j00 * k00 + j02 * k02
    js01 = j00 * k01 + j02 * k12
    js02 = j00 * k02 + j02 * k22
    js10 = j11 * k01 + j12 * k02
    js11 = j11 * k11 + j12 * k12
    js12 = j11 * k12 + j12 * k22
    c00 = js00 * j00 + js02 * j02
    c01 = js01 * j11 + js02 * j12
    c11 = js11 * j11 + js12 * j12
    return c00, c01, c11, js00, js01, js02, js10, js11, js12


@njit(**_JIT)
def _pixel_span(centre, radius, lo, hi):
    """Pixels [first, stop) within ``radius`` of ``centre`` (pixel centres at +0.5), clipped to [lo, hi).

    Clipped in floating point before converting, so huge footprints (a Gaussian at the camera) are safe.
    """
    first = int(min(max(float(lo), math.ceil(centre - radius - 0.5)), float(hi)))
    stop = int(max(min(float(hi), math.floor(centre + radius - 0.5) + 1.0), float(first)))
    return first, stop


# ----------------------------------------------------------------------------------------------------
# Input checks (rasterize._validate): one pass each, where torch took a sum, an isfinite and a bool per tensor
# (about 0.7 ms for a 20k-Gaussian scene).
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def count_nonfinite(values):
    """How many entries of values [M] are NaN or infinite (one vectorised pass: 11 us for 60k floats, where a
    loop over rows of 3 took 150)."""
    bad = 0
    for i in range(values.size):
        x = values[i]
        bad += (x - x) != 0.0  # NaN for NaN and +-inf, 0 for every finite value
    return bad


@njit(**_JIT)
def count_zero_quaternions(quats):
    """How many rows of quats [N, 4] are all zeros."""
    rows = 0
    for n in range(quats.shape[0]):
        rows += (quats[n, 0] == 0.0) & (quats[n, 1] == 0.0) & (quats[n, 2] == 0.0) & (quats[n, 3] == 0.0)
    return rows


# ----------------------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def project_forward(first, stop, means, quats, scales, opacities, viewmats, ks, width, height, eps2d,
                    near_plane, far_plane, antialiased, means2d, depths, conics, view_opacities, radii, footprints):
    """Project Gaussians [first, stop) of N into C cameras (EWA splatting). Outputs are written in place.

    means [N, 3] m, quats [N, 4] wxyz, scales [N, 3] m, opacities [N], viewmats [C, 4, 4] world-to-camera,
    ks [C, 3, 3] pixels. Outputs: means2d [C, N, 2] px, depths [C, N] m, conics [C, N, 3] (inverse blurred
    2D covariance a, b, c with sigma = a dx^2 / 2 + b dx dy + c dy^2 / 2), view_opacities [C, N] (opacity,
    times the compensation when antialiased), radii [C, N, 2] int32 px (0 = culled), footprints [C, N, 4]
    int32 (x0, x1, y0, y1: a half-open pixel box clipped to the image, holding every pixel where the Gaussian
    can reach alpha >= 1/255; empty when culled).
    Culled entries are zero everywhere, except view_opacities in classic mode (the opacity, as gsplat's).
    """
    n_cams = viewmats.shape[0]
    fovs = _all_fov_limits(ks, width, height)
    for n in range(first, stop):
        unrotated = _unrotated(quats, n)
        # Written out here and in project_backward: as shared helpers returning the covariance tuples, both
        # kernels ran 1.2-1.3x slower (one thread).
        sx, sy, sz = scales[n, 0], scales[n, 1], scales[n, 2]
        if unrotated:
            s00, s01, s02, s11, s12, s22 = sx * sx, 0.0, 0.0, sy * sy, 0.0, sz * sz
        else:
            rot = _rotation_from_quat(quats[n, 0], quats[n, 1], quats[n, 2], quats[n, 3])[5:]
            s00, s01, s02, s11, s12, s22 = _world_covariance(rot, scales, n)
        for c in range(n_cams):
            means2d[c, n, 0] = 0.0
            means2d[c, n, 1] = 0.0
            depths[c, n] = 0.0
            conics[c, n, 0] = 0.0
            conics[c, n, 1] = 0.0
            conics[c, n, 2] = 0.0
            view_opacities[c, n] = 0.0 if antialiased else opacities[n]
            radii[c, n, 0] = 0
            radii[c, n, 1] = 0
            for k in range(4):
                footprints[c, n, k] = 0
            x, y, z = _camera_point(viewmats, c, means, n)
            if not (near_plane <= z <= far_plane and z > 0.0):
                continue
            if unrotated:
                cov_c = _sandwich_diagonal(_view_rotation(viewmats, c), s00, s11, s22)
            else:
                cov_c = _sandwich(_view_rotation(viewmats, c), s00, s01, s02, s11, s12, s22)
            j00, j02, j11, j12, _, _, _, _ = _projection_jacobian(x, y, z, fovs, c)
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
            # alpha >= 1/255 needs sigma <= log(255 opacity): within sqrt(2 log(255 opacity)) standard deviations
            log_ratio = math.log(opacity / ALPHA_THRESHOLD)
            extent = min(MAX_EXTENT_SIGMAS, math.sqrt(2.0 * log_ratio))
            sd_x = math.sqrt(b00)
            sd_y = math.sqrt(b11)
            # capped so the int32 radii cannot overflow; any radius this large covers the image anyway
            radius_x = math.ceil(min(extent * sd_x, 1e9))
            radius_y = math.ceil(min(extent * sd_y, 1e9))
            mx = ks[c, 0, 0] * x / z + ks[c, 0, 2]
            my = ks[c, 1, 1] * y / z + ks[c, 1, 2]
            if not (mx + radius_x > 0 and mx - radius_x < width and my + radius_y > 0 and my - radius_y < height):
                continue
            radii[c, n, 0] = radius_x
            radii[c, n, 1] = radius_y
            means2d[c, n, 0] = mx
            means2d[c, n, 1] = my
            depths[c, n] = z
            conics[c, n, 0] = b11 / det
            conics[c, n, 1] = -c01 / det
            conics[c, n, 2] = b00 / det
            view_opacities[c, n] = opacity
            # The footprint: the box of the ellipse sigma <= cutoff, whose half-widths are sqrt(2 cutoff) times
            # the standard deviations, within the radii box (smaller only when opacity > 1). Spans start from the
            # stored centre, which compositing uses; the margin covers the rounding of the stored conic and opacity.
            cutoff_sds = math.sqrt(2.0 * (log_ratio + _SIGMA_CUTOFF_MARGIN))
            x0, x1 = _pixel_span(means2d[c, n, 0], min(float(radius_x), cutoff_sds * sd_x), 0, width)
            y0, y1 = _pixel_span(means2d[c, n, 1], min(float(radius_y), cutoff_sds * sd_y), 0, height)
            if x0 < x1 and y0 < y1:
                footprints[c, n, 0] = x0
                footprints[c, n, 1] = x1
                footprints[c, n, 2] = y0
                footprints[c, n, 3] = y1


@njit(**_JIT)
def _scale_quat_grads(quats, scales, n, g00, g01, g02, g11, g12, g22, v_scales, v_quats):
    """Gaussian n's rows of v_scales [N, 3] and v_quats [N, 4] from G = dL/d(world covariance) (6 unique entries)."""
    quat = _rotation_from_quat(quats[n, 0], quats[n, 1], quats[n, 2], quats[n, 3])
    inv_norm, w, qx, qy, qz = quat[:5]
    rot = quat[5:]
    # cov = R diag(s^2) R^T: with P = G R, dL/ds_j = 2 s_j sum_i R_ij P_ij and dL/dR_ij = 2 s_j^2 P_ij
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = rot
    p00 = g00 * r00 + g01 * r10 + g02 * r20
    p01 = g00 * r01 + g01 * r11 + g02 * r21
    p02 = g00 * r02 + g01 * r12 + g02 * r22
    p10 = g01 * r00 + g11 * r10 + g12 * r20
    p11 = g01 * r01 + g11 * r11 + g12 * r21
    p12 = g01 * r02 + g11 * r12 + g12 * r22
    p20 = g02 * r00 + g12 * r10 + g22 * r20
    p21 = g02 * r01 + g12 * r11 + g22 * r21
    p22 = g02 * r02 + g12 * r12 + g22 * r22
    sc0, sc1, sc2 = scales[n, 0], scales[n, 1], scales[n, 2]
    v_scales[n, 0] = 2.0 * sc0 * (r00 * p00 + r10 * p10 + r20 * p20)
    v_scales[n, 1] = 2.0 * sc1 * (r01 * p01 + r11 * p11 + r21 * p21)
    v_scales[n, 2] = 2.0 * sc2 * (r02 * p02 + r12 * p12 + r22 * p22)
    f0 = 2.0 * sc0 * sc0
    f1 = 2.0 * sc1 * sc1
    f2 = 2.0 * sc2 * sc2
    m00, m01, m02 = f0 * p00, f1 * p01, f2 * p02
    m10, m11, m12 = f0 * p10, f1 * p11, f2 * p12
    m20, m21, m22 = f0 * p20, f1 * p21, f2 * p22
    # dL/d(normalised quaternion) from dL/dR (derivatives of the rotation-matrix formula)
    v_w = 2.0 * (-qz * m01 + qy * m02 + qz * m10 - qx * m12 - qy * m20 + qx * m21)
    v_qx = 2.0 * (qy * m01 + qz * m02 + qy * m10 - 2.0 * qx * m11 - w * m12 + qz * m20 + w * m21 - 2.0 * qx * m22)
    v_qy = 2.0 * (-2.0 * qy * m00 + qx * m01 + w * m02 + qx * m10 + qz * m12 - w * m20 + qz * m21 - 2.0 * qy * m22)
    v_qz = 2.0 * (-2.0 * qz * m00 - w * m01 + qx * m02 + w * m10 - 2.0 * qz * m11 + qy * m12 + qx * m20 + qy * m21)
    # through the normalisation q / |q|: remove the radial part, scale by 1/|q|
    radial = w * v_w + qx * v_qx + qy * v_qy + qz * v_qz
    v_quats[n, 0] = (v_w - w * radial) * inv_norm
    v_quats[n, 1] = (v_qx - qx * radial) * inv_norm
    v_quats[n, 2] = (v_qy - qy * radial) * inv_norm
    v_quats[n, 3] = (v_qz - qz * radial) * inv_norm


@njit(**_JIT)
def _unrotated_scale_quat_grads(quats, scales, n, g00, g01, g02, g11, g12, g22, v_scales, v_quats):
    """_scale_quat_grads where quaternion n is a pure w (_unrotated): R = I, so P = G, and the general
    formulas lose every term with x, y or z. The derivative w.r.t. the quaternion is not zero unless the
    scales are equal: rotating an anisotropic Gaussian changes its covariance."""
    sc0, sc1, sc2 = scales[n, 0], scales[n, 1], scales[n, 2]
    v_scales[n, 0] = 2.0 * sc0 * g00
    v_scales[n, 1] = 2.0 * sc1 * g11
    v_scales[n, 2] = 2.0 * sc2 * g22
    # m_ij = 2 s_j^2 G_ij; with w = sign(qw) and 1/|q| = 1/|qw|, 2 w (m_ji - m_ij) / |q| = 4 G_ij (s_i^2 - s_j^2) / qw
    q = 4.0 / quats[n, 0]
    v_quats[n, 0] = 0.0
    v_quats[n, 1] = q * g12 * (sc1 * sc1 - sc2 * sc2)
    v_quats[n, 2] = q * g02 * (sc2 * sc2 - sc0 * sc0)
    v_quats[n, 3] = q * g01 * (sc0 * sc0 - sc1 * sc1)


@njit(**_JIT)
def project_backward(first, stop, means, quats, scales, opacities, viewmats, ks, width, height, eps2d, antialiased,
                     radii, v_means2d, v_depths, v_conics, v_view_opacities, v_means, v_quats, v_scales, v_opacities):
    """Gradients of project_forward's outputs w.r.t. means [N, 3], quats [N, 4], scales [N, 3] and
    opacities [N], for [first, stop).

    v_means2d [C, N, 2], v_depths [C, N], v_conics [C, N, 3], v_view_opacities [C, N] are the upstream
    gradients; results are written to v_means, v_quats, v_scales, v_opacities (overwritten). Culled pairs
    give none, except through view_opacities in classic mode (there the opacity itself).
    """
    n_cams = viewmats.shape[0]
    fovs = _all_fov_limits(ks, width, height)
    for n in range(first, stop):
        v_opacity = 0.0
        if not antialiased:
            for c in range(n_cams):
                v_opacity += v_view_opacities[c, n]
        v_opacities[n] = v_opacity
        unrotated = _unrotated(quats, n)
        if unrotated:
            s00, s01, s02, s11, s12, s22 = scales[n, 0] ** 2, 0.0, 0.0, scales[n, 1] ** 2, 0.0, scales[n, 2] ** 2
        else:
            rot = _rotation_from_quat(quats[n, 0], quats[n, 1], quats[n, 2], quats[n, 3])[5:]
            s00, s01, s02, s11, s12, s22 = _world_covariance(rot, scales, n)
        v_px = 0.0
        v_py = 0.0
        v_pz = 0.0
        # dL/dcov (world frame), symmetric: 6 unique entries
        g00 = 0.0
        g01 = 0.0
        g02 = 0.0
        g11 = 0.0
        g12 = 0.0
        g22 = 0.0
        for c in range(n_cams):
            if radii[c, n, 0] <= 0 or radii[c, n, 1] <= 0:
                continue
            w_rot = _view_rotation(viewmats, c)
            x, y, z = _camera_point(viewmats, c, means, n)
            if unrotated:
                cov_c = _sandwich_diagonal(w_rot, s00, s11, s22)
            else:
                cov_c = _sandwich(w_rot, s00, s01, s02, s11, s12, s22)
            fx, fy = fovs[c, 0], fovs[c, 1]
            j00, j02, j11, j12, u, v, u_free, v_free = _projection_jacobian(x, y, z, fovs, c)
            c00, c01, c11, js00, js01, js02, js10, js11, js12 = _screen_covariance(j00, j02, j11, j12, cov_c)
            b00 = c00 + eps2d
            b11 = c11 + eps2d
            det = b00 * b11 - c01 * c01
            q0 = b11 / det
            q1 = -c01 / det
            q2 = b00 / det
            # conic = inverse(B), B = cov2d + eps2d I:  dL/dB = -Q G Q, G the symmetric gradient of Q
            # (the off-diagonal conic entry stands for both Q01 and Q10, hence the half).
            g_a = v_conics[c, n, 0]
            g_h = 0.5 * v_conics[c, n, 1]
            g_c = v_conics[c, n, 2]
            t00 = g_a * q0 + g_h * q1
            t01 = g_a * q1 + g_h * q2
            t10 = g_h * q0 + g_c * q1
            t11 = g_h * q1 + g_c * q2
            d00 = -(q0 * t00 + q1 * t10)
            d01 = -(q0 * t01 + q1 * t11)
            d11 = -(q1 * t01 + q2 * t11)
            # compensation = sqrt(det(cov2d) / det(B)); view opacity = opacity * compensation
            det_orig = c00 * c11 - c01 * c01
            ratio = det_orig / det
            v_comp = 0.0
            if antialiased:
                v_comp = v_view_opacities[c, n] * opacities[n]
                v_opacities[n] += v_view_opacities[c, n] * math.sqrt(max(0.0, ratio))
            if ratio > 0.0 and v_comp != 0.0:
                scale_r = v_comp * 0.5 / math.sqrt(ratio) / (det * det)
                d00 += scale_r * (c11 * det - det_orig * b11)
                d11 += scale_r * (c00 * det - det_orig * b00)
                d01 += scale_r * (-c01 * det + det_orig * c01)
            # cov2d = J cov_c J^T with J = [[j00, 0, j02], [0, j11, j12]]:
            #   dL/dcov_c = J^T D J;  dL/dJ = 2 D J cov_c
            k00 = j00 * j00 * d00
            k01 = j00 * j11 * d01
            k02 = j00 * (j02 * d00 + j12 * d01)
            k11 = j11 * j11 * d11
            k12 = j11 * (j02 * d01 + j12 * d11)
            k22 = j02 * j02 * d00 + 2.0 * j02 * j12 * d01 + j12 * j12 * d11
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
            # back to world: p_c = W p + t, cov_c = W cov W^T (so dL/dcov = W^T K W)
            v_px += w_rot[0] * v_x + w_rot[3] * v_y + w_rot[6] * v_z
            v_py += w_rot[1] * v_x + w_rot[4] * v_y + w_rot[7] * v_z
            v_pz += w_rot[2] * v_x + w_rot[5] * v_y + w_rot[8] * v_z
            w_t = (w_rot[0], w_rot[3], w_rot[6], w_rot[1], w_rot[4], w_rot[7], w_rot[2], w_rot[5], w_rot[8])
            h00, h01, h02, h11, h12, h22 = _sandwich(w_t, k00, k01, k02, k11, k12, k22)
            g00 += h00
            g01 += h01
            g02 += h02
            g11 += h11
            g12 += h12
            g22 += h22
        v_means[n, 0] = v_px
        v_means[n, 1] = v_py
        v_means[n, 2] = v_pz
        if unrotated:
            _unrotated_scale_quat_grads(quats, scales, n, g00, g01, g02, g11, g12, g22, v_scales, v_quats)
        else:
            _scale_quat_grads(quats, scales, n, g00, g01, g02, g11, g12, g22, v_scales, v_quats)


# ----------------------------------------------------------------------------------------------------
# Tile binning
# ----------------------------------------------------------------------------------------------------
# Fields of a packed Gaussian (one row of ``packed``, in depth order): everything compositing reads,
# in one or two cache lines. Reading six separate per-Gaussian arrays in depth order missed the cache
# on most (tile, Gaussian) pairs.
P_MX, P_MY, P_CA, P_CB, P_CC, P_OPACITY, P_X0, P_X1, P_Y0, P_Y1 = range(10)
# Columns of composite_backward's per-pixel state (see there); dL/dcolour channels follow from S_V.
S_TRANS, S_BEHIND, S_TAIL, S_X, S_Y, S_V = range(6)
PACKED_FIELDS = 10


@njit(**_JIT)
def bin_gaussians(footprints, depth_order, width, height):
    """List, for every 16x16 tile, the Gaussians whose footprint box touches it, front to back.

    footprints [C, N, 4] from project_forward (within the image, so never negative); depth_order [C, N] int:
    each camera's Gaussians sorted near to far (stable). Returns
      tile_offsets [C*T + 1] int64: tile t's entries are isect_ids[tile_offsets[t]:tile_offsets[t+1]];
      isect_ids [M] int32: depth rank of the Gaussian within its camera (its row in pack_gaussians);
      gauss_offsets [C*N + 1] int64 and grad_rows [M] int32: entry k's gradients go to row grad_rows[k]
        of composite_backward's isect_grads, and Gaussian (c, n) owns the contiguous rows
        gauss_offsets[c*N + n]:gauss_offsets[c*N + n + 1], so per-Gaussian sums need no atomics and
        read memory in order;
      tile_cost [C*T] int64: pixel-Gaussian pairs in footprint boxes per tile, which bounds the tile's
        contributions (sizes the contribution log) and estimates its work (load balancing).
    Serial (cpu.py runs it beside pack_gaussians). Tile indices by shifts, a Gaussian's entry count from its
    tile box, int32 rows and a prefetch of the footprint 8 ranks ahead (the fill pass reads them in depth
    order, at random): 4.7 -> 2.8 ms at 50k @512^2.
    """
    n_cams, n_gauss = footprints.shape[0], footprints.shape[1]
    tiles_x = (width + TILE_SIZE - 1) >> _TILE_SHIFT
    tiles_per_cam = tiles_x * ((height + TILE_SIZE - 1) >> _TILE_SHIFT)
    tile_counts = np.zeros(n_cams * tiles_per_cam + 1, np.int64)
    tile_cost = np.zeros(n_cams * tiles_per_cam, np.int64)
    gauss_offsets = np.empty(n_cams * n_gauss + 1, np.int64)
    gauss_offsets[0] = 0
    n_isects = 0
    for c in range(n_cams):
        for n in range(n_gauss):
            x0, x1, y0, y1 = footprints[c, n, 0], footprints[c, n, 1], footprints[c, n, 2], footprints[c, n, 3]
            if x0 < x1:
                tx0, tx1 = x0 >> _TILE_SHIFT, ((x1 - 1) >> _TILE_SHIFT) + 1
                ty0, ty1 = y0 >> _TILE_SHIFT, ((y1 - 1) >> _TILE_SHIFT) + 1
                n_isects += (tx1 - tx0) * (ty1 - ty0)
                for ty in range(ty0, ty1):
                    rows = min(y1, (ty + 1) << _TILE_SHIFT) - max(y0, ty << _TILE_SHIFT)
                    row_tiles = c * tiles_per_cam + ty * tiles_x
                    for tx in range(tx0, tx1):
                        cols = min(x1, (tx + 1) << _TILE_SHIFT) - max(x0, tx << _TILE_SHIFT)
                        tile_counts[row_tiles + tx + 1] += 1
                        tile_cost[row_tiles + tx] += rows * cols
            gauss_offsets[c * n_gauss + n + 1] = n_isects
    tile_offsets = np.cumsum(tile_counts)
    isect_ids = np.empty(n_isects, np.int32)
    grad_rows = np.empty(n_isects, np.int32)
    cursor = tile_offsets[:-1].copy()
    for c in range(n_cams):
        for rank in range(n_gauss):
            n = depth_order[c, rank]
            if rank + 8 < n_gauss:
                _prefetch_row(footprints, c, depth_order[c, rank + 8])
            slot_out = gauss_offsets[c * n_gauss + n]
            if slot_out == gauss_offsets[c * n_gauss + n + 1]:
                continue
            x0, x1, y0, y1 = footprints[c, n, 0], footprints[c, n, 1], footprints[c, n, 2], footprints[c, n, 3]
            for ty in range(y0 >> _TILE_SHIFT, ((y1 - 1) >> _TILE_SHIFT) + 1):
                row_tiles = c * tiles_per_cam + ty * tiles_x
                for tx in range(x0 >> _TILE_SHIFT, ((x1 - 1) >> _TILE_SHIFT) + 1):
                    slot = cursor[row_tiles + tx]
                    cursor[row_tiles + tx] = slot + 1
                    isect_ids[slot] = rank
                    grad_rows[slot] = slot_out
                    slot_out += 1
    return tile_offsets, isect_ids, gauss_offsets, grad_rows, tile_cost


@njit(**_JIT)
def pack_gaussians(first, stop, depth_order, means2d, conics, opacities, colors, depths, with_depth, footprints,
                   packed, packed_colors):
    """Copy what compositing reads into depth-ordered rows, for flat (c, rank) in [first, stop).

    colors [1, N, D] (shared by every camera) or [C, N, D]; depths [C, N]. packed [C, N, PACKED_FIELDS]
    (fields P_*), packed_colors [C, N, D + with_depth]: the colours, then the depth when with_depth; row
    (c, rank) describes Gaussian depth_order[c, rank].
    """
    n_gauss = depth_order.shape[1]
    n_channels = colors.shape[2]
    shared_colors = colors.shape[0] == 1
    for flat in range(first, stop):
        c = flat // n_gauss
        rank = flat - c * n_gauss
        n = depth_order[c, rank]
        row = packed[c, rank]
        row[P_MX] = means2d[c, n, 0]
        row[P_MY] = means2d[c, n, 1]
        row[P_CA] = conics[c, n, 0]
        row[P_CB] = conics[c, n, 1]
        row[P_CC] = conics[c, n, 2]
        row[P_OPACITY] = opacities[c, n]
        row[P_X0] = footprints[c, n, 0]
        row[P_X1] = footprints[c, n, 1]
        row[P_Y0] = footprints[c, n, 2]
        row[P_Y1] = footprints[c, n, 3]
        colour_cam = 0 if shared_colors else c
        for ch in range(n_channels):
            packed_colors[c, rank, ch] = colors[colour_cam, n, ch]
        if with_depth:
            packed_colors[c, rank, n_channels] = depths[c, n]


# ----------------------------------------------------------------------------------------------------
# Compositing
#
# Per tile, Gaussians are visited front to back and each one only touches the pixels of its footprint
# box that are still accumulating. Every contribution (alpha >= 1/255, before the pixel saturates) is
# appended to a log: pixel and exp(-sigma), plus a count per (tile, Gaussian) entry. The backward pass
# replays the log in reverse: no exp(), no search for contributing pixels; it recovers each transmittance
# from the next one by a division, which writing it to the log cost more than.
# ----------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _rgb_in_registers(colors, c, rank, rgb_only, zero):
    """The three colours of Gaussian ``rank`` when ``rgb_only`` (else zeros), as scalars: read from the array
    inside a pixel loop they are reloaded after every store to another array (the compiler cannot rule out
    that the arrays overlap)."""
    if rgb_only:
        return colors[c, rank, 0], colors[c, rank, 1], colors[c, rank, 2]
    return zero, zero, zero


@njit(**_JIT)
def _next_tile(queue, task_order, task_tiles, width, height):
    """The next compositing task from the ``queue`` the threads share (take_task), in ``task_order``: (task,
    its global tile index task_tiles[task], the camera, and the tile's pixel box x_lo, y_lo, x_hi, y_hi);
    the task is -1 when all are taken."""
    taken = take_task(queue)
    if taken >= len(task_order):
        return -1, -1, -1, 0, 0, 0, 0
    task = task_order[taken]
    tile = task_tiles[task]
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_per_cam = tiles_x * ((height + TILE_SIZE - 1) // TILE_SIZE)
    local = tile % tiles_per_cam
    x_lo = (local % tiles_x) * TILE_SIZE
    y_lo = (local // tiles_x) * TILE_SIZE
    return task, tile, tile // tiles_per_cam, x_lo, y_lo, min(x_lo + TILE_SIZE, width), min(y_lo + TILE_SIZE, height)


# Float32 exp(-sigma) for a tile row: Cody-Waite reduction sigma = k ln2 - r, |r| <= ln2 / 2, then
# exp(-sigma) = 2^-k e^r with a degree-6 Taylor polynomial in Estrin form (relative error < 3e-7, about
# 2 ulp). Inline and branch-free, so LLVM vectorises it over the 16 columns (a call to libm's expf cannot
# be): one row of 16 costs about as much as 2 scalar exps, and rows average 4+ pixels still to composite.
_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # ln 2 split so that k * _LN2_HI is exact in float32 for k < 2^8
_LN2_LO = 1.4286067653301870e-06
# sigma is clamped at 80 so falloff (>= 1.8e-35) times any visible opacity (>= 1/255) stays a normal number:
# denormal arithmetic is many times slower. Beyond it, only an opacity above 1e32 could reach alpha 1/255.
_MAX_SIGMA_F32 = 80.0


def _make_row_alphas(lanes):
    """A numba-only function ``row_alphas(mx_centre, half_a, cross, row_sigma, opacity, out)`` for ``lanes``
    consecutive columns of a tile row.

    It writes the falloff exp(-sigma) and alpha = min(0.999, opacity * falloff) of one Gaussian at lanes
    0 .. lanes - 1 to out[lane] and out[16 + lane] (out [32]); alpha is 0 where the pixel does not contribute
    (sigma < 0 or alpha < 1/255), so compositing needs no branch for it. dx = mx_centre - lane and
    sigma = (half_a dx + cross) dx + row_sigma (for a window starting at column ``first``, pass
    mx_centre - first). Compiled per dtype (numba overload): float32 with the vectorised exp above, float64
    with math.exp. ``lanes`` is a compile-time constant and both outputs live in one array at constant
    offsets, so LLVM needs no runtime alias checks and turns even 4 or 8 lanes into whole vectors (a tiny
    loop with such checks stays scalar): a row whose pixels still to do fit 4 or 8 columns costs a quarter
    or half of 16.
    """
    def row_alphas(mx_centre, half_a, cross, row_sigma, opacity, out):
        raise NotImplementedError("compiled by numba only")

    @overload(row_alphas, inline="always")
    def row_alphas_typed(mx_centre, half_a, cross, row_sigma, opacity, out):
        if isinstance(mx_centre, types.Float) and mx_centre.bitwidth == 32:
            real = np.float32
            log2e, ln2_hi, ln2_lo, max_sigma = real(_LOG2E), real(_LN2_HI), real(_LN2_LO), real(_MAX_SIGMA_F32)
            c2, c3, c4, c5, c6 = real(1 / 2), real(1 / 6), real(1 / 24), real(1 / 120), real(1 / 720)
            one, half, zero = real(1.0), real(0.5), real(0.0)
            max_alpha, alpha_threshold = real(MAX_ALPHA), real(ALPHA_THRESHOLD)

            def row_alphas_f32(mx_centre, half_a, cross, row_sigma, opacity, out):
                for lane in range(lanes):
                    dx = mx_centre - real(lane)
                    sigma = (half_a * dx + cross) * dx + row_sigma
                    s = min(max(sigma, zero), max_sigma)
                    k = np.floor(s * log2e + half)
                    r = (k * ln2_hi - s) + k * ln2_lo
                    r2 = r * r
                    e_r = (one + r) + r2 * ((c2 + c3 * r) + r2 * ((c4 + c5 * r) + r2 * c6))  # Estrin: short chains
                    falloff = e_r * np.int32((127 - np.int32(k)) << 23).view(np.float32)  # times 2^-k
                    out[lane] = falloff
                    alpha = min(max_alpha, opacity * falloff)
                    out[TILE_SIZE + lane] = alpha if (sigma >= zero and alpha >= alpha_threshold) else zero
            return row_alphas_f32

        def row_alphas_any(mx_centre, half_a, cross, row_sigma, opacity, out):
            for lane in range(lanes):
                dx = mx_centre - lane
                sigma = (half_a * dx + cross) * dx + row_sigma
                falloff = math.exp(-sigma)
                out[lane] = falloff
                alpha = min(MAX_ALPHA, opacity * falloff)
                out[TILE_SIZE + lane] = alpha if (sigma >= 0.0 and alpha >= ALPHA_THRESHOLD) else 0.0
        return row_alphas_any

    return row_alphas


_row_alphas_4 = _make_row_alphas(4)
_row_alphas_8 = _make_row_alphas(8)
_row_alphas_16 = _make_row_alphas(TILE_SIZE)


@njit(**_JIT)
def _write_tile(c, x_lo, y_lo, x_hi, y_hi, width, height, accum, trans, backgrounds, expected_depth, flat_colors,
                flat_transmittance, flat_alphas):
    """Write a composited tile (accum [256, >= D], trans [256]) into the flattened outputs: colours plus the final
    transmittance times the background, (with expected_depth) the last channel divided by the alpha, the final
    transmittance and the alpha. flat_colors [C * H * W * D], flat_transmittance and flat_alphas [C * H * W].
    Flat unsigned indices: with numba's 4-d indexing (negative-index wrap-around included) this epilogue was
    the forward's slowest part on near-empty images, and composite_forward is 5-11 % faster without it."""
    n_channels = backgrounds.shape[1]
    real = trans.dtype.type
    one = real(1.0)
    min_alpha = real(MIN_DEPTH_ALPHA)
    u_channels = np.uint64(n_channels)
    for row in range(y_hi - y_lo):
        pix = np.uint64((c * height + y_lo + row) * width + x_lo)
        p = np.uint64(row * TILE_SIZE)
        for _ in range(x_hi - x_lo):
            t = trans[p]
            base = pix * u_channels
            for ch in range(n_channels):
                flat_colors[base + np.uint64(ch)] = accum[p, ch] + t * backgrounds[c, ch]
            alpha = one - t
            if expected_depth:
                flat_colors[base + u_channels - np.uint64(1)] = accum[p, n_channels - 1] / max(alpha, min_alpha)
            flat_transmittance[pix] = t
            flat_alphas[pix] = alpha
            pix += np.uint64(1)
            p += np.uint64(1)


@njit(**_JIT)
def composite_forward(queue, task_order, packed, colors, backgrounds, expected_depth, width, height, tile_offsets,
                      isect_ids, task_tiles, task_log_start, log_pixel, log_falloff, log_count, isect_log_count,
                      out_colors, out_transmittance, out_alphas):
    """Front-to-back alpha compositing of tiles task_tiles[j], the tasks j taken in ``task_order`` from
    ``queue`` (_next_tile: every thread runs this until the tasks run out, whoever is free takes the next).

    packed [C, N, PACKED_FIELDS] and colors [C, N, D] in depth order (pack_gaussians; opacities
    already compensated), backgrounds [C, D] (zeros for none). Task j logs its contributions at
    log_*[task_log_start[j]:], at most the tile's cost, and stores how many in log_count[j]: log_pixel
    (uint8, row * 16 + column in the tile) and log_falloff (exp(-sigma)). A Gaussian's contributions to a
    tile are consecutive, and isect_log_count [M] (int32, zero on entry) receives how many there are for
    each entry k of isect_ids: 5 bytes per contribution in float32, where storing the entry and the
    transmittance too took 13 (writing the log was a quarter of this kernel's time, and the backward
    recovers T by division as gsplat's does).
    Writes out_colors [C, H, W, D], out_transmittance [C, H, W] (final T) and out_alphas [C, H, W, 1]
    (1 - T; written here rather than by a torch op, which would wake torch's spinning thread pool). With
    expected_depth, the last channel is a depth and is written as the expected depth D / max(alpha, 1e-10)
    (gsplat's "ED"; done here, a torch division and concatenation cost more than compositing a channel).
    Per-pixel arithmetic runs in the storage dtype (float32 as in gsplat's CUDA kernels, or float64).
    """
    n_channels = colors.shape[2]
    rgb_only = n_channels == 3  # see _rgb_in_registers
    n_pix_tile = TILE_SIZE * TILE_SIZE
    trans = np.empty(n_pix_tile, packed.dtype)
    accum = np.empty((n_pix_tile, 4 if rgb_only else n_channels), packed.dtype)  # RGB: a 4th lane, see below
    real = trans.dtype.type  # scalars in the storage dtype: a float64 literal would promote float32 maths
    half = real(0.5)
    one = real(1.0)
    zero = real(0.0)
    min_transmittance = real(MIN_TRANSMITTANCE)
    centres = np.arange(TILE_SIZE).astype(packed.dtype)
    # per tile row: falloffs, then alphas, of the current Gaussian's column window (see _make_row_alphas)
    rows_out = np.empty((TILE_SIZE, 2 * TILE_SIZE), packed.dtype)
    # bit col of alive[r] is set while pixel (r, col) of the tile still accumulates
    alive = np.empty(TILE_SIZE, np.int64)
    u_zero = np.uint64(0)
    u_one = np.uint64(1)
    u_tile = np.uint64(TILE_SIZE)
    flat_colors = out_colors.reshape(out_colors.size)
    flat_transmittance = out_transmittance.reshape(out_transmittance.size)
    flat_alphas = out_alphas.reshape(out_alphas.size)
    while True:
        task, tile, c, x_lo, y_lo, x_hi, y_hi = _next_tile(queue, task_order, task_tiles, width, height)
        if task < 0:
            break
        n_pix = (x_hi - x_lo) * (y_hi - y_lo)
        trans[:] = one
        accum[:, :] = 0.0
        alive[:] = 0
        alive[:y_hi - y_lo] = (1 << (x_hi - x_lo)) - 1
        n_done = 0
        log_at = np.uint64(task_log_start[task])
        x_lo_real = real(x_lo)
        y_lo_real = real(y_lo)
        k_end = tile_offsets[tile + 1]
        for k in range(tile_offsets[tile], k_end):
            if n_done == n_pix:
                break
            rank = isect_ids[k]
            if k + PREFETCH_AHEAD < k_end:
                _prefetch_row(packed, c, isect_ids[k + PREFETCH_AHEAD])
                _prefetch_row(colors, c, isect_ids[k + PREFETCH_AHEAD])
            g = packed[c, rank]
            k_log_start = log_at
            x0 = max(x_lo, int(g[P_X0])) - x_lo
            x1 = min(x_hi, int(g[P_X1])) - x_lo
            y0 = max(y_lo, int(g[P_Y0])) - y_lo
            y1 = min(y_hi, int(g[P_Y1])) - y_lo
            box_bits = (1 << x1) - (1 << x0)  # the footprint's columns as a mask like alive's
            # tile-local pixel coordinates from here on; dx = mx_centre - col
            mx_centre = g[P_MX] - x_lo_real - half
            my_centre = g[P_MY] - y_lo_real - half
            half_a = half * g[P_CA]
            cb = g[P_CB]
            half_c = half * g[P_CC]
            opacity = g[P_OPACITY]
            col0, col1, col2 = _rgb_in_registers(colors, c, rank, rgb_only, zero)
            # First the falloffs and alphas of every row still to do, then the compositing: the rows' exp()
            # chains are independent and can overlap. One window per footprint: 8 columns when its columns
            # fit, else the tile's 16 (a trained avatar's Gaussians mostly span a few pixels; measured 3-12 %
            # less forward time there, neutral on the benchmark's larger ones).
            narrow = x1 - x0 <= 8
            first = min(x0, TILE_SIZE - 8) if narrow else 0  # lane = column - first
            mx_lane = mx_centre - real(first)
            for r in range(y0, y1):
                if alive[r] & box_bits == 0:
                    continue
                dy = my_centre - centres[r]
                if narrow:
                    _row_alphas_8(mx_lane, half_a, cb * dy, half_c * dy * dy, opacity, rows_out[r])
                else:
                    _row_alphas_16(mx_lane, half_a, cb * dy, half_c * dy * dy, opacity, rows_out[r])
            u_first = np.uint64(first)
            for r in range(y0, y1):
                # unsigned indices from here: numba adds a negative-index wrap-around to every signed one
                # (a fifth of this loop's instructions)
                todo = np.uint64(alive[r] & box_bits)
                row_out = rows_out[r]
                row_base = np.uint64(r * TILE_SIZE)
                while todo != u_zero:
                    col = trailing_zeros(todo)
                    todo &= todo - u_one
                    lane = col - u_first
                    alpha = row_out[u_tile + lane]
                    p = row_base + col
                    t_before = trans[p]
                    next_t = t_before * (one - alpha)
                    if next_t <= min_transmittance:
                        alive[r] &= ~(1 << np.int64(col))
                        n_done += 1
                        continue
                    weight = alpha * t_before
                    if rgb_only:  # one 4-lane multiply-add (2-3.5 % off this kernel, one thread)
                        _add_scaled_rgb(accum, p, weight, col0, col1, col2)
                    else:
                        for ch in range(n_channels):
                            accum[p, ch] += weight * colors[c, rank, ch]
                    trans[p] = next_t
                    log_pixel[log_at] = p
                    log_falloff[log_at] = row_out[lane]
                    # branch-free: a pixel below the threshold has alpha 0 (no change above) and is not kept. Its
                    # entry is written anyway and overwritten next; that slot is within this tile's log, which
                    # holds one slot per footprint pixel, and this pixel's slot is not used by a kept entry
                    log_at += np.uint64(alpha > zero)
            isect_log_count[k] = np.int64(log_at - k_log_start)
        log_count[task] = np.int64(log_at) - task_log_start[task]
        _write_tile(c, x_lo, y_lo, x_hi, y_hi, width, height, accum, trans, backgrounds, expected_depth, flat_colors,
                    flat_transmittance, flat_alphas)


@njit(inline="always", **_JIT)
def _read_tile_state(c, x_lo, y_lo, x_hi, y_hi, width, height, backgrounds, expected_depth, flat_colors,
                     flat_transmittance, flat_v_colors, flat_v_alphas, state):
    """Start composite_backward's replay state (state [256, S_V + D], see there) for a tile from the forward's
    final transmittance and render and the incoming gradients: flat_colors and flat_v_colors [C * H * W * D],
    flat_transmittance and flat_v_alphas [C * H * W]. Flat unsigned indices, as in _write_tile (whose loop this
    mirrors). Inlined: as a call, the replay loop after it ran 8-16 % slower (one thread)."""
    n_channels = backgrounds.shape[1]
    real = state.dtype.type
    zero = real(0.0)
    one = real(1.0)
    min_alpha = real(MIN_DEPTH_ALPHA)
    u_channels = np.uint64(n_channels)
    for row in range(y_hi - y_lo):
        pix = np.uint64((c * height + y_lo + row) * width + x_lo)
        p = np.uint64(row * TILE_SIZE)
        for _ in range(x_hi - x_lo):
            base = pix * u_channels
            state[p, S_BEHIND] = zero
            bg_dot = zero
            for ch in range(n_channels):
                v = flat_v_colors[base + np.uint64(ch)]
                state[p, S_V + ch] = v
                bg_dot += backgrounds[c, ch] * v
            t_final = flat_transmittance[pix]
            state[p, S_TRANS] = t_final
            v_alpha = flat_v_alphas[pix]
            if expected_depth:
                # ED = D / max(alpha, min): dED/dD = 1 / max(..); dED/dalpha = -ED / alpha above the clamp
                alpha = one - t_final
                safe_alpha = max(alpha, min_alpha)
                v_depth = flat_v_colors[base + u_channels - np.uint64(1)]
                state[p, S_V + n_channels - 1] = v_depth / safe_alpha
                if alpha >= min_alpha:
                    v_alpha -= v_depth * flat_colors[base + u_channels - np.uint64(1)] / safe_alpha
            state[p, S_TAIL] = t_final * (bg_dot - v_alpha)
            pix += np.uint64(1)
            p += np.uint64(1)


@njit(**_JIT)
def composite_backward(queue, task_order, packed, colors, backgrounds, expected_depth, width, height, tile_offsets,
                       isect_ids, task_tiles, task_log_start, log_pixel, log_falloff, log_count, isect_log_count,
                       out_colors, out_transmittance, v_out_colors, v_out_alphas, grad_rows, isect_grads,
                       row_written):
    """Gradients of composite_forward, replaying its log: every thread runs this, taking composite_forward's
    tasks from ``queue`` in ``task_order`` (_next_tile; heaviest first by the log's counts).

    Back to front, each pixel's transmittance before a Gaussian is recovered from the one after it,
    T_before = T_after / (1 - alpha), starting from the final T (out_transmittance [C, H, W]); alpha <= 0.999,
    so every step costs at most a rounding (relative error ~ contributions x ulp).

    out_colors [C, H, W, D] is the forward's render (read for the expected depth only), v_out_colors
    [C, H, W, D], v_out_alphas [C, H, W]. isect_grads [M, 6 + D] (overwritten) receives, in
    row grad_rows[k] for entry k of isect_ids (see bin_gaussians): d/d(mean x, mean y, conic a, conic b,
    conic c, opacity, colours...) of that Gaussian, and row_written [M] (uint8, zero on entry) is set to 1
    there. Rows of entries without contributions (most of them behind saturated pixels: 58 % at 50k @512^2)
    are not written, and reduce_isect_grads skips them (zeroing them was 4-5 % of this kernel). Each
    entry has its own row, so threads never write the same memory; reduce_isect_grads then sums each
    Gaussian's rows, which are contiguous.
    """
    n_channels = colors.shape[2]
    rgb_only = n_channels == 3  # colours and their gradients in registers, as in composite_forward
    n_pix_tile = TILE_SIZE * TILE_SIZE
    # per-pixel arithmetic in the storage dtype, as in composite_forward
    # One row per tile pixel holds all the replay reads and writes for it (one base pointer in the replay loop,
    # where separate arrays spilled registers): S_TRANS T after the current Gaussian, S_BEHIND (sum of weight *
    # colour behind the current Gaussian) . dL/dcolour, S_TAIL T_final * (background . dL/dcolour - dL/dalpha),
    # S_X / S_Y the pixel's column and row in the tile, then dL/dcolour from S_V on.
    state = np.empty((n_pix_tile, S_V + n_channels), packed.dtype)
    for p in range(n_pix_tile):
        state[p, S_X] = p & (TILE_SIZE - 1)
        state[p, S_Y] = p >> _TILE_SHIFT
    v_colour = np.empty(n_channels, packed.dtype)
    real = state.dtype.type
    zero = real(0.0)
    half = real(0.5)
    one = real(1.0)
    max_alpha = real(MAX_ALPHA)
    flat_colors = out_colors.reshape(out_colors.size)
    flat_transmittance = out_transmittance.reshape(out_transmittance.size)
    flat_v_colors = v_out_colors.reshape(v_out_colors.size)
    flat_v_alphas = v_out_alphas.reshape(v_out_alphas.size)
    while True:
        task, tile, c, x_lo, y_lo, x_hi, y_hi = _next_tile(queue, task_order, task_tiles, width, height)
        if task < 0:
            break
        _read_tile_state(c, x_lo, y_lo, x_hi, y_hi, width, height, backgrounds, expected_depth, flat_colors,
                         flat_transmittance, flat_v_colors, flat_v_alphas, state)
        j = task_log_start[task] + log_count[task] - 1
        # entries of one Gaussian are contiguous in the log: accumulate them, then store once
        for k in range(tile_offsets[tile + 1] - 1, tile_offsets[tile] - 1, -1):
            n_entries = isect_log_count[k]
            if n_entries == 0:
                continue
            rank = isect_ids[k]
            if k - PREFETCH_AHEAD >= tile_offsets[tile]:  # back to front
                _prefetch_row(packed, c, isect_ids[k - PREFETCH_AHEAD])
                _prefetch_row(colors, c, isect_ids[k - PREFETCH_AHEAD])
            g = packed[c, rank]
            # tile-local pixel coordinates; dx = mx_centre - column
            mx_centre = g[P_MX] - real(x_lo) - half
            my_centre = g[P_MY] - real(y_lo) - half
            ca = g[P_CA]
            cb = g[P_CB]
            cc = g[P_CC]
            opacity = g[P_OPACITY]
            g_mx = zero
            g_my = zero
            g_a2 = zero  # twice the conic gradients a and c: halved once at the end
            g_b = zero
            g_c2 = zero
            g_o = zero
            v_colour[:] = zero
            col0, col1, col2 = _rgb_in_registers(colors, c, rank, rgb_only, zero)
            g_col0 = zero
            g_col1 = zero
            g_col2 = zero
            for back in range(n_entries):
                entry = np.uint64(j - back)  # unsigned: no wrap-around (see composite_forward)
                p = np.uint64(log_pixel[entry])
                falloff = log_falloff[entry]
                raw_alpha = opacity * falloff
                alpha = min(max_alpha, raw_alpha)
                inv_keep = one / (one - alpha)
                t_before = state[p, S_TRANS] * inv_keep
                state[p, S_TRANS] = t_before
                weight = alpha * t_before
                if rgb_only:
                    v0 = state[p, S_V]
                    v1 = state[p, S_V + 1]
                    v2 = state[p, S_V + 2]
                    colour_dot = col0 * v0 + col1 * v1 + col2 * v2
                    g_col0 += weight * v0
                    g_col1 += weight * v1
                    g_col2 += weight * v2
                else:
                    colour_dot = zero
                    for ch in range(n_channels):
                        colour_dot += colors[c, rank, ch] * state[p, S_V + ch]
                        v_colour[ch] += weight * state[p, S_V + ch]
                behind = state[p, S_BEHIND]
                v_alpha = t_before * colour_dot - (behind + state[p, S_TAIL]) * inv_keep
                state[p, S_BEHIND] = behind + weight * colour_dot
                if raw_alpha <= max_alpha:
                    # alpha = opacity exp(-sigma): d alpha / d sigma = -alpha
                    v_sigma = -raw_alpha * v_alpha
                    g_o += falloff * v_alpha
                    dx = mx_centre - state[p, S_X]
                    dy = my_centre - state[p, S_Y]
                    g_mx += v_sigma * (ca * dx + cb * dy)
                    g_my += v_sigma * (cb * dx + cc * dy)
                    g_a2 += v_sigma * dx * dx
                    g_b += v_sigma * dx * dy
                    g_c2 += v_sigma * dy * dy
            j -= n_entries
            row = grad_rows[k]
            row_written[row] = 1
            isect_grads[row, 0] = g_mx
            isect_grads[row, 1] = g_my
            isect_grads[row, 2] = half * g_a2
            isect_grads[row, 3] = g_b
            isect_grads[row, 4] = half * g_c2
            isect_grads[row, 5] = g_o
            if rgb_only:
                isect_grads[row, 6] = g_col0
                isect_grads[row, 7] = g_col1
                isect_grads[row, 8] = g_col2
            else:
                for ch in range(n_channels):
                    isect_grads[row, 6 + ch] = v_colour[ch]


@njit(**_JIT)
def reduce_isect_grads(first, stop, isect_grads, row_written, gauss_offsets, v_means2d, v_conics, v_opacities,
                       v_colors):
    """Sum isect_grads [M, 6 + D] per Gaussian into v_means2d [C, N, 2], v_conics [C, N, 3],
    v_opacities [C, N], v_colors [C, N, D], for flat indices c * N + n in [first, stop) (overwritten).
    Only rows whose row_written [M] is set (see composite_backward) are read."""
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
        for row in range(gauss_offsets[flat], gauss_offsets[flat + 1]):
            if row_written[row] == 0:
                continue
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
