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

from core.render.jit_cache import configure_numba_cache
from core.sparse import FixedSparse
from core.threads import even_bounds, run_sliced

configure_numba_cache()

from numba import njit  # noqa: E402  (the cache directory must be configured before numba decorates anything)

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

    def sampling_matrix(self, points: torch.Tensor) -> FixedSparse:
        """``forward``'s bilinear interpolation at fixed ``points [N, 3]`` as a sparse ``[3N, 3R²]`` matrix:
        row ``3 n + plane`` samples point n on that plane, column ``plane R² + y R + x`` is a texel.

        Same weights as ``grid_sample`` (border padding, align_corners=False): for points that never
        move (the template) ``features_at`` then costs two sparse products, forward and backward,
        where ``grid_sample``'s backward is a slow scatter on CPU. Rows ordered point by point make the
        product's ``[3N, C]`` result ``[N, 3C]`` as it stands (plane-major rows needed a transposed
        copy each way).
        """
        res = self.planes.shape[-1]
        uvw = (points.detach().float().cpu() - self.center.cpu()) / (self.extent / 2)  # FixedSparse builds on CPU
        rows, cols, values = [], [], []
        for plane, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))):
            # grid_sample's x indexes the plane's last (width) axis, y its rows
            x = (((uvw[:, a] + 1) * res - 1) / 2).clamp(0, res - 1)
            y = (((uvw[:, b] + 1) * res - 1) / 2).clamp(0, res - 1)
            x0, y0 = x.floor(), y.floor()
            fx, fy = x - x0, y - y0
            x0, y0 = x0.long(), y0.long()
            x1, y1 = (x0 + 1).clamp_max(res - 1), (y0 + 1).clamp_max(res - 1)  # weight 0 where clamped
            for yy, xx, weight in ((y0, x0, (1 - fx) * (1 - fy)), (y0, x1, fx * (1 - fy)),
                                   (y1, x0, (1 - fx) * fy), (y1, x1, fx * fy)):
                rows.append(torch.arange(len(points)) * 3 + plane)
                cols.append(plane * res * res + yy * res + xx)
                values.append(weight)
        return FixedSparse(torch.cat(rows), torch.cat(cols), torch.cat(values), (3 * len(points), 3 * res * res))

    def features_at(self, sampling: FixedSparse) -> torch.Tensor:
        """Features ``[N, 3C]`` at the points of ``sampling_matrix(points)`` (equal to ``forward(points)``)."""
        planes, channels = self.planes.shape[0], self.planes.shape[1]
        texels = self.planes.reshape(planes, channels, -1).transpose(1, 2).reshape(-1, channels)  # [3R², C]
        return (sampling @ texels).view(-1, planes * channels)  # [3N, C] rows point by point


_JIT = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")


@njit(**_JIT)
def _group_norm_relu_forward(first, stop, x, weight, bias, eps, out, normalised, inv_std):  # pragma: no cover
    """``out = relu(normalised * weight + bias)`` for rows [first, stop) of ``x [N, G, S]`` normalised over each
    group's S channels (two passes: mean, then variance of the centred values, as layer norm)."""
    groups, size = x.shape[1], x.shape[2]
    inv_size = np.float32(1.0) / np.float32(size)
    zero = np.float32(0.0)
    for i in range(first, stop):
        for g in range(groups):
            total = zero
            for k in range(size):
                total += x[i, g, k]
            mean = total * inv_size
            squares = zero
            for k in range(size):
                d = x[i, g, k] - mean
                squares += d * d
            r = np.float32(1.0) / np.sqrt(squares * inv_size + eps)
            inv_std[i, g] = r
            for k in range(size):
                h = (x[i, g, k] - mean) * r
                normalised[i, g, k] = h
                y = h * weight[g, k] + bias[g, k]
                out[i, g, k] = y if y > zero else zero


