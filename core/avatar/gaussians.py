"""Pure functions for posing Gaussians that live on the body surface.

Conventions: positions in metres; ``weights [N, J]`` skinning weights that sum to 1;
``transforms [J, 4, 4]`` the body model's relative joint transforms (x_posed = A_j @ [x_rest, 1]).
"""
from __future__ import annotations

import torch

from core.render.jit_cache import configure_numba_cache

configure_numba_cache()

from numba import njit  # noqa: E402  (the cache directory must be configured before numba decorates anything)

_JIT = dict(cache=True, nogil=True, error_model="numpy")


def blend_transforms(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Per-point blended rigid transforms ``[N, 4, 4]`` = Σ_j w_nj A_j."""
    return torch.einsum("nj,jab->nab", weights, transforms)


@njit(**_JIT)
def _transform_forward(transforms, points, translate, out):  # pragma: no cover - compiled
    """``out[n] = transforms[n, :3, :3] @ points[n] (+ transforms[n, :3, 3] when translate)``."""
    for n in range(points.shape[0]):
        x, y, z = points[n, 0], points[n, 1], points[n, 2]
        for a in range(3):
            value = transforms[n, a, 0] * x + transforms[n, a, 1] * y + transforms[n, a, 2] * z
            out[n, a] = value + transforms[n, a, 3] if translate else value


@njit(**_JIT)
def _transform_backward(transforms, points, grad, translate, want_transforms, want_points, grad_transforms,
                        grad_points):  # pragma: no cover - compiled
    """Gradients of _transform_forward: ``grad_transforms [N, 4, 4]`` (the outer product grad[n] points[n]ᵀ, the
    translation column when translate, zeros elsewhere) and ``grad_points [N, 3]`` (the linear part's
    transpose times grad[n]), each written only when wanted."""
    for n in range(points.shape[0]):
        g0, g1, g2 = grad[n, 0], grad[n, 1], grad[n, 2]
        if want_points:
            for b in range(3):
                grad_points[n, b] = transforms[n, 0, b] * g0 + transforms[n, 1, b] * g1 + transforms[n, 2, b] * g2
        if want_transforms:
            for a in range(3):
                for b in range(3):
                    grad_transforms[n, a, b] = grad[n, a] * points[n, b]
                grad_transforms[n, a, 3] = grad[n, a] if translate else 0.0
            for b in range(4):
                grad_transforms[n, 3, b] = 0.0


class _TransformPoints(torch.autograd.Function):
    """``transforms[:, :3, :3] @ points (+ translation)`` per point for CPU tensors of one float dtype, in one
    numba pass each way: torch's einsum went through batched 3x3 matrix products (a copy of the 3x3 blocks,
    then one bmm forward and two backward), about 2 ms each for 55k Gaussians."""

    @staticmethod
    def forward(ctx, transforms: torch.Tensor, points: torch.Tensor, translate: bool) -> torch.Tensor:
        matrices, vectors = transforms.detach().contiguous(), points.detach().contiguous()
        out = torch.empty_like(vectors)
        _transform_forward(matrices.numpy(), vectors.numpy(), translate, out.numpy())
        ctx.save_for_backward(matrices, vectors)
        ctx.translate = translate
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        matrices, vectors = ctx.saved_tensors
        want_transforms, want_points = ctx.needs_input_grad[:2]
        grad_transforms = torch.empty_like(matrices) if want_transforms else matrices.new_empty((0, 4, 4))
        grad_points = torch.empty_like(vectors) if want_points else vectors.new_empty((0, 3))
        _transform_backward(matrices.numpy(), vectors.numpy(), grad.contiguous().numpy(), ctx.translate,
                            want_transforms, want_points, grad_transforms.numpy(), grad_points.numpy())
        return (grad_transforms if want_transforms else None), (grad_points if want_points else None), None


def _numba_takes(points: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether this module's numba passes take ``points`` (float32 or float64) with ``others``: all on the CPU."""
    return points.dtype in (torch.float32, torch.float64) and all(t.device.type == "cpu" for t in (points, *others))


def _transform(transforms: torch.Tensor, points: torch.Tensor, translate: bool) -> torch.Tensor:
    """``transforms [N, 4, 4]``'s linear part (and translation) applied to ``points [N, 3]`` -> ``[N, 3]``."""
    if _numba_takes(points, transforms) and transforms.dtype == points.dtype:
        return _TransformPoints.apply(transforms, points, translate)
    out = torch.einsum("nab,nb->na", transforms[:, :3, :3], points)
    return out + transforms[:, :3, 3] if translate else out


