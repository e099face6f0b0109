"""SMPL-X motion clips: the ``Motion`` container, AMASS-style npz loading/saving, resampling, up-axis.

Up-axis rule. Motions in memory are y-up (SMPL-X canonical: y up, person faces +z). When loading,
the source's up axis is, in order of precedence: the ``up_axis`` argument, the file's own
``up_axis`` entry (our files always write it), otherwise ``"z"`` -- AMASS clips in the wild
(``poses`` or ``root_orient`` layouts) are z-up. z-up sources are converted with ``to_y_up``.

File layout written by ``save_motion`` (``FORMAT_VERSION`` 1), AMASS SMPL-X compatible:
``poses [T, 165]`` (root 3, body 63, jaw 3, left eye 3, right eye 3, left hand 45, right hand 45),
``trans [T, 3]`` metres, ``mocap_frame_rate`` (scalar, frames/s), ``surface_model_type`` "smplx",
``up_axis`` "y"/"z", ``name``, ``format_version``, optional ``betas [B]`` and ``expression [T, E]``.
"""
from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.io.atomic import atomic_path
from core.motion.rotations import axis_angle_to_quat, quat_multiply, quat_slerp, quat_to_axis_angle
from core.paths import MOTIONS_DIR

FORMAT_VERSION = 1

# Body-model keyword -> width; the order is the SMPL-X joint order and the AMASS ``poses [T, 165]`` layout.
POSE_FIELDS: dict[str, int] = {
    "global_orient": 3,
    "body_pose": 63,
    "jaw_pose": 3,
    "leye_pose": 3,
    "reye_pose": 3,
    "left_hand_pose": 45,
    "right_hand_pose": 45,
}
FULL_POSE_WIDTH = sum(POSE_FIELDS.values())  # 165 = 55 joints x 3
# AMASS ``poses`` width -> the fields it holds, in column order (SMPL-H files have no jaw or eyes).
_POSES_LAYOUTS = {
    FULL_POSE_WIDTH: tuple(POSE_FIELDS),
    156: ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose"),
}
# AMASS split layout: file key -> the fields it holds, in column order.
_SPLIT_LAYOUT = {
    "root_orient": ("global_orient",),
    "pose_body": ("body_pose",),
    "pose_hand": ("left_hand_pose", "right_hand_pose"),
    "pose_jaw": ("jaw_pose",),
    "pose_eye": ("leye_pose", "reye_pose"),
}
_SPLIT_WIDTHS = {key: sum(POSE_FIELDS[field] for field in fields) for key, fields in _SPLIT_LAYOUT.items()}
_FPS_KEYS = ("mocap_frame_rate", "mocap_framerate", "fps")
UP_AXES = ("y", "z")
BVH_SUFFIX = ".bvh"
MOTION_SUFFIXES = (".npz", BVH_SUFFIX)  # the motion files load_motion reads

# Rotation taking z-up to y-up: -90 degrees about x (z -> y, y -> -z).
_Z_UP_TO_Y_UP = np.array([-np.pi / 2.0, 0.0, 0.0])