@njit(**_JIT)
def _group_norm_relu_backward(first, stop, grad_out, out, normalised, inv_std, weight, grad_x, bounds, grad_weight,
                              grad_bias):  # pragma: no cover
    """Gradients of ``_group_norm_relu_forward`` for rows [first, stop): ``grad_x`` rows written, the parameter
    gradients accumulated into this slice's ``grad_weight[s]`` / ``grad_bias[s]`` (``[P, G, S]``, zero on
    entry; s is the slice with bounds[s] == first), which the caller sums."""
    groups, size = out.shape[1], out.shape[2]
    inv_size = np.float32(1.0) / np.float32(size)
    zero = np.float32(0.0)
    grad_h = np.empty(size, np.float32)
    s = min(np.searchsorted(bounds, first, "right") - 1, len(bounds) - 2)  # no rows: bounds [0, 0]
    weight_sum = grad_weight[s]
    bias_sum = grad_bias[s]
    for i in range(first, stop):
        for g in range(groups):
            mean_gh = zero
            mean_gh_h = zero
            for k in range(size):
                gz = grad_out[i, g, k] if out[i, g, k] > zero else zero
                weight_sum[g, k] += gz * normalised[i, g, k]
                bias_sum[g, k] += gz
                gh = gz * weight[g, k]
                grad_h[k] = gh
                mean_gh += gh
                mean_gh_h += gh * normalised[i, g, k]
            mean_gh *= inv_size
            mean_gh_h *= inv_size
            r = inv_std[i, g]
            for k in range(size):
                grad_x[i, g, k] = r * (grad_h[k] - mean_gh - normalised[i, g, k] * mean_gh_h)


