"""Albedo (shading-free colour) of the person: classical Retinex offline, or a user-supplied image.

Method (gradient-threshold Retinex, after Land & McCann / Horn, with a colour cue as in Funt et al.):
shading is smooth, reflectance changes at edges. In the log of linear luminance, per-pixel gradients
that are small *and* come with no chroma change are called shading and dropped; the rest are kept,
and the log-albedo is re-integrated from the kept steps by least squares over the mask only.
Chroma (the RGB ratios) is kept as is, only luminance is corrected. Unlike multi-scale Retinex,
which subtracts a local mean and so flattens a dark jacket and a white shirt to the same grey, this
keeps the brightness ratio across sharp edges. Limits: smooth albedo gradients are removed with the
shading; sharp shadow edges and deep folds survive as "albedo".

Colours are sRGB-encoded in [0, 1] at the interface; the maths runs on linear RGB.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709 luminance of linear RGB
_EPS = 1e-3


def estimate_albedo(
    rgb: np.ndarray,
    mask: np.ndarray,
    luminance_threshold: float = 0.04,
    chroma_threshold: float = 0.02,
) -> np.ndarray:
    """Remove smooth shading from the person in ``rgb``.

    Args:
        rgb: [H, W, 3] float sRGB in [0, 1].
        mask: [H, W] float soft person mask in [0, 1]; only pixels with mask > 0.5 are processed.
        luminance_threshold: |per-pixel step of log luminance| below which a step may be shading.
            Smooth shading changes far less per pixel (a 2x light fall-off over 100 px is 0.007).
        chroma_threshold: per-pixel change of the RGB ratios above which a step is albedo regardless.
    Returns:
        [H, W, 3] float32 sRGB albedo in [0, 1], scaled so its median luminance inside the mask matches
        the input's; outside the mask it blends back to the input by the soft mask.
    """
    rgb = np.clip(np.asarray(rgb, np.float32), 0.0, 1.0)
    mask = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    person = mask > 0.5
    if not person.any():
        return rgb.copy()
    ys, xs = np.nonzero(person)
    y0, y1, x0, x1 = max(ys.min() - 1, 0), ys.max() + 2, max(xs.min() - 1, 0), xs.max() + 2
    linear = srgb_to_linear(rgb[y0:y1, x0:x1])
    inside = person[y0:y1, x0:x1]
    luminance = linear @ _LUMA + _EPS
    log_lum = np.log(luminance)
    chroma = linear / luminance[..., None]
    steps_x = _kept_steps(log_lum, chroma, 1, luminance_threshold, chroma_threshold)
    steps_y = _kept_steps(log_lum, chroma, 0, luminance_threshold, chroma_threshold)
    log_albedo = integrate_steps(steps_x, steps_y, inside, log_lum)
    albedo_linear = linear * np.exp(log_albedo - log_lum)[..., None]
    albedo_lum = albedo_linear @ _LUMA + _EPS
    albedo_linear *= np.median(luminance[inside]) / np.median(albedo_lum[inside])
    out = rgb.copy()
    crop_mask = mask[y0:y1, x0:x1, None]
    albedo = np.clip(linear_to_srgb(np.clip(albedo_linear, 0.0, 1.0)), 0.0, 1.0)
    out[y0:y1, x0:x1] = crop_mask * albedo + (1.0 - crop_mask) * rgb[y0:y1, x0:x1]
    return out.astype(np.float32)


def _kept_steps(
    log_lum: np.ndarray, chroma: np.ndarray, axis: int, lum_threshold: float, chroma_threshold: float
) -> np.ndarray:
    """Forward differences of ``log_lum`` [H, W] along ``axis`` with shading-like steps removed.

    A step is kept in proportion to how far it exceeds the luminance threshold (soft ramp up to 2x the
    threshold, to avoid banding), and fully when the chroma changes by more than ``chroma_threshold``.
    Returns [H - 1, W] (axis 0) or [H, W - 1] (axis 1).
    """
    step = np.diff(log_lum, axis=axis)
    chroma_step = np.abs(np.diff(chroma, axis=axis)).max(axis=-1)
    keep = np.clip(np.abs(step) / lum_threshold - 1.0, 0.0, 1.0)
    keep = np.maximum(keep, (chroma_step > chroma_threshold).astype(np.float32))
    return step * keep


def integrate_steps(
    steps_x: np.ndarray, steps_y: np.ndarray, inside: np.ndarray, anchor: np.ndarray, anchor_weight: float = 1e-6
) -> np.ndarray:
    """Least-squares field over the ``inside`` pixels whose forward differences match the given steps.

    Only steps between two inside pixels count, so whatever lies outside never distorts the inside.
    A tiny pull towards ``anchor`` fixes each connected part's free constant (its influence length,
    1/sqrt(anchor_weight) = 1000 px, is far beyond any person). Solved by conjugate gradients,
    preconditioned with the whole-grid Neumann Poisson inverse (two DCTs): ~10 iterations.
    Args:
        steps_x: [H, W - 1] wanted f[:, j + 1] - f[:, j]; steps_y: [H - 1, W] wanted f[i + 1] - f[i].
        inside: [H, W] bool; anchor: [H, W] values the result defaults to.
    Returns:
        [H, W] float32: the solution inside, ``anchor`` outside.
    """
    import scipy.sparse as sparse
    from scipy.fft import dctn, idctn, next_fast_len
    from scipy.sparse.linalg import LinearOperator, cg

    height, width = inside.shape
    count = int(inside.sum())
    index = np.full(inside.shape, -1, np.int64)
    index[inside] = np.arange(count)
    pairs = []
    for steps, first, second in ((steps_x, index[:, :-1], index[:, 1:]), (steps_y, index[:-1], index[1:])):
        both = (first >= 0) & (second >= 0)
        pairs.append((first[both], second[both], steps[both]))
    start, end, wanted = (np.concatenate(column) for column in zip(*pairs))
    edges = start.size
    # Incidence matrix D, one row per pixel pair (f[end] - f[start]); normal equations:
    # (D^T D + w I) f = D^T s + w anchor.
    signs = np.concatenate([-np.ones(edges), np.ones(edges)])
    pair_rows = np.tile(np.arange(edges), 2)
    incidence = sparse.csr_matrix((signs, (pair_rows, np.concatenate([start, end]))), shape=(edges, count))
    system = (incidence.T @ incidence + anchor_weight * sparse.identity(count)).tocsr()
    rhs = incidence.T @ wanted.astype(np.float64) + anchor_weight * anchor[inside].astype(np.float64)
    # The preconditioner's grid may be larger than the image: pad to sizes the FFT handles fast.
    grid_h, grid_w = next_fast_len(height, real=True), next_fast_len(width, real=True)
    eig_x = 2.0 - 2.0 * np.cos(np.pi * np.arange(grid_w) / grid_w)
    eig_y = 2.0 - 2.0 * np.cos(np.pi * np.arange(grid_h) / grid_h)
    inverse_eigen = 1.0 / (eig_y[:, None] + eig_x[None, :] + anchor_weight)
    grid_inside = np.zeros((grid_h, grid_w), bool)
    grid_inside[:height, :width] = inside

    def precondition(values: np.ndarray) -> np.ndarray:
        grid = np.zeros((grid_h, grid_w))
        grid[grid_inside] = values.ravel()
        return idctn(dctn(grid, norm="ortho") * inverse_eigen, norm="ortho")[grid_inside]

    solution, _ = cg(
        system, rhs, x0=anchor[inside].astype(np.float64), rtol=1e-6, maxiter=200,
        M=LinearOperator((count, count), precondition),
    )  # fmt: skip
    out = np.array(anchor, np.float32, copy=True)
    out[inside] = solution
    return out


def albedo_from_file(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A user-supplied albedo image, resized to ``size`` = (width, height) of the photo it belongs to.

    Returns [H, W, 3] float32 sRGB in [0, 1]. Raises UserError if it cannot be read or its aspect
    ratio differs from the photo's by more than 1 %.
    """
    from core.prep.image_io import load_matching

    return load_matching(path, size, "albedo").rgb


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1)."""
    srgb = np.asarray(srgb, np.float32)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB-encoded values."""
    linear = np.clip(np.asarray(linear, np.float32), 0.0, None)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055).astype(np.float32)