@dataclasses.dataclass(frozen=True, eq=False)
class Motion:
    """An SMPL-X pose sequence; all arrays float32, rotations axis-angle in radians.

    Attributes:
        global_orient: ``[T, 3]`` root (pelvis) rotation.
        body_pose: ``[T, 63]`` 21 body joints (``joint_limits.BODY_JOINT_NAMES``).
        left_hand_pose, right_hand_pose: ``[T, 45]`` 15 joints each (``joint_limits.HAND_JOINT_NAMES``).
        jaw_pose, leye_pose, reye_pose: ``[T, 3]``.
        transl: ``[T, 3]`` root translation, metres.
        fps: frames per second (> 0).
        name: clip name.
        betas: optional ``[B]`` shape coefficients of the performer.
        expression: optional ``[T, E]`` expression coefficients.
        up_axis: ``"y"`` (SMPL-X canonical) or ``"z"`` (AMASS world); see ``to_y_up``.
    """

    global_orient: np.ndarray
    body_pose: np.ndarray
    left_hand_pose: np.ndarray
    right_hand_pose: np.ndarray
    jaw_pose: np.ndarray
    leye_pose: np.ndarray
    reye_pose: np.ndarray
    transl: np.ndarray
    fps: float
    name: str = "motion"
    betas: np.ndarray | None = None
    expression: np.ndarray | None = None
    up_axis: str = "y"

    def __post_init__(self):
        for field in (*POSE_FIELDS, "transl", "betas", "expression"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, np.ascontiguousarray(value, dtype=np.float32))
        object.__setattr__(self, "fps", float(self.fps))
        per_frame = {key: getattr(self, key) for key in (*POSE_FIELDS, "transl", "expression")}
        problem = _shape_problem(per_frame, widths={**POSE_FIELDS, "transl": 3})
        if problem is None and self.betas is not None and self.betas.ndim != 1:
            problem = f"betas must be 1-D; got shape {self.betas.shape}"
        if problem is None and not (np.isfinite(self.fps) and self.fps > 0):
            problem = f"fps must be a positive number; got {self.fps}"
        if problem is None and self.up_axis not in UP_AXES:
            problem = f"up_axis must be one of {UP_AXES}; got {self.up_axis!r}"
        if problem is not None:
            raise ValueError(problem)

    @classmethod
    def zeros(cls, num_frames: int, fps: float, name: str = "rest") -> "Motion":
        """``num_frames`` frames of the zero pose (T-pose) at the origin."""
        arrays = {key: np.zeros((num_frames, width), np.float32) for key, width in POSE_FIELDS.items()}
        return cls(**arrays, transl=np.zeros((num_frames, 3), np.float32), fps=fps, name=name)

    @property
    def num_frames(self) -> int:
        return self.transl.shape[0]

    @property
    def duration(self) -> float:
        """Seconds covered: ``num_frames / fps`` (each frame lasts 1/fps)."""
        return self.num_frames / self.fps

    def full_pose(self) -> np.ndarray:
        """``[T, 165]`` axis-angle of all 55 joints in SMPL-X order (the AMASS ``poses`` layout)."""
        return np.concatenate([getattr(self, key) for key in POSE_FIELDS], axis=1)

    def pose_dict(self, as_tensor: bool = False, device=None) -> dict:
        """All frames as body-model keyword arguments, ``[T, k]`` each.

        Keys: ``global_orient, body_pose, left_hand_pose, right_hand_pose, jaw_pose, leye_pose,
        reye_pose, transl`` and ``expression`` when present. numpy float32 arrays, or torch float32
        tensors on ``device`` when ``as_tensor``.
        """
        keys = ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose", "leye_pose",
                "reye_pose", "transl")
        out = {key: getattr(self, key) for key in keys}
        if self.expression is not None:
            out["expression"] = self.expression
        if as_tensor:
            import torch

            return {key: torch.as_tensor(value.copy(), device=device) for key, value in out.items()}
        return {key: value.copy() for key, value in out.items()}

    def frame(self, index: int, as_tensor: bool = False, device=None) -> dict:
        """Frame ``index`` (negative counts from the end) as ``[1, k]`` body-model keyword arguments."""
        if not -self.num_frames <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range for {self.num_frames} frames")
        index %= self.num_frames
        return self.slice(index, index + 1).pose_dict(as_tensor=as_tensor, device=device)

    def slice(self, start: int | None = None, stop: int | None = None, step: int = 1) -> "Motion":
        """Frames ``[start:stop:step]`` as a new Motion; ``fps`` is divided by ``step``."""
        if step < 1:
            raise ValueError(f"step must be >= 1; got {step}")
        window = slice(start, stop, step)
        per_frame = {key: getattr(self, key)[window] for key in (*POSE_FIELDS, "transl")}
        expression = None if self.expression is None else self.expression[window]
        return dataclasses.replace(self, **per_frame, expression=expression, fps=self.fps / step)


def _shape_problem(arrays: dict[str, np.ndarray | None], widths: dict[str, int]) -> str | None:
    """First shape/value problem among per-frame arrays ``[T, k]``, or None.

    ``widths`` gives k per name; names missing from it (``expression``) may have any k; None entries are skipped.
    """
    num_frames = None
    for key, value in arrays.items():
        if value is None:
            continue
        if value.ndim != 2 or (key in widths and value.shape[1] != widths[key]):
            expected = f"(T, {widths[key]})" if key in widths else "(T, E)"
            return f"'{key}' has shape {value.shape}; expected {expected}"
        if num_frames is None:
            num_frames = value.shape[0]
        elif value.shape[0] != num_frames:
            return f"'{key}' has {value.shape[0]} frames; expected {num_frames} like the other arrays"
        if not np.all(np.isfinite(value)):
            return f"'{key}' contains NaN or infinite values"
    if num_frames == 0:
        return "the motion has zero frames"
    return None