def apply_transforms(transforms: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``transforms [N, 4, 4]`` to ``points [N, 3]`` -> ``[N, 3]``."""
    return _transform(transforms, points, translate=True)


def rotate_vectors(transforms: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Rotate ``vectors [N, 3]`` by the linear part of ``transforms [N, 4, 4]`` and renormalise."""
    out = _transform(transforms, vectors, translate=False)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-8)


@njit(**_JIT)
def _normal_sums_forward(points, faces, out):  # pragma: no cover - compiled
    """``out [N, 3]``: each vertex's sum of the cross products (v1 - v0) x (v2 - v0) of its faces ``[F, 3]``."""
    out[:] = 0.0
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        ax, ay, az = points[i1, 0] - points[i0, 0], points[i1, 1] - points[i0, 1], points[i1, 2] - points[i0, 2]
        bx, by, bz = points[i2, 0] - points[i0, 0], points[i2, 1] - points[i0, 1], points[i2, 2] - points[i0, 2]
        nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
        for i in (i0, i1, i2):
            out[i, 0] += nx
            out[i, 1] += ny
            out[i, 2] += nz


@njit(**_JIT)
def _normal_sums_backward(points, faces, grad, grad_points):  # pragma: no cover - compiled
    """Gradient of _normal_sums_forward w.r.t. ``points`` from ``grad [N, 3]``: per face, g = the summed gradient
    of its three vertices; with n = a x b (a = v1 - v0, b = v2 - v0), dL/da = b x g and dL/db = g x a."""
    grad_points[:] = 0.0
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        gx = grad[i0, 0] + grad[i1, 0] + grad[i2, 0]
        gy = grad[i0, 1] + grad[i1, 1] + grad[i2, 1]
        gz = grad[i0, 2] + grad[i1, 2] + grad[i2, 2]
        ax, ay, az = points[i1, 0] - points[i0, 0], points[i1, 1] - points[i0, 1], points[i1, 2] - points[i0, 2]
        bx, by, bz = points[i2, 0] - points[i0, 0], points[i2, 1] - points[i0, 1], points[i2, 2] - points[i0, 2]
        dax, day, daz = by * gz - bz * gy, bz * gx - bx * gz, bx * gy - by * gx
        dbx, dby, dbz = gy * az - gz * ay, gz * ax - gx * az, gx * ay - gy * ax
        grad_points[i1, 0] += dax
        grad_points[i1, 1] += day
        grad_points[i1, 2] += daz
        grad_points[i2, 0] += dbx
        grad_points[i2, 1] += dby
        grad_points[i2, 2] += dbz
        grad_points[i0, 0] -= dax + dbx
        grad_points[i0, 1] -= day + dby
        grad_points[i0, 2] -= daz + dbz


class _NormalSums(torch.autograd.Function):
    """Per-vertex sums of face cross products (area-weighted normals, unnormalised) for CPU ``points [N, 3]``,
    one serial numba pass each way: a face adds to three vertices, so no two threads could share the sums."""

    @staticmethod
    def forward(ctx, points: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        vertices = points.detach().contiguous()
        corners = faces.contiguous()
        out = torch.empty_like(vertices)
        _normal_sums_forward(vertices.numpy(), corners.numpy(), out.numpy())
        ctx.save_for_backward(vertices, corners)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        vertices, corners = ctx.saved_tensors
        grad_points = torch.empty_like(vertices)
        _normal_sums_backward(vertices.numpy(), corners.numpy(), grad.contiguous().numpy(), grad_points.numpy())
        return grad_points, None


def vertex_normal_sums(points: torch.Tensor, faces: torch.Tensor) -> torch.Tensor | None:
    """Each vertex's sum of its faces' (v1 - v0) x (v2 - v0) ``[N, 3]`` (twice the area-weighted normal) for
    float CPU ``points [N, 3]`` and ``faces [F, 3]`` (integer, on the CPU); None for anything else (the caller
    has another way)."""
    return _NormalSums.apply(points, faces) if _numba_takes(points, faces) else None


def mean_edge_length(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean length of the edges meeting at each vertex ``[V]`` (metres): the local Gaussian spacing.

    Body meshes are much denser on the face and hands than on the limbs, so one global initial
    scale would leave holes on the limbs or blur the face.
    """
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).long()
    lengths = (vertices[edges[:, 0]] - vertices[edges[:, 1]]).norm(dim=1)
    total = vertices.new_zeros(len(vertices)).index_add(0, edges[:, 0], lengths).index_add(0, edges[:, 1], lengths)
    count = vertices.new_zeros(len(vertices)).index_add(0, edges[:, 0], torch.ones_like(lengths))
    count = count.index_add(0, edges[:, 1], torch.ones_like(lengths))
    return total / count.clamp_min(1)
