"""The steppable PERSONA trainer: balanced sampling + geometry-weighted optimisation.

``Trainer.step()`` draws a frame (the photo about half the time), poses the avatar with the
frame's SMPL-X parameters (plus a learned per-frame correction for generated frames), renders a
"base" image (no pose offsets) and a "refined" image (with them), and applies the frame type's
loss weights. With ``sampling.register_photo_at`` the photo is first left out, then registered: a window of
steps moves only its pose and shift until it lines up with the avatar the other frames taught, and it joins
balanced sampling in that pose. Settings (loss weights, pause) may be changed from another thread at any time;
they take effect at the next step boundary. ``snapshot()`` returns what a viewer needs.

A trainer runs on one device (``config_device``: CUDA when a GPU and gsplat are there): it moves
the avatar there in place, so renders go through gsplat on CUDA and through our rasterizer on CPU.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import losses
from core.avatar.avatar import Avatar
from core.avatar.render import AvatarRender, render_posed
from core.body import HAND_PARTS, BodyModel
from core.camera import facing_camera, project_points
from core.config import Config, FrameLossWeights, LossConfig
from core.errors import UserError
from core.frames.frameset import GENERATED_SOURCE, FrameSet
from core.io.atomic import atomic_path
from core.render.backends import training_device
from core.sampling import BalancedSampler
from core.training_frames import TrainFrame, crop_frame, generated_frame, hand_region

CHECKPOINT_FORMAT = "persona-checkpoint/1"
# Per-frame SMPL-X correction: which parameters, and whether they use the (slower) hand rate.
REFINED_PARAMS = {"global_orient": (3, False), "body_pose": (63, False), "transl": (3, False),
                  "left_hand_pose": (45, True), "right_hand_pose": (45, True)}
# The photo's pose correction (optim.lr_photo_pose, sampling.register_photo_at); registration also shifts its body.
PHOTO_REFINED = ("global_orient", "body_pose")
PHOTO_GROUPS = ("photo_pose", "photo_shift")


@dataclass
class TrainingSnapshot:
    """What a viewer needs after a step: avatar tensors (detached copies) and metrics."""

    step: int
    total: int
    metrics: dict[str, float]
    avatar_state: dict[str, torch.Tensor]
    draw_counts: np.ndarray


def config_device(config: Config) -> torch.device:
    """Where ``config`` trains on this machine (``train.device`` with ``render.backend``); a setting
    that cannot run here is a one-line UserError."""
    try:
        return training_device(config.train.device, config.render.backend)
    except ValueError as err:
        raise UserError(str(err)) from None


def frame_weights(config: Config, kind: str) -> FrameLossWeights:
    """The loss weights for a frame type; with geometry weighting off, generated frames are
    weighted like the photo (high RGB, low geometry) — the ablation of PERSONA's idea."""
    if kind == "photo" or not config.ablation.geometry_weighting:
        return config.loss.photo
    return config.loss.generated


def registration_window(config: Config, frames: FrameSet | None) -> tuple[int, int]:
    """Steps ``[first, stop)`` that register the photo's pose (``sampling.register_photo_at``); ``(0, 0)`` when
    it is off, or when ``frames`` hold nothing to register it to: none, or only our offline generator's, which
    re-render the avatar warmed up on the photo in its fitted pose (registered to them, the photo only moved
    joints it hardly shows: messi5's feet by 23-36 degrees). Before ``first`` only the frames are drawn; the
    window's steps come on top of ``train.iterations``."""
    s = config.sampling
    if (s.register_photo_at <= 0 or s.register_steps <= 0 or frames is None or len(frames) == 0
            or frames.source == GENERATED_SOURCE):
        return 0, 0
    first = int(round(s.register_photo_at * config.train.iterations))
    return first, first + s.register_steps


def registration_weights(w: FrameLossWeights) -> FrameLossWeights:
    """The photo's weights for a registration step: image and mask only. Its depth, normal and part targets
    are drawn from the fitted body in the fitted pose, so they would hold the pose where the fit put it."""
    off = {f.name: 0.0 for f in dataclasses.fields(FrameLossWeights)}
    return FrameLossWeights(**{**off, "image": w.image, "mask": w.mask})


