"""Oracle training frames: the ground-truth person in the generator's motion poses.

PERSONA trains on frames of a pose-guided video diffusion model: new poses of the person with real,
slightly inconsistent appearance. Our offline generator re-renders the photo-warmed avatar instead,
so its frames carry no new appearance. On synthetic people the benchmark knows the truth, so it can
stand in for the video model: the dressed GT person rendered in the same (motion, frame) schedule the
generator uses, laid out like generated frames so any method trains on them unchanged.

What each frame holds (as ``generate_frames``):
- ``rgb``: the GT render on black, premultiplied by its coverage; ``mask``: that coverage. A video
  model draws the person as big as the driving skeleton, so the GT person is framed by its own rest
  height (``driving_camera``), the stored camera frames the fitted body the generator's way; the two
  bodies then overlap up to their shape difference.
- ``depth`` / ``normal`` / ``part_seg``: the *fitted* body in the frame's pose through the stored
  camera (a real pipeline estimates geometry of the person it knows, as ``core.frames.imported`` does).
- ``params``: the motion frame's pose with the fitted shape (the driving pose, what a real pipeline
  knows), so the trainer's per-frame SMPL-X correction still has work to do.
The schedule is the generator's (distinct poses spread evenly over the clips), except that it also
skips the poses the held-out set evaluates (``MOTION_PHASES`` of each clip; ``oracle_schedule``).

``degrade_frames`` mimics a video model's frame-to-frame inconsistency on the RGB only: per frame a
seeded colour gain and offset and a mild blur; geometry targets stay clean.

``oracle_frames(..., drift=True)`` mimics a video model's identity drift instead: frame ``k`` renders
the person with its outfit's look drifted (``core.synthetic_people.drifted_person(person, k)``:
garment colours and patterns wander, some frames get a garment clearly wrong), so masks and geometry
targets are exactly the clean oracle's and only the appearance departs from the person.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from core.avatar.avatar import Avatar
from core.body import BodyModel
from core.config import FramesConfig
from core.frames.driving import driving_camera
from core.frames.frameset import FrameSet, pack_frame
from core.frames.generated import body_extent, front_camera, motion_schedule
from core.motion import load_builtin
from core.prep.geometry import render_geometry
from core.render.mesh import MeshRenderer
from core.synthetic_people import MOTION_PHASES, SyntheticPerson, dressed_vertices, drifted_person, render_person

ORACLE_SOURCE = "oracle"
DRIFT_SOURCE = "oracle-drift"
# Degradation defaults: per-channel gain within ±8 %, offset within ±0.03 (of full scale), Gaussian
# blur of sigma 0.6 px: a visible but mild softening at the training resolution.
GAIN_SPREAD, OFFSET_SPREAD, BLUR_SIGMA_PX = 0.08, 0.03, 0.6


def heldout_frames(motions: list[str]) -> list[tuple[str, int]]:
    """The (motion, frame index) pairs ``heldout_views`` evaluates."""
    return [(name, int(phase * load_builtin(name).num_frames)) for name in motions for phase in MOTION_PHASES]


ORACLE_GEOMETRY = ("fitted", "person")  # where oracle frames' geometry targets come from


def oracle_schedule(motions: list[str], count: int) -> list[tuple[str, int]]:
    """The generator's ``motion_schedule`` with the held-out poses excluded as well: distinct poses,
    none the same pose (``core.frames.generated.same_pose``) as one ``heldout_views`` evaluates."""
    return motion_schedule(motions, count, exclude=heldout_frames(motions))


def motion_params(name: str, index: int, shape: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Frame ``index`` of built-in motion ``name`` (pose + root translation) with ``shape``'s betas /
    expression, as 1-D float32 arrays (the generator's per-frame parameters)."""
    frame = {k: np.asarray(v, np.float32).reshape(-1) for k, v in load_builtin(name).frame(index).items()
             if k != "expression"}
    return {**frame, **{k: np.asarray(shape[k], np.float32).reshape(-1) for k in ("betas", "expression") if k in shape}}


