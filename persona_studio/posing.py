"""The pose the viewport shows the avatar in, and the thread that poses it.

``Pose`` holds every SMPL-X pose argument (axis-angle, radians) and the expression; the Pose panel
and the motion timeline make new ``Pose`` values, and ``AvatarPoser`` turns the latest one (with the
latest avatar parameters, e.g. a training snapshot) into splats for the viewport, in its own thread,
so neither the UI nor training ever waits for posing.

Posing with pose-dependent offsets (``refined=True``) runs the avatar's MLP over every Gaussian near a
changed joint: after new avatar parameters (a training snapshot) that is every Gaussian (~0.2 s for 55k
on a 2-core CPU), after a one-joint slider change only the few near it (the MLP keeps the rest), which
costs little more than skinning. So while a slider moves, the poser first shows the base pose (skinning
only) only when the last refined posing took ``PREVIEW_GAIN`` seconds longer than the base posing, and
then the refined one once the pose has rested for ``REFINE_DELAY`` and the preview is on screen (so the
two do not compete for the CPU; the offsets are at most centimetres). Otherwise the refined pose goes
straight to the screen. The scenes of an interactive change are handed over as ``moving``: the viewport
draws them at reduced resolution, and at full resolution once the pose rests.

The viewport needs neither normals nor the posed body mesh, so the poser skips both
(``Avatar.pose(..., normals=False)``, ``PoseTransforms``).
"""
from __future__ import annotations

import math
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from core.avatar.avatar import Avatar, PosedGaussians
from core.body import BodyModel, joint_transforms
from core.body.skeleton import POSE_SLICES
from core.motion import POSE_FIELD_JOINTS, POSE_FIELDS, Motion, mirror_axis_angle
from core.motion.joint_limits import JOINT_LIMITS, LEFT_HAND_JOINT_NAMES

POSE_WIDTHS = {"global_orient": 3, "body_pose": 63, "left_hand_pose": 45, "right_hand_pose": 45, "jaw_pose": 3,
               "leye_pose": 3, "reye_pose": 3, "transl": 3}
EYE_KEYS = ("leye_pose", "reye_pose")
HAND_KEYS = {"left": "left_hand_pose", "right": "right_hand_pose"}
REFINE_DELAY = 0.1  # seconds a pose must rest after a quick preview before the pose offsets are computed
PREVIEW_WAIT = 1.0  # seconds at most the offsets wait for the preview to reach the screen
# Quick previews while refined posing takes this many seconds longer than base posing: a preview costs a
# render and a UI frame of its own before the refined pose (~0.1 s on a 2-core CPU), so it only pays when
# the pose MLP has much to do (every Gaussian after a training snapshot), not for a one-joint slider change.
PREVIEW_GAIN = 0.1
THUMB_CURL_AXIS = np.array([1.0, 0.0, -1.0]) / np.sqrt(2.0)  # left thumb; joint_limits documents the axis


def joint_slot(joint: str) -> tuple[str, int]:
    """(pose argument, offset of the joint's 3 values in it) for a joint name such as ``left_elbow``."""
    for key, joints in POSE_FIELD_JOINTS.items():
        if joint in joints:
            return key, 3 * joints.index(joint)
    raise KeyError(f"no pose slider for joint {joint!r}")


