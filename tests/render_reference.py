"""A slow, obviously-correct Gaussian renderer for tests: every Gaussian at every pixel, plain torch autograd.

It follows the conventions documented for core.render.rasterize (gsplat 1.5.3's) but shares no code with
it: no tiles, no bounding boxes, no hand-written gradients. Memory is O(pixels x Gaussians), so keep
scenes small (a few hundred Gaussians, a few thousand pixels).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4


def quat_to_rotation(quats: Tensor) -> Tensor:
    """[N, 4] (w, x, y, z), any length -> [N, 3, 3] rotation matrices."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def project(means: Tensor, quats: Tensor, scales: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
            eps2d: float) -> dict:
    """Project into one camera. Returns means2d [N, 2], depths [N], cov2d [N, 2, 2] (unblurred),
    conics [N, 3] (of the blurred covariance), compensations [N]."""
    rot = quat_to_rotation(quats)
    cov_world = rot @ torch.diag_embed(scales * scales) @ rot.transpose(-1, -2)
    cam_rot, cam_t = viewmat[:3, :3], viewmat[:3, 3]
    p_cam = means @ cam_rot.T + cam_t
    cov_cam = cam_rot @ cov_world @ cam_rot.T
    x, y, z = p_cam.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # the Jacobian is evaluated with x/z, y/z clamped to 1.3x the field of view (gsplat convention)
    margin_x, margin_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    u = torch.clamp(x / z, min=-(cx / fx + margin_x), max=(width - cx) / fx + margin_x)
    v = torch.clamp(y / z, min=-(cy / fy + margin_y), max=(height - cy) / fy + margin_y)
    zeros = torch.zeros_like(z)
    jac = torch.stack([fx / z, zeros, -fx * u / z, zeros, fy / z, -fy * v / z], dim=-1).reshape(-1, 2, 3)
    cov2d = jac @ cov_cam @ jac.transpose(-1, -2)
    blurred = cov2d + eps2d * torch.eye(2, dtype=means.dtype)
    det_blurred = torch.linalg.det(blurred)
    inverse = torch.linalg.inv(blurred)
    compensations = torch.sqrt(torch.clamp(torch.linalg.det(cov2d) / det_blurred, min=0.0))
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    conics = torch.stack([inverse[:, 0, 0], inverse[:, 0, 1], inverse[:, 1, 1]], dim=-1)
    return {"means2d": means2d, "depths": z, "cov2d": cov2d, "blurred": blurred, "conics": conics,
            "compensations": compensations}


def expected_radii(blurred: Tensor, opacities: Tensor) -> Tensor:
    """The documented culling box: ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(diag(cov2d + eps I))). [N, 2]"""
    extent = torch.clamp(torch.sqrt(2.0 * torch.log(opacities / ALPHA_THRESHOLD)), max=3.33)
    diag = torch.stack([blurred[:, 0, 0], blurred[:, 1, 1]], dim=-1)
    return torch.ceil(extent[:, None] * torch.sqrt(diag))


def composite(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, depths: Tensor,
              width: int, height: int, background: Tensor | None) -> tuple[Tensor, Tensor]:
    """Blend M screen-space Gaussians into every pixel, nearest first. Returns [H, W, D] and [H, W, 1]."""
    order = torch.argsort(depths.detach(), stable=True)
    means2d, conics, opacities, colors = means2d[order], conics[order], opacities[order], colors[order]
    rows, cols = torch.meshgrid(torch.arange(height, dtype=means2d.dtype), torch.arange(width, dtype=means2d.dtype),
                                indexing="ij")
    centres = torch.stack([cols.reshape(-1) + 0.5, rows.reshape(-1) + 0.5], dim=-1)  # [P, 2]
    delta = means2d[None, :, :] - centres[:, None, :]  # [P, M, 2]
    dx, dy = delta[..., 0], delta[..., 1]
    sigma = 0.5 * (conics[:, 0] * dx * dx + conics[:, 2] * dy * dy) + conics[:, 1] * dx * dy
    alpha = torch.clamp(opacities * torch.exp(-sigma), max=MAX_ALPHA)
    counted = ((sigma >= 0) & (alpha >= ALPHA_THRESHOLD)).detach()
    alpha = torch.where(counted, alpha, torch.zeros_like(alpha))
    after = torch.cumprod(1.0 - alpha, dim=1)  # transmittance after each Gaussian
    before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], dim=1)
    # a pixel stops before the Gaussian that would take its transmittance to 1e-4 or below
    alive = (after > MIN_TRANSMITTANCE).detach()
    weights = torch.where(alive, alpha * before, torch.zeros_like(alpha))  # [P, M]
    image = weights @ colors  # [P, D]
    coverage = weights.sum(dim=1, keepdim=True)
    if background is not None:
        image = image + (1.0 - coverage) * background
    return image.reshape(height, width, -1), coverage.reshape(height, width, 1)


