"""Give the embedded body model SMPL-X's 51 static face landmarks (``lmk_faces_idx``, ``lmk_bary_coords``).

    python tools/face_landmark_embedding.py [--model core/body/data/smplx_persona_cc0.npz]

A licensed SMPL-X file carries a face-landmark embedding: for each of the iBUG-68 points 17..67 (brows,
nose, eyes, lips) a triangle and barycentric weights on the mesh. Without one the photo fit sees the
head through BlazePose's five face points only (nose, eyes, ears), which leaves its turn and tilt loose,
and the photo's face lands misplaced on the avatar. Our mesh is not SMPL-X's, so the embedding is found
on it the way the photo finds them: the template head is rendered with simple shading from a few
directions, mediapipe's face mesh (the model the photo prep runs) marks its 478 points on each render,
the 51 iBUG points (``core.prep.landmarks.FACE_MESH_FOR_IBUG68``) are triangulated from the views' rays
and snapped to the nearest triangle of the head. Rewrites the two
keys of the model file in place (atomically) and prints how far the views disagreed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from core.body.model_file import EMBEDDED_MODEL_PATH  # noqa: E402
from core.body.parts import FACE_PARTS  # noqa: E402
from core.camera import camera_center, intrinsics, orbit_camera  # noqa: E402
from core.io.npz import load_npz, save_npz  # noqa: E402
from core.prep.landmarks import FACE_MESH_FOR_IBUG68  # noqa: E402
from core.render.mesh import MeshRenderer, pixel_rays  # noqa: E402

STATIC_IBUG = FACE_MESH_FOR_IBUG68[17:]  # face-mesh indices of SMPL-X's 51 static landmarks, in order
# Views of the head: (yaw, pitch) in degrees; the face mesh is most reliable near frontal.
VIEWS = ((0, 0), (-15, 0), (15, 0), (0, -10), (0, 10))
IMAGE_SIZE = 768
FIELD = 0.30  # metres across the image at the face
DISTANCE = 0.6  # metres from the face
SKIN = (0.85, 0.65, 0.55)


def detect_face_mesh(image: np.ndarray) -> np.ndarray | None:
    """mediapipe's face mesh on an RGB uint8 image -> ``[478, 2]`` pixels, or None when no face is found."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        found = mesh.process(image)
    if not found.multi_face_landmarks:
        return None
    height, width = image.shape[:2]
    return np.array([[p.x * width, p.y * height] for p in found.multi_face_landmarks[0].landmark])


