"""Pose-dependent mean offsets: a triplane sampled at template positions plus a small MLP.

PERSONA predicts, for every Gaussian, a position offset (no scale or colour offsets) from the
triplane feature at its canonical position and the 6D rotations of the body joints near the
Gaussian's dominant joint. Hands, face and eyes get no pose offsets.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from smplx.lbs import batch_rodrigues

NUM_BODY_JOINTS = 21  # SMPL-X body_pose joints (1..21), the root excluded


def axis_angle_to_6d(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``[..., 3]`` (radians) -> 6D rotation ``[..., 6]`` (first two matrix columns)."""
    shape = axis_angle.shape[:-1]
    mats = batch_rodrigues(axis_angle.reshape(-1, 3)).reshape(*shape, 3, 3)
    return mats[..., :, :2].transpose(-1, -2).reshape(*shape, 6)


def joints_near(parents: np.ndarray, hops: int = 1) -> np.ndarray:
    """Joints within ``hops`` steps of each joint in the kinematic tree -> bool ``[J, J]``."""
    parents = np.asarray(parents)
    count = len(parents)
    adjacent = np.eye(count, dtype=bool)
    for child, parent in enumerate(parents):
        if parent >= 0:
            adjacent[child, parent] = adjacent[parent, child] = True
    reach = np.eye(count, dtype=bool)
    for _ in range(hops):
        reach = (reach.astype(np.int32) @ adjacent.astype(np.int32)) > 0
    return reach


def body_joint_mask(dominant_joint: np.ndarray, parents: np.ndarray, hops: int = 1) -> np.ndarray:
    """Which of the 21 body-pose joints feed each Gaussian's MLP input -> bool ``[N, 21]``.

    ``dominant_joint [N]``: index (0..54) of each Gaussian's largest skinning weight. A body joint
    ``j`` (1..21) is used when it lies within ``hops`` tree steps of the dominant joint; joints
    whose rotation moves the Gaussian's neighbourhood matter, the rest would only add noise.
    """
    near = joints_near(parents, hops)
    return near[np.asarray(dominant_joint)][:, 1:NUM_BODY_JOINTS + 1]