def render(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=0.01, far_plane=1e10,
           eps2d=0.3, backgrounds=None, render_mode="RGB", rasterize_mode="classic"):
    """Same arguments and returns (without meta) as core.render.rasterize."""
    images, coverages = [], []
    for cam in range(viewmats.shape[0]):
        proj = project(means, quats, scales, viewmats[cam], Ks[cam], width, height, eps2d)
        view_opacities = opacities * proj["compensations"] if rasterize_mode == "antialiased" else opacities
        visible = ((proj["depths"] >= near_plane) & (proj["depths"] <= far_plane)
                   & (view_opacities >= ALPHA_THRESHOLD)).detach()
        cam_colors = colors[cam] if colors.dim() == 3 else colors
        depth_channel = proj["depths"][:, None]
        if render_mode in ("D", "ED"):
            channels = depth_channel
        elif render_mode in ("RGB+D", "RGB+ED"):
            channels = torch.cat([cam_colors, depth_channel], dim=-1)
        else:
            channels = cam_colors
        background = None
        if backgrounds is not None and render_mode not in ("D", "ED"):
            background = torch.cat([backgrounds[cam], torch.zeros(channels.shape[1] - backgrounds.shape[1],
                                                                  dtype=backgrounds.dtype)])
        image, coverage = composite(proj["means2d"][visible], proj["conics"][visible], view_opacities[visible],
                                    channels[visible], proj["depths"][visible], width, height, background)
        if render_mode in ("ED", "RGB+ED"):
            image = torch.cat([image[..., :-1], image[..., -1:] / coverage.clamp(min=1e-10)], dim=-1)
        images.append(image)
        coverages.append(coverage)
    return torch.stack(images), torch.stack(coverages)


def look_at(eye, target, up=(0.0, -1.0, 0.0), dtype=torch.float64) -> Tensor:
    """World-to-camera [4, 4] for an OpenCV camera at ``eye`` looking at ``target`` (y down)."""
    eye, target, up = (torch.tensor(v, dtype=dtype) for v in (eye, target, up))
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    view = torch.eye(4, dtype=dtype)
    view[:3, :3] = rot
    view[:3, 3] = -rot @ eye
    return view


def intrinsics(focal: float, width: int, height: int, dtype=torch.float64) -> Tensor:
    return torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)


def random_scene(seed: int, n: int = 200, n_channels: int = 3, n_cams: int = 1, width: int = 40, height: int = 32,
                 dtype=torch.float64) -> dict:
    """Gaussians around the origin seen from 1.5-2.5 m, with hard cases mixed in: overlapping clusters,
    a few behind the camera / inside the near plane, tiny (sub-pixel), huge (screen-filling), off-screen
    ones whose Jacobian gets clamped, anisotropic ones, unrotated ones (pure-w quaternions)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=dtype)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    means = randn(n, 3) * 0.25
    means[: n // 4] = means[: n // 4] * 0.2  # a dense cluster: lots of overlap
    log_scales = math.log(0.02) + 0.7 * randn(n, 3)
    scales = torch.exp(log_scales)
    k = max(n // 20, 1)
    scales[:k] = 1e-4  # tiny: the 2D blur dominates
    scales[k: 2 * k] = 0.4 + 0.3 * rand(k, 3)  # huge: cover most of the image
    scales[2 * k: 3 * k, 0] *= 8.0  # needles
    opacities = rand(n) * 0.98 + 0.01
    opacities[3 * k: 4 * k] = 1.0  # saturate alpha at 0.999
    colors = rand(n, n_channels)
    quats = randn(n, 4)
    # pure-w quaternions (the identity rotation, scaled, either sign), on anisotropic and isotropic Gaussians:
    # the projection's shortcut for unrotated Gaussians (every avatar Gaussian is one)
    quats[5 * k: 7 * k, 1:] = 0.0
    quats[6 * k: 7 * k, 0] = -0.5 - rand(k)
    scales[6 * k + k // 2: 7 * k] = scales[6 * k + k // 2: 7 * k, :1]

    viewmats, Ks = [], []
    for cam in range(n_cams):
        angle = 0.6 * cam
        eye = (2.0 * math.sin(angle), -0.2 * cam, -2.0 * math.cos(angle))
        viewmats.append(look_at(eye, (0.0, 0.0, 0.0), dtype=dtype))
        Ks.append(intrinsics(1.2 * width, width, height, dtype=dtype))
    viewmats = torch.stack(viewmats)
    Ks = torch.stack(Ks)
    # behind camera 0 / straddling its near plane / far off to its side (only the Jacobian clamp sees them)
    cam_to_world = torch.linalg.inv(viewmats[0])
    special = torch.tensor([[0.0, 0.0, -0.5], [0.05, 0.0, 0.005], [0.1, -0.05, 0.02], [3.0, 0.2, 1.0],
                            [-2.5, 1.5, 1.2]], dtype=dtype)
    special_world = special @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    means[4 * k: 4 * k + len(special)] = special_world
    scales[4 * k + 3: 4 * k + 5] = 0.3
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats,
                Ks=Ks, width=width, height=height)
