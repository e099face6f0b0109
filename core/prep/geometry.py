"""Geometry targets for the photo, rendered from the fitted body (the offline stand-in for Sapiens).

One mesh render through the photo camera gives, per pixel of the crop: camera depth, camera-space
normal, the body-part colour, and the canonical star-pose position of the surface point seen there
(PERSONA's seam boundary is a Sobel filter on that position map).
"""
from __future__ import annotations

import numpy as np
import torch

from core.body.parts import PART_PALETTE
from core.body.poses import star_pose
from core.prep.fit import PHOTO_VIEWMAT


def posed_vertices(model, params: dict[str, np.ndarray]) -> np.ndarray:
    """``[V, 3]`` float64 vertices of the body posed by SMPL-X ``params`` (1-D arrays), metres."""
    with torch.no_grad():
        out = model(**{key: torch.as_tensor(np.asarray(value, np.float32))[None] for key, value in params.items()})
    return out.vertices[0].double().numpy()


def star_pose_vertices(model, params: dict[str, np.ndarray]) -> np.ndarray:
    """``[V, 3]`` vertices of the fitted shape (betas, expression) in the canonical star pose, no translation."""
    shape = {key: params[key] for key in ("betas", "expression") if key in params}
    return posed_vertices(model, {**shape, **star_pose()})


def render_geometry(model, params: dict[str, np.ndarray], K: np.ndarray, width: int, height: int,
                    renderer=None, viewmat: np.ndarray = PHOTO_VIEWMAT,
                    vertices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Render the body posed by ``params`` through ``viewmat [4, 4]`` (the photo camera unless given)
    and ``K [3, 3]`` pixels.

    ``renderer``: a ``MeshRenderer`` of the calling thread to reuse; None makes (and frees) one.
    ``vertices [V, 3]``: draw these instead of the posed body (a mesh of the body's topology, e.g. a
    dressed person displaced from it); part labels and star-pose positions still come from the body.

    Returns float32 images (0 where the body is not seen):
        mask ``[H, W]`` body coverage (0/1); depth ``[H, W]`` camera z, metres; normal ``[H, W, 3]`` unit
        camera-space normals (OpenCV axes, -z faces the camera); part_seg ``[H, W, 3]`` flat
        ``PART_PALETTE`` colours; position ``[H, W, 3]`` canonical star-pose position, metres.
    """
    from core.render.mesh import MeshRenderer

    own_renderer = renderer is None
    renderer = MeshRenderer() if own_renderer else renderer
    attrs = {
        "part_seg": PART_PALETTE[model.part_labels.cpu().numpy()],
        "position": star_pose_vertices(model, params),
    }
    try:
        drawn = posed_vertices(model, params) if vertices is None else vertices
        out = renderer.render(drawn, model.faces.cpu().numpy(), viewmat, K, width,
                              height, vertex_attrs=attrs, flat_attrs=("part_seg",))
    finally:
        if own_renderer:
            renderer.close()  # its GL context would otherwise live as long as the process
    return {name: out[name].astype(np.float32) for name in ("mask", "depth", "normal", "part_seg", "position")}


def _masks(body_mask: np.ndarray, person_mask: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    body, person = np.asarray(body_mask) > 0.5, np.asarray(person_mask) > 0.5
    if valid is not None:
        body, person = body & valid, person & valid
    return body, person


def silhouette_iou(body_mask: np.ndarray, person_mask: np.ndarray, valid: np.ndarray | None = None) -> float:
    """IoU of ``body_mask > 0.5`` and ``person_mask > 0.5`` (``[H, W]``), counting only ``valid`` pixels."""
    body, person = _masks(body_mask, person_mask, valid)
    union = int((body | person).sum())
    return float((body & person).sum()) / union if union else 0.0


def silhouette_inside(body_mask: np.ndarray, person_mask: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Fraction of the body's pixels (``body_mask > 0.5``, ``valid`` ones) that the person mask covers.

    The person mask is the dressed person and the fitted body the bare one, which belongs inside it: IoU
    alone rewards a body inflated into loose clothes, this says whether the body stays within them."""
    body, person = _masks(body_mask, person_mask, valid)
    count = int(body.sum())
    return float((body & person).sum()) / count if count else 0.0


def silhouette_metrics(body_mask: np.ndarray, person_mask: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """``silhouette_iou`` and ``silhouette_inside`` of a fitted body's mask, as prep reports them."""
    return {"silhouette_iou": silhouette_iou(body_mask, person_mask, valid),
            "silhouette_inside": silhouette_inside(body_mask, person_mask, valid)}
