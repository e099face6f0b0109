"""Synthetic subjects with known answers: the body model in a known pose, coloured procedurally,
rendered as a "photo" with exact mask and geometry. Used by tests and benchmarks."""
from __future__ import annotations

import numpy as np
import torch

from core.body import PART_PALETTE, BodyModel, star_pose
from core.camera import intrinsics, look_at
from core.render.mesh import MeshRenderer
from core.subject import Subject


def striped_colors(vertices: np.ndarray, part_labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Clothing-like per-vertex colours ``[V, 3]``: a colour per part, horizontal stripes on the torso."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.15, 0.9, size=(int(part_labels.max()) + 1, 3)).astype(np.float32)
    colors = base[part_labels]
    stripes = (np.floor(vertices[:, 1] / 0.06) % 2 == 0)[:, None]
    return np.where(stripes, colors, 0.6 * colors + 0.4 * np.array([0.95, 0.95, 0.9], np.float32)).astype(np.float32)


def synthetic_subject(body: BodyModel, size: int = 256, pose: dict[str, np.ndarray] | None = None,
                      distance: float = 3.0, seed: int = 0) -> Subject:
    """A Subject whose photo is a render of the body in ``pose`` (default: arms slightly lowered).

    The camera sits on +z looking at the body (``Subject.viewmat``); the
    geometry maps are exact, and ``position`` holds canonical star-pose positions.
    """
    params = {k: np.asarray(v, np.float32) for k, v in (pose or {}).items()}
    params.setdefault("betas", np.zeros(body.num_betas, np.float32))
    tensors = {k: torch.as_tensor(v)[None] for k, v in params.items()}
    with torch.no_grad():
        out = body(**tensors)
        star = body(betas=tensors["betas"], **{k: torch.as_tensor(v)[None] for k, v in star_pose().items()})
    vertices = out.vertices[0].numpy()
    y = vertices[:, 1]
    center = float((y.min() + y.max()) / 2)
    view = look_at(torch.tensor([0.0, center, distance]), torch.tensor([0.0, center, 0.0])).numpy()
    K = intrinsics(size * distance / (1.2 * float(y.max() - y.min())), size, size).numpy()
    labels = body.part_labels.numpy()
    colors = striped_colors(body.v_template.numpy(), labels, seed)
    renderer = MeshRenderer()
    try:
        r = renderer.render(vertices, body.faces.numpy(), view, K, size, size,
                            vertex_attrs={"rgb": colors, "part": PART_PALETTE[labels], "position": star.vertices[0].numpy()},
                            flat_attrs=("part",))
    finally:
        renderer.close()
    mask = r["mask"]
    image = r["rgb"] * mask[..., None]
    return Subject(
        image=image, mask=mask, albedo=image, K=K, smplx={k: v.reshape(-1) for k, v in params.items()},
        geometry={"depth": r["depth"], "normal": r["normal"], "part_seg": r["part"] * mask[..., None],
                  "position": r["position"]},
        info={"camera": {"viewmat": view.tolist()}, "synthetic": True, "vertex_colors_seed": seed},
    )
