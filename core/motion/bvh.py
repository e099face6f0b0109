"""BVH motion capture files: read them, retarget them onto the SMPL-X skeleton, and write SMPL-X motions as BVH.

BVH (Biovision Hierarchy) is what Mixamo, the CMU library's BVH conversions, Rokoko, Blender and most mocap
tools exchange. A file names its own skeleton; ``load_bvh`` maps it onto SMPL-X's joints by name (Mixamo's
``mixamorig:LeftUpLeg``, CMU's ``LeftUpLeg`` / ``lThigh``, Unreal's ``thigh_l``, 3ds Max Biped's
``Bip01 L Thigh``, SMPL-X's own ``left_hip``, ...; the joints between the hips and the neck, however many
and whatever their names, become spine1..3) and retargets it:

  * Each mapped joint's rotation relative to the file's rest pose (all channels zero) is applied in the
    world frame, after a fixed rotation A_j that turns the SMPL-X bone (joint -> next mapped joint down the
    chain) onto the file's rest bone: G_smplx(t) = G_bvh(t) A_j. So a file whose rest pose is an A-pose, or
    whose bones have other local axes, still drives SMPL-X's T-pose skeleton along the same directions. The
    hips use two directions (up the spine, across the hips), so the facing carries over too; a joint with no
    mapped joint below it (head, toes, finger tips) keeps its parent's A_j. Joints the file does not have
    stay straight (zero rotation), as do SMPL-X's jaw and eyes.
  * The world's up axis is the rest pose's (hips -> neck), turned to +y when it is not.
  * The root's path is scaled by the ratio of leg lengths (SMPL-X's over the file's: this absorbs the
    file's units, cm, inches or metres, and the performer's size); it starts over the origin, and the
    lowest foot of the whole clip stands where SMPL-X's rest feet do.

``save_bvh`` writes a Motion on the SMPL-X skeleton (joint names as SMPL-X's, rest pose the T-pose with
world-aligned axes, metres, ZXY Euler angles): Blender and other tools read it, and ``load_bvh`` reads it
back to the same motion.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from core.body.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS, PARENTS
from core.errors import UserError
from core.io.atomic import atomic_path
from core.motion.clip import POSE_FIELDS, Motion, _split_columns
from core.motion.rotations import axis_angle_to_matrix

MAX_BVH_BYTES = 512 * 1024 * 1024  # a 2-hour 120 fps clip of 70 joints is ~300 MB of text
_ROTATION_CHANNELS = {"xrotation": "X", "yrotation": "Y", "zrotation": "Z"}
_POSITION_CHANNELS = {"xposition": 0, "yposition": 1, "zposition": 2}


@dataclasses.dataclass(frozen=True, eq=False)
class BvhClip:
    """A parsed BVH file.

    Attributes:
        names: ``[J]`` joint names as in the file (End Sites are not joints).
        parents: ``[J]`` parent index, -1 for the root; parents precede children.
        offsets: ``[J, 3]`` each joint's offset from its parent in the rest pose (file units).
        rotation_orders: ``[J]`` the joint's rotation channels in file order, e.g. ``"ZXY"`` ("" for none):
            the joint's rotation is Rz Rx Ry (the first channel outermost).
        positions: ``[F, J, 3]`` translation channels (zeros where a joint has none; added to the offset).
        angles: ``[F, J, 3]`` rotation channel values in degrees, in each joint's ``rotation_orders``.
        frame_time: seconds per frame.
    """

    names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    rotation_orders: tuple[str, ...]
    positions: np.ndarray
    angles: np.ndarray
    frame_time: float

    @property
    def num_frames(self) -> int:
        return self.angles.shape[0]


# ---------------------------------------------------------------------------------------------- reading


def read_bvh(path: str | Path) -> BvhClip:
    """Parse a BVH file; anything malformed is a one-line ``UserError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError("motion file not found" if not path.exists() else "not a file", path)
    size = path.stat().st_size
    if size > MAX_BVH_BYTES:
        raise UserError(f"{size / 2**20:.0f} MiB is more than the {MAX_BVH_BYTES // 2**20} MiB a BVH file may have",
                        path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise UserError(f"could not be read ({err})", path) from None
    try:
        return parse_bvh(text)
    except ValueError as err:
        raise UserError(f"not a readable BVH file: {err}", path) from None


def parse_bvh(text: str) -> BvhClip:
    """Parse BVH text (``read_bvh`` without the file); malformed input raises ValueError with the reason."""
    tokens = text.split()
    reader = _Tokens(tokens)
    reader.expect("HIERARCHY")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    keyword = reader.next()
    if keyword.upper() != "ROOT":
        raise ValueError(f"expected ROOT after HIERARCHY, found {keyword!r}")
    _read_joint(reader, -1, names, parents, offsets, channels)
    reader.expect("MOTION")
    reader.expect("Frames:")
    num_frames = reader.integer("Frames:")
    reader.expect("Frame")
    reader.expect("Time:")
    frame_time = reader.number("Frame Time:")
    if not (np.isfinite(frame_time) and frame_time > 0):
        raise ValueError(f"Frame Time is {frame_time}; it must be a positive number of seconds")
    width = sum(len(c) for c in channels)
    values = reader.rest()
    if num_frames < 1:
        raise ValueError("the file has no frames")
    if len(values) < num_frames * width:
        raise ValueError(f"{num_frames} frames of {width} channels need {num_frames * width} numbers; "
                         f"the file has {len(values)}")
    try:
        data = np.asarray(values[:num_frames * width], dtype=np.float64).reshape(num_frames, width)
    except ValueError:
        bad = next(v for v in values[:num_frames * width] if not _is_number(v))
        raise ValueError(f"the motion data holds {bad!r}, which is not a number") from None
    if not np.all(np.isfinite(data)):
        raise ValueError("the motion data holds NaN or infinite values")
    return _split_channels(names, parents, offsets, channels, data, frame_time)


class _Tokens:
    """A cursor over whitespace-separated tokens with checked reads."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.at = 0

    def next(self) -> str:
        if self.at >= len(self.tokens):
            raise ValueError("the file ends early")
        self.at += 1
        return self.tokens[self.at - 1]

    def expect(self, word: str) -> None:
        found = self.next()
        if found.upper() != word.upper():
            raise ValueError(f"expected {word!r}, found {found!r}")

    def number(self, what: str) -> float:
        token = self.next()
        if not _is_number(token):
            raise ValueError(f"{what} expects a number, found {token!r}")
        return float(token)

    def integer(self, what: str) -> int:
        value = self.number(what)
        if value != int(value):
            raise ValueError(f"{what} expects a whole number, found {value}")
        return int(value)

    def rest(self) -> list[str]:
        return self.tokens[self.at:]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_joint(reader: _Tokens, parent: int, names, parents, offsets, channels) -> None:
    """Read one JOINT/ROOT block (its name onward) and its children, appending to the lists."""
    name = reader.next()
    index = len(names)
    names.append(name)
    parents.append(parent)
    reader.expect("{")
    reader.expect("OFFSET")
    offsets.append([reader.number(f"OFFSET of {name}") for _ in range(3)])
    reader.expect("CHANNELS")
    count = reader.integer(f"CHANNELS of {name}")
    joint_channels = [reader.next().lower() for _ in range(count)]
    unknown = [c for c in joint_channels if c not in _ROTATION_CHANNELS and c not in _POSITION_CHANNELS]
    if unknown or len(set(joint_channels)) != count:
        raise ValueError(f"joint {name!r} has channels {joint_channels}; expected X/Y/Z position and rotation, "
                         "each at most once")
    channels.append(joint_channels)
    while True:
        keyword = reader.next()
        upper = keyword.upper()
        if upper == "}":
            return
        if upper == "JOINT":
            _read_joint(reader, index, names, parents, offsets, channels)
        elif upper == "END":
            reader.expect("Site")
            reader.expect("{")
            reader.expect("OFFSET")
            for _ in range(3):
                reader.number(f"End Site OFFSET under {name}")
            reader.expect("}")
        else:
            raise ValueError(f"unexpected {keyword!r} in joint {name!r}")


def _split_channels(names, parents, offsets, channels, data: np.ndarray, frame_time: float) -> BvhClip:
    """Sort the frame columns into per-joint positions and Euler angles."""
    num_frames, num_joints = data.shape[0], len(names)
    positions = np.zeros((num_frames, num_joints, 3))
    angles = np.zeros((num_frames, num_joints, 3))
    orders = []
    column = 0
    for joint, joint_channels in enumerate(channels):
        order = ""
        for channel in joint_channels:
            if channel in _POSITION_CHANNELS:
                positions[:, joint, _POSITION_CHANNELS[channel]] = data[:, column]
            else:
                angles[:, joint, len(order)] = data[:, column]
                order += _ROTATION_CHANNELS[channel]
            column += 1
        orders.append(order)
    return BvhClip(names=tuple(names), parents=np.array(parents, np.int64), offsets=np.array(offsets, np.float64),
                   rotation_orders=tuple(orders), positions=positions, angles=angles, frame_time=float(frame_time))


# ---------------------------------------------------------------------------------------------- kinematics


def local_rotations(clip: BvhClip) -> np.ndarray:
    """``[F, J, 3, 3]`` each joint's rotation relative to its parent (identity for a joint without rotation
    channels)."""
    out = np.tile(np.eye(3), (clip.num_frames, len(clip.names), 1, 1))
    for joint, order in enumerate(clip.rotation_orders):
        if order:
            # uppercase = intrinsic: "ZXY" is Rz Rx Ry, the channels' order in the file
            out[:, joint] = Rotation.from_euler(order, clip.angles[:, joint, :len(order)], degrees=True).as_matrix()
    return out


def forward_kinematics(parents: np.ndarray, offsets: np.ndarray, local: np.ndarray,
                       translations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rotations ``[F, J, 3, 3]`` and positions ``[F, J, 3]`` of a skeleton.

    parents ``[J]`` (parents first), offsets ``[J, 3]``, local rotations ``[F, J, 3, 3]``, translations
    ``[F, J, 3]`` added to each joint's offset (BVH position channels; the root's path).
    """
    world_rot = np.empty_like(local)
    world_pos = np.empty(local.shape[:2] + (3,))
    for joint, parent in enumerate(parents):
        step = offsets[joint] + translations[:, joint]
        if parent < 0:
            world_rot[:, joint] = local[:, joint]
            world_pos[:, joint] = step
        else:
            world_rot[:, joint] = world_rot[:, parent] @ local[:, joint]
            world_pos[:, joint] = world_pos[:, parent] + np.einsum("fij,fj->fi", world_rot[:, parent], step)
    return world_rot, world_pos


