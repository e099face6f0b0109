"""How the fitted body is put onto each held-out frame's ground-truth body before any method renders.

The benchmark drives every method with the GT pose and the *fitted* shape. The fitted skeleton has
other bone lengths than the GT one, so in the GT pose its limbs land centimetres off the GT
silhouette, and PSNR partly measures that rather than the method. Papers fit SMPL-X to each test frame first; with
synthetic people the GT body is known and shares the mesh topology with the fitted one, so the fit
is a per-vertex least-squares problem. Every alignment here is computed from the two bare bodies
only, never from a method's render, and is shared by all methods.

- ``scale``: least-squares scale + shift of the fitted joints onto the GT joints (size and depth
  ambiguity of one photo), pose untouched.
- ``fit``: from there, global orientation, body pose, scale and shift of the fitted-shape body fitted
  to the GT body's posed vertices (area-weighted L2, Levenberg-Marquardt); hands, jaw and eyes keep
  GT values.
- ``fit-joints``: the same fit on the 55 joints (with a weak pull towards the GT pose), the analogue of
  fitting SMPL-X to a test frame's keypoints.
- ``photometric``: per method, from ``fit``: the orientation, body pose and shift fitted to the held-out
  image with the method's avatar frozen (``core.quality.methods.photometric_pose``), as PERSONA's evaluation
  fits each test frame. This one depends on each method's render, so each method gets its own pose.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.body import BodyModel

ALIGN_MODES = ("fit", "fit-joints", "scale", "none", "photometric")
FITTED_POSE_FIELDS = ("global_orient", "body_pose")  # what ``fit`` frees; hands / face stay GT
# m² per rad²: a 0.1 rad change of the pose costs as much as 3 mm RMS joint distance
JOINT_FIT_PRIOR = 1e-3
FIT_STEPS = 10  # Levenberg-Marquardt iterations at most; 3-4 reach the tolerance on the benchmark's people


@dataclass(frozen=True)
class ScaleAlignment:
    """``x -> scale * x + shift`` (metres) taking the fitted body onto the GT body."""

    scale: float = 1.0
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        return points * self.scale + torch.tensor(self.shift, dtype=points.dtype)


@dataclass(frozen=True)
class EvalPose:
    """How every method is posed for one held-out frame: ``params`` (``[1, k]`` tensors, the fitted
    shape's ``BodyModel.forward`` arguments), then moved by ``alignment``."""

    params: dict[str, torch.Tensor]
    alignment: ScaleAlignment = ScaleAlignment()


def points_alignment(source: torch.Tensor, target: torch.Tensor) -> ScaleAlignment:
    """Least-squares ``scale`` and ``shift`` with ``scale * source + shift ≈ target`` (``[J, 3]`` each)."""
    centred_s, centred_t = source - source.mean(0), target - target.mean(0)
    scale = float((centred_s * centred_t).sum() / centred_s.pow(2).sum())
    shift = target.mean(0) - scale * source.mean(0)
    return ScaleAlignment(scale, tuple(float(v) for v in shift))


def scale_alignment(body: BodyModel, fitted: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]
                    ) -> ScaleAlignment:
    """Least-squares scale and shift of the fitted body's joints onto the GT body's, in the same pose.

    One photo cannot tell a small near person from a big far one, so prep's shape may be uniformly
    off in size; like Procrustes-aligned pose metrics, this removes only that global size and
    position, leaving shape, pose and appearance errors (no rotation is fitted).
    """
    with torch.no_grad():
        return points_alignment(body(**fitted).joints[0], body(**truth).joints[0])