@dataclass(frozen=True)
class Pose:
    """A whole-body SMPL-X pose: ``values`` maps each ``POSE_WIDTHS`` key to a flat float32 array
    (axis-angle radians; ``transl`` metres) and ``expression [E]`` holds the expression coefficients.
    Immutable: every change makes a new Pose, so one can be handed to the posing thread as it is."""

    values: dict[str, np.ndarray]
    expression: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @classmethod
    def rest(cls, expression: np.ndarray | None = None) -> "Pose":
        """The zero (T-) pose at the origin with ``expression [E]`` (default none)."""
        values = {key: np.zeros(width, np.float32) for key, width in POSE_WIDTHS.items()}
        return cls(values, np.zeros(0, np.float32) if expression is None else np.asarray(expression, np.float32))

    def joint(self, name: str) -> np.ndarray:
        """Axis-angle ``[3]`` of joint ``name``."""
        key, offset = joint_slot(name)
        return self.values[key][offset:offset + 3].copy()

    def with_joint(self, name: str, rotation) -> "Pose":
        """This pose with joint ``name`` set to axis-angle ``rotation [3]``."""
        key, offset = joint_slot(name)
        array = self.values[key].copy()
        array[offset:offset + 3] = np.asarray(rotation, np.float32)
        return self.with_values(**{key: array})

    def with_values(self, **arrays) -> "Pose":
        """This pose with whole pose arguments replaced (e.g. ``body_pose=[63]``)."""
        values = dict(self.values)
        for key, array in arrays.items():
            array = np.asarray(array, np.float32).reshape(-1)
            if key not in POSE_WIDTHS or array.shape[0] != POSE_WIDTHS[key]:
                raise ValueError(f"{key} must be one of {list(POSE_WIDTHS)} with {POSE_WIDTHS.get(key)} values")
            values[key] = array.copy()
        return replace(self, values=values)

    def with_expression(self, index: int, value: float) -> "Pose":
        expression = self.expression.copy()
        expression[index] = value
        return replace(self, expression=expression)

    def arrays(self) -> dict[str, np.ndarray]:
        """The pose as ``{argument: [k]}`` copies, expression included when it has one: a pose spec of
        ``core.export.poses.pose_params`` (exports in this pose)."""
        out = {key: value.copy() for key, value in self.values.items()}
        if self.expression.size:
            out["expression"] = self.expression.copy()
        return out

    def params(self, betas: np.ndarray) -> dict[str, torch.Tensor]:
        """``BodyModel.forward`` arguments, ``[1, k]`` float32 tensors, with the avatar's shape ``betas [B]``
        (the avatar subtracts its own shape, so the shape must be passed for it to cancel)."""
        params = {key: torch.as_tensor(value)[None] for key, value in self.values.items()}
        params["betas"] = torch.as_tensor(np.asarray(betas, np.float32).reshape(1, -1))
        if self.expression.size:
            params["expression"] = torch.as_tensor(self.expression)[None]
        return params


def fit_length(values, count: int) -> np.ndarray:
    """``values [k]`` cut or zero-padded to ``[count]`` float32 (coefficient counts differ between fits
    and body models; the leading coefficients carry the most)."""
    values = np.asarray(values if values is not None else [], np.float32).reshape(-1)
    out = np.zeros(count, np.float32)
    out[:min(count, values.size)] = values[:count]
    return out


def hand_curl(amount: float, side: str) -> np.ndarray:
    """One hand's pose ``[45]`` with every finger joint curled towards the palm by ``amount`` in [0, 1]
    of its range (0 = flat hand, 1 = fist). ``side``: "left" or "right" (the mirror image)."""
    amount = float(np.clip(amount, 0.0, 1.0))
    pose = np.zeros((len(LEFT_HAND_JOINT_NAMES), 3), np.float32)
    for i, joint in enumerate(LEFT_HAND_JOINT_NAMES):
        (x_lo, x_hi), _, (z_lo, z_hi) = JOINT_LIMITS[joint]
        if "thumb" in joint:
            # The thumb curls about a diagonal axis: go as far as both of its components allow.
            angle = min(x_hi / THUMB_CURL_AXIS[0], z_lo / THUMB_CURL_AXIS[2])
            pose[i] = amount * angle * THUMB_CURL_AXIS
        else:
            pose[i, 2] = amount * z_lo  # -z curls a finger towards the palm
    if side == "right":
        pose = mirror_axis_angle(pose)
    elif side != "left":
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    return pose.reshape(-1)


def motion_pose(motion: Motion, index: int, base: Pose) -> Pose:
    """``base`` with every pose argument of ``motion``'s frame ``index`` (and its expression if it has one)."""
    frame = motion.frame(index)
    pose = base.with_values(**{key: frame[key] for key in POSE_WIDTHS if key in frame})
    if "expression" in frame and base.expression.size:
        expression = base.expression.copy()
        values = np.asarray(frame["expression"], np.float32).reshape(-1)
        count = min(len(values), len(expression))
        expression[:count] = values[:count]
        pose = replace(pose, expression=expression)
    return pose


