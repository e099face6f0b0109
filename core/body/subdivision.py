"""Midpoint (linear) subdivision of triangle meshes, with the sparse matrix that carries any
per-vertex quantity (blend shapes, skinning weights, colours, labels) to the new vertices.

Each level puts one new vertex at the middle of every edge and splits every triangle into four,
so ``V' = V + E`` and ``F' = 4 F``; the surface does not move (no smoothing, unlike Loop). PERSONA
puts one Gaussian on every vertex of SMPL-X subdivided twice (10,475 -> ~167k).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def unique_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges of a triangle mesh.

    ``faces [F, 3]`` -> (``edges [E, 2]`` int64 vertex pairs with ``edges[:, 0] < edges[:, 1]``,
    ``face_edges [F, 3]`` index into ``edges`` of each face's edges (v0 v1, v1 v2, v2 v0)).
    """
    faces = np.asarray(faces, dtype=np.int64)
    half = np.stack([faces, np.roll(faces, -1, axis=1)], axis=-1).reshape(-1, 2)  # [3F, 2]
    low, high = half.min(axis=1), half.max(axis=1)
    stride = int(faces.max()) + 1 if faces.size else 1
    keys, inverse = np.unique(low * stride + high, return_inverse=True)  # 1-D keys: much faster than axis=0
    return np.stack([keys // stride, keys % stride], axis=1), inverse.reshape(-1, 3)


def _subdivide_once(faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, sp.csr_matrix]:
    edges, face_edges = unique_edges(faces)
    num_edges = len(edges)
    rows = np.concatenate([np.arange(num_vertices), np.repeat(num_vertices + np.arange(num_edges), 2)])
    cols = np.concatenate([np.arange(num_vertices), edges.reshape(-1)])
    vals = np.concatenate([np.ones(num_vertices), np.full(2 * num_edges, 0.5)])
    upsample = sp.csr_matrix((vals, (rows, cols)), shape=(num_vertices + num_edges, num_vertices))
    a, b, c = faces.T
    ab, bc, ca = (num_vertices + face_edges).T
    # Four children with the parent's orientation: three corners and the middle one.
    children = np.stack([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1), np.stack([ca, bc, c], 1),
                         np.stack([ab, bc, ca], 1)], axis=1).reshape(-1, 3)
    return children, upsample


def subdivide(vertices: np.ndarray, faces: np.ndarray, levels: int = 1) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """Midpoint-subdivide a triangle mesh ``levels`` times.

    ``vertices [V, 3]``, ``faces [F, 3]`` -> (``vertices' [V', 3]`` (input dtype), ``faces' [4^levels F, 3]``
    int64, ``upsample [V', V]`` CSR with ``vertices' = upsample @ vertices``). The first V rows of
    ``upsample`` are the identity: original vertices keep their indices. Transfer e.g. skinning
    weights with ``upsample @ weights`` (rows still sum to 1) and labels with
    ``(upsample @ one_hot).argmax(1)``.
    """
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    vertices = np.asarray(vertices)
    faces = np.asarray(faces, dtype=np.int64)
    upsample = sp.identity(len(vertices), format="csr")
    for _ in range(levels):
        faces, step = _subdivide_once(faces, upsample.shape[0])
        upsample = (step @ upsample).tocsr()
    new_vertices = (upsample @ vertices.astype(np.float64)).astype(vertices.dtype)
    return new_vertices, faces, upsample


def subdivided_vertex_count(faces: np.ndarray, num_vertices: int, levels: int) -> int:
    """V' after ``levels`` subdivisions, without building them (V + E per level; E grows as 2E + 3F)."""
    num_edges = len(unique_edges(faces)[0])
    num_faces = len(faces)
    for _ in range(levels):
        num_vertices, num_edges, num_faces = num_vertices + num_edges, 2 * num_edges + 3 * num_faces, 4 * num_faces
    return num_vertices


def subdivide_to_count(vertices: np.ndarray, faces: np.ndarray, target: int, subset: str = "random",
                       seed: int = 0, max_levels: int = 4) -> tuple[np.ndarray, np.ndarray | None, sp.csr_matrix]:
    """Subdivide just enough to reach ``target`` vertices (e.g. a preset's Gaussian count).

    Picks the fewest levels with ``V' >= target``. Then ``subset``:
      - ``"none"``: keep every vertex of that level (count may exceed ``target``; faces returned);
      - ``"random"``: a uniformly random, seeded subset of exactly ``target`` vertices, sorted, that
        always contains the original vertices when ``target >= V`` (faces are then None: use
        k-nearest neighbours for neighbourhood terms). Midpoint subdivision spreads vertices
        evenly over the surface, so a uniform subset keeps an even density.
    A target at or below V returns the original mesh (``"none"``) or a random subset of it.

    Returns (``vertices [N, 3]``, ``faces [F', 3]`` or None, ``upsample [N, V]`` CSR).
    """
    if target < 1:
        raise ValueError(f"target must be >= 1, got {target}")
    if subset not in ("none", "random"):
        raise ValueError(f"subset must be 'none' or 'random', got {subset!r}")
    num_vertices = len(vertices)
    levels = 0
    while subdivided_vertex_count(faces, num_vertices, levels) < target:
        levels += 1
        if levels > max_levels:
            raise ValueError(f"target {target} needs more than {max_levels} subdivision levels")
    new_vertices, new_faces, upsample = subdivide(vertices, faces, levels)
    if subset == "none" or len(new_vertices) == target:
        return new_vertices, new_faces, upsample
    rng = np.random.default_rng(seed)
    if target >= num_vertices:
        extra = rng.choice(np.arange(num_vertices, len(new_vertices)), size=target - num_vertices, replace=False)
        keep = np.concatenate([np.arange(num_vertices), np.sort(extra)])
    else:
        keep = np.sort(rng.choice(num_vertices, size=target, replace=False))
    return new_vertices[keep], None, upsample[keep]