def vertex_areas(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``[V]`` a third of the area (m²) of each vertex's incident faces, for ``vertices [V, 3]``, ``faces [F, 3]``.

    Weighting a vertex loss by it makes every square centimetre of skin count the same, wherever
    the mesh is dense (face, hands).
    """
    corners = vertices[faces]  # [F, 3, 3]
    face_area = 0.5 * torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=1)
    return torch.zeros(len(vertices), dtype=vertices.dtype).index_add_(0, faces.reshape(-1),
                                                                        face_area.repeat_interleave(3)) / 3.0


def weighted_rms(points: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> float:
    """Weighted root-mean-square distance (metres) of ``points`` to ``target`` (``[V, 3]``, ``weights [V]``)."""
    return float(((points - target).pow(2).sum(-1) * weights).sum().div(weights.sum()).sqrt())


def fit_alignment(body: BodyModel, fitted: dict[str, torch.Tensor], truth: dict[str, torch.Tensor],
                  on: str = "vertices", steps: int = FIT_STEPS) -> EvalPose:
    """The fitted-shape body put onto the GT body of the same frame by a least-squares fit.

    Args:
        fitted: GT pose with the fitted shape (``eval_params``), ``[1, k]`` tensors; the start.
        truth: GT pose with the GT shape, same names; its posed points are the target.
        on: ``"vertices"``: all vertices, area-weighted (both bodies share the topology), or
            ``"joints"``: the 55 joints, equally weighted, plus ``JOINT_FIT_PRIOR`` on the pose's change
            (joints do not see a bone's twist).
        steps: at most this many Levenberg-Marquardt iterations.

    Starting from ``scale_alignment``, global orientation, body pose, log-scale and shift (70 numbers)
    minimise the weighted mean squared distance between ``scale * points + shift`` and the GT points.
    Hands, jaw and eyes keep their GT values. The problem is a small dense least-squares one, so
    Levenberg-Marquardt on the forward-mode Jacobian converges in a few iterations where
    first-order methods crawl along the limb chains.
    """
    if on not in ("vertices", "joints"):
        raise ValueError(f"fit on 'vertices' or 'joints', not {on!r}")
    with torch.no_grad():
        posed = body(**truth)
        target = posed.vertices[0] if on == "vertices" else posed.joints[0]
        weights = vertex_areas(target, body.faces.long()) if on == "vertices" else torch.ones(len(target))
        root_weights = (weights / weights.sum()).sqrt()[:, None]  # [P, 1]
        start = scale_alignment(body, fitted, truth)
    fixed = {k: v.detach() for k, v in fitted.items() if k not in FITTED_POSE_FIELDS}
    widths = [fitted[k].shape[1] for k in FITTED_POSE_FIELDS]
    x_start = torch.cat([*(fitted[k].detach()[0] for k in FITTED_POSE_FIELDS),
                         torch.tensor([math.log(start.scale), *start.shift], dtype=target.dtype)])
    prior = math.sqrt(JOINT_FIT_PRIOR) if on == "joints" else 0.0

    def residuals(x: torch.Tensor) -> torch.Tensor:  # [70] -> [3P (+66)] weighted differences (metres)
        pose = dict(zip(FITTED_POSE_FIELDS, x[:-4].split(widths)))
        out = body(**fixed, **{k: v[None] for k, v in pose.items()})
        points = out.vertices[0] if on == "vertices" else out.joints[0]
        distances = ((points * x[-4].exp() + x[-3:] - target) * root_weights).reshape(-1)
        return torch.cat([distances, prior * (x[:-4] - x_start[:-4])]) if prior else distances

    x = levenberg_marquardt(residuals, x_start, steps)
    pose = dict(zip(FITTED_POSE_FIELDS, x[:-4].split(widths)))
    params = {**fixed, **{k: v[None].clone() for k, v in pose.items()}}
    return EvalPose(params, ScaleAlignment(float(x[-4].exp()), tuple(float(v) for v in x[-3:])))


def levenberg_marquardt(residuals, x: torch.Tensor, steps: int, damping: float = 1e-4,
                        tolerance: float = 1e-3, floor: float = 1e-12) -> torch.Tensor:
    """``x [P]`` minimising ``|residuals(x)|²`` (``residuals``: ``[P] -> [R]``), from the given start.

    Each iteration solves the damped normal equations on the forward-mode Jacobian ``[R, P]``; a step
    that does not lower the cost is retried with ten times the damping. Stops after ``steps``
    iterations, when a step lowers the cost by less than ``tolerance`` relative, or when the cost is
    below ``floor`` (here m²: an exact fit, at float32 precision).
    """
    with torch.no_grad():
        cost = residuals(x).pow(2).sum()
    for _ in range(steps):
        with torch.no_grad():
            jacobian = torch.func.jacfwd(residuals)(x)
            normal, gradient = jacobian.T @ jacobian, jacobian.T @ residuals(x)
            while damping < 1e8:
                step = torch.linalg.solve(normal + damping * torch.diag(normal.diagonal().clamp_min(1e-12)), -gradient)
                new_cost = residuals(x + step).pow(2).sum()
                if new_cost < cost:
                    break
                damping *= 10.0
            else:
                return x  # no descent left: at the minimum to float precision
        x, decrease, cost = x + step, float((cost - new_cost) / cost), new_cost
        damping = max(damping / 10.0, 1e-9)
        if decrease < tolerance or cost < floor:
            break
    return x


def eval_pose(body: BodyModel, fitted: dict[str, torch.Tensor], truth: dict[str, torch.Tensor], mode: str
              ) -> EvalPose:
    """The pose every method gets for one frame under alignment ``mode`` (one of ``ALIGN_MODES``; for
    ``photometric`` the start that each method's photometric_pose refines)."""
    if mode in ("fit", "photometric"):  # photometric: each method refines this start (photometric_pose)
        return fit_alignment(body, fitted, truth, "vertices")
    if mode == "fit-joints":
        return fit_alignment(body, fitted, truth, "joints")
    if mode == "scale":
        return EvalPose(fitted, scale_alignment(body, fitted, truth))
    if mode == "none":
        return EvalPose(fitted)
    raise ValueError(f"unknown alignment {mode!r}; choose one of {ALIGN_MODES}")


def posed_body(body: BodyModel, pose: EvalPose) -> torch.Tensor:
    """``[V, 3]`` the bare fitted body as ``pose`` places it (metres)."""
    with torch.no_grad():
        return pose.alignment.apply(body(**pose.params).vertices[0])


def alignment_error(body: BodyModel, pose: EvalPose, truth: dict[str, torch.Tensor]) -> float:
    """Area-weighted RMS distance (metres) of the bare fitted body placed by ``pose`` to the GT body ``truth``."""
    with torch.no_grad():
        target = body(**truth).vertices[0]
        return weighted_rms(posed_body(body, pose), target, vertex_areas(target, body.faces.long()))