class EditHistory:
    """Undo and redo for an editor's state (any value: the Pose tab keeps its pose and hand curls).

    ``record(before, control, now)`` is called before each edit with the state it replaces; edits of one
    ``control`` (a slider) less than ``merge_seconds`` apart are one step, so a drag undoes at once. A
    ``control`` of None (Reset, Photo pose) is always a step of its own. A new edit clears the redo list;
    at most ``limit`` steps are kept.
    """

    def __init__(self, limit: int = 200, merge_seconds: float = 1.0):
        self.limit, self.merge_seconds = limit, merge_seconds
        self._undo: list = []
        self._redo: list = []
        self._last: tuple[str | None, float] = (None, -math.inf)

    def record(self, before, control: str | None, now: float) -> None:
        last_control, last_time = self._last
        self._last = (control, now)
        if control is not None and control == last_control and now - last_time < self.merge_seconds:
            return
        self._undo.append(before)
        del self._undo[:-self.limit]
        self._redo.clear()

    def undo(self, current):
        """The state before the last step (``current`` goes on the redo list), or None when there is none."""
        return self._step(self._undo, self._redo, current)

    def redo(self, current):
        """The state the last undo left (``current`` goes back on the undo list), or None."""
        return self._step(self._redo, self._undo, current)

    def _step(self, source: list, target: list, current):
        self._last = (None, -math.inf)  # the next edit starts a new step
        if not source:
            return None
        target.append(current)
        return source.pop()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)


def pose_motion(pose: Pose, name: str = "pose", fps: float = 30.0) -> Motion:
    """``pose`` as a one-frame Motion (its expression too): what ``motion_pose`` reads back, and a clip that
    ``save_motion`` writes and the command line takes as ``--pose motion:FILE:0``."""
    frame = {key: value[None] for key, value in pose.values.items()}
    expression = pose.expression[None] if pose.expression.size else None
    return Motion(**{key: frame[key] for key in POSE_FIELDS}, transl=frame["transl"], fps=fps, name=name,
                  expression=expression)


