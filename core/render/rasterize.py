"""``rasterize()``: the one entry point for rendering 3D Gaussians, with gsplat's names and conventions."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from core.render.backends import resolve_backend

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")


def _check_shape(name: str, tensor: Tensor, shape: tuple) -> None:
    """Raise ValueError unless ``tensor`` has ``shape`` (None entries match any size)."""
    ok = tensor.dim() == len(shape) and all(want is None or got == want for got, want in zip(tensor.shape, shape))
    if not ok:
        spelled = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"rasterize: {name} must have shape {spelled}, got {list(tensor.shape)}")


def _numba_can_read(values: Tensor) -> bool:
    return values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64)


def _check_finite(name: str, tensor: Tensor) -> None:
    values = tensor.detach()
    if _numba_can_read(values):  # one numba pass (torch's sum, isfinite and bool took 3-6x longer)
        from core.render.kernels import count_nonfinite

        bad = count_nonfinite(values.contiguous().reshape(-1).numpy())
    elif bool(torch.isfinite(values.sum())):
        # one reduction is cheap and a NaN/inf anywhere makes the sum non-finite; only then count exactly
        # (a sum can also overflow on huge finite values, which are not an error)
        return
    else:
        bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise ValueError(f"rasterize: {name} has {bad} NaN or infinite value(s)")


def _has_zero_quaternion(quats: Tensor) -> bool:
    """Whether a row of quats [N, 4] is all zeros."""
    values = quats.detach()
    if _numba_can_read(values):
        from core.render.kernels import count_zero_quaternions

        return count_zero_quaternions(values.numpy()) > 0
    return not bool(values.abs().amax(dim=-1).min() > 0)


def _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
              eps2d, backgrounds, render_mode, rasterize_mode) -> None:
    """Raise a one-line ValueError for anything rasterize() cannot render."""
    if render_mode not in RENDER_MODES:
        raise ValueError(f"rasterize: render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize: rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise ValueError(f"rasterize: image size must be positive integers, got width={width}, height={height}")
    if not 0.0 <= near_plane < far_plane:
        raise ValueError(f"rasterize: need 0 <= near_plane < far_plane, got {near_plane}, {far_plane}")
    if not eps2d >= 0.0:
        raise ValueError(f"rasterize: eps2d must be >= 0 (pixels^2), got {eps2d}")
    n = means.shape[0] if means.dim() == 2 else None
    _check_shape("means", means, (None, 3))
    _check_shape("quats", quats, (n, 4))
    _check_shape("scales", scales, (n, 3))
    _check_shape("opacities", opacities, (n,))
    _check_shape("viewmats", viewmats, (None, 4, 4))
    n_cams = viewmats.shape[0]
    if n_cams == 0:
        raise ValueError("rasterize: viewmats is empty; need at least one camera")
    _check_shape("Ks", Ks, (n_cams, 3, 3))
    if colors.dim() == 3:
        _check_shape("colors", colors, (n_cams, n, None))
    else:
        _check_shape("colors", colors, (n, None))
    if colors.shape[-1] == 0 and render_mode not in ("D", "ED"):
        raise ValueError("rasterize: colors has no channels")
    if backgrounds is not None:
        _check_shape("backgrounds", backgrounds, (n_cams, colors.shape[-1]))
    tensors = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors,
               "viewmats": viewmats, "Ks": Ks}
    if backgrounds is not None:
        tensors["backgrounds"] = backgrounds
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ValueError(f"rasterize: {name} must be a floating-point tensor, got {tensor.dtype}")
        if tensor.device != means.device:
            raise ValueError(f"rasterize: {name} is on {tensor.device} but means is on {means.device}")
        _check_finite(name, tensor)
    if n and _has_zero_quaternion(quats):
        raise ValueError("rasterize: quats has zero-length quaternions (no rotation defined)")


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Tensor | None = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    backend: Literal["auto", "cpu", "gsplat"] = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Render N 3D Gaussians into C pinhole cameras; a subset of ``gsplat.rasterization`` (1.5.3).

    Args:
        means: Gaussian centres, world frame, metres. [N, 3]
        quats: Rotations as quaternions (w, x, y, z); need not be normalised. [N, 4]
        scales: Standard deviations along the rotated axes, metres. [N, 3]
        opacities: Opacities, expected in [0, 1]. [N]
        colors: Per-Gaussian features, any number of channels D (RGB, part colours, normals...). [N, D]
            or per camera [C, N, D].
        viewmats: World-to-camera transforms, OpenCV frame (x right, y down, z forward). [C, 4, 4]
        Ks: Pinhole intrinsics in pixels. [C, 3, 3]
        width, height: Image size in pixels; pixel (i, j) has its centre at (j + 0.5, i + 0.5).
        near_plane, far_plane: Gaussians with camera depth outside [near, far] (metres) are culled.
        eps2d: Added to the diagonal of every projected 2D covariance, pixels^2 (gsplat's default 0.3;
            PERSONA's Mip-Splatting kernel is 0.1 with rasterize_mode="antialiased").
        backgrounds: Colour composited behind the Gaussians, per camera. [C, D]. Depth channels always
            use a zero background.
        render_mode: "RGB" renders colors; "D" the accumulated depth sum(w_i z_i); "ED" the expected
            depth D / alpha; "RGB+D" / "RGB+ED" append that depth as the last channel.
        rasterize_mode: "classic", or "antialiased" (opacity times sqrt(det(S) / det(S + eps2d I))).
        backend: "cpu" (numba, differentiable), "gsplat" (CUDA), or "auto": gsplat for CUDA tensors when
            installed, else cpu.

    Returns:
        render_colors: [C, height, width, X]; X = D for "RGB", 1 for "D"/"ED", D + 1 for "RGB+D"/"RGB+ED".
        render_alphas: Accumulated opacity. [C, height, width, 1]
        meta: dict with at least "radii" [C, N, 2] int32 pixels (0 = culled), "means2d" [C, N, 2] pixels
            (part of the autograd graph: call ``meta["means2d"].retain_grad()`` for screen-space
            gradients), "depths" [C, N] metres, "conics" [C, N, 3], "opacities" [C, N], "backend".

    Gradients flow to means, quats, scales, opacities, colors and backgrounds (not to viewmats or Ks
    on the CPU backend). Float32 and float64 work; all float inputs are cast to means' dtype.

    Raises:
        ValueError: bad shapes, NaN/inf inputs, zero-length quaternions, empty image, unknown modes.
    """
    _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
              eps2d, backgrounds, render_mode, rasterize_mode)
    width, height = int(width), int(height)
    chosen = resolve_backend(backend, means.device)
    if chosen == "gsplat":
        from core.render.gsplat_backend import rasterize_gsplat

        return rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                near_plane, far_plane, eps2d, backgrounds, render_mode, rasterize_mode)

    dtype = means.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"rasterize: the CPU backend renders float32 or float64, got means as {dtype}")
    from core.render.cpu import rasterize_cpu

    return rasterize_cpu(
        means, quats.to(dtype), scales.to(dtype), opacities.to(dtype), colors.to(dtype), viewmats.to(dtype),
        Ks.to(dtype), width, height, near_plane, far_plane, eps2d,
        None if backgrounds is None else backgrounds.to(dtype), render_mode, rasterize_mode)