# ---------------------------------------------------------------------------------------------- loading


def load_motion(path: str | Path, up_axis: str | None = None) -> Motion:
    """Load an AMASS-style or persona-studio motion ``.npz``, or a ``.bvh`` file retargeted onto SMPL-X
    (``core.motion.bvh.load_bvh``: its own up axis, ``up_axis`` is ignored); the result is always y-up.

    Accepted pose layouts: ``poses [T, 165]`` (SMPL-X), ``poses [T, 156]`` (SMPL-H: root, body,
    hands; jaw and eyes zero), or ``root_orient [T, 3]`` + ``pose_body [T, 63]`` with optional
    ``pose_hand [T, 90]``, ``pose_jaw [T, 3]``, ``pose_eye [T, 6]``. Optional ``trans [T, 3]`` (zero if
    absent), ``betas [B]``, ``expression [T, E]``, ``name``. Frame rate from ``mocap_frame_rate``,
    ``mocap_framerate`` or ``fps``. ``up_axis`` declares the source's up axis (see module docstring).

    Raises ``UserError`` (one line, naming the file) for anything unreadable; never unpickles.
    """
    path = Path(path)
    if path.suffix.lower() == BVH_SUFFIX:
        from core.motion.bvh import load_bvh  # it builds on this module

        return load_bvh(path)
    if up_axis is not None and up_axis not in UP_AXES:
        raise UserError(f"up_axis must be one of {UP_AXES}; got {up_axis!r}", path)
    with _open_npz(path) as npz:
        keys = set(npz.files)
        layout = _pose_layout(keys, path)
        raw = {key: _read_array(npz, key, path) for key in (*layout, "trans", "expression") if key in keys}
        betas = _read_betas(npz, path) if "betas" in keys else None
        fps = _read_fps(npz, keys, path)
        name = (_read_text(npz, "name", path) if "name" in keys else None) or path.stem
        file_axis = _read_text(npz, "up_axis", path) if "up_axis" in keys else "z"  # AMASS default
        if "format_version" in keys and _read_scalar(npz, "format_version", path) > FORMAT_VERSION:
            raise UserError(
                f"written by a newer persona-studio (format_version > {FORMAT_VERSION}); update to read it", path
            )
    widths = dict(_SPLIT_WIDTHS, trans=3)
    if "poses" in raw:
        poses = raw["poses"]
        if poses.ndim != 2 or poses.shape[1] not in _POSES_LAYOUTS:
            raise UserError(f"'poses' has shape {poses.shape}; expected (T, 165) SMPL-X or (T, 156) SMPL-H", path)
        layout["poses"] = _POSES_LAYOUTS[poses.shape[1]]
        widths["poses"] = poses.shape[1]
    problem = _shape_problem(raw, widths)
    if problem is not None:
        raise UserError(problem, path)
    source_axis = up_axis or file_axis
    if source_axis not in UP_AXES:
        raise UserError(f"the file's 'up_axis' entry is not one of {UP_AXES}; pass up_axis= to override", path)
    num_frames = next(iter(raw.values())).shape[0]
    pose = {field: np.zeros((num_frames, width)) for field, width in POSE_FIELDS.items()}
    for key, fields in layout.items():
        pose.update(_split_columns(raw[key], fields))
    transl = raw.get("trans", np.zeros((num_frames, 3)))
    motion = Motion(**pose, transl=transl, fps=fps, name=name, betas=betas, expression=raw.get("expression"),
                    up_axis=source_axis)
    return to_y_up(motion)


def _open_npz(path: Path):
    if not path.is_file():
        raise UserError("motion file not found" if not path.exists() else "not a file", path)
    if path.stat().st_size == 0:
        raise UserError("the motion file is empty", path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"not a readable .npz motion file ({err})", path) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UserError("holds a single .npy array, not an .npz archive of named motion arrays", path)
    return npz