class PoseTransforms:
    """What the avatar needs of the body model for a pose: the canonical shaped vertices ``[V, 3]``
    (template + shape + expression, metres) and the joint transforms ``[J, 4, 4]``.

    Equal to ``BodyModel.forward``'s ``shaped[0]`` and ``joint_transforms[0]``, but the shape is computed
    once per (betas, expression) and a pose change costs only the forward kinematics: the posed mesh,
    landmarks and pose correctives that ``forward`` also makes are of no use to the avatar (~3 ms instead
    of ~11 ms per slider change on one core). No autograd.
    """

    def __init__(self, body: BodyModel):
        self.body = body
        self._shape_key: tuple[bytes, bytes] | None = None
        self._shaped: torch.Tensor | None = None  # [V, 3]
        self._rest_joints: torch.Tensor | None = None  # [1, J, 3]

    def __call__(self, pose: Pose, betas: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(shaped [V, 3], transforms [J, 4, 4])`` of ``pose`` with shape ``betas [B]``."""
        betas = np.asarray(betas, np.float32).reshape(-1)
        key = (betas.tobytes(), pose.expression.tobytes())
        with torch.no_grad():
            if key != self._shape_key:
                shape_params = {"betas": torch.as_tensor(betas)[None]}
                if pose.expression.size:
                    shape_params["expression"] = torch.as_tensor(pose.expression)[None]
                out = self.body(**shape_params)
                self._shaped, self._rest_joints, self._shape_key = out.shaped[0], out.rest_joints, key
            full_pose = torch.cat([torch.as_tensor(pose.values[name]) for name in POSE_SLICES]).reshape(1, -1, 3)
            transl = torch.as_tensor(pose.values["transl"])[None]
            _, transforms, _ = joint_transforms(full_pose, self._rest_joints, self.body.parents, transl)
        return self._shaped, transforms[0]


Stamps = tuple[tuple[str, float], ...]  # (stage, ``time.perf_counter()`` when it ended), in path order


@dataclass(frozen=True)
class PosedScene:
    """What the poser handed to the viewport: the scene version, when the pose it shows was asked for
    (``time.perf_counter()``), whether it includes the pose offsets, and when each posing stage ended
    (``stamps``: poser wake-up, body model, offsets + skinning; a quick preview's stages first)."""

    scene_version: int
    requested_at: float
    refined: bool
    pose_seconds: float
    stamps: Stamps = ()


@dataclass
class _Job:
    avatar: Avatar | None = None
    body: BodyModel | None = None
    betas: np.ndarray | None = None
    state: dict | None = None  # avatar parameters to load first (a training snapshot)
    pose: Pose | None = None
    label: str = ""
    frame_camera: bool = False
    interactive: bool = False
    requested_at: float = 0.0
    taken_at: float = 0.0  # when the posing thread took the job


class AvatarPoser:
    """Poses the displayed avatar in a daemon thread; ``publish(posed, label, frame_camera, moving) ->
    version`` (normally ``viewport.set_scene``) receives the splats (``moving``: a step of an interactive
    change; ``posed.normals`` is None).
    Latest wins: requests that arrive while the thread is busy are merged, and only the newest pose is
    drawn.
    """

    def __init__(self, publish: Callable[[PosedGaussians, str, bool, bool], int], quick_preview: bool = True,
                 refine_delay: float = REFINE_DELAY, preview_shown: Callable[[int], bool] | None = None,
                 preview_gain: float = PREVIEW_GAIN):
        """``preview_shown(version)``: whether the viewport shows scene ``version`` (or a newer one) yet.
        ``quick_preview``: allow base-pose previews at all; they are shown while the last refined posing
        took more than ``preview_gain`` seconds longer than the last base posing (or either is not yet timed)."""
        self._publish = publish
        self.quick_preview = quick_preview
        self.preview_gain = float(preview_gain)
        self.pose_seconds: dict[bool, float | None] = {False: None, True: None}  # last base / refined posing
        self.refine_delay = float(refine_delay)
        self._preview_shown = preview_shown
        self._cond = threading.Condition()
        self._job = _Job()
        self._requested = 0  # request counter
        self._done = 0  # request counter the thread has finished
        self._closing = False
        self._avatar: Avatar | None = None
        self._body: PoseTransforms | None = None
        self._betas: np.ndarray | None = None
        self._pose: Pose | None = None
        self._label = ""
        self.published: queue.SimpleQueue[PosedScene] = queue.SimpleQueue()  # every scene handed over
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="avatar-poser", daemon=True)
        self._thread.start()

    # -- requests (UI thread) ---------------------------------------------------------------------
    def set_avatar(self, avatar: Avatar, body: BodyModel, betas: np.ndarray, label: str,
                   frame_camera: bool = True) -> None:
        """Show a new avatar posed by ``body`` (shared, read-only) with shape ``betas [B]``; the camera
        re-aims at it when ``frame_camera``. Parameters waiting for the previous avatar are dropped."""
        self._request(avatar=avatar, body=body, betas=np.asarray(betas, np.float32), state=None, label=label,
                      frame_camera=frame_camera)

    def set_state(self, state: dict[str, torch.Tensor], label: str) -> None:
        """New parameters for the current avatar (``Avatar.state_dict()`` form, e.g. a training snapshot)."""
        self._request(state=state, label=label)

    def set_pose(self, pose: Pose, interactive: bool = True) -> None:
        """Show ``pose``; ``interactive`` (a slider moving) allows the quick base-pose preview first."""
        self._request(pose=pose, interactive=interactive)

    def _request(self, **changes) -> None:
        with self._cond:
            job = self._job
            for key, value in changes.items():
                if key == "frame_camera":
                    job.frame_camera = job.frame_camera or value  # a pending reframe is never lost
                elif key == "interactive":
                    job.interactive = value
                else:
                    setattr(job, key, value)
            if "pose" in changes or not job.requested_at:  # latency counts from the newest pose asked for
                job.requested_at = time.perf_counter()
            self._requested += 1
            self._cond.notify_all()

    @property
    def idle(self) -> bool:
        """Nothing is waiting to be posed or being posed."""
        with self._cond:
            return self._done == self._requested

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._done == self._requested or self._closing, timeout)

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the thread -----------------------------------------------------------------------------------
    def _take_job(self) -> tuple[_Job, int] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._closing or self._requested != self._done)
            if self._closing:
                return None
            job, self._job = self._job, _Job()
            job.taken_at = time.perf_counter()
            return job, self._requested

    def _newer_request_before_refining(self, serial: int, preview_version: int) -> bool:
        """Wait until the preview has rested ``refine_delay`` and is on screen (at most ``PREVIEW_WAIT``);
        True if a newer request came meanwhile (or the poser is closing)."""
        start = time.perf_counter()
        with self._cond:
            while True:
                if self._requested != serial or self._closing:
                    return True
                waited = time.perf_counter() - start
                shown = self._preview_shown is None or self._preview_shown(preview_version)
                if waited >= PREVIEW_WAIT or (waited >= self.refine_delay and shown):
                    return False
                self._cond.wait(0.01)

    def _run(self) -> None:
        # Posing is many small torch ops; idle OpenMP workers of a multi-threaded torch spin and starve
        # the GL render thread and training (a base pose of 55k Gaussians: ~90 ms with one thread, ~800 ms
        # with two on a busy 2-core machine).
        torch.set_num_threads(1)
        while (taken := self._take_job()) is not None:
            job, serial = taken
            try:
                self._apply(job, serial)
            except Exception as err:  # noqa: BLE001  (shown in the status bar; the app carries on)
                traceback.print_exc()
                self.error = f"posing failed: {type(err).__name__}: {err}"
            with self._cond:
                self._done = serial
                self._cond.notify_all()

    def _apply(self, job: _Job, serial: int) -> None:
        if job.avatar is not None:
            self._avatar, self._body, self._betas = job.avatar, PoseTransforms(job.body), job.betas
        if job.pose is not None:
            self._pose = job.pose
        if job.label:
            self._label = job.label
        if self._avatar is None:
            return
        if job.state is not None:
            self._avatar.load_state_dict(job.state)
        pose = self._pose or Pose.rest()
        stamps = [("poser wake-up", job.taken_at)]
        if job.interactive and self._wants_preview():
            preview = self._pose_and_publish(pose, False, job, stamps, moving=True)
            if self._newer_request_before_refining(serial, preview):
                return
            stamps.append(("wait for the preview on screen", time.perf_counter()))
            job = replace(job, frame_camera=False)
        self._pose_and_publish(pose, True, job, stamps, moving=job.interactive)

    def _wants_preview(self) -> bool:
        """Whether an interactive change shows the base pose before the refined one."""
        base, refined = self.pose_seconds[False], self.pose_seconds[True]
        return self.quick_preview and (base is None or refined is None or refined - base > self.preview_gain)

    def _pose_and_publish(self, pose: Pose, refined: bool, job: _Job, stamps: list[tuple[str, float]],
                          moving: bool = False) -> int:
        """Pose, hand the splats to ``publish`` and report them; appends each stage's end to ``stamps``."""
        prefix = "" if refined else "preview: "
        start = time.perf_counter()
        with torch.no_grad():
            shaped, transforms = self._body(pose, self._betas)
            stamps.append((prefix + "body model", time.perf_counter()))
            body_pose = torch.as_tensor(pose.values["body_pose"]) if refined else None
            posed = self._avatar.pose(shaped, transforms, body_pose, normals=False)
        posed_at = time.perf_counter()
        stamps.append((prefix + ("pose offsets + skinning" if refined else "skinning"), posed_at))
        self.pose_seconds[refined] = posed_at - start
        version = self._publish(posed, self._label, job.frame_camera, moving)
        self.published.put(PosedScene(version, job.requested_at, refined, posed_at - start, tuple(stamps)))
        return version