class _GroupNormReLU(torch.autograd.Function):
    """``relu(group_norm(x))`` for float32 ``x [N, C]`` in one pass each way (numba)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float):
        n, c = x.shape
        shape = (n, groups, c // groups)
        x = x.detach().contiguous()
        out, normalised, inv_std = torch.empty_like(x), torch.empty_like(x), x.new_empty(n, groups)
        run_sliced(_group_norm_relu_forward, even_bounds(n), x.view(shape).numpy(),
                   weight.detach().reshape(shape[1:]).numpy(), bias.detach().reshape(shape[1:]).numpy(),
                   np.float32(eps), out.view(shape).numpy(), normalised.view(shape).numpy(), inv_std.numpy())
        ctx.save_for_backward(out, normalised, inv_std, weight)
        ctx.groups = groups
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        out, normalised, inv_std, weight = ctx.saved_tensors
        n, c = out.shape
        shape = (n, ctx.groups, c // ctx.groups)
        grad_x = torch.empty_like(out)
        bounds = np.asarray(even_bounds(n), np.int64)
        slices = (len(bounds) - 1,) + shape[1:]  # one partial sum per slice: no two threads add to one place
        grad_weight, grad_bias = np.zeros(slices, np.float32), np.zeros(slices, np.float32)
        run_sliced(_group_norm_relu_backward, bounds, grad_out.contiguous().view(shape).numpy(),
                   out.view(shape).numpy(), normalised.view(shape).numpy(), inv_std.numpy(),
                   weight.detach().reshape(shape[1:]).numpy(), grad_x.view(shape).numpy(), bounds, grad_weight,
                   grad_bias)
        return (grad_x, torch.from_numpy(grad_weight.sum(axis=0).reshape(c)),
                torch.from_numpy(grad_bias.sum(axis=0).reshape(c)), None, None)


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

    def forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(self(x))``: for float32 CPU tensors one fused pass forward and one backward (the
        separate layer norm, affine and ReLU were most of the pose MLP's time: tiny 8-channel groups
        are slow in torch's kernels)."""
        if x.dtype != torch.float32 or x.device.type != "cpu" or self.weight.dtype != torch.float32:
            return torch.relu(self(x))
        return _GroupNormReLU.apply(x, self.weight, self.bias, self.num_groups, self.eps)


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
        return self.after_first_layer(self.hidden[0](torch.cat([features, pose], dim=1)))

    def feature_part(self, features: torch.Tensor) -> torch.Tensor:
        """The first layer's response to the features alone, bias included -> ``[N, width]``."""
        first = self.hidden[0]
        return F.linear(features, first.weight[:, :features.shape[1]], first.bias)

    def pose_part(self, joint_rot6d: torch.Tensor, joint_masks: torch.Tensor, feature_dim: int) -> torch.Tensor:
        """The first layer's response to the masked pose, ``joint_masks [U, 21]`` -> ``[U, width]`` (no bias)."""
        first = self.hidden[0]
        return F.linear(masked_pose(joint_rot6d, joint_masks, first.weight.dtype), first.weight[:, feature_dim:])

    def after_first_layer(self, first: torch.Tensor) -> torch.Tensor:
        """The rest of the network from the first layer's output ``[N, width]`` -> ``[N, 3]`` metres.

        ``hidden`` holds (Linear, PointGroupNorm, ReLU) per layer; each norm and its ReLU run fused."""
        x = first
        for start in range(0, len(self.hidden), 3):
            if start > 0:
                x = self.hidden[start](x)
            x = self.hidden[start + 1].forward_relu(x)
        return self.out(x) * self.offset_scale


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
        self._structure_key: tuple | None = None
        self._structure_cache: tuple = ()
        self._cache_key: tuple | None = None
        self._cache: tuple[torch.Tensor, ...] = ()
        self._last_pose: tuple[torch.Tensor, torch.Tensor] | None = None  # rot6d [21, 6], offsets [M, 3]

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``body_pose [63]`` axis-angle (radians) -> offsets ``[N, 3]`` metres (zero where disabled).

        The first layer is split into its response to the triplane feature and to the masked pose
        (``PoseOffsetMLP.feature_part`` + ``pose_part``): the joint masks take a few distinct values
        (one per dominant joint), so the pose part is computed once per distinct mask. Without
        autograd the feature part comes from a cache, and only the Gaussians whose joint mask holds a
        joint that changed since the last call are re-evaluated (``_offsets_cached``: same values; a
        one-joint slider change in the studio touches a fraction of the Gaussians)."""
        idx, masks, which, sampling = self._structure()
        rot6d = axis_angle_to_6d(body_pose.reshape(NUM_BODY_JOINTS, 3))
        if torch.is_grad_enabled():
            feature_part = self.mlp.feature_part(self.triplane.features_at(sampling))
            pose_part = self.mlp.pose_part(rot6d.to(feature_part.dtype), masks, self.triplane.feature_dim)
            out = self.mlp.after_first_layer(feature_part + pose_part.index_select(0, which))
        else:
            out = self._offsets_cached(rot6d)
        return torch.zeros_like(self.template).index_copy(0, idx, out.to(self.template.dtype))

    def _structure(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, FixedSparse]:
        """What depends on the buffers only: enabled Gaussians ``idx [M]``, distinct joint masks
        ``masks [U, 21]`` with ``which [M]`` (each Gaussian's mask), the triplane sampling matrix at
        their template positions. Cached until a buffer changes (``load_state_dict`` copies in place)."""
        tensors = (self.template, self.joint_mask, self.enabled, self.triplane.center)
        key = tuple((id(t), t.data_ptr(), t._version) for t in tensors) + (tuple(self.triplane.planes.shape),)
        if key != self._structure_key:
            idx = torch.nonzero(self.enabled, as_tuple=True)[0]
            masks, which = torch.unique(self.joint_mask[idx], dim=0, return_inverse=True)
            self._structure_cache = (idx, masks, which, self.triplane.sampling_matrix(self.template[idx]))
            self._structure_key = key
        return self._structure_cache

    def _weights_key(self) -> tuple:
        """Identity and version of everything the cached values depend on but the pose."""
        tensors = (*self.parameters(), *self.buffers())
        return tuple((id(t), t.data_ptr(), t._version, t.dtype) for t in tensors)

    def _offsets_cached(self, rot6d: torch.Tensor) -> torch.Tensor:
        """Offsets ``[M, 3]`` of the enabled Gaussians for ``rot6d [21, 6]`` (no autograd)."""
        _, masks, which, sampling = self._structure()
        key = self._weights_key()
        if key != self._cache_key:
            self._cache = (self.mlp.feature_part(self.triplane.features_at(sampling)),)
            self._cache_key, self._last_pose = key, None
        (feature_part,) = self._cache
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
