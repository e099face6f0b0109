"""Animation sanity: does a trained avatar stay on its body when a motion drives it?

Measures per motion frame, all against the subject's SMPL-X body in the same pose:
- silhouette IoU between the avatar's rendered alpha (> 0.5) and the body mesh's mask, seen from
  the front and from the side; and the share of the body's mask the avatar covers there, which holes or
  missing limbs lower but clothes reaching beyond the bare body do not (they lower the IoU);
- the distance of every Gaussian centre from the posed body surface (clothes and hair sit a few
  centimetres off it; a Gaussian that the pose offsets or skinning throw away sits much further).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from core.avatar.avatar import Avatar
from core.avatar.render import pose_avatar, render_posed
from core.body import BodyModel
from core.camera import intrinsics
from core.config import RenderConfig
from core.export.framing import orbit_view
from core.export.poses import motion_params
from core.motion import Motion
from core.prep.geometry import silhouette_inside
from core.render.mesh import MeshRenderer

SAMPLE_SPACING = 0.003  # metres between surface samples: the distance error bound
VIEWS = {"front": 0, "side": 1}  # index into four cameras evenly spaced around the body
CAMERA_DISTANCE = 3.0  # metres
FOCAL_FRACTION = 1.4  # focal length in image widths: a 2.1 m tall field of view at 3 m


@dataclass
class FrameCheck:
    """One motion frame's measures."""

    label: str  # "motion:frame"
    iou: dict[str, float]  # view name -> silhouette IoU
    covered: dict[str, float]  # view name -> share of the body mesh's mask under the avatar's alpha > 0.5
    p99_cm: float  # 99th percentile of the Gaussian-to-surface distance, centimetres
    max_cm: float  # the largest one, centimetres


def surface_samples(vertices: np.ndarray, faces: np.ndarray, spacing: float = SAMPLE_SPACING) -> np.ndarray:
    """Points ``[S, 3]`` covering every triangle of the mesh at about ``spacing`` metres apart.

    Each face gets a barycentric grid with as many steps as its longest edge needs, so any surface
    point lies within ``spacing`` of a sample.
    """
    corners = vertices[faces]  # [F, 3, 3]
    edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).max(axis=1)  # [F]
    steps = np.maximum(1, np.ceil(edges / spacing).astype(np.int64))
    out = [vertices]
    for n in np.unique(steps):
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = i + j <= n
        bary = np.stack([i[keep], j[keep], n - i[keep] - j[keep]], axis=1).astype(np.float64) / n  # [P, 3]
        chosen = corners[steps == n]  # [f, 3, 3]
        out.append(np.einsum("pk,fkd->fpd", bary, chosen).reshape(-1, 3))
    return np.concatenate(out).astype(np.float32)


def surface_distances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                      spacing: float = SAMPLE_SPACING) -> np.ndarray:
    """Distance ``[N]`` (metres) from each of ``points [N, 3]`` to the mesh surface, within ``spacing``."""
    tree = cKDTree(surface_samples(vertices, faces, spacing))
    distances, _ = tree.query(points, k=1)
    return distances.astype(np.float32)


def silhouette_iou(alpha: np.ndarray, mask: np.ndarray) -> float:
    """IoU of ``alpha > 0.5`` and ``mask > 0.5`` (same ``[H, W]``); 1.0 when both are empty."""
    a, b = alpha > 0.5, mask > 0.5
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def check_frames(avatar: Avatar, body: BodyModel, manifest: dict, motion: Motion, indices: list[int],
                 size: int = 256, renderer: MeshRenderer | None = None) -> list[FrameCheck]:
    """Measure ``motion`` frames ``indices`` (subject shape from ``manifest``) at ``size``² pixels.

    The avatar is posed with its pose-dependent offsets (the "refined" avatar, as the studio shows it).
    The cameras look at the posed body's bounding-box centre from the front and the side.
    """
    own_renderer = renderer is None
    renderer = renderer or MeshRenderer()
    K = intrinsics(FOCAL_FRACTION * size, size, size)
    faces = body.faces.numpy()
    config = RenderConfig()
    checks = []
    try:
        for index in indices:
            params = motion_params(motion, [index], manifest, body)
            with torch.no_grad():
                vertices = body(**params).vertices[0]
                posed = pose_avatar(avatar, body, params, refined=True)
            lo, hi = vertices.amin(dim=0), vertices.amax(dim=0)
            center = (lo + hi) / 2
            iou, covered = {}, {}
            for view, slot in VIEWS.items():
                viewmat = orbit_view(center, CAMERA_DISTANCE, 0.0, slot, 4)
                with torch.no_grad():
                    render = render_posed(posed, viewmat, K, size, size, config)
                mesh = renderer.render(vertices.numpy(), faces, viewmat.numpy(), K.numpy(), size, size)
                alpha = render.alpha[..., 0].numpy()
                iou[view] = silhouette_iou(alpha, mesh["mask"])
                covered[view] = silhouette_inside(mesh["mask"], alpha)  # the body's pixels under the avatar
            distances = surface_distances(posed.means.numpy(), vertices.numpy(), faces)
            checks.append(FrameCheck(f"{motion.name}:{index}", iou, covered,
                                     float(np.percentile(distances, 99) * 100), float(distances.max() * 100)))
    finally:
        if own_renderer:
            renderer.close()
    return checks