def pixel_rays_world(pixels: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The camera centre ``[3]`` and unit world directions ``[P, 3]`` of the rays through ``pixels [P, 2]``
    (corner-origin coordinates)."""
    rays = pixel_rays(K, pixels[:, 0] - 0.5, pixels[:, 1] - 0.5)  # pixel_rays adds the centre's 0.5
    directions = rays @ viewmat[:3, :3]  # R^T d
    return camera_center(viewmat), directions / np.linalg.norm(directions, axis=1, keepdims=True)


def triangulate(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares meeting points ``[P, 3]`` of rays from ``origins [V, 3]`` along ``directions [V, P, 3]``
    (one ray per view and point), and each point's largest distance to its rays ``[P]``."""
    projector = np.eye(3) - directions[..., :, None] * directions[..., None, :]  # [V, P, 3, 3]
    lhs = projector.sum(axis=0)
    rhs = (projector @ origins[:, None, :, None]).sum(axis=0)[..., 0]
    points = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    offsets = points[None] - origins[:, None, :]
    misses = np.linalg.norm(offsets - (offsets * directions).sum(-1, keepdims=True) * directions, axis=-1)
    return points, misses.max(axis=0)


def embed(vertices: np.ndarray, faces: np.ndarray, head_faces: np.ndarray, centre: np.ndarray,
          detect=detect_face_mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(``lmk_faces_idx [51]`` int64, ``lmk_bary_coords [51, 3]`` float32, each landmark's largest distance
    to its views' rays ``[51]`` metres) for the mesh ``vertices [V, 3]``, ``faces [F, 3]``; landmarks snap to the
    triangles ``head_faces [H]`` (indices into faces); ``centre [3]`` is where the cameras aim."""
    renderer = MeshRenderer()
    K = intrinsics(IMAGE_SIZE * DISTANCE / FIELD, IMAGE_SIZE, IMAGE_SIZE).double().numpy()
    albedo = np.tile(np.asarray(SKIN, np.float64), (len(vertices), 1))
    origins, directions = [], []
    for yaw, pitch in VIEWS:
        viewmat = orbit_camera(torch.as_tensor(centre), DISTANCE, np.radians(yaw), np.radians(pitch)).numpy()
        light = viewmat[:3, :3].T @ np.array([0.3, -0.5, -1.0])  # towards a light above the camera, world axes
        out = renderer.render(vertices, faces, viewmat, K, IMAGE_SIZE, IMAGE_SIZE, vertex_attrs={"albedo": albedo},
                              light={"direction": light, "ambient": 0.25, "diffuse": 0.8}, background=1.0, ssaa=2)
        image = out["shaded"] + (1.0 - out["mask"][..., None])
        points = detect((np.clip(image, 0, 1) * 255).astype(np.uint8))
        if points is None:
            continue
        origin, direction = pixel_rays_world(points[list(STATIC_IBUG)], viewmat, K)
        origins.append(origin)
        directions.append(direction)
    if len(origins) < 2:
        raise RuntimeError("mediapipe found the face on fewer than two renders of the template head")
    # Triangulated rather than lifted through each render's depth: inner lip points sit on the closed
    # mouth's crease, where a depth lookup falls into the mouth.
    points, spread = triangulate(np.stack(origins), np.stack(directions))
    triangle, bary = snap_to_triangles(points, vertices[faces[head_faces]])
    return head_faces[triangle].astype(np.int64), bary.astype(np.float32), spread


def snap_to_triangles(points: np.ndarray, triangles: np.ndarray, candidates: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``points [P, 3]`` the nearest of ``triangles [T, 3, 3]`` (among the ``candidates`` with the
    nearest centroids) and the barycentric weights ``[P, 3]`` of the point's projection onto it, clamped
    into the triangle."""
    from scipy.spatial import cKDTree

    _, near = cKDTree(triangles.mean(axis=1)).query(points, k=min(candidates, len(triangles)))
    best, weights = np.zeros(len(points), np.int64), np.zeros((len(points), 3))
    for i, point in enumerate(points):
        a, b, c = (triangles[near[i], k] for k in range(3))  # [k, 3] each
        ab, ac, ap = b - a, c - a, point - a
        gram = np.stack([np.stack([(ab * ab).sum(1), (ab * ac).sum(1)], 1),
                         np.stack([(ab * ac).sum(1), (ac * ac).sum(1)], 1)], 1)  # [k, 2, 2]
        rhs = np.stack([(ap * ab).sum(1), (ap * ac).sum(1)], 1)
        v, w = np.linalg.solve(gram, rhs[..., None])[..., 0].T
        bary = np.clip(np.stack([1.0 - v - w, v, w], 1), 0.0, None)
        bary /= bary.sum(1, keepdims=True)
        snapped = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
        j = int(np.argmin(np.linalg.norm(snapped - point, axis=1)))
        best[i], weights[i] = near[i, j], bary[j]
    return best, weights


def face_landmark_arrays(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(``{"lmk_faces_idx", "lmk_bary_coords"}``, each landmark's ray miss ``[51]`` metres) for a model
    file's arrays (``v_template``, ``f``, ``part_labels``, the nose among the extra joints)."""
    vertices, faces = arrays["v_template"].astype(np.float64), arrays["f"].astype(np.int64)
    head_vertices = np.isin(arrays["part_labels"], FACE_PARTS)
    head_faces = np.flatnonzero(head_vertices[faces].all(axis=1))
    extra = [str(n) for n in arrays["extra_joint_names"]]
    nose = vertices[arrays["extra_joint_vertex_ids"][extra.index("nose")]]
    faces_idx, bary, miss = embed(vertices, faces, head_faces, nose - np.array([0.0, 0.03, 0.05]))
    return {"lmk_faces_idx": faces_idx, "lmk_bary_coords": bary}, miss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=EMBEDDED_MODEL_PATH)
    args = parser.parse_args(argv)
    arrays = load_npz(args.model)
    landmarks, miss = face_landmark_arrays(arrays)
    save_npz(args.model, {**arrays, **landmarks})
    print(f"wrote 51 face landmarks into {args.model}; rays missed the triangulated points by "
          f"{1000 * np.median(miss):.1f} mm (median), {1000 * miss.max():.1f} mm (worst)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
