"""Pose & expression panel: body joints grouped by limb (three rotation sliders each, ranges from the
joint-limit table), body turn, jaw, eyes, expression coefficients, hands open/close, reset; and a
motion timeline (built-in clips or an .npz file) with play / pause / speed / scrubbing.

Every control makes a new ``Pose`` and hands it to ``studio.set_pose``; the posing thread does the rest.
"""
from __future__ import annotations

import math
from pathlib import Path
import time

import dearpygui.dearpygui as dpg
import numpy as np

from core.errors import UserError
from core.motion import MOTION_SUFFIXES, Motion, builtin_motions, load_builtin, load_motion, save_motion
from core.motion.joint_limits import JOINT_LIMITS
from persona_studio.panels.project import dialog_path
from persona_studio.posing import (EYE_KEYS, HAND_KEYS, POSE_WIDTHS, EditHistory, Pose, hand_curl, motion_pose,
                                   pose_motion)

LIMB_GROUPS: dict[str, tuple[str, ...]] = {
    "Torso & head": ("spine1", "spine2", "spine3", "neck", "head"),
    "Left arm": ("left_collar", "left_shoulder", "left_elbow", "left_wrist"),
    "Right arm": ("right_collar", "right_shoulder", "right_elbow", "right_wrist"),
    "Left leg": ("left_hip", "left_knee", "left_ankle", "left_foot"),
    "Right leg": ("right_hip", "right_knee", "right_ankle", "right_foot"),
}
AXES = "xyz"
FIRST_EXPRESSIONS = 10  # shown directly; the rest sit under "More expressions"
NO_MOTION = "(none)"
SLIDER_WIDTH = 150  # pixels
EYE_JOINT = "left_eye_smplhf"  # both eyes share one gaze (and one range)


def expression_range(body) -> tuple[float, float]:
    """Slider range of the expression coefficients: the embedded model's are facial-action strengths
    in [0, 1]; a user's SMPL-X has PCA-like coefficients, roughly within +-2."""
    return (0.0, 1.0) if body is not None and body.source == "embedded" else (-2.0, 2.0)


def photo_pose(base: Pose, subject_params: dict[str, np.ndarray]) -> Pose:
    """``base`` with the photo's fitted body, hand, jaw and eye pose (not its camera-relative root)."""
    keys = [k for k in POSE_WIDTHS if k not in ("global_orient", "transl") and k in subject_params]
    return base.with_values(**{k: subject_params[k] for k in keys})