def rest_positions(parents: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``[J, 3]`` joint positions in the rest pose (every rotation zero), the root at its offset."""
    out = np.zeros((len(parents), 3))
    for joint, parent in enumerate(parents):
        out[joint] = offsets[joint] + (out[parent] if parent >= 0 else 0.0)
    return out


# ---------------------------------------------------------------------------------------------- joint names

# Name of a sided part (side removed, lowercase, no separators) -> SMPL-X joint without its side.
_SIDED_PARTS = {
    "hip": ("upleg", "thigh", "hip", "upperleg", "femur"),
    "knee": ("leg", "shin", "knee", "calf", "lowerleg", "tibia", "crus"),
    "ankle": ("foot", "ankle"),
    "foot": ("toebase", "toe", "toes", "ball", "toe0", "toebase0"),
    "collar": ("collar", "clavicle", "collarbone"),
    "shoulder": ("arm", "shldr", "upperarm", "humerus"),
    "elbow": ("forearm", "lowerarm", "elbow", "radius"),
    "wrist": ("hand", "wrist"),
    "eye_smplhf": ("eye", "eyesmplhf"),
    **{f"{finger}{segment}": tuple(f"{prefix}{alias}{zero}{segment}" for alias in aliases for prefix in ("", "hand")
                                   for zero in ("", "0"))
       for finger, aliases in (("thumb", ("thumb",)), ("index", ("index", "indexfinger")),
                               ("middle", ("middle", "middlefinger")), ("ring", ("ring", "ringfinger")),
                               ("pinky", ("pinky", "little", "littlefinger", "pinkyfinger")))
       for segment in (1, 2, 3)},
}
_SIDED_LOOKUP = {alias: part for part, aliases in _SIDED_PARTS.items() for alias in aliases}
_CENTRE_LOOKUP = {"hips": "pelvis", "hip": "pelvis", "pelvis": "pelvis", "neck": "neck", "neck01": "neck",
                  "neck0": "neck", "head": "head", "jaw": "jaw"}
# Names whose meaning depends on the rest of the skeleton: Mixamo's and CMU's "LeftShoulder" is the clavicle
# and "LeftFoot" the ankle, unless the file also has a collar (SMPL-X's own names) or an ankle.
_AMBIGUOUS = {"shoulder": (("collar", "clavicle", "collarbone"), "shoulder", "collar"),
              "foot": (("ankle",), "foot", "ankle")}
_SPINE_JOINTS = ("spine1", "spine2", "spine3")
_PREFIX = re.compile(r"^.*[:|]")  # "mixamorig:Hips", "Armature|Hips"


def _side_and_part(name: str) -> tuple[str | None, str]:
    """("left" / "right" / None, the rest lowercase without separators) of a joint name."""
    name = _PREFIX.sub("", name).strip().lower()
    name = re.sub(r"^(bip0?\d*|biped|character\d*|def)[ _.-]*", "", name)
    words = [w for w in re.split(r"[ _.\-]+", name) if w]
    side = None
    for index, word in enumerate(words):  # a word "l"/"left" anywhere: "L Thigh", "thigh_l", "l_hip"
        if word in ("l", "left", "r", "right"):
            side = "left" if word.startswith("l") else "right"
            del words[index]
            break
    part = "".join(words)
    if side is None:
        for prefix, which in (("left", "left"), ("right", "right")):
            if part.startswith(prefix) and len(part) > len(prefix):
                return which, part[len(prefix):]
        match = re.match(r"^([lr])(.+)$", part)
        if match and match.group(2) in _SIDED_LOOKUP:  # "lThigh", "rShldr"
            return ("left" if match.group(1) == "l" else "right"), match.group(2)
    return side, part


def smplx_joint_map(names: tuple[str, ...], parents: np.ndarray) -> dict[int, int]:
    """SMPL-X joint index -> the file's joint index, for the joints recognised by name (module docstring).

    The joints strictly between the hips and the neck (or the head) become spine1..3: all three when there
    are three, first and last when two, the middle one when one, first / middle / last when more.
    """
    found: dict[int, int] = {}
    sided = [_side_and_part(name) for name in names]
    parts_of = {"left": {p for s, p in sided if s == "left"}, "right": {p for s, p in sided if s == "right"}}
    for index, (side, part) in enumerate(sided):
        if side is None:
            joint = _CENTRE_LOOKUP.get(part)
        else:
            base = _SIDED_LOOKUP.get(part)
            if part in _AMBIGUOUS:
                others, if_present, otherwise = _AMBIGUOUS[part]
                base = if_present if parts_of[side] & set(others) else otherwise
            joint = None if base is None else f"{side}_{base}"
        if joint is not None and JOINT_INDEX[joint] not in found:
            found[JOINT_INDEX[joint]] = index
    pelvis = found.get(JOINT_INDEX["pelvis"])
    top = found.get(JOINT_INDEX["neck"], found.get(JOINT_INDEX["head"]))
    if pelvis is not None and top is not None:
        chain = []
        joint = int(parents[top])
        while joint >= 0 and joint != pelvis:
            chain.append(joint)
            joint = int(parents[joint])
        if joint == pelvis and chain:
            chain.reverse()
            picks = {1: (None, 0, None), 2: (0, None, -1), 3: (0, 1, 2)}.get(len(chain), (0, len(chain) // 2, -1))
            for spine, pick in zip(_SPINE_JOINTS, picks):
                if pick is not None:
                    found[JOINT_INDEX[spine]] = chain[pick]
    return found


# ---------------------------------------------------------------------------------------------- retargeting

# SMPL-X joint -> the joint its bone points to (the first one of them the file has, walking down).
_BONE_CHILD = {
    "left_hip": "left_knee", "left_knee": "left_ankle", "left_ankle": "left_foot",
    "right_hip": "right_knee", "right_knee": "right_ankle", "right_ankle": "right_foot",
    "spine1": "spine2", "spine2": "spine3", "spine3": "neck", "neck": "head",
    "left_collar": "left_shoulder", "left_shoulder": "left_elbow", "left_elbow": "left_wrist",
    "left_wrist": "left_middle1",
    "right_collar": "right_shoulder", "right_shoulder": "right_elbow", "right_elbow": "right_wrist",
    "right_wrist": "right_middle1",
    **{f"{side}_{finger}{segment}": f"{side}_{finger}{segment + 1}"
       for side in ("left", "right") for finger in ("thumb", "index", "middle", "ring", "pinky") for segment in (1, 2)},
}
_LEG_CHAINS = (("left_hip", "left_knee", "left_ankle"), ("right_hip", "right_knee", "right_ankle"))
_LIMB_JOINTS = tuple(f"{side}_{part}" for side in ("left", "right")
                     for part in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"))
MIN_LIMB_JOINTS = 6  # of the 12 above: fewer, and the names are probably not a rig we know
_FEET = ("left_ankle", "right_ankle", "left_foot", "right_foot")


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _turn_onto(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The smallest rotation ``[3, 3]`` taking direction ``source [3]`` onto ``target [3]``."""
    a, b = _unit(source), _unit(target)
    axis = np.cross(a, b)
    sin, cos = float(np.linalg.norm(axis)), float(np.dot(a, b))
    if sin < 1e-9:
        if cos > 0:
            return np.eye(3)
        helper = np.eye(3)[int(np.argmin(np.abs(a)))]  # half a turn about any axis perpendicular to a
        return Rotation.from_rotvec(np.pi * _unit(np.cross(a, helper))).as_matrix()
    return Rotation.from_rotvec(axis / sin * np.arctan2(sin, cos)).as_matrix()


def _up_axis_to_y(spine: np.ndarray) -> np.ndarray:
    """The rotation ``[3, 3]`` taking the world axis closest to the rest pose's ``spine [3]`` direction (the
    file's up axis: +y in most BVH files, +z in some) onto +y; identity for a y-up file."""
    axis = int(np.argmax(np.abs(spine)))
    file_up = np.zeros(3)
    file_up[axis] = np.sign(spine[axis])
    return _turn_onto(file_up, np.array([0.0, 1.0, 0.0]))


def _frame(up: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Orthonormal frame ``[3, 3]`` (columns: across, up, their cross) from two directions, up kept exactly."""
    y = _unit(up)
    x = _unit(across - np.dot(across, y) * y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def _bone_target(joint: str, mapped: dict[int, int]) -> int | None:
    """SMPL-X index of the first mapped joint down ``joint``'s bone chain (``_BONE_CHILD``), or None."""
    child = _BONE_CHILD.get(joint)
    while child is not None:
        if JOINT_INDEX[child] in mapped:
            return JOINT_INDEX[child]
        child = _BONE_CHILD.get(child)
    return None


def _leg_length(positions: np.ndarray, index: dict[str, int]) -> float | None:
    """Mean hip-knee-ankle length of the legs found in ``index`` (name -> row of positions [*, 3])."""
    lengths = [np.linalg.norm(positions[index[a]] - positions[index[b]])
               + np.linalg.norm(positions[index[b]] - positions[index[c]])
               for a, b, c in _LEG_CHAINS if all(j in index for j in (a, b, c))]
    return float(np.mean(lengths)) if lengths else None


def retarget(clip: BvhClip, smplx_rest: np.ndarray, name: str = "motion") -> Motion:
    """The clip as an SMPL-X Motion (method in the module docstring); raises ValueError without hips.

    smplx_rest: ``[55, 3]`` SMPL-X joints in the zero pose (``core.body.model_file.rest_joints``).
    """
    mapped = smplx_joint_map(clip.names, clip.parents)
    pelvis = JOINT_INDEX["pelvis"]
    listed = f"({', '.join(clip.names[:12])}{', ...' if len(clip.names) > 12 else ''})"
    if pelvis not in mapped:
        raise ValueError(f"no hips / pelvis joint recognised among the file's joints {listed}")
    limbs = [j for j in _LIMB_JOINTS if JOINT_INDEX[j] in mapped]
    if len(limbs) < MIN_LIMB_JOINTS:
        raise ValueError(f"only {len(limbs)} of the {len(_LIMB_JOINTS)} arm and leg joints recognised among the "
                         f"file's joints {listed}; need {MIN_LIMB_JOINTS} to drive a body")
    bvh_rest = rest_positions(clip.parents, clip.offsets)
    world_rot, world_pos = forward_kinematics(clip.parents, clip.offsets, local_rotations(clip), clip.positions)
    top = _spine_top(mapped)
    up = np.eye(3) if top is None else _up_axis_to_y(bvh_rest[mapped[top]] - bvh_rest[mapped[pelvis]])
    world_rot = up @ world_rot @ up.T  # rotations relative to the rest pose, seen in the turned world
    world_pos = world_pos @ up.T
    bvh_rest = bvh_rest @ up.T
    local = _smplx_local_rotations(world_rot, mapped, _alignments(mapped, bvh_rest, smplx_rest))
    full_pose = Rotation.from_matrix(local.reshape(-1, 3, 3)).as_rotvec().reshape(clip.num_frames, NUM_JOINTS * 3)
    return Motion(**_split_columns(full_pose, tuple(POSE_FIELDS)), fps=1.0 / clip.frame_time, name=name,
                  transl=_root_path(mapped, world_pos, bvh_rest, smplx_rest))


def _spine_top(mapped: dict[int, int]) -> int | None:
    """SMPL-X index of the neck, else the head, when the file has one."""
    return next((JOINT_INDEX[j] for j in ("neck", "head") if JOINT_INDEX[j] in mapped), None)


def _alignments(mapped: dict[int, int], bvh_rest: np.ndarray, smplx_rest: np.ndarray) -> np.ndarray:
    """``[55, 3, 3]`` A_j turning each SMPL-X rest bone onto the file's (bvh_rest ``[J, 3]`` y-up, smplx_rest
    ``[55, 3]``): two directions for the hips, the bone to the next mapped joint down for the others, the
    parent's A_j where there is none (module docstring)."""
    align = np.tile(np.eye(3), (NUM_JOINTS, 1, 1))
    pelvis, top = JOINT_INDEX["pelvis"], _spine_top(mapped)
    hips = (JOINT_INDEX["left_hip"], JOINT_INDEX["right_hip"])
    if top is not None and all(h in mapped for h in hips):
        theirs = _frame(bvh_rest[mapped[top]] - bvh_rest[mapped[pelvis]],
                        bvh_rest[mapped[hips[0]]] - bvh_rest[mapped[hips[1]]])
        ours = _frame(smplx_rest[top] - smplx_rest[pelvis], smplx_rest[hips[0]] - smplx_rest[hips[1]])
        align[pelvis] = theirs @ ours.T
    for joint in range(1, NUM_JOINTS):
        target = _bone_target(JOINT_NAMES[joint], mapped) if joint in mapped else None
        if target is None:
            align[joint] = align[PARENTS[joint]]
        else:
            align[joint] = _turn_onto(smplx_rest[target] - smplx_rest[joint],
                                      bvh_rest[mapped[target]] - bvh_rest[mapped[joint]])
    return align


def _smplx_local_rotations(world_rot: np.ndarray, mapped: dict[int, int], align: np.ndarray) -> np.ndarray:
    """``[F, 55, 3, 3]`` SMPL-X local rotations from the file's world rotations ``[F, J, 3, 3]`` (relative to its
    rest pose): G_j = G_file(j) A_j for mapped joints, the parent's G for the others (zero local rotation)."""
    world = np.empty((world_rot.shape[0], NUM_JOINTS, 3, 3))
    local = np.empty_like(world)
    for joint, parent in enumerate(PARENTS):
        world[:, joint] = world_rot[:, mapped[joint]] @ align[joint] if joint in mapped else world[:, parent]
        local[:, joint] = world[:, joint] if parent < 0 else np.swapaxes(world[:, parent], 1, 2) @ world[:, joint]
    return local


def _root_path(mapped: dict[int, int], world_pos: np.ndarray, bvh_rest: np.ndarray,
               smplx_rest: np.ndarray) -> np.ndarray:
    """``[F, 3]`` SMPL-X transl: the file's hip path (world_pos ``[F, J, 3]``, y-up) scaled by the leg-length
    ratio (the hips-to-top height's without legs), starting over the origin, its lowest foot over the clip on
    SMPL-X's rest foot level."""
    pelvis = JOINT_INDEX["pelvis"]
    theirs = _leg_length(bvh_rest, {n: mapped[JOINT_INDEX[n]] for n in JOINT_INDEX if JOINT_INDEX[n] in mapped})
    ours = _leg_length(smplx_rest, JOINT_INDEX)
    top = _spine_top(mapped)
    if (theirs is None or theirs < 1e-9) and top is not None:
        theirs = np.linalg.norm(bvh_rest[mapped[top]] - bvh_rest[mapped[pelvis]])
        ours = np.linalg.norm(smplx_rest[top] - smplx_rest[pelvis])
    scale = ours / theirs if theirs is not None and theirs > 1e-9 else 1.0
    hips = world_pos[:, mapped[pelvis]] * scale
    transl = hips - smplx_rest[pelvis]
    transl[:, [0, 2]] = hips[:, [0, 2]] - hips[:1, [0, 2]]
    feet = [JOINT_INDEX[n] for n in _FEET if JOINT_INDEX[n] in mapped]
    if feet:
        their_floor = scale * world_pos[:, [mapped[f] for f in feet], 1].min()
        transl[:, 1] = hips[:, 1] - their_floor + smplx_rest[feet, 1].min() - smplx_rest[pelvis, 1]
    return transl


def load_bvh(path: str | Path, smplx_rest: np.ndarray | None = None) -> Motion:
    """A BVH file retargeted onto SMPL-X (module docstring); one-line ``UserError`` for a bad file.

    smplx_rest: ``[55, 3]`` the target skeleton's rest joints; default: the body model in use
    (``--body-model`` / ``$PERSONA_SMPLX_MODEL`` / the embedded one).
    """
    path = Path(path)
    clip = read_bvh(path)
    if smplx_rest is None:
        from core.body.model_file import rest_joints

        smplx_rest = rest_joints()
    try:
        return retarget(clip, np.asarray(smplx_rest, np.float64), name=path.stem)
    except ValueError as err:
        raise UserError(f"cannot use this BVH file: {err}", path) from None


# ---------------------------------------------------------------------------------------------- writing


def bvh_text(names: tuple[str, ...], parents: np.ndarray, offsets: np.ndarray, local: np.ndarray,
             root_positions: np.ndarray, frame_time: float, order: str = "ZXY",
             leaf_ends: np.ndarray | None = None) -> str:
    """BVH text for a skeleton: names ``[J]``, parents ``[J]`` (parents first, one root), offsets ``[J, 3]``,
    local rotations ``[F, J, 3, 3]``, the root's position channels ``[F, 3]`` (added to its offset), seconds
    per frame; rotation channels in ``order`` (intrinsic, e.g. "ZXY" = Rz Rx Ry). A leaf joint's End Site is
    ``leaf_ends[j]`` (``[J, 3]``; default zero length)."""
    children: dict[int, list[int]] = {j: [] for j in range(len(names))}
    for joint, parent in enumerate(parents):
        if parent >= 0:
            children[int(parent)].append(joint)
    lines = ["HIERARCHY"]
    rotation_channels = " ".join(f"{axis}rotation" for axis in order)
    written: list[int] = []  # depth-first: the order of each frame line's channels

    def write(joint: int, depth: int) -> None:
        written.append(joint)
        pad = "  " * depth
        keyword = "ROOT" if parents[joint] < 0 else "JOINT"
        lines.append(f"{pad}{keyword} {names[joint]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {' '.join(f'{v:.6f}' for v in offsets[joint])}")
        if parents[joint] < 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition {rotation_channels}")
        else:
            lines.append(f"{pad}  CHANNELS 3 {rotation_channels}")
        for child in children[joint]:
            write(child, depth + 1)
        if not children[joint]:
            lines.append(f"{pad}  End Site")
            lines.append(f"{pad}  {{")
            end = np.zeros(3) if leaf_ends is None else leaf_ends[joint]
            lines.append(f"{pad}    OFFSET {' '.join(f'{v:.6f}' for v in end)}")
            lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    roots = [j for j, p in enumerate(parents) if p < 0]
    if len(roots) != 1:
        raise ValueError(f"a BVH skeleton has one root; got {len(roots)}")
    write(roots[0], 0)
    num_frames, num_joints = local.shape[:2]
    angles = Rotation.from_matrix(local.reshape(-1, 3, 3)).as_euler(order, degrees=True).reshape(
        num_frames, num_joints, 3)
    columns = [root_positions] + [angles[:, j] for j in written]
    data = np.concatenate(columns, axis=1)
    lines += ["MOTION", f"Frames: {num_frames}", f"Frame Time: {frame_time:.8f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in data]
    return "\n".join(lines) + "\n"


def save_bvh(motion: Motion, path: str | Path, smplx_rest: np.ndarray) -> None:
    """Write ``motion`` (y-up) as BVH on the SMPL-X skeleton with rest joints ``smplx_rest [55, 3]`` (metres;
    the subject's own for an avatar's motion), atomically (module docstring)."""
    rest = np.asarray(smplx_rest, np.float64)
    parents = np.array(PARENTS, np.int64)
    offsets = rest - np.where(parents[:, None] >= 0, rest[np.maximum(parents, 0)], 0.0)
    # The root: offset zero, its position channels the pelvis itself (SMPL-X turns the root about the rest
    # pelvis J0 and then adds transl, so it sits at J0 + transl). Readers that add the channels to the offset
    # and readers that take them as the position (bvhio, for one) then agree.
    offsets[0] = 0.0
    local = axis_angle_to_matrix(motion.full_pose().reshape(motion.num_frames, NUM_JOINTS, 3).astype(np.float64))
    # leaf bones (head, jaw, eyes, toes, finger tips) end half their own length further on, so tools that draw
    # bones from joint to End Site (Blender) give them a length and direction
    text = bvh_text(JOINT_NAMES, parents, offsets, local, rest[0] + motion.transl.astype(np.float64),
                    1.0 / motion.fps, leaf_ends=0.5 * offsets)
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
