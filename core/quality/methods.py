"""The methods the quality benchmark compares, on one subject.

(a) ``mesh``: the fitted body mesh with the photo's colours projected on it (what a naive tool does):
    the untrained avatar's surface (Gaussian centres = subdivided body vertices) drawn as a mesh.
(b)-(e): our avatar trained with one switch of ``config.ablation`` off, or all on. The variants
    share everything before training (avatar initialisation, photo warm-up, generated frames), which
    does not depend on the switches, so they differ only in what the switch changes.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.avatar.avatar import Avatar, PosedGaussians
from core.avatar.build import body_params
from core.avatar.render import pose_avatar, render_posed
from core.body import BodyModel
from core.config import Config
from core.frames.frameset import FrameSet
from core.frames.generated import generate_frames
from core.quality.alignment import FITTED_POSE_FIELDS, EvalPose, ScaleAlignment
from core.reconstruct import initial_avatar, photo_training_frame, subject_shape, warm_up
from core.render.mesh import MeshRenderer
from core.subject import Subject
from core.threads import torch_threads, training_threads
from core.trainer import Trainer, config_device
from core.training_frames import TrainFrame

# --align photometric: Adam steps per method and held-out frame, and their size (radians, metres: as the
# trainer's photo registration, optim.lr_register)
PHOTOMETRIC_STEPS = 24
PHOTOMETRIC_LR = 0.01

# Variant name -> the ablation switches it turns off (the full method turns none off).
VARIANTS: dict[str, tuple[str, ...]] = {
    "no_balanced": ("balanced_sampling",),
    "no_geometry": ("geometry_weighting",),
    "no_pose_offsets": ("pose_offsets",),
    "full": (),
}

Progress = Callable[[str, float, dict], None]


@dataclass
class SharedStart:
    """What every trained variant of one subject starts from."""

    subject: Subject
    betas: np.ndarray  # [B] the fitted shape
    expression: np.ndarray | None
    initial: Avatar  # photo-coloured, untrained (baseline (a))
    warmed: Avatar  # after the photo-only warm-up
    photo: TrainFrame
    frames: FrameSet


# Makes the training frames from the warmed avatar (e.g. the oracle source of core/quality/oracle.py).
FrameSource = Callable[[Avatar, Callable[[float], None]], FrameSet]


def shared_start(body: BodyModel, subject: Subject, config: Config, report: Progress,
                 frame_source: FrameSource | None = None) -> SharedStart:
    """Avatar from the Subject's fit with photo colours, warm-up on the photo, then the training frames:
    ``frame_source(warmed avatar, progress)``, by default our offline generator (``generate_frames``)."""
    betas, expression = subject_shape(subject, body)
    avatar = initial_avatar(body, subject, config)
    initial = copy.deepcopy(avatar)
    photo = photo_training_frame(subject, config)
    warm_up(avatar, body, photo, config, betas, expression, report, None)
    progress = lambda f: report("training frames", f, {})  # noqa: E731
    if frame_source is None:
        frames = generate_frames(avatar, body, subject.smplx, config.frames, progress=progress)
    else:
        frames = frame_source(avatar, progress)
    return SharedStart(subject, betas, expression, initial, avatar, photo, frames)


def variant_config(config: Config, variant: str) -> Config:
    """``config`` with the variant's ablation switches off."""
    off = VARIANTS[variant]
    return dataclasses.replace(config, ablation=dataclasses.replace(config.ablation, **{k: False for k in off}))


def train_variant(start: SharedStart, body: BodyModel, config: Config, variant: str, report: Progress) -> Avatar:
    """A copy of the warmed avatar trained with the variant's config (on ``train.device``); returns it
    on the CPU."""
    avatar = copy.deepcopy(start.warmed)
    trainer = Trainer(avatar, body, start.photo, start.frames, variant_config(config, variant), start.betas,
                      start.expression, device=config_device(config))
    with torch_threads(training_threads()):
        while not trainer.done:
            metrics = trainer.step()
            report(f"train {variant}", trainer.step_index / trainer.total, metrics)
    return avatar.cpu()


def eval_params(pose: dict[str, np.ndarray], betas: np.ndarray) -> dict[str, torch.Tensor]:
    """The GT pose with the *fitted* shape (as the paper evaluates) as ``[1, k]`` tensors."""
    return body_params({**{k: v for k, v in pose.items() if k not in ("betas", "expression")}, "betas": betas})