class Triplane(nn.Module):
    """Three axis-aligned feature planes ``[3, C, R, R]`` covering a cube of side ``extent`` metres."""

    def __init__(self, channels: int, resolution: int, extent: float = 2.0, center: tuple = (0.0, 0.0, 0.0)):
        super().__init__()
        self.planes = nn.Parameter(torch.zeros(3, channels, resolution, resolution))
        nn.init.normal_(self.planes, std=0.1)
        self.extent = float(extent)
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32))

    @property
    def feature_dim(self) -> int:
        return 3 * self.planes.shape[1]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Bilinear features at ``points [N, 3]`` (metres) -> ``[N, 3C]`` (xy, xz, yz planes)."""
        uvw = (points - self.center) / (self.extent / 2)
        coords = torch.stack([uvw[:, [0, 1]], uvw[:, [0, 2]], uvw[:, [1, 2]]], dim=0)  # [3, N, 2]
        sampled = F.grid_sample(self.planes, coords[:, :, None, :], mode="bilinear",
                                padding_mode="border", align_corners=False)  # [3, C, N, 1]
        return sampled[..., 0].permute(2, 0, 1).reshape(points.shape[0], -1)


class PointGroupNorm(nn.GroupNorm):
    """GroupNorm for ``[N, C]`` per-point features, computed as a layer norm over each group.

    Same result and parameters as ``nn.GroupNorm``; on CPU about twice as fast for tens of
    thousands of points, where the image-oriented kernel is slow.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape
        grouped = F.layer_norm(x.view(n, self.num_groups, c // self.num_groups), (c // self.num_groups,),
                               eps=self.eps)
        return grouped.view(n, c) * self.weight + self.bias


class PoseOffsetMLP(nn.Module):
    """``[triplane feature, masked 6D body-joint rotations] -> offset [N, 3]`` in metres.

    ``layers`` hidden layers of ``width`` with GroupNorm and ReLU; the last layer starts at zero so
    a fresh avatar has no pose offsets; the output is multiplied by ``offset_scale`` (0.01 m).
    """

    def __init__(self, feature_dim: int, width: int = 128, layers: int = 3, offset_scale: float = 0.01,
                 groups: int = 8):
        super().__init__()
        blocks: list[nn.Module] = []
        in_dim = feature_dim + NUM_BODY_JOINTS * 6
        for _ in range(layers):
            blocks += [nn.Linear(in_dim, width), PointGroupNorm(min(groups, width), width), nn.ReLU(inplace=True)]
            in_dim = width
        self.hidden = nn.Sequential(*blocks)
        self.out = nn.Linear(in_dim, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.offset_scale = float(offset_scale)

    def forward(self, features: torch.Tensor, joint_rot6d: torch.Tensor, joint_mask: torch.Tensor) -> torch.Tensor:
        """``features [N, F]``, ``joint_rot6d [21, 6]``, ``joint_mask [N, 21]`` bool -> ``[N, 3]`` metres."""
        pose = masked_pose(joint_rot6d, joint_mask, features.dtype)
        return self.out(self.hidden(torch.cat([features, pose], dim=1))) * self.offset_scale

    def feature_part(self, features: torch.Tensor) -> torch.Tensor:
        """The first layer's response to the features alone, bias included -> ``[N, width]``."""
        first = self.hidden[0]
        return F.linear(features, first.weight[:, :features.shape[1]], first.bias)

    def pose_part(self, joint_rot6d: torch.Tensor, joint_masks: torch.Tensor, feature_dim: int) -> torch.Tensor:
        """The first layer's response to the masked pose, ``joint_masks [U, 21]`` -> ``[U, width]`` (no bias)."""
        first = self.hidden[0]
        return F.linear(masked_pose(joint_rot6d, joint_masks, first.weight.dtype), first.weight[:, feature_dim:])

    def after_first_layer(self, first: torch.Tensor) -> torch.Tensor:
        """The rest of the network from the first layer's output ``[N, width]`` -> ``[N, 3]`` metres."""
        return self.out(self.hidden[1:](first)) * self.offset_scale


def masked_pose(joint_rot6d: torch.Tensor, joint_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``joint_rot6d [21, 6]`` kept where ``joint_mask [N, 21]`` -> flattened ``[N, 126]``."""
    return (joint_mask[:, :, None].to(dtype) * joint_rot6d[None]).reshape(joint_mask.shape[0], -1)


class PoseOffsets(nn.Module):
    """Triplane + MLP over all Gaussians, with hands/face/eyes switched off.

    ``template [N, 3]``: canonical Gaussian positions where the triplane is sampled.
    ``joint_mask [N, 21]`` from ``body_joint_mask``; ``enabled [N]`` False for hands, face, eyes.
    """

    def __init__(self, template: torch.Tensor, joint_mask: torch.Tensor, enabled: torch.Tensor, channels: int,
                 resolution: int, extent: float, width: int, layers: int, offset_scale: float):
        super().__init__()
        center = tuple(float(c) for c in (template.amin(0) + template.amax(0)) / 2)
        self.triplane = Triplane(channels, resolution, extent, center)
        self.mlp = PoseOffsetMLP(self.triplane.feature_dim, width, layers, offset_scale)
        self.register_buffer("template", template.detach().clone())
        self.register_buffer("joint_mask", joint_mask.bool())
        self.register_buffer("enabled", enabled.bool())

        # Inference cache (no autograd): the triplane is sampled at fixed template positions and the
        # joint masks take a few distinct values (one per dominant joint), so the first layer splits
        # into a per-Gaussian part that only changes with the weights and a per-mask part. The last
        # pose's offsets are kept too: a Gaussian's offset depends only on the joints in its mask, so
        # a pose that changes a few joints (a slider) re-evaluates only the Gaussians near them.
        self._cache_key: tuple | None = None
        self._cache: tuple[torch.Tensor, ...] = ()
        self._last_pose: tuple[torch.Tensor, torch.Tensor] | None = None  # rot6d [21, 6], offsets [M, 3]

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``body_pose [63]`` axis-angle (radians) -> offsets ``[N, 3]`` metres (zero where disabled).

        Without autograd the first layer comes from a cache, and only the Gaussians whose joint mask
        holds a joint that changed since the last call are re-evaluated (``_offsets_cached``: same
        values; a one-joint slider change in the studio touches a fraction of the Gaussians)."""
        idx = torch.nonzero(self.enabled, as_tuple=True)[0]
        rot6d = axis_angle_to_6d(body_pose.reshape(NUM_BODY_JOINTS, 3))
        if torch.is_grad_enabled():
            out = self.mlp(self.triplane(self.template[idx]), rot6d, self.joint_mask[idx])
        else:
            out = self._offsets_cached(idx, rot6d)
        return torch.zeros_like(self.template).index_copy(0, idx, out.to(self.template.dtype))

    def _weights_key(self) -> tuple:
        """Identity and version of everything the cached values depend on but the pose."""
        tensors = (*self.parameters(), *self.buffers())
        return tuple((id(t), t.data_ptr(), t._version, t.dtype) for t in tensors)

    def _offsets_cached(self, idx: torch.Tensor, rot6d: torch.Tensor) -> torch.Tensor:
        """Offsets ``[M, 3]`` of the enabled Gaussians ``idx [M]`` for ``rot6d [21, 6]`` (no autograd)."""
        key = self._weights_key()
        if key != self._cache_key:
            features = self.triplane(self.template[idx])
            masks, which = torch.unique(self.joint_mask[idx], dim=0, return_inverse=True)
            self._cache = (self.mlp.feature_part(features), masks, which)
            self._cache_key, self._last_pose = key, None
        feature_part, masks, which = self._cache
        pose_part = self.mlp.pose_part(rot6d.to(feature_part.dtype), masks, self.triplane.feature_dim)  # [U, width]
        if self._last_pose is None:
            out = self.mlp.after_first_layer(feature_part + pose_part[which])
        else:
            last_rot6d, last_out = self._last_pose
            changed_joints = (rot6d != last_rot6d).any(dim=1)  # [21]
            # A joint outside a mask enters as an exact zero, so unmasked joints cannot change an offset.
            stale = torch.nonzero((masks[:, changed_joints].any(dim=1))[which], as_tuple=True)[0]
            out = last_out.clone()
            if len(stale):
                out[stale] = self.mlp.after_first_layer(feature_part[stale] + pose_part[which[stale]])
        self._last_pose = (rot6d.clone(), out)
        return out
