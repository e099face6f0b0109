"""Build an Avatar for a fitted subject: topology from the body model, colours from the photo."""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from core.avatar.avatar import RIGID_PARTS, Avatar, AvatarTopology
from core.body import PART_NAMES, PART_PALETTE, BodyModel, build_weight_volume, star_pose, subdivide_to_spacing
from core.body.parts import FACE_PARTS, PART_INDEX
from core.config import AvatarConfig


def sparse_torch(matrix) -> torch.Tensor:
    """scipy sparse -> torch sparse COO float32."""
    coo = matrix.tocoo()
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
    return torch.sparse_coo_tensor(indices, torch.as_tensor(coo.data, dtype=torch.float32), coo.shape,
                                   check_invariants=True).coalesce()


def body_params(params: dict[str, np.ndarray] | None) -> dict[str, torch.Tensor]:
    """A Subject's / motion frame's SMPL-X arrays as ``[1, k]`` float32 tensors."""
    return {k: torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(1, -1) for k, v in (params or {}).items()}


def build_topology(body: BodyModel, betas: torch.Tensor, config: AvatarConfig) -> tuple[AvatarTopology, dict]:
    """Subdivide the shaped body and give every Gaussian skinning weights and a part.

    Gaussians are the vertices of the body mesh refined where its edges are long (in the shaped star
    pose) until there are about ``config.num_gaussians`` of them, so they spread evenly over the
    surface instead of following the mesh's dense face and hands; the refined faces give normals and
    Laplacians.

    Returns the topology and the canonical quantities the Avatar needs: ``shaped_zero [V, 3]``
    (zero pose, no expression) and ``star_transforms [J, 4, 4]``.
    """
    with torch.no_grad():
        star = body(betas=betas, **{k: torch.as_tensor(v)[None] for k, v in star_pose().items()})
    shaped = star.shaped[0]
    faces = body.faces.cpu().numpy()
    vertices, sub_faces, upsample = subdivide_to_spacing(shaped.numpy(), faces, config.num_gaussians)
    body_weights = body.lbs_weights.detach().cpu().numpy()
    keep = _upsampled_labels(upsample, body.part_labels.cpu().numpy())
    rigid = np.isin(keep, [PART_NAMES.index(p) for p in RIGID_PARTS + ("jaw", "eyes")])
    volume = build_weight_volume(shaped.numpy(), body_weights, resolution=config.skinning_grid)
    weights = volume.sample(vertices).numpy()
    weights[rigid] = np.asarray(upsample[rigid] @ body_weights)  # hands and face keep the model's weights
    weights /= weights.sum(axis=1, keepdims=True)
    topology = AvatarTopology(upsample=sparse_torch(upsample), faces=torch.as_tensor(sub_faces),
                              weights=torch.as_tensor(weights, dtype=torch.float32), part_labels=keep,
                              rigid=torch.as_tensor(rigid))
    return topology, {"shaped_zero": shaped, "star_transforms": star.joint_transforms[0]}


def _upsampled_labels(upsample, labels: np.ndarray) -> np.ndarray:
    """Part label of each subdivided vertex: the label with most weight among its parents."""
    one_hot = np.eye(labels.max() + 1, dtype=np.float32)[labels]
    return np.asarray(upsample @ one_hot).argmax(axis=1)


def build_avatar(body: BodyModel, betas: np.ndarray, config: AvatarConfig,
                 colors: np.ndarray | None = None, seed: int = 0) -> Avatar:
    """A fresh Avatar for shape ``betas [B]``; ``colors [N, 3]`` or mid-grey.

    The network's random initialisation depends only on ``seed`` (the global RNG is left as it was).
    """
    betas_t = torch.as_tensor(np.asarray(betas, dtype=np.float32)).reshape(1, -1)[:, :body.num_betas]
    topology, canonical = build_topology(body, betas_t, config)
    n = topology.weights.shape[0]
    init = torch.full((n, 3), 0.5) if colors is None else torch.as_tensor(colors, dtype=torch.float32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Avatar(topology, canonical["shaped_zero"], canonical["star_transforms"], body.parents.cpu().numpy(),
                      init, torch.as_tensor(PART_PALETTE), config)


# Parts whose unseen Gaussians take the nearest seen colours in 3D instead of the front's: copying the
# front to the back puts the face on the back of the head, and the chin (in front of the neck in a
# frontal projection) down the hidden front of the neck.
NEAREST_IN_3D_PARTS = FACE_PARTS + (PART_INDEX["neck"],)  # part labels


def fill_unseen_colors(colors: np.ndarray, seen: np.ndarray, canonical: np.ndarray,
                       nearest_in_3d: np.ndarray | None = None) -> np.ndarray:
    """Give unseen Gaussians the colour of the nearest seen ones (mean of 4).

    ``colors [N, 3]``, ``seen [N]`` bool, ``canonical [N, 3]`` star-pose positions (metres). By default the
    nearest in the canonical x-y plane: ignoring depth (z) copies the front of the body to its back, the
    best guess one photo allows for clothes (the back of a shirt is most likely the shirt's colour, not
    black). Gaussians in ``nearest_in_3d [N]`` (bool; e.g. those of ``NEAREST_IN_3D_PARTS``) take the nearest seen
    ones of that same group in 3D instead, so that the back of a head gets the hair and ears at its sides.
    """
    colors = np.array(colors, dtype=np.float32, copy=True)
    group = np.zeros(len(colors), bool) if nearest_in_3d is None else np.asarray(nearest_in_3d, bool)
    for members, axes in ((~group, slice(0, 2)), (group, slice(0, 3))):
        sources, targets = seen & members, ~seen & members
        if not sources.any() or not targets.any():
            continue
        tree = cKDTree(canonical[sources][:, axes])
        _, nearest = tree.query(canonical[targets][:, axes], k=min(4, int(sources.sum())))
        colors[targets] = colors[sources][nearest.reshape(len(nearest), -1)].mean(axis=1)
    return colors


def sample_image(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image [H, W, C]`` at pixel coordinates ``uv [N, 2]`` (centres at +0.5)."""
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy
