"""``BodyModel``: an SMPL-X-format body (the embedded CC0 model or a user's SMPL-X) on ``smplx``.

``smplx.SMPLX`` loads the file and holds the buffers; our forward uses smplx's pure lbs functions
(``core.body.lbs``) and additionally returns the joint transforms and the shaped canonical
vertices that the Gaussian avatar needs. Landmarks (nose, eyes, ears, toes, heels, fingertips) come
from topology-specific vertex ids: the file's ``extra_joint_vertex_ids``, else smplx's SMPL-X ids
for a 10,475-vertex model, else none.
"""
from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import smplx
import torch
from torch import nn

from core.body import lbs
from core.body.model_file import MODEL_ENV_VAR, ModelFile, read_model_file, resolve_model_path, smplx_readable_path
from core.body.parts import PART_NAMES, PART_PALETTE, part_labels_from_weights
from core.body.skeleton import (
    JOINT_NAMES, LANDMARK_NAMES, NUM_JOINTS, POSE_SLICES, SMPLX_LANDMARK_VERTEX_IDS, SMPLX_NUM_VERTICES,
)
from core.errors import UserError

DEFAULT_NUM_BETAS = 10
DEFAULT_NUM_EXPRESSION_USER = 10  # a user SMPL-X: the first 10 expression components, as most fitting code uses