def aligned(posed: PosedGaussians, alignment: ScaleAlignment) -> PosedGaussians:
    """Posed Gaussians moved by ``alignment`` (sizes scale with it)."""
    return dataclasses.replace(posed, means=alignment.apply(posed.means), scales=posed.scales * alignment.scale)


def render_avatar(avatar: Avatar, body: BodyModel, pose: EvalPose, viewmat: np.ndarray, K: np.ndarray, size: int,
                  config: Config, refined: bool) -> tuple[np.ndarray, np.ndarray]:
    """Our avatar posed by ``pose`` over white: ``rgb [H, W, 3]``, ``alpha [H, W]``."""
    with torch.no_grad():
        posed = aligned(pose_avatar(avatar, body, pose.params, refined=refined), pose.alignment)
        out = render_posed(posed, torch.as_tensor(viewmat, dtype=torch.float32),
                           torch.as_tensor(K, dtype=torch.float32), size, size, config.render, torch.ones(3))
    return out.rgb.clamp(0, 1).numpy(), out.alpha[..., 0].numpy()


def render_mesh_baseline(initial: Avatar, body: BodyModel, pose: EvalPose, viewmat: np.ndarray, K: np.ndarray,
                         size: int, renderer: MeshRenderer) -> tuple[np.ndarray, np.ndarray]:
    """Baseline (a) posed by ``pose`` over white: the body mesh with per-vertex photo colours, 2×2 supersampled."""
    with torch.no_grad():
        posed = aligned(pose_avatar(initial, body, pose.params, refined=False), pose.alignment)
    out = renderer.render(posed.means.numpy(), initial.faces.numpy(), viewmat, K, size, size,
                          vertex_attrs={"rgb": initial.colors.detach().clamp(0, 1).numpy()}, ssaa=2)
    return out["rgb"] + (1.0 - out["mask"][..., None]), out["mask"]


def photometric_pose(avatar: Avatar, body: BodyModel, start: EvalPose, viewmat: np.ndarray, K: np.ndarray, size: int,
                     config: Config, refined: bool, target_rgb: np.ndarray, target_mask: np.ndarray,
                     steps: int = PHOTOMETRIC_STEPS) -> EvalPose:
    """``start`` refined so that ``avatar`` posed by it looks like the held-out image (test-time pose fitting,
    as PERSONA's evaluation fits each test frame's pose to the image with the avatar frozen).

    Global orientation, body pose and a shift move (Adam, ``PHOTOMETRIC_LR``, the avatar's parameters
    untouched) to lower the mean absolute difference of its render over white from ``target_rgb [H, W, 3]``
    (over white) plus that of its alpha from ``target_mask [H, W]``. Hands, face and the alignment's scale
    stay. Returns the pose of the lowest loss seen, so never one that fits worse than ``start``.
    """
    free = {k: start.params[k].detach().clone().requires_grad_(True) for k in FITTED_POSE_FIELDS}
    fixed = {k: v for k, v in start.params.items() if k not in free}
    shift = torch.zeros(3, requires_grad=True)
    rgb_target = torch.as_tensor(target_rgb, dtype=torch.float32)
    mask_target = torch.as_tensor(target_mask, dtype=torch.float32)
    viewmat_t, K_t = torch.as_tensor(viewmat, dtype=torch.float32), torch.as_tensor(K, dtype=torch.float32)
    optimiser = torch.optim.Adam([*free.values(), shift], lr=PHOTOMETRIC_LR)
    best = (float("inf"), start)
    trainable = [p for p in avatar.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        with torch_threads(training_threads()):
            for step in range(steps + 1):  # the last pass only scores the last step
                posed = aligned(pose_avatar(avatar, body, {**fixed, **free}, refined=refined), start.alignment)
                out = render_posed(dataclasses.replace(posed, means=posed.means + shift), viewmat_t, K_t, size, size,
                                   config.render, torch.ones(3))
                loss = (out.rgb - rgb_target).abs().mean() + (out.alpha[..., 0] - mask_target).abs().mean()
                if float(loss.detach()) < best[0]:
                    moved = tuple(a + float(b) for a, b in zip(start.alignment.shift, shift.detach()))
                    params = {**fixed, **{k: v.detach().clone() for k, v in free.items()}}
                    best = (float(loss.detach()), EvalPose(params, ScaleAlignment(start.alignment.scale, moved)))
                if step == steps:
                    break
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
    return best[1]