def oracle_frames(avatar: Avatar, body: BodyModel, person: SyntheticPerson, subject_params: dict[str, np.ndarray],
                  config: FramesConfig, renderer: MeshRenderer,
                  progress: Callable[[float], None] | None = None, drift: bool = False,
                  geometry: str = "fitted") -> FrameSet:
    """Frames of the GT ``person`` along ``oracle_schedule`` at ``config.resolution``² pixels.

    ``avatar`` (the warmed one) places the stored camera exactly as ``generate_frames`` would;
    ``subject_params`` supplies the fitted betas / expression. Labels are ``"motion:index"``.
    ``drift``: frame ``k`` shows ``drifted_person(person, k)`` (same silhouette and geometry targets,
    drifted outfit colours / patterns; source ``DRIFT_SOURCE``).
    ``geometry``: where the depth / normal / part targets come from: "fitted", the bare fitted body (what
    ``frames import`` gives an imported video); "person", the dressed GT person in the frame's camera
    (what geometry estimators run on the video frames give PERSONA: clothes and hair included).
    """
    if geometry not in ORACLE_GEOMETRY:
        raise ValueError(f"geometry must be one of {ORACLE_GEOMETRY}, got {geometry!r}")
    size = config.resolution
    center_y, height = body_extent(avatar)
    viewmat, K = front_camera(size, config.camera_distance, center_y, height)
    gt_viewmat, gt_K = driving_camera(body, person.betas, size, config.camera_distance)
    schedule = oracle_schedule(config.motions, config.num_generated)
    frames, labels = [], []
    for k, (name, index) in enumerate(schedule):
        params = motion_params(name, index, subject_params)
        gt_pose = {key: v for key, v in params.items() if key not in ("betas", "expression")}
        shown = drifted_person(person, k) if drift else person
        gt = render_person(body, shown, gt_pose, gt_viewmat, gt_K, size, renderer)
        if geometry == "person":
            drawn = render_geometry(body, {**gt_pose, "betas": person.betas}, gt_K, size, size, renderer,
                                    viewmat=gt_viewmat, vertices=dressed_vertices(body, shown, gt_pose))
        else:
            drawn = render_geometry(body, params, K, size, size, renderer, viewmat=viewmat)
        targets = {key: drawn[key] for key in ("depth", "normal", "part_seg")}
        frames.append(pack_frame({"rgb": gt.rgb, "mask": gt.mask[..., None], **targets, "K": K, "viewmat": viewmat,
                                  "params": params}))
        labels.append(f"{name}:{index}")
        if progress is not None:
            progress((k + 1) / len(schedule))
    return FrameSet.from_frames(frames, source=DRIFT_SOURCE if drift else ORACLE_SOURCE, labels=labels)


def degrade_rgb(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One frame's premultiplied ``rgb [H, W, 3]`` (float in [0, 1]) with coverage ``mask [H, W]``, as a
    video model might draw it: colour gain ``1 ± GAIN_SPREAD`` and offset ``± OFFSET_SPREAD`` per channel
    (uniform), then a Gaussian blur of ``BLUR_SIGMA_PX``; stays premultiplied (each channel ≤ coverage)."""
    gain = 1.0 + rng.uniform(-GAIN_SPREAD, GAIN_SPREAD, 3)
    offset = rng.uniform(-OFFSET_SPREAD, OFFSET_SPREAD, 3)
    alpha = mask[..., None]
    shifted = np.clip(rgb * gain + offset * alpha, 0.0, alpha)  # the offset applies to the person, not the black
    blurred = cv2.GaussianBlur(shifted.astype(np.float32), (0, 0), BLUR_SIGMA_PX)
    return np.minimum(blurred, alpha).astype(np.float32)


def degrade_frames(frames: FrameSet, seed: int) -> FrameSet:
    """A copy of ``frames`` with every frame's RGB degraded by ``degrade_rgb`` (frame ``i`` draws from
    the generator seeded ``[seed, i]``); masks, geometry, cameras and params are shared, unchanged."""
    rgb = np.empty_like(frames.rgb)
    mask = frames.mask.astype(np.float32) / 255.0
    for i in range(len(frames)):
        degraded = degrade_rgb(frames.rgb[i].astype(np.float32) / 255.0, mask[i], np.random.default_rng([seed, i]))
        rgb[i] = np.rint(degraded * 255.0).astype(np.uint8)
    return FrameSet(rgb=rgb, mask=frames.mask, depth=frames.depth, normal=frames.normal, part_seg=frames.part_seg,
                    K=frames.K, viewmat=frames.viewmat, params=frames.params, source=frames.source + "-noisy",
                    labels=list(frames.labels))