def _read_array(npz, key: str, path: Path) -> np.ndarray:
    """Array ``key`` as float64; object arrays are refused (reading them would need unpickling)."""
    try:
        value = npz[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise UserError(f"'{key}' is an object array; refusing to unpickle it (re-save it as numbers)",
                            path) from None
        raise UserError(f"'{key}' could not be read ({err})", path) from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"'{key}' could not be read ({err})", path) from None
    if value.dtype.kind not in "fiub":
        raise UserError(f"'{key}' has dtype {value.dtype}; expected numbers", path)
    return value.astype(np.float64)


def _read_scalar(npz, key: str, path: Path) -> float:
    value = _read_array(npz, key, path)
    if value.size != 1:
        raise UserError(f"'{key}' has shape {value.shape}; expected a single number", path)
    return float(value.reshape(()))


def _read_text(npz, key: str, path: Path) -> str | None:
    """String entry ``key``, or None when it is not one plain string (object arrays are never unpickled)."""
    try:
        value = npz[key]
    except ValueError:
        return None
    if value.dtype.kind == "S":
        value = np.char.decode(value, "utf-8", errors="replace")
    if value.dtype.kind != "U" or value.size != 1:
        return None
    return str(value.reshape(()))


def _read_fps(npz, keys: set[str], path: Path) -> float:
    present = [key for key in _FPS_KEYS if key in keys]
    if not present:
        raise UserError(f"missing frame rate: need one of {', '.join(_FPS_KEYS)}", path)
    fps = _read_scalar(npz, present[0], path)
    if not (np.isfinite(fps) and fps > 0):
        raise UserError(f"'{present[0]}' is {fps}; the frame rate must be a positive number", path)
    return fps


def _read_betas(npz, path: Path) -> np.ndarray:
    betas = _read_array(npz, "betas", path)
    if betas.ndim == 2 and betas.shape[0] == 1:
        betas = betas[0]
    if betas.ndim != 1:
        raise UserError(f"'betas' has shape {betas.shape}; expected (B,)", path)
    if not np.all(np.isfinite(betas)):
        raise UserError("'betas' contains NaN or infinite values", path)
    return betas


