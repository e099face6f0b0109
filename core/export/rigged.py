"""The body as a rigged glTF (``.glb``): the subject's mesh bound to the 55-joint SMPL-X skeleton, skinned with the
body model's weights, coloured from the avatar, posed or animated; Blender, three.js, Unity and Unreal play it.

Layout (glTF 2.0, one binary buffer):
  * node 0 holds the mesh and its skin; nodes 1..55 are the joints in SMPL-X order (names as SMPL-X's), each
    translated from its parent by the subject's rest bone, rotated by the pose (or the motion's first frame);
  * the mesh is in the bind pose, the T-pose of the subject's shape (``BodyOutput.shaped``), and every inverse
    bind matrix is a pure translation by minus the joint (SMPL-X's rest frames are world-aligned);
  * ``JOINTS_0`` / ``WEIGHTS_0``: each vertex's four largest skinning weights, renormalised (what every glTF player
    supports; SMPL-X gives a vertex up to 6 joints, the dropped ones are 0.04 % of the weight on average);
  * ``COLOR_0``: the avatar's colours per vertex (as the static ``.glb``), linear light as glTF says;
  * with a motion, one animation: each joint's rotation and the root's translation per frame, linear, at the
    motion's times. The root node sits at pelvis + transl (SMPL-X turns the body about the rest pelvis, then
    moves it by transl).

The body model's pose-corrective blend shapes (a licensed SMPL-X has them; the embedded model has none) and facial
expressions over time are not carried: glTF skinning is linear blend skinning only.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from core.avatar.avatar import Avatar
from core.body import BodyModel
from core.body.skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS
from core.export.mesh import avatar_vertex_colors, srgb_to_linear
from core.export.poses import motion_params
from core.io.atomic import write_bytes_atomic
from core.motion import POSE_FIELDS, Motion
from core.motion.rotations import axis_angle_to_quat

INFLUENCES = 4
_FLOAT, _UBYTE, _UINT = 5126, 5121, 5125  # glTF componentType codes
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942


def top_weights(weights: np.ndarray, count: int = INFLUENCES) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``count`` largest skinning weights, renormalised to sum 1: ``(joints [V, count] uint8, weights
    [V, count] float32)``, largest first, joint 0 where the weight is 0. weights ``[V, J]`` (J <= 256)."""
    order = np.argsort(-weights, axis=1, kind="stable")[:, :count]
    kept = np.take_along_axis(weights, order, axis=1).clip(min=0.0)
    kept = kept / np.maximum(kept.sum(axis=1, keepdims=True), 1e-12)
    order = np.where(kept > 0, order, 0)  # glTF: an unused influence names joint 0
    return order.astype(np.uint8), kept.astype(np.float32)


def pose_rotations(params: dict[str, torch.Tensor]) -> np.ndarray:
    """``[T, 55, 3]`` axis-angle of every joint from ``[T, k]`` body-model arguments (missing fields are zero)."""
    count = next(iter(params.values())).shape[0]
    columns = [params[k].detach().cpu().double().numpy().reshape(count, -1) if k in params
               else np.zeros((count, width)) for k, width in POSE_FIELDS.items()]
    return np.concatenate(columns, axis=1).reshape(count, NUM_JOINTS, 3)


