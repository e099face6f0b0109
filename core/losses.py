"""Loss terms of geometry-weighted optimisation: image (L1 + SSIM), mask, depth, normal, part
segmentation, and Laplacian regularisers on per-Gaussian quantities.

Images are ``[B, H, W, C]`` float tensors (the rasterizer's layout); masks ``[B, H, W, 1]`` in [0, 1].
Every loss is a scalar; masked means divide by the mask's sum (never by zero).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.sparse import FixedSparse


def box_filter(images: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size``² window (edge-replicated) of ``[B, C, H, W]`` -> same shape.

    Two cumulative sums make it O(pixels) whatever the window, forward and backward; on CPU this
    is several times faster than a (grouped) convolution.
    """
    pad = size // 2
    padded = F.pad(images, (pad + 1, pad, pad + 1, pad), mode="replicate")
    sums = padded.cumsum(-1)
    sums = sums[..., size:] - sums[..., :-size]
    sums = sums.cumsum(-2)
    sums = sums[..., size:, :] - sums[..., :-size, :]
    return sums / (size * size)


SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # K1 = 0.01, K2 = 0.03, L = 1


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-pixel SSIM of ``a`` and ``b`` ``[B, H, W, C]`` (values in [0, 1]) -> ``[B, H, W, C]``.

    Local statistics over a uniform ``window``² neighbourhood, edge-replicated (scikit-image's default
    form of SSIM) with the usual constants. Float32 CPU images go through two numba passes
    (``core.ssim_cpu``, about 3x faster with its gradient); everything else through ``ssim_map_torch``.
    """
    if a.dtype == b.dtype == torch.float32 and a.device.type == b.device.type == "cpu" and window % 2 == 1:
        from core.ssim_cpu import SSIMMap

        return SSIMMap.apply(a, b, window, SSIM_C1, SSIM_C2)
    return ssim_map_torch(a, b, window)


def ssim_map_torch(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """``ssim_map`` in torch ops (any device and dtype); all five local moments in one filter pass."""
    c1, c2 = SSIM_C1, SSIM_C2
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    channels = x.shape[1]
    moments = box_filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, xx, yy, xy = moments.split(channels, dim=1)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.permute(0, 2, 3, 1)


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values [B, H, W, C]`` weighted per pixel by ``weight [B, H, W, 1]`` (plain mean if None)."""
    if weight is None:
        return values.mean()
    weight = weight.expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1e-8)


def image_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
               ssim_weight: float = 0.2) -> torch.Tensor:
    """``(1 - s)·L1 + s·(1 - SSIM)`` with an optional per-pixel weight map ``[B, H, W, 1]``."""
    l1 = weighted_mean((pred - target).abs(), weight)
    if ssim_weight == 0:
        return l1
    dssim = weighted_mean(1.0 - ssim_map(pred, target), weight)
    return (1.0 - ssim_weight) * l1 + ssim_weight * dssim