class PosePanel:
    """The pose sliders and the motion timeline; ``refresh()`` advances a playing motion."""

    title = "Pose & expression"

    def __init__(self, studio):
        self.studio = studio
        self.joint_sliders: dict[tuple[str, int], int] = {}
        self.expression_sliders: list[int] = []
        self.curl_sliders: dict[str, int] = {}
        self.curls = {"left": 0.0, "right": 0.0}  # the hand-curl sliders' values
        self.history = EditHistory()
        self._turn = self._eye_sliders = self._expression_group = self._more_group = None
        self._motion_combo = self._play = self._speed = self._frame = self._loop = self._latency = None
        self.motion_dialog = None
        self.motion: Motion | None = None
        self.playing = False
        self.motion_time = 0.0  # seconds into the clip
        self.motion_frame = -1
        self._last_tick = time.perf_counter()

    @property
    def pose(self) -> Pose:
        return self.studio.pose

    # -- building ---------------------------------------------------------------------------------
    def build(self, parent: int | str) -> None:
        guard = self.studio.guard
        self.motion_dialog = dpg.add_file_dialog(label="Open a motion clip (.npz, .bvh)", show=False, modal=True,
                                                 width=700, height=450, callback=guard(self.on_motion_dialog))
        for suffix in MOTION_SUFFIXES:
            dpg.add_file_extension(suffix, parent=self.motion_dialog)
        self.save_dialog = dpg.add_file_dialog(label="Save the pose (a one-frame .npz motion)", show=False,
                                               modal=True, width=700, height=450, default_filename="pose",
                                               callback=guard(self.on_save_dialog))
        dpg.add_file_extension(".npz", parent=self.save_dialog)
        with dpg.collapsing_header(label=self.title, parent=parent, default_open=True):
            with dpg.group(horizontal=True):
                dpg.add_button(label="Reset", callback=guard(lambda: self.reset()))
                dpg.add_button(label="Undo", callback=guard(lambda: self.undo()))  # also Ctrl+Z
                dpg.add_button(label="Redo", callback=guard(lambda: self.redo()))  # also Ctrl+Y, Ctrl+Shift+Z
            with dpg.group(horizontal=True):
                dpg.add_button(label="Photo pose", callback=guard(lambda: self.use_photo_pose()))
                dpg.add_button(label="Save pose...", callback=guard(lambda: dpg.show_item(self.save_dialog)))
            self._latency = dpg.add_text("", color=(150, 150, 150), wrap=300)
            self._turn = dpg.add_slider_float(label="body turn", min_value=-math.pi, max_value=math.pi, width=SLIDER_WIDTH,
                                              format="%.2f rad", callback=guard(lambda s, v: self.set_turn(v)))
            for group, joints in LIMB_GROUPS.items():
                with dpg.tree_node(label=group, default_open=group == "Left arm"):
                    for joint in joints:
                        self._joint_sliders(joint)
            with dpg.tree_node(label="Face", default_open=False):
                self._joint_sliders("jaw")
                dpg.add_text("eyes")
                self._eye_sliders = [
                    dpg.add_slider_float(label=f"eyes {AXES[axis]}", min_value=JOINT_LIMITS[EYE_JOINT][axis][0],
                                         max_value=JOINT_LIMITS[EYE_JOINT][axis][1], width=SLIDER_WIDTH, format="%.2f",
                                         user_data=axis, callback=guard(lambda s, v, axis: self.set_gaze(axis, v)))
                    for axis in (0, 1)]
            with dpg.tree_node(label="Hands", default_open=True):
                for side in HAND_KEYS:
                    self.curl_sliders[side] = dpg.add_slider_float(
                        label=f"{side} fist", min_value=0.0, max_value=1.0, width=SLIDER_WIDTH,
                        format="%.2f", user_data=side, callback=guard(lambda s, v, side: self.set_hand_curl(side, v)))
            with dpg.tree_node(label="Expression", default_open=False):
                self._expression_group = dpg.add_group()
                dpg.add_text("(load an avatar to see its expressions)", parent=self._expression_group)
            self._build_motion(guard)

    def _joint_sliders(self, joint: str) -> None:
        dpg.add_text(joint.replace("_", " "))
        for axis in range(3):
            low, high = JOINT_LIMITS[joint][axis]
            self.joint_sliders[(joint, axis)] = dpg.add_slider_float(
                label=f"{AXES[axis]}##{joint}", min_value=low, max_value=high, width=SLIDER_WIDTH, format="%.2f",
                user_data=(joint, axis), callback=self.studio.guard(self.on_joint_slider))

    def _build_motion(self, guard) -> None:
        dpg.add_separator()
        dpg.add_text("Motion")
        with dpg.group(horizontal=True):
            self._motion_combo = dpg.add_combo([NO_MOTION, *builtin_motions()], default_value=NO_MOTION, width=130,
                                               callback=guard(lambda s, name: self.choose_builtin(name)))
            dpg.add_button(label="Open...", callback=guard(lambda: dpg.show_item(self.motion_dialog)))
        with dpg.group(horizontal=True):
            self._play = dpg.add_button(label="Play", width=60, callback=guard(lambda: self.toggle_play()))
            self._loop = dpg.add_checkbox(label="loop", default_value=True)
        self._speed = dpg.add_slider_float(label="speed", min_value=0.1, max_value=3.0, default_value=1.0,
                                           width=SLIDER_WIDTH, format="%.1fx")
        self._frame = dpg.add_slider_int(label="frame", min_value=0, max_value=0, width=SLIDER_WIDTH + 40,
                                         callback=guard(lambda s, v: self.show_motion_frame(v)))

    def configure_for(self, body, subject_params: dict[str, np.ndarray]) -> None:
        """Rebuild the expression sliders for ``body`` (names, count, range) and set them to ``self.pose``; the
        undo history of the previous avatar is dropped (its expressions may have another length)."""
        self.history = EditHistory()
        dpg.delete_item(self._expression_group, children_only=True)
        self.expression_sliders = []
        low, high = expression_range(body)
        names = list(body.expression_names)
        guard = self.studio.guard
        for index, name in enumerate(names):
            if index == FIRST_EXPRESSIONS:
                self._more_group = dpg.add_tree_node(label=f"More expressions ({len(names) - index})",
                                                     parent=self._expression_group, default_open=False)
            parent = self._expression_group if index < FIRST_EXPRESSIONS else self._more_group
            self.expression_sliders.append(dpg.add_slider_float(
                label=name, parent=parent, min_value=low, max_value=high, width=SLIDER_WIDTH, format="%.2f",
                user_data=index, callback=guard(lambda s, v, index: self.set_expression(index, v))))
        self.sync_sliders()

    # -- pose changes -------------------------------------------------------------------------------
    def on_joint_slider(self, sender, value, user_data) -> None:
        joint, axis = user_data
        self.set_joint(joint, axis, value)

    def set_joint(self, joint: str, axis: int, value: float) -> None:
        """Rotate ``joint`` about ``axis`` (0, 1, 2 = x, y, z) to ``value`` radians."""
        rotation = self.pose.joint(joint)
        rotation[axis] = value
        self._change(self.pose.with_joint(joint, rotation), f"joint {joint} {axis}")
        dpg.set_value(self.joint_sliders[(joint, axis)], float(value))

    def set_turn(self, angle: float) -> None:
        """Turn the whole body about the vertical axis by ``angle`` radians."""
        self._change(self.pose.with_values(global_orient=[0.0, angle, 0.0]), "turn")

    def set_gaze(self, axis: int, value: float) -> None:
        rotation = self.pose.values[EYE_KEYS[0]].copy()
        rotation[axis] = value
        self._change(self.pose.with_values(**{key: rotation for key in EYE_KEYS}), f"gaze {axis}")

    def set_hand_curl(self, side: str, amount: float) -> None:
        """Close ``side``'s hand by ``amount`` in [0, 1] (0 = open, 1 = fist)."""
        self._change(self.pose.with_values(**{HAND_KEYS[side]: hand_curl(amount, side)}), f"curl {side}")
        self.curls[side] = float(amount)
        dpg.set_value(self.curl_sliders[side], float(amount))

    def set_expression(self, index: int, value: float) -> None:
        if index < self.pose.expression.size:
            self._change(self.pose.with_expression(index, value), f"expression {index}")

    def reset(self) -> None:
        """The T-pose with the subject's own expression; stops a playing motion. Undo brings the pose back."""
        self.history.record(self._state(), None, time.monotonic())
        self._restore((Pose.rest(self.studio.subject_expression()), dict.fromkeys(self.curls, 0.0)))

    def use_photo_pose(self) -> None:
        """The pose fitted to the photo (body, hands, face), facing the viewer."""
        display = self.studio.display
        if display is None:
            return
        self.history.record(self._state(), None, time.monotonic())
        self._restore((photo_pose(Pose.rest(self.studio.subject_expression()), display.subject_params),
                       dict.fromkeys(self.curls, 0.0)))

    def _change(self, pose: Pose, control: str) -> None:
        """Show ``pose``, an edit of slider ``control`` (a drag of one slider is one undo step)."""
        self.history.record(self._state(), control, time.monotonic())
        self.studio.set_pose(pose, interactive=True)

    def _state(self) -> tuple[Pose, dict[str, float]]:
        """What undo brings back: the pose and the hand-curl sliders (which the pose alone does not give)."""
        return self.pose, dict(self.curls)

    def _restore(self, state: tuple[Pose, dict[str, float]]) -> None:
        pose, curls = state
        self._stop_motion()
        self.curls = dict(curls)
        self.studio.set_pose(pose, interactive=False)
        for side, slider in self.curl_sliders.items():
            dpg.set_value(slider, self.curls[side])
        self.sync_sliders()

    def undo(self) -> None:
        """Back to the pose before the last edit (Undo, Ctrl+Z); a drag of one slider is one step."""
        self._history_step(self.history.undo, "undo")

    def redo(self) -> None:
        """The edit the last undo took back (Redo, Ctrl+Y or Ctrl+Shift+Z)."""
        self._history_step(self.history.redo, "redo")

    def _history_step(self, step, what: str) -> None:
        state = step(self._state())
        if state is None:
            self.studio.status.info(f"Nothing to {what} on the Pose tab")
        else:
            self._restore(state)

    def sync_sliders(self) -> None:
        """Move every slider to the current pose (after a reset, a motion frame, a new avatar)."""
        pose = self.pose
        for (joint, axis), slider in self.joint_sliders.items():
            dpg.set_value(slider, float(pose.joint(joint)[axis]))
        dpg.set_value(self._turn, float(pose.values["global_orient"][1]))
        for axis, slider in enumerate(self._eye_sliders or []):
            dpg.set_value(slider, float(pose.values[EYE_KEYS[0]][axis]))
        for index, slider in enumerate(self.expression_sliders):
            if index < pose.expression.size:
                dpg.set_value(slider, float(pose.expression[index]))

    def on_save_dialog(self, sender, app_data) -> None:
        self.save_pose(dialog_path(app_data))

    def save_pose(self, path: str | Path) -> Path:
        """Write the current pose (joints, hands, expression) as a one-frame motion ``.npz`` (the suffix is added
        when missing): Open... on this tab reads it back, the command line takes it as ``--pose motion:FILE:0``."""
        path = Path(path)
        if path.suffix.lower() != ".npz":
            path = path.with_name(path.name + ".npz")
        save_motion(pose_motion(self.pose, name=path.stem), path)
        self.studio.status.info(f"Pose saved to {path} (Open... reads it back; on the command line: "
                                f"--pose motion:{path}:0)")
        return path

    # -- motion timeline ------------------------------------------------------------------------------
    def on_motion_dialog(self, sender, app_data) -> None:
        self.set_motion(load_motion(dialog_path(app_data)))

    def choose_builtin(self, name: str) -> None:
        if name == NO_MOTION:
            self._stop_motion()
            self.motion = None
            dpg.configure_item(self._frame, max_value=0)
            return
        self.set_motion(load_builtin(name))

    def set_motion(self, motion: Motion) -> None:
        """Put ``motion`` on the timeline and show its first frame (paused)."""
        self.motion = motion
        self.playing = False
        dpg.configure_item(self._play, label="Play")
        dpg.configure_item(self._frame, max_value=max(0, motion.num_frames - 1))
        if dpg.get_value(self._motion_combo) != motion.name and motion.name in builtin_motions():
            dpg.set_value(self._motion_combo, motion.name)
        self.show_motion_frame(0)
        self.studio.status.info(f"Motion {motion.name}: {motion.num_frames} frames at {motion.fps:g} fps")

    def show_motion_frame(self, index: int, interactive: bool = False) -> None:
        """Pose the avatar as ``motion``'s frame ``index`` (the scrubber)."""
        if self.motion is None:
            return
        index = int(np.clip(index, 0, self.motion.num_frames - 1))
        self.motion_frame = index
        self.motion_time = index / self.motion.fps
        self.studio.set_pose(motion_pose(self.motion, index, self.pose), interactive=interactive)
        dpg.set_value(self._frame, index)
        if not self.playing:
            self.sync_sliders()

    def toggle_play(self) -> None:
        if self.motion is None:
            raise UserError("choose a motion first (a built-in clip, or Open... for an .npz file)")
        self.playing = not self.playing
        self._last_tick = time.perf_counter()
        dpg.configure_item(self._play, label="Pause" if self.playing else "Play")
        if not self.playing:  # the last frame with pose offsets, and the sliders where it stopped
            self.show_motion_frame(self.motion_frame)

    def _stop_motion(self) -> None:
        if self.playing:
            self.playing = False
            dpg.configure_item(self._play, label="Play")

    def advance(self, seconds: float) -> None:
        """Move a playing motion on by ``seconds`` of wall time (times the speed); loops or stops at the end."""
        if not self.playing or self.motion is None:
            return
        self.motion_time += seconds * float(dpg.get_value(self._speed))
        frame = int(self.motion_time * self.motion.fps)
        if frame >= self.motion.num_frames:
            if dpg.get_value(self._loop):
                frame %= self.motion.num_frames
                self.motion_time = frame / self.motion.fps
            else:
                self.playing = False
                dpg.configure_item(self._play, label="Play")
                self.show_motion_frame(self.motion.num_frames - 1)
                return
        if frame != self.motion_frame:
            # While playing, the quick base pose keeps up with the clip; pose offsets follow on pause.
            self.show_motion_frame(frame, interactive=True)

    def refresh(self) -> None:
        now = time.perf_counter()
        self.advance(now - self._last_tick)
        self._last_tick = now
        dpg.set_value(self._latency, self.studio.latency.summary())

