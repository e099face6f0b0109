"""Synthetic subjects with known answers: the body model in a known pose, coloured procedurally,
rendered as a "photo" with exact mask and geometry; and training sets rendered from an avatar itself
(no OpenGL, no prep: they run on a bare GPU machine). Used by tests and benchmarks."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from core.avatar.avatar import Avatar
from core.avatar.build import build_avatar
from core.body import PART_PALETTE, BodyModel, star_pose
from core.camera import intrinsics, look_at
from core.config import Config
from core.frames.frameset import IMAGE_KEYS, FrameSet
from core.frames.generated import generate_frames
from core.subject import Subject
from core.training_frames import TrainFrame, generated_frame


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
    from core.render.mesh import MeshRenderer  # OpenGL: imported only where a mesh is drawn

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


@dataclasses.dataclass
class SelfRenderedSet:
    """A training set rendered from an avatar with known colours: ``photo`` is its first frame."""

    avatar: Avatar  # fresh (untrained) avatar of the same body, grey, to train on these frames
    photo: TrainFrame
    frames: FrameSet  # the other frames
    betas: np.ndarray  # [B] zeros


def self_rendered_set(body: BodyModel, config: Config, seed: int = 0) -> SelfRenderedSet:
    """``config.frames.num_generated + 1`` frames of a striped, "clothed" avatar along
    ``config.frames.motions`` (the offline generator at ``config.frames.resolution``); the first one is
    used as the photo (seam weights all 1, its colours as albedo). The avatar to train is the bare
    body, grey.

    The clothes are a wavy 0.5-2.5 cm displacement along the surface normals: the trained avatar's
    depth and normals then differ from the targets everywhere (an L1 loss at zero residual has no
    defined gradient, and its subgradient there flips with rounding)."""
    betas = np.zeros(body.num_betas, np.float32)
    textured = build_avatar(body, betas, config.avatar, seed=seed)
    avatar = copy.deepcopy(textured)  # the one to train: still bare (built once: subdivision takes seconds)
    template = (textured.upsample @ body.v_template).numpy()
    labels = textured.part_labels.numpy()
    with torch.no_grad():
        textured.colors.copy_(torch.as_tensor(striped_colors(template, labels, seed)))
        canonical = textured.template
        wave = 0.015 + 0.01 * torch.sin(25.0 * canonical[:, 1:2]) * torch.cos(17.0 * canonical[:, 0:1])
        textured.offsets.copy_(wave * textured.surface_normals(canonical))
    frames_config = dataclasses.replace(config.frames, num_generated=config.frames.num_generated + 1)
    rendered = generate_frames(textured, body, {"betas": betas}, frames_config, config.render)
    first = generated_frame(rendered, 0, betas, None)
    photo = dataclasses.replace(first, kind="photo", albedo=first.rgb, image_weight=torch.ones_like(first.mask),
                                hand_region=None)
    rest = dataclasses.replace(rendered, **{k: getattr(rendered, k)[1:] for k in (*IMAGE_KEYS, "K", "viewmat")},
                               params={k: v[1:] for k, v in rendered.params.items()}, labels=rendered.labels[1:])
    with torch.no_grad():
        avatar.colors.fill_(0.5)
    return SelfRenderedSet(avatar=avatar, photo=photo, frames=rest, betas=betas)