def loss_window(mask: torch.Tensor, alpha: torch.Tensor, margin: int = 8) -> tuple[slice, slice]:
    """Rows and columns around the person (target mask or rendered alpha, ``[H, W, 1]``) plus a margin.

    Outside it both the target and the render are background, so every loss term there is zero;
    cropping makes the image losses several times cheaper.
    """
    covered = (mask[..., 0] > 0) | (alpha.detach()[..., 0] > 1.0 / 255.0)
    h, w = covered.shape
    lines = torch.cat([covered.any(dim=1), covered.any(dim=0)]).cpu().numpy()  # one read-back (a GPU stall)
    rows, cols = np.flatnonzero(lines[:h]), np.flatnonzero(lines[h:])
    if len(rows) == 0:
        return slice(None), slice(None)
    return (slice(max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + margin + 1)),
            slice(max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + margin + 1)))


def over_background(premultiplied: torch.Tensor, mask: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """A premultiplied target ``[B, H, W, 3]`` with coverage ``mask [B, H, W, 1]`` over ``background [3]``."""
    return premultiplied + background * (1.0 - mask)


def training_background(mode: str, seed: int, step: int) -> torch.Tensor:
    """The colour ``[3]`` behind step ``step``'s renders: a function of (seed, step) only, so a resumed
    run draws the same colours as an uninterrupted one."""
    if mode == "black":
        return torch.zeros(3)
    if mode == "white":
        return torch.ones(3)
    return torch.rand(3, generator=torch.Generator().manual_seed(seed * 1_000_003 + step))


def photo_facing(avatar: Avatar, body: BodyModel, photo: TrainFrame) -> torch.Tensor:
    """Which Gaussians sit on the side of the body that faces the photo's camera -> bool ``[N]``.

    Decided on the bare fitted body in the photo's pose, never on the learned surface: on the small
    triangles of hands and face a millimetre of learned offset can flip a normal, and a resumed run
    must decide exactly as an uninterrupted one.
    """
    with torch.no_grad():
        out = body(**photo.params)
        posed = avatar.pose(out.shaped[0], out.joint_transforms[0], None, learned_offsets=False)
    return facing_camera(posed.means, posed.normals, photo.viewmat)


def outside_mask(means: torch.Tensor, frame: TrainFrame) -> torch.Tensor:
    """Which posed Gaussian centres ``means [N, 3]`` (world) land where ``frame``'s mask is below 0.5, or
    outside its image or behind its camera -> bool ``[N]``. In the photo these show the backdrop, which says
    nothing about their colour (the mask term moves or shrinks them instead). A fitted body a little wider
    than the clothed person has a rim of them down its sides; left to the photo, their colours drift to
    the mean training background and show as pale seams in other views."""
    pixel, z = project_points(means, frame.viewmat, frame.K)
    height, width = frame.mask.shape[1:3]
    col, row = pixel[:, 0].floor().long(), pixel[:, 1].floor().long()
    inside = (z > 1e-6) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    coverage = frame.mask[0, row.clamp(0, height - 1), col.clamp(0, width - 1), 0]
    return ~inside | (coverage < 0.5)


def hand_log_scale_max(avatar: Avatar, most: float) -> torch.Tensor | None:
    """``[N]`` upper bounds on ``avatar.log_scales``: ``log(most * start)`` on the hands' Gaussians, +inf elsewhere;
    None when ``most`` is 0 (no bound)."""
    if most <= 0:
        return None
    hands = torch.as_tensor(np.isin(avatar.part_labels.cpu().numpy(), HAND_PARTS), device=avatar.log_scales.device)
    bound = torch.log(avatar.init_scales.to(avatar.log_scales.device) * most)
    return torch.where(hands, bound, torch.full_like(bound, math.inf))


def frame_loss(render: AvatarRender, frame: TrainFrame, w: FrameLossWeights, image_weight: float,
               loss_cfg: LossConfig, background: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of one render's data terms, over ``loss_window``, and the terms themselves (detached 0-d
    tensors: the caller reads them back all at once); ``image_weight`` is ``w.image`` or ``w.image_refined``.

    ``background [3]`` is what ``render`` was drawn over (None = black); the frame's premultiplied
    colour targets are composited over the same colour."""
    rows, cols = loss_window(frame.mask[0], render.alpha)
    frame = crop_frame(frame, rows, cols)
    render = AvatarRender(*(getattr(render, f.name)[rows, cols] for f in dataclasses.fields(AvatarRender)))
    rgb = render.rgb[None]
    alpha = render.alpha[None]
    mask = frame.mask
    background = rgb.new_zeros(3) if background is None else background
    terms: dict[str, torch.Tensor] = {}
    target = over_background(frame.rgb, mask, background)
    terms["image"] = image_weight * losses.image_loss(rgb, target, frame.image_weight, loss_cfg.ssim_weight)
    terms["mask"] = w.mask * losses.mask_loss(alpha, mask)
    if w.hand_mask > 0 and frame.hand_region is not None and frame.has_hands:
        # A mean over the whole image (like the mask term) counting only hand pixels, as the paper's
        # weight of 50 assumes: hands are small, so their silhouette needs the boost.
        terms["hand_mask"] = w.hand_mask * ((alpha - mask).abs() * frame.hand_region).mean()
    both = mask * (alpha.detach() > 0.5).to(mask.dtype)
    if w.depth > 0 and frame.depth is not None:
        terms["depth"] = w.depth * losses.depth_loss(render.depth[None], frame.depth, both)
    if w.normal > 0 and frame.normal is not None:
        terms["normal"] = w.normal * losses.normal_loss(render.normal[None], frame.normal, both)
    if w.part_seg > 0 and frame.part_seg is not None:
        terms["part_seg"] = w.part_seg * losses.part_seg_loss(render.part[None], frame.part_seg)
    if w.albedo > 0 and frame.albedo is not None:
        albedo = over_background(frame.albedo, mask, background)
        terms["albedo"] = w.albedo * losses.image_loss(rgb, albedo, None, loss_cfg.ssim_weight)
    total = sum(terms.values())
    return total, {k: v.detach() for k, v in terms.items()}


class Trainer:
    """Steppable, resumable training of one avatar.

    ``subject_frame``: the photo's TrainFrame; ``frames``: generated/imported FrameSet (may be
    empty); ``betas`` / ``expression``: the subject's shape. ``device``: where to train (None: where
    the avatar is); the avatar moves there in place, the body model is copied there when it is
    elsewhere (the caller's stays where it is: a viewer may be posing with it).
    """

    def __init__(self, avatar: Avatar, body: BodyModel, subject_frame: TrainFrame, frames: FrameSet | None,
                 config: Config, betas: np.ndarray, expression: np.ndarray | None = None,
                 device: torch.device | None = None):
        self.avatar = avatar.to(avatar.template.device if device is None else device)
        self.device = self.avatar.template.device  # with its index ("cuda:0"), for comparisons
        self.body = body if body.v_template.device == self.device else copy.deepcopy(body).to(self.device)
        self.config = copy.deepcopy(config)
        self.photo = subject_frame.to(self.device)
        self.frames = frames
        self.betas = np.asarray(betas, np.float32)
        self.expression = None if expression is None else np.asarray(expression, np.float32)
        self.num_generated = 0 if frames is None else len(frames)
        self.register_window = registration_window(config, frames)
        self.total = config.train.iterations + self.register_window[1] - self.register_window[0]
        self.step_index = 0
        self.history: list[dict[str, float]] = []
        self.sampler = BalancedSampler(self.num_generated, config.sampling.photo_share,
                                       balanced=config.ablation.balanced_sampling, seed=config.train.seed)
        self.frame_deltas = torch.nn.ParameterDict({
            name: torch.nn.Parameter(torch.zeros(self.num_generated, size, device=self.device))
            for name, (size, _) in REFINED_PARAMS.items()
        })
        # The photo's own correction: prep's fit misplaces joints by up to half a radian, and every colour the
        # photo teaches lands where that pose puts it.
        self.photo_deltas = torch.nn.ParameterDict({
            name: torch.nn.Parameter(torch.zeros(1, REFINED_PARAMS[name][0], device=self.device))
            for name in PHOTO_REFINED
        })
        self.photo_shift = torch.nn.Parameter(torch.zeros(1, 3, device=self.device))  # metres, added to transl
        self.adjacency = losses.mesh_adjacency(avatar.faces, avatar.num_gaussians)
        self.photo_facing = photo_facing(self.avatar, self.body, self.photo)
        self.face_hand_weight = torch.where(avatar.rigid, config.loss.laplacian_offsets_face_hands /
                                            config.loss.laplacian_offsets, 1.0)
        self.optimizer = self._make_optimizer()
        self.log_scale_max = hand_log_scale_max(avatar, config.optim.hand_scale_max)
        self._lock = threading.Lock()
        self._pending_loss: LossConfig | None = None
        self._decayed = False
        self._hands: dict[int, np.ndarray] = {}
        torch.manual_seed(config.train.seed)

    # -- set-up --------------------------------------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Adam:
        o = self.config.optim
        a = self.avatar
        groups = [
            {"name": "offsets", "params": [a.offsets], "lr": o.lr_offsets},
            {"name": "scales", "params": [a.log_scales], "lr": o.lr_scales},
            {"name": "colors", "params": [a.colors], "lr": o.lr_colors},
            {"name": "part_colors", "params": [a.part_colors], "lr": o.lr_part_colors},
            {"name": "triplane", "params": list(a.pose_offsets.triplane.parameters()), "lr": o.lr_triplane},
            {"name": "mlp", "params": list(a.pose_offsets.mlp.parameters()), "lr": o.lr_mlp},
        ]
        if self.num_generated:
            body = [p for n, p in self.frame_deltas.items() if not REFINED_PARAMS[n][1]]
            hands = [p for n, p in self.frame_deltas.items() if REFINED_PARAMS[n][1]]
            groups += [{"name": "smplx", "params": body, "lr": o.lr_smplx},
                       {"name": "smplx_hands", "params": hands, "lr": o.lr_smplx_hands}]
        if self.moves_photo:
            groups.append({"name": "photo_pose", "params": list(self.photo_deltas.values()), "lr": o.lr_photo_pose})
        if self.registers_photo:  # moves only while registering
            groups.append({"name": "photo_shift", "params": [self.photo_shift], "lr": 0.0})
        for g in groups:
            g["initial_lr"] = g["lr"]
        return torch.optim.Adam(groups, eps=o.eps)

    # -- live settings ---------------------------------------------------------------------------

    def set_loss_weights(self, loss: LossConfig) -> None:
        """Change loss weights from any thread; applied at the next step boundary."""
        with self._lock:
            self._pending_loss = copy.deepcopy(loss)

    def _apply_pending(self) -> None:
        with self._lock:
            if self._pending_loss is not None:
                self.config.loss = self._pending_loss
                self._pending_loss = None

    # -- one step ------------------------------------------------------------------------------

    def frame(self, index: int) -> TrainFrame:
        """Training frame ``index`` (0 = photo) with the learned per-frame correction applied."""
        if index == 0:
            return self.refined_photo()
        if index not in self._hands:  # computed once per frame: it never changes
            self._hands[index] = hand_region(self.frames.part_seg[index - 1].astype(np.float32) / 255.0)
        frame = generated_frame(self.frames, index - 1, self.betas, self.expression, self._hands[index])
        frame = frame.to(self.device)
        params = dict(frame.params)
        for name, delta in self.frame_deltas.items():
            if name in params:
                params[name] = params[name] + delta[index - 1][None]
        frame.params = params
        return frame

    @property
    def refines_photo(self) -> bool:
        """Whether training learns a correction of the photo's pose (``optim.lr_photo_pose > 0``)."""
        return self.config.optim.lr_photo_pose > 0

    @property
    def registers_photo(self) -> bool:
        """Whether the photo's pose and shift are registered to the avatar (``sampling.register_photo_at``)."""
        return self.register_window[1] > self.register_window[0]

    @property
    def registering(self) -> bool:
        """Whether the next step is a registration step."""
        return self.register_window[0] <= self.step_index < self.register_window[1]

    @property
    def moves_photo(self) -> bool:
        """Whether the photo's pose may differ from the fit (refined or registered)."""
        return self.refines_photo or self.registers_photo

    def refined_photo(self) -> TrainFrame:
        """The photo's TrainFrame with its learned pose correction (the photo itself when it is not moved)."""
        if not self.moves_photo:
            return self.photo
        frame = copy.copy(self.photo)
        changes = self._photo_changes()
        frame.params = {name: value + changes[name] if name in changes else value
                        for name, value in self.photo.params.items()}
        return frame

    def _photo_changes(self) -> dict[str, torch.Tensor]:
        """What training adds to the photo's fitted parameters: the pose correction, and the registered shift on
        ``transl`` when it registers (each ``[1, k]``)."""
        changes = dict(self.photo_deltas.items())
        if self.registers_photo:
            changes["transl"] = self.photo_shift
        return changes

    def photo_params(self, fitted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``fitted`` (the photo's SMPL-X parameters from prep, flat arrays) with the correction training learned
        or registered added (``optim.lr_photo_pose``, ``sampling.register_photo_at``; unchanged values when both
        are off)."""
        params = dict(fitted)
        for name, delta in self._photo_changes().items():  # a parameter the fit left out is zero (as the body takes it)
            change = delta.detach().cpu().numpy().reshape(-1)
            params[name] = np.asarray(params.get(name, np.zeros_like(change)), np.float32).reshape(-1) + change
        return params

    def _avatar_steps(self) -> int:
        """Steps taken so far that trained the avatar (all but the registration window's)."""
        first, stop = self.register_window
        return self.step_index - min(max(self.step_index - first, 0), stop - first)

    def _learning_rate_schedule(self) -> None:
        o = self.config.optim
        if not self._decayed and self._avatar_steps() >= int(o.decay_at * self.config.train.iterations):
            for g in self.optimizer.param_groups:
                g["lr"] = g["initial_lr"] * o.decay_factor
            self._decayed = True
        if self.registers_photo:
            scale = o.decay_factor if self._decayed else 1.0
            for g in self.optimizer.param_groups:
                if g["name"] in PHOTO_GROUPS:
                    g["lr"] = o.lr_register if self.registering else g["initial_lr"] * scale

    def _draw(self) -> int:
        """The next frame index: the photo while registering, never the photo before that."""
        if self.registering:
            return 0
        return self.sampler.draw(photo=self.step_index >= self.register_window[0])

    def step(self) -> dict[str, float]:
        """One optimisation step; returns its metrics."""
        self._apply_pending()
        self._learning_rate_schedule()
        start = time.perf_counter()
        registering = self.registering
        index = self._draw()
        frame = self.frame(index)
        w = frame_weights(self.config, frame.kind)
        if registering:
            w = registration_weights(w)
        cfg = self.config
        h, wd = frame.rgb.shape[1:3]
        background = training_background(cfg.train.background, cfg.train.seed, self.step_index).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)

        body_out = self.body(**frame.params)
        shaped, transforms = body_out.shaped[0], body_out.joint_transforms[0]
        skinning = self.avatar.skinning(shaped, transforms)  # shared by the base and refined posing
        base = self.avatar.pose(shaped, transforms, None, skinning=skinning)
        base_render = render_posed(base, frame.viewmat, frame.K, wd, h, cfg.render, background)
        loss, terms = frame_loss(base_render, frame, w, w.image, cfg.loss, background)
        readouts = {f"base_{k}": v for k, v in terms.items()}
        refined_render = None
        if cfg.ablation.pose_offsets and not registering:
            refined = self.avatar.pose(shaped, transforms, frame.params["body_pose"].reshape(-1), skinning=skinning)
            refined_render = render_posed(refined, frame.viewmat, frame.K, wd, h, cfg.render, background)
            refined_loss, terms = frame_loss(refined_render, frame, w, w.image_refined, cfg.loss, background)
            loss = loss + refined_loss
            readouts.update({f"refined_{k}": v for k, v in terms.items()})
            loss = loss + cfg.loss.laplacian_refined_offsets * losses.laplacian_loss(refined.offsets, self.adjacency)
        regularisers = self._photo_prior(cfg.loss.register_pose_prior) if registering else self._regularisers()
        loss = loss + sum(regularisers.values())
        readouts.update({k: v.detach() for k, v in regularisers.items()})
        loss.backward()
        if registering:  # the avatar is held still: only the photo's pose and shift move
            for g in self.optimizer.param_groups:
                if g["name"] not in PHOTO_GROUPS:
                    for p in g["params"]:
                        p.grad = None
        elif frame.kind == "photo" and self.avatar.colors.grad is not None:
            # Gaussians facing away from the photo show only through gaps in the front, where the
            # photo would paint them with whatever fills the gap (the back became coloured noise in
            # every other view), and those over the photo's backdrop see no colour of the person:
            # they keep their colours, changed only by frames that see them.
            keep = ~self.photo_facing | outside_mask(base.means.detach(), frame)
            self.avatar.colors.grad[keep] = 0.0
        self.optimizer.step()
        if self.log_scale_max is not None:
            with torch.no_grad():
                torch.minimum(self.avatar.log_scales, self.log_scale_max, out=self.avatar.log_scales)
        self.step_index += 1
        shown = refined_render if refined_render is not None else base_render
        readouts["loss"] = loss.detach()
        readouts["psnr"] = losses.psnr_tensor(shown.rgb[None], over_background(frame.rgb, frame.mask, background),
                                              frame.mask)
        # One read-back for every number of the step (each float() would stall a GPU on its own).
        metrics = dict(zip(readouts, torch.stack(list(readouts.values())).tolist()))
        metrics.update({"step": self.step_index, "frame": index, "seconds": time.perf_counter() - start})
        self.history.append({"step": self.step_index, "frame": index, "loss": metrics["loss"],
                             "psnr": metrics["psnr"], "kind": 0.0 if index == 0 else 1.0})
        return metrics

    def _regularisers(self) -> dict[str, torch.Tensor]:
        """Laplacian smoothness of offsets, scale changes and colours (the body mesh is not uniform:
        scales are smoothed as changes from their edge-length-based start, not as raw values)."""
        a, l = self.avatar, self.config.loss
        adj = self.adjacency
        return {
            "reg_offsets": l.laplacian_offsets * losses.laplacian_loss(a.offsets, adj, self.face_hand_weight),
            "reg_scales": l.laplacian_scales * losses.laplacian_loss((a.log_scales.exp() - a.init_scales)[:, None], adj),
            "reg_colors": l.laplacian_colors * losses.laplacian_loss(a.colors, adj),
            "reg_scale_floor": l.scale_floor_weight * losses.scale_floor_loss(a.log_scales, a.init_scales,
                                                                              l.scale_floor),
            **({"reg_scale_ceiling": l.scale_ceiling_weight * losses.scale_ceiling_loss(a.log_scales, a.init_scales,
                                                                                      l.scale_ceiling)}
               if l.scale_ceiling_weight > 0 else {}),  # off by default (see LossConfig)
            **(self._photo_prior(l.photo_pose_prior) if self.refines_photo else {}),
        }

    def _photo_prior(self, weight: float) -> dict[str, torch.Tensor]:
        """``weight`` times the sum of squares of the photo's pose correction (radians)."""
        return {"reg_photo_pose": weight * sum((d ** 2).sum() for d in self.photo_deltas.values())}

    @property
    def done(self) -> bool:
        return self.step_index >= self.total

    # -- outputs ---------------------------------------------------------------------------------

    def snapshot(self) -> TrainingSnapshot:
        """Detached CPU copies of the avatar's tensors and the latest metrics (safe to hand to another thread)."""
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.avatar.state_dict().items()}
        last = self.history[-1] if self.history else {}
        return TrainingSnapshot(step=self.step_index, total=self.total, metrics=dict(last), avatar_state=state,
                                draw_counts=self.sampler.counts.copy())

    def save(self, path: str | Path) -> None:
        """Checkpoint atomically (tensors only: loads with ``torch.load(weights_only=True)``)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step_index,
            "decayed": self._decayed,
            "avatar": self.avatar.state_dict(),
            "frame_deltas": {k: v.detach().clone() for k, v in self.frame_deltas.items()},
            "photo_deltas": {k: v.detach().clone() for k, v in self.photo_deltas.items()},
            "photo_shift": self.photo_shift.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": {k: torch.as_tensor(v) for k, v in self.sampler.state_dict().items()},
            "history": {k: torch.tensor([h[k] for h in self.history]) for k in ("step", "frame", "loss", "psnr", "kind")},
            "torch_rng": torch.get_rng_state(),
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def load(self, path: str | Path) -> None:
        """Resume from a checkpoint written by ``save`` (never unpickles arbitrary objects)."""
        path = Path(path)
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except FileNotFoundError:
            raise UserError("checkpoint not found", path) from None
        except Exception as err:  # noqa: BLE001 - any failure to read is a bad file for the user
            raise UserError(f"not a readable checkpoint ({type(err).__name__})", path) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"not a {CHECKPOINT_FORMAT} checkpoint", path)
        trained_with = len(state["frame_deltas"]["global_orient"])
        if trained_with != self.num_generated:
            raise UserError(f"the checkpoint was trained with {trained_with} generated/imported frames, this run has "
                            f"{self.num_generated}; resume with the same frame settings and --frames files", path)
        self.avatar.load_state_dict(state["avatar"])
        with torch.no_grad():
            for k, v in state["frame_deltas"].items():
                self.frame_deltas[k].copy_(v)
            for k, v in state.get("photo_deltas", {}).items():
                self.photo_deltas[k].copy_(v)
            if "photo_shift" in state:
                self.photo_shift.copy_(state["photo_shift"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict({k: v.numpy() for k, v in state["sampler"].items()})
        self.step_index = int(state["step"])
        self._decayed = bool(state["decayed"])
        hist = state["history"]
        self.history = [{k: float(hist[k][i]) for k in hist} for i in range(len(hist["step"]))]
        torch.set_rng_state(state["torch_rng"])
