"""The CUDA backend: gsplat's own ``rasterization`` (unpacked, so meta matches the CPU backend's shapes)."""
from __future__ import annotations

from torch import Tensor


def rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                     viewmats: Tensor, Ks: Tensor, width: int, height: int, near_plane: float, far_plane: float,
                     eps2d: float, backgrounds: Tensor | None, render_mode: str, rasterize_mode: str):
    """Forward to ``gsplat.rasterization`` with our subset of its arguments; adds meta["backend"]."""
    from gsplat import rasterization

    render_colors, render_alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, backgrounds=backgrounds,
        render_mode=render_mode, rasterize_mode=rasterize_mode, packed=False)
    meta["backend"] = "gsplat"
    return render_colors, render_alphas, meta