def _split_columns(array: np.ndarray, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Split ``array [T, sum of the fields' widths]`` into the named pose fields, in order."""
    bounds = np.cumsum([0] + [POSE_FIELDS[field] for field in fields])
    return {field: array[:, lo:hi] for field, lo, hi in zip(fields, bounds[:-1], bounds[1:])}


def _pose_layout(keys: set[str], path: Path) -> dict[str, tuple[str, ...]]:
    """File key -> the pose fields it holds, for whichever AMASS layout the file uses.

    ``poses`` maps to an empty tuple here; its width (165 or 156) decides the fields once it is read.
    """
    if "poses" in keys:
        return {"poses": ()}
    if {"root_orient", "pose_body"} <= keys:
        return {key: fields for key, fields in _SPLIT_LAYOUT.items() if key in keys}
    raise UserError(
        "missing pose arrays: need 'poses' (T, 165 or 156) or 'root_orient' (T, 3) + 'pose_body' (T, 63);"
        f" found {sorted(keys) or 'nothing'}",
        path,
    )


# ---------------------------------------------------------------------------------------------- saving


def save_motion(motion: Motion, path: str | Path) -> None:
    """Write ``motion`` atomically as an AMASS SMPL-X style ``.npz`` (layout in the module docstring).

    The bytes depend only on the motion (fixed zip timestamps), so regenerated files compare equal.
    """
    arrays = {
        "poses": motion.full_pose(),
        "trans": motion.transl,
        "mocap_frame_rate": np.array(motion.fps, dtype=np.float64),
        "surface_model_type": np.array("smplx"),
        "up_axis": np.array(motion.up_axis),
        "name": np.array(motion.name),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
    }
    if motion.betas is not None:
        arrays["betas"] = motion.betas
    if motion.expression is not None:
        arrays["expression"] = motion.expression
    _write_npz_reproducibly(Path(path), arrays)


def _write_npz_reproducibly(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Compressed npz with fixed member timestamps (``np.savez`` stamps the current time)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            archive.writestr(member, buffer.getvalue())


# ---------------------------------------------------------------------------------------------- transforms


def _joint_rotations(motion: Motion) -> np.ndarray:
    """``[T, 55, 3]`` axis-angle of every joint."""
    return motion.full_pose().reshape(motion.num_frames, -1, 3)


def _with_joint_rotations(motion: Motion, rotations: np.ndarray, **changes) -> Motion:
    """``motion`` with all joint rotations replaced by ``rotations [T, 55, 3]`` (and other fields changed)."""
    columns = rotations.reshape(rotations.shape[0], FULL_POSE_WIDTH)
    bounds = np.cumsum([0, *POSE_FIELDS.values()])
    fields = {key: columns[:, lo:hi] for key, lo, hi in zip(POSE_FIELDS, bounds[:-1], bounds[1:])}
    return dataclasses.replace(motion, **fields, **changes)


def resample(motion: Motion, fps: float) -> Motion:
    """Resample to ``fps`` frames/s: slerp for every joint rotation, linear for translation and expression.

    Output frame k sits at time k / fps; there are ``round(num_frames * fps / motion.fps)`` of them so the
    duration (num_frames / fps) is kept, and times past the last input frame hold it. Output rotations
    are canonical axis-angle (angle <= pi).
    """
    fps = float(fps)
    if not (np.isfinite(fps) and fps > 0):
        raise UserError(f"target frame rate must be a positive number; got {fps}")
    num_in = motion.num_frames
    num_out = max(1, int(round(num_in * fps / motion.fps)))
    position = np.minimum(np.arange(num_out) * (motion.fps / fps), num_in - 1)  # in input frames
    before = np.floor(position).astype(np.int64)
    after = np.minimum(before + 1, num_in - 1)
    weight = position - before

    quats = axis_angle_to_quat(_joint_rotations(motion))  # [T, 55, 4]
    rotations = quat_to_axis_angle(quat_slerp(quats[before], quats[after], weight[:, None]))

    def lerp(values: np.ndarray) -> np.ndarray:
        return values[before] * (1.0 - weight[:, None]) + values[after] * weight[:, None]

    expression = None if motion.expression is None else lerp(motion.expression)
    return _with_joint_rotations(motion, rotations, transl=lerp(motion.transl), expression=expression, fps=fps)


def to_y_up(motion: Motion, pelvis: np.ndarray | None = None) -> Motion:
    """Convert a z-up motion (AMASS world) to y-up by rotating the world -90 degrees about x.

    The root orientation is pre-multiplied by the rotation and ``transl`` rotated. The body model
    turns the root about the rest-pose pelvis joint ``J0``, not the origin, so an exact conversion
    also adds ``R J0 - J0``: pass ``pelvis [3]`` (metres) for it; without it the result is off by that
    constant offset (a few cm for SMPL-X), harmless for animation. A y-up motion is returned as is.
    """
    if motion.up_axis == "y":
        return motion
    rotation_q = axis_angle_to_quat(_Z_UP_TO_Y_UP)
    rotations = _joint_rotations(motion).astype(np.float64)
    rotations[:, 0] = quat_to_axis_angle(quat_multiply(rotation_q, axis_angle_to_quat(rotations[:, 0])))
    # -90 deg about x as a matrix: (x, y, z) -> (x, z, -y).
    to_y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    transl = motion.transl.astype(np.float64) @ to_y.T
    if pelvis is not None:
        pelvis = np.asarray(pelvis, dtype=np.float64)
        transl = transl + (to_y @ pelvis - pelvis)
    return _with_joint_rotations(motion, rotations, transl=transl, up_axis="y")


# ---------------------------------------------------------------------------------------------- built-ins


def builtin_motions() -> dict[str, Path]:
    """Name -> path of the clips shipped in ``presets/motions`` (sorted by name)."""
    return {path.stem: path for path in sorted(MOTIONS_DIR.glob("*.npz"))}


def load_builtin(name: str) -> Motion:
    """Load a shipped clip by name (``idle``, ``walk_in_place``, ...)."""
    clips = builtin_motions()
    if name not in clips:
        raise UserError(f"unknown built-in motion {name!r}; available: {', '.join(clips) or 'none'}", MOTIONS_DIR)
    return load_motion(clips[name])