@dataclasses.dataclass
class BodyOutput:
    """Result of ``BodyModel.forward`` (B batch, V vertices, L landmarks); metres, SMPL-X frame.

    Attributes:
        vertices: ``[B, V, 3]`` posed vertices (translation included).
        joints: ``[B, 55, 3]`` posed joint locations.
        landmarks: ``[B, L, 3]`` posed surface keypoints named by ``BodyModel.landmark_names``.
        joint_transforms: ``[B, 55, 4, 4]`` rigid transforms A with ``x_posed = A_j @ [x_canonical, 1]``
            for a point rigidly attached to joint j; skinning blends them (``lbs.skin_points``).
        shaped: ``[B, V, 3]`` canonical vertices: template + shape + expression blend shapes.
        rest_joints: ``[B, 55, 3]`` canonical joint locations (regressed from ``shaped``).
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    landmarks: torch.Tensor
    joint_transforms: torch.Tensor
    shaped: torch.Tensor
    rest_joints: torch.Tensor


class BodyModel(nn.Module):
    """An SMPL-X-format body model (55 joints).

    Args:
        path: an SMPL-X-format ``.npz`` (or a folder holding ``SMPLX_NEUTRAL.npz``); None ->
            ``$PERSONA_SMPLX_MODEL``, else the embedded CC0 model.
        num_betas: shape coefficients to use (None: the file's ``num_betas``, else 10).
        num_expression: expression coefficients to use (None: all of the embedded model's 52
            facial actions, 10 for a user SMPL-X).
        dtype: float dtype of the buffers.

    Hands are posed in full axis-angle (no PCA) and zero means a flat hand. Bad files raise a
    one-line ``core.errors.UserError`` naming the file.
    """

    PART_NAMES = PART_NAMES
    PART_PALETTE = PART_PALETTE
    JOINT_NAMES = JOINT_NAMES

    def __init__(self, path: str | Path | None = None, num_betas: int | None = None,
                 num_expression: int | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        resolved, source = resolve_model_path(path)
        try:
            self.model_file: ModelFile = read_model_file(resolved, source)
        except UserError as err:
            if path is None and os.environ.get(MODEL_ENV_VAR):
                raise UserError(f"{err} (set by ${MODEL_ENV_VAR})") from None
            raise
        extras = self.model_file.extras
        stored_betas = int(extras["num_betas"]) if "num_betas" in extras else None
        expression_names = [str(n) for n in extras["expression_names"]] if "expression_names" in extras else None
        if num_betas is None:
            num_betas = stored_betas or DEFAULT_NUM_BETAS
        if stored_betas is not None:
            num_betas = min(num_betas, stored_betas)
        if num_expression is None:
            num_expression = len(expression_names) if expression_names is not None else DEFAULT_NUM_EXPRESSION_USER
        self.smplx = _load_smplx(self.model_file, num_betas, num_expression, dtype)

        self._expression_names = tuple(
            expression_names[:self.num_expression] if expression_names is not None
            else (f"expression_{i:03d}" for i in range(self.num_expression)))
        self._has_pose_correctives = bool(self.smplx.posedirs.any())
        if not self._has_pose_correctives:
            # The embedded model has none: don't keep ~80 MB of zeros (smplx's own forward still works).
            self.smplx.posedirs = torch.zeros(1, 1, dtype=dtype).expand_as(self.smplx.posedirs)

        ids, names = self._landmark_layout(extras)
        self.register_buffer("landmark_vertex_ids", torch.as_tensor(ids, dtype=torch.int64), persistent=False)
        self._landmark_names = names
        weights = self.smplx.lbs_weights.detach().cpu().numpy()
        labels = extras["part_labels"] if "part_labels" in extras else part_labels_from_weights(weights)
        self.register_buffer("part_labels", torch.as_tensor(np.asarray(labels), dtype=torch.int64), persistent=False)
        self.register_buffer("blend_dirs", torch.cat([self.smplx.shapedirs, self.smplx.expr_dirs], dim=-1),
                             persistent=False)

    @classmethod
    def load(cls, path: str | Path | None = None, **kwargs) -> "BodyModel":
        """Same as the constructor; reads well at call sites (``BodyModel.load()``)."""
        return cls(path, **kwargs)

    # ------------------------------------------------------------------ description

    @property
    def source(self) -> str:
        """``"embedded"`` (the CC0 model shipped with persona-studio) or ``"user"``."""
        return self.model_file.source

    @property
    def path(self) -> Path:
        return self.model_file.path

    @property
    def num_vertices(self) -> int:
        return int(self.smplx.v_template.shape[0])

    @property
    def num_joints(self) -> int:
        return NUM_JOINTS

    @property
    def num_betas(self) -> int:
        return int(self.smplx.num_betas)

    @property
    def num_expression(self) -> int:
        return int(self.smplx.num_expression_coeffs)

    @property
    def faces(self) -> torch.Tensor:
        """``[F, 3]`` int64 vertex indices, counter-clockwise seen from outside."""
        return self.smplx.faces_tensor

    @property
    def parents(self) -> torch.Tensor:
        """``[55]`` int64 parent joint of each joint (root -1)."""
        return self.smplx.parents

    @property
    def lbs_weights(self) -> torch.Tensor:
        """``[V, 55]`` skinning weights, rows summing to 1."""
        return self.smplx.lbs_weights

    @property
    def v_template(self) -> torch.Tensor:
        """``[V, 3]`` template vertices (zero shape, zero expression, T-pose), metres."""
        return self.smplx.v_template

    @property
    def j_regressor(self) -> torch.Tensor:
        """``[55, V]`` joint regressor (joints = ``j_regressor @ shaped``)."""
        return self.smplx.J_regressor

    @property
    def joint_names(self) -> tuple[str, ...]:
        return JOINT_NAMES

    @property
    def expression_names(self) -> tuple[str, ...]:
        """Name of each expression coefficient (ARKit-style for the embedded model, values in [0, 1])."""
        return self._expression_names

    @property
    def expression_range(self) -> tuple[float, float] | None:
        """Valid range of every expression coefficient: (0, 1) for a file that names its expressions (the
        embedded model's ARKit-style facial actions: 0 = rest, 1 = full action; a negative value is an
        anti-action no face makes), None for SMPL-X's unbounded PCA coefficients."""
        return (0.0, 1.0) if "expression_names" in self.model_file.extras else None

    @property
    def landmark_names(self) -> tuple[str, ...]:
        """Names of ``BodyOutput.landmarks`` (a subset of ``skeleton.LANDMARK_NAMES``, maybe empty)."""
        return self._landmark_names

    @property
    def has_pose_correctives(self) -> bool:
        """Whether ``posedirs`` is non-zero (a real SMPL-X); the embedded model has none."""
        return self._has_pose_correctives

    # ------------------------------------------------------------------ forward

    def forward(self, betas=None, global_orient=None, body_pose=None, left_hand_pose=None, right_hand_pose=None,
                jaw_pose=None, leye_pose=None, reye_pose=None, expression=None, transl=None) -> BodyOutput:
        """Pose and shape the body. Every input is optional (zeros) and ``[B, D]`` (``[D]`` means B = 1).

        ``betas [B, num_betas]``, ``global_orient [B, 3]``, ``body_pose [B, 63]``,
        ``left_hand_pose`` / ``right_hand_pose [B, 45]``, ``jaw_pose`` / ``leye_pose`` / ``reye_pose
        [B, 3]`` (axis-angle, radians, relative to the parent joint), ``expression [B, num_expression]``,
        ``transl [B, 3]`` metres. Tensors or arrays; gradients flow to every tensor input.
        """
        widths = {"betas": self.num_betas, "expression": self.num_expression, "transl": 3,
                  **{name: 3 * (s.stop - s.start) for name, s in POSE_SLICES.items()}}
        given = {"betas": betas, "global_orient": global_orient, "body_pose": body_pose,
                 "left_hand_pose": left_hand_pose, "right_hand_pose": right_hand_pose, "jaw_pose": jaw_pose,
                 "leye_pose": leye_pose, "reye_pose": reye_pose, "expression": expression, "transl": transl}
        inputs = self._batched_inputs(given, widths)
        full_pose = torch.cat([inputs[name] for name in POSE_SLICES], dim=1).reshape(-1, NUM_JOINTS, 3)
        coefficients = torch.cat([inputs["betas"], inputs["expression"]], dim=1)

        shaped = lbs.shape_vertices(self.smplx.v_template, self.blend_dirs, coefficients)
        rest_joints = lbs.regress_joints(self.smplx.J_regressor, shaped)
        joints, transforms, rotations = lbs.joint_transforms(full_pose, rest_joints, self.smplx.parents,
                                                             inputs["transl"])
        canonical = shaped
        if self._has_pose_correctives:
            canonical = shaped + lbs.pose_corrective_offsets(rotations, self.smplx.posedirs)
        vertices = lbs.skin_points(canonical, self.smplx.lbs_weights, transforms)
        landmarks = vertices[:, self.landmark_vertex_ids]
        return BodyOutput(vertices=vertices, joints=joints, landmarks=landmarks, joint_transforms=transforms,
                          shaped=shaped, rest_joints=rest_joints)

    def _batched_inputs(self, given: dict, widths: dict[str, int]) -> dict[str, torch.Tensor]:
        template = self.smplx.v_template
        tensors = {}
        for name, value in given.items():
            if value is None:
                continue
            value = torch.as_tensor(value, dtype=template.dtype, device=template.device)
            if value.dim() == 1:
                value = value.unsqueeze(0)
            if value.dim() != 2 or value.shape[1] != widths[name]:
                raise ValueError(f"{name} must be [B, {widths[name]}], got {list(value.shape)}")
            tensors[name] = value
        batch = max((v.shape[0] for v in tensors.values()), default=1)
        out = {}
        for name, width in widths.items():
            value = tensors.get(name)
            if value is None:
                value = template.new_zeros(batch, width)
            elif value.shape[0] != batch:
                if value.shape[0] != 1:
                    raise ValueError(f"{name} has batch {value.shape[0]}, others {batch}")
                value = value.expand(batch, -1)
            out[name] = value
        return out

    def _landmark_layout(self, extras: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
        if "extra_joint_vertex_ids" in extras and "extra_joint_names" in extras:
            return extras["extra_joint_vertex_ids"], tuple(str(n) for n in extras["extra_joint_names"])
        if self.num_vertices == SMPLX_NUM_VERTICES:
            return np.array(SMPLX_LANDMARK_VERTEX_IDS), LANDMARK_NAMES
        return np.zeros(0, dtype=np.int64), ()


def _load_smplx(model_file: ModelFile, num_betas: int, num_expression: int, dtype: torch.dtype) -> smplx.SMPLX:
    """``smplx.SMPLX`` holding the file's buffers, without any learnable parameters of its own."""
    no_parameters = {f"create_{name}": False for name in (
        "betas", "global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose", "leye_pose",
        "reye_pose", "expression", "transl")}
    with smplx_readable_path(model_file) as path:
        try:
            return smplx.SMPLX(str(path), num_betas=num_betas, num_expression_coeffs=num_expression, use_pca=False,
                               flat_hand_mean=True, dtype=dtype, **no_parameters)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError, RuntimeError) as err:
            raise UserError(f"could not be read as an SMPL-X model ({type(err).__name__}: {err})",
                            model_file.path) from None