def mask_loss(alpha: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between the rendered alpha and the target mask, both ``[B, H, W, 1]``."""
    return weighted_mean((alpha - mask).abs(), weight)


def _minmax_normalise(depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Map depth ``[B, H, W, 1]`` inside ``mask`` to [0, 1] per image (min/max over the mask)."""
    big = torch.finfo(depth.dtype).max
    inside = mask > 0.5
    lo = torch.where(inside, depth, torch.full_like(depth, big)).amin(dim=(1, 2, 3), keepdim=True)
    hi = torch.where(inside, depth, torch.full_like(depth, -big)).amax(dim=(1, 2, 3), keepdim=True)
    return (depth - lo) / (hi - lo).clamp_min(1e-6)


def depth_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-invariant depth loss on min-max normalised depth inside ``mask``.

    Both depths ``[B, H, W, 1]`` (metres, or any monotonic units for the target: estimated depth
    maps have unknown scale and shift) are normalised to [0, 1] over the mask, then compared with
    the scale-invariant log-free form ``mean(d²) - mean(d)²`` of their difference ``d``.
    """
    inside = (mask > 0.5).to(pred.dtype)
    if inside.sum() < 2:
        return pred.sum() * 0.0
    d = (_minmax_normalise(pred, mask) - _minmax_normalise(target, mask)) * inside
    n = inside.sum()
    return (d.pow(2).sum() / n) - (d.sum() / n).pow(2)


def normal_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``L1 + (1 - cos)`` between normal maps ``[B, H, W, 3]`` inside ``mask [B, H, W, 1]``."""
    pred_n = F.normalize(pred, dim=-1, eps=1e-6)
    target_n = F.normalize(target, dim=-1, eps=1e-6)
    l1 = (pred_n - target_n).abs().sum(-1, keepdim=True)
    cos = 1.0 - (pred_n * target_n).sum(-1, keepdim=True)
    return weighted_mean(l1 + cos, mask)


def part_seg_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between rendered and target part-segmentation colour images ``[B, H, W, 3]``."""
    return weighted_mean((pred - target).abs(), mask)


@dataclass(frozen=True)
class MeshAdjacency:
    """The uniform Laplacian ``I - D⁻¹A`` of a triangle mesh as a constant sparse ``[V, V]`` matrix."""

    laplacian: FixedSparse


def mesh_adjacency(faces: torch.Tensor, num_vertices: int) -> MeshAdjacency:
    """Vertex adjacency of a triangle mesh ``faces [F, 3]`` (both directions of every edge once)."""
    f = faces.long().cpu()  # FixedSparse is built on the CPU (and follows the tensors it multiplies)
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], dim=0)
    edges = torch.unique(torch.cat([edges, edges.flip(1)], dim=0), dim=0)
    src, dst = edges[:, 0].contiguous(), edges[:, 1].contiguous()
    degree = torch.bincount(src, minlength=num_vertices).clamp_min(1).to(torch.float32)
    diagonal = torch.arange(num_vertices)
    laplacian = FixedSparse(torch.cat([diagonal, src]), torch.cat([diagonal, dst]),
                            torch.cat([torch.ones(num_vertices), -1.0 / degree[src]]), (num_vertices, num_vertices))
    return MeshAdjacency(laplacian=laplacian)


def scale_floor_loss(log_scales: torch.Tensor, init_scales: torch.Tensor, floor: float) -> torch.Tensor:
    """Mean over Gaussians of ``relu(log(floor) - log(scale / start))²``: zero while every scale is at
    least ``floor`` times its start. ``log_scales [N]``, ``init_scales [N]`` (metres)."""
    shortfall = torch.relu(math.log(floor) - (log_scales - init_scales.log()))
    return shortfall.pow(2).mean()


def scale_ceiling_loss(log_scales: torch.Tensor, init_scales: torch.Tensor, ceiling: float) -> torch.Tensor:
    """Mean over Gaussians of ``relu(log(scale / start) - log(ceiling))²``: zero while every scale is at
    most ``ceiling`` times its start (the floor's mirror image). ``log_scales [N]``, ``init_scales [N]`` (metres)."""
    return scale_floor_loss(-log_scales, 1.0 / init_scales, 1.0 / ceiling)


def uniform_laplacian(values: torch.Tensor, adjacency: MeshAdjacency) -> torch.Tensor:
    """``x_i - mean of x over i's neighbours`` for ``values [N, C]`` float32 -> ``[N, C]`` (isolated
    vertices: x_i). One sparse product (its backward one more with the stored transpose): on CPU
    several times faster than a gather + ``index_add``, whose backward scatters."""
    return adjacency.laplacian @ values


def laplacian_loss(values: torch.Tensor, adjacency: MeshAdjacency, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared uniform Laplacian of per-vertex ``values [N, C]``.

    ``weight [N]`` scales each vertex's term (e.g. stronger on face and hands).
    """
    per_vertex = uniform_laplacian(values, adjacency).pow(2).sum(-1)
    if weight is not None:
        per_vertex = per_vertex * weight
    return per_vertex.mean()


def psnr_tensor(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB (a 0-d tensor on the images' device, no read-back) of images in [0, 1] ``[B, H, W, C]``,
    over ``mask [B, H, W, 1]`` if given."""
    mse = weighted_mean((pred.detach() - target).pow(2), mask).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """``psnr_tensor`` as a float."""
    return float(psnr_tensor(pred, target, mask))
