"""Render a posed avatar through ``core.render.rasterize``: RGB, alpha, depth, part colours, normals."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.avatar.avatar import Avatar, PosedGaussians
from core.body import BodyModel
from core.config import RenderConfig
from core.render import rasterize


@dataclass
class AvatarRender:
    """One camera's render; images ``[H, W, C]``."""

    rgb: torch.Tensor  # [H, W, 3]
    alpha: torch.Tensor  # [H, W, 1]
    depth: torch.Tensor  # [H, W, 1] expected camera depth, metres (0 where empty)
    part: torch.Tensor  # [H, W, 3] part-segmentation colours (premultiplied by alpha)
    normal: torch.Tensor  # [H, W, 3] camera-space normals (premultiplied by alpha)


def pose_avatar(avatar: Avatar, body: BodyModel, params: dict[str, torch.Tensor], refined: bool) -> PosedGaussians:
    """Pose ``avatar`` with SMPL-X ``params`` (``[1, k]`` tensors, ``BodyModel.forward`` names).

    ``refined`` adds the pose-dependent offsets from the triplane + MLP.
    """
    out = body(**params)
    body_pose = params.get("body_pose")
    pose = None
    if refined:
        pose = body_pose.reshape(-1) if body_pose is not None else torch.zeros(63)
    return avatar.pose(out.shaped[0], out.joint_transforms[0], pose)


def render_posed(posed: PosedGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                 config: RenderConfig, background: torch.Tensor | None = None) -> AvatarRender:
    """Rasterize ``posed`` into one camera (``viewmat [4, 4]``, ``K [3, 3]``); ``background [3]`` for RGB."""
    normals_cam = posed.normals @ viewmat[:3, :3].T
    features = torch.cat([posed.colors, posed.part_colors, normals_cam], dim=1)  # [N, 9]
    bg = None
    if background is not None:
        bg = torch.cat([background.to(features), features.new_zeros(6)])[None]
    image, alpha, _ = rasterize(
        posed.means, posed.quats, posed.scales, posed.opacities, features, viewmat[None], K[None], width, height,
        eps2d=config.eps2d, backgrounds=bg, render_mode="RGB+ED", rasterize_mode=config.rasterize_mode,
        backend=config.backend)
    # one split (its backward is one concatenation) rather than four slices, each of whose backward
    # writes a zero image of all ten channels; squeeze, not [0], for the same reason
    rgb, part, normal, depth = image.squeeze(0).split([3, 3, 3, 1], dim=-1)
    return AvatarRender(rgb=rgb, alpha=alpha.squeeze(0), depth=depth, part=part, normal=normal)