class _GlbBuilder:
    """Collects binary views and accessors for one buffer."""

    def __init__(self):
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, kind: str, component: int, target: int | None = None,
            normalized: bool = False, bounds: bool = False) -> int:
        """Append ``array`` (rows of ``kind``: SCALAR, VEC3, VEC4, MAT4) as a view and an accessor; its index."""
        data = np.ascontiguousarray(array)
        self.blob.extend(b"\0" * (-len(self.blob) % 4))  # glTF wants 4-byte aligned views
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": data.nbytes}
        if target is not None:
            view["target"] = target
        self.blob.extend(data.tobytes())
        self.views.append(view)
        accessor = {"bufferView": len(self.views) - 1, "componentType": component, "count": int(data.shape[0]),
                    "type": kind}
        if normalized:
            accessor["normalized"] = True
        if bounds:
            flat = data.reshape(data.shape[0], -1)
            accessor["min"] = flat.min(axis=0).tolist()
            accessor["max"] = flat.max(axis=0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def rigged_glb(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, weights: np.ndarray,
               rest_joints: np.ndarray, rotations: np.ndarray, roots: np.ndarray, fps: float | None,
               name: str = "persona") -> bytes:
    """The ``.glb`` bytes (module docstring).

    vertices ``[V, 3]`` bind pose (metres), faces ``[F, 3]``, sRGB colors ``[V, 3]`` in [0, 1], skinning weights
    ``[V, 55]``, rest_joints ``[55, 3]`` (bind pose), rotations ``[T, 55, 3]`` axis-angle per frame, roots
    ``[T, 3]`` the root joint's position per frame; ``fps`` None for one static pose (frame 0), else the
    animation's rate.
    """
    from core.render.mesh import vertex_normals  # there, beside the GL mesh renderer that also uses it

    builder = _GlbBuilder()
    joints, kept = top_weights(weights)
    linear = np.round(np.clip(srgb_to_linear(colors), 0.0, 1.0) * 255).astype(np.uint8)
    attributes = {
        "POSITION": builder.add(vertices.astype(np.float32), "VEC3", _FLOAT, _ARRAY_BUFFER, bounds=True),
        "NORMAL": builder.add(vertex_normals(vertices, faces).astype(np.float32), "VEC3", _FLOAT, _ARRAY_BUFFER),
        "COLOR_0": builder.add(np.concatenate([linear, np.full((len(linear), 1), 255, np.uint8)], 1), "VEC4",
                               _UBYTE, _ARRAY_BUFFER, normalized=True),
        "JOINTS_0": builder.add(joints, "VEC4", _UBYTE, _ARRAY_BUFFER),
        "WEIGHTS_0": builder.add(kept, "VEC4", _FLOAT, _ARRAY_BUFFER),
    }
    indices = builder.add(faces.astype(np.uint32).reshape(-1), "SCALAR", _UINT, _ELEMENT_ARRAY_BUFFER)
    inverse_bind = np.tile(np.eye(4, dtype=np.float32), (NUM_JOINTS, 1, 1))
    inverse_bind[:, :3, 3] = -rest_joints
    # glTF matrices are column-major: store each transposed
    inverse_bind_accessor = builder.add(np.swapaxes(inverse_bind, 1, 2).reshape(NUM_JOINTS, 16), "MAT4", _FLOAT)
    quats = _xyzw(axis_angle_to_quat(rotations))  # [T, 55, 4]
    offsets = rest_joints - np.where(np.array(PARENTS)[:, None] >= 0, rest_joints[np.maximum(PARENTS, 0)], 0.0)
    nodes = [{"name": name, "mesh": 0, "skin": 0}]
    for joint in range(NUM_JOINTS):
        node = {"name": JOINT_NAMES[joint], "rotation": quats[0, joint].tolist(),
                "translation": (roots[0] if joint == 0 else offsets[joint]).tolist()}
        children = [1 + child for child in range(NUM_JOINTS) if PARENTS[child] == joint]
        if children:
            node["children"] = children
        nodes.append(node)
    document = {
        "asset": {"version": "2.0", "generator": "persona-studio"},
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0, 1]}],
        "nodes": nodes,
        "meshes": [{"name": name, "primitives": [{"attributes": attributes, "indices": indices, "material": 0,
                                                  "mode": 4}]}],
        "materials": [{"name": "vertex colours", "pbrMetallicRoughness": {
            "baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}}],
        "skins": [{"name": "smplx", "joints": list(range(1, NUM_JOINTS + 1)), "skeleton": 1,
                   "inverseBindMatrices": inverse_bind_accessor}],
    }
    if fps is not None:
        document["animations"] = [_animation(builder, quats, roots, fps, name)]
    document["accessors"] = builder.accessors
    document["bufferViews"] = builder.views
    document["buffers"] = [{"byteLength": len(builder.blob)}]
    return _glb(document, bytes(builder.blob))


def _animation(builder: _GlbBuilder, quats: np.ndarray, roots: np.ndarray, fps: float, name: str) -> dict:
    """One glTF animation: every joint's rotation ``quats [T, 55, 4]`` (x, y, z, w) and the root's translation
    ``roots [T, 3]``, keyed at frame / fps."""
    times = builder.add((np.arange(quats.shape[0]) / fps).astype(np.float32), "SCALAR", _FLOAT, bounds=True)
    samplers = [{"input": times, "output": builder.add(quats[:, joint].astype(np.float32), "VEC4", _FLOAT),
                 "interpolation": "LINEAR"} for joint in range(NUM_JOINTS)]
    samplers.append({"input": times, "output": builder.add(roots.astype(np.float32), "VEC3", _FLOAT),
                     "interpolation": "LINEAR"})
    channels = [{"sampler": joint, "target": {"node": 1 + joint, "path": "rotation"}} for joint in range(NUM_JOINTS)]
    channels.append({"sampler": NUM_JOINTS, "target": {"node": 1, "path": "translation"}})
    return {"name": name, "samplers": samplers, "channels": channels}


def _xyzw(quats: np.ndarray) -> np.ndarray:
    """(w, x, y, z) -> glTF's (x, y, z, w), with w >= 0 and consecutive frames on the same hemisphere (so linear
    interpolation between keys takes the short way)."""
    out = np.concatenate([quats[..., 1:], quats[..., :1]], axis=-1)
    out = np.where(out[..., 3:] < 0, -out, out)
    for frame in range(1, out.shape[0]):
        flip = (out[frame] * out[frame - 1]).sum(-1, keepdims=True) < 0
        out[frame] = np.where(flip, -out[frame], out[frame])
    return out


def _glb(document: dict, blob: bytes) -> bytes:
    """A GLB container: header, JSON chunk (space-padded), BIN chunk (zero-padded)."""
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    blob += b"\0" * (-len(blob) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return b"".join([struct.pack("<III", _GLB_MAGIC, 2, total), struct.pack("<II", len(text), _JSON_CHUNK), text,
                     struct.pack("<II", len(blob), _BIN_CHUNK), blob])


def write_rigged_glb(path: str | Path, avatar: Avatar, body: BodyModel, manifest: dict, params: dict[str, torch.Tensor],
                     motion: Motion | None = None) -> int:
    """Write the rigged body as ``.glb``, atomically: posed by ``params`` (``[1, k]`` body-model arguments, subject
    shape included: ``pose_params``), or animated by ``motion`` (its frames, subject shape from ``manifest``).
    Returns the number of animation frames (0 for a posed file)."""
    with torch.no_grad():
        rest = body(**{k: v for k, v in params.items() if k in ("betas", "expression")})
        if motion is not None:
            frames = motion_params(motion, np.arange(motion.num_frames), manifest, body)
            roots = body(**frames).joints[:, 0].double().numpy()
        else:
            frames = params
            roots = body(**params).joints[:, 0].double().numpy()
    colors = avatar_vertex_colors(avatar, body, path)
    data = rigged_glb(rest.shaped[0].double().numpy(), body.faces.cpu().numpy(), colors,
                      body.lbs_weights.cpu().double().numpy(), rest.rest_joints[0].double().numpy(),
                      pose_rotations(frames), roots, None if motion is None else motion.fps,
                      name=Path(path).stem)
    write_bytes_atomic(path, data)
    return 0 if motion is None else motion.num_frames
