"""Dressed synthetic people with ground truth, for the quality benchmark (issue #7).

A person is the body model with a seeded shape and a procedurally generated outfit: shirt (short or
long sleeves), trousers / shorts / skirt, shoes, skin and hair, each a colour and a pattern (plain,
stripes, checks, dots). The outfit is a function of the surface point's canonical position (the
shaped zero-pose body, metres) and body part, evaluated per pixel, so patterns stay sharp at any
resolution and stick to the surface in every pose. Renders use ``MeshRenderer`` with a Lambert light
attached to the camera (up-left of it), 2x2 supersampled.

Everything is a pure function of the seed: ``make_person(seed)`` then ``render_person`` /
``person_subject`` / ``heldout_cameras``; nothing is stored as images.
"""
from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from core.body import PART_NAMES, PART_PALETTE, BodyModel, star_pose
from core.camera import camera_center, orbit_camera
from core.frames.generated import front_camera
from core.motion import BODY_JOINT_NAMES, JOINT_LIMITS, POSE_FIELD_JOINTS, load_builtin, random_plausible_pose
from core.render.mesh import MeshRenderer, lambert, vertex_normals
from core.subject import SMPLX_POSE_SIZES, Subject

PATTERNS = ("plain", "stripes", "checks", "dots")
BOTTOMS = ("trousers", "shorts", "skirt")
LIGHT_DIRECTION_CAM = np.array([-0.4, -0.6, -1.0], np.float32)  # towards the light: up-left of the camera (OpenCV)
LIGHT_AMBIENT, LIGHT_DIFFUSE = 0.45, 0.6
SUPERSAMPLE = 2

_PART = {name: i for i, name in enumerate(PART_NAMES)}
_SHOE_PARTS = [_PART["left_foot"], _PART["right_foot"]]
_HAND_PARTS = [_PART["left_hand"], _PART["right_hand"]]
_HEAD_PARTS = [_PART["head"], _PART["jaw"], _PART["eyes"], _PART["neck"]]
# Natural skin and hair tones (sRGB); clothing colours are drawn freely.
_SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.87, 0.67, 0.53], [0.72, 0.52, 0.38], [0.55, 0.38, 0.26],
                        [0.36, 0.24, 0.16]], np.float32)
_HAIR_TONES = np.array([[0.08, 0.06, 0.05], [0.30, 0.18, 0.09], [0.55, 0.38, 0.20], [0.80, 0.66, 0.40],
                        [0.50, 0.50, 0.50]], np.float32)


@dataclass(frozen=True)
class Garment:
    """One piece of clothing's look: two colours ``[3]`` sRGB and a pattern with its period (metres)."""

    color: tuple[float, float, float]
    accent: tuple[float, float, float]
    pattern: str  # one of PATTERNS
    period: float
    shift: tuple[float, float] = (0.0, 0.0)  # the pattern's origin in canonical x, y (metres); moved by drift only


@dataclass(frozen=True)
class Outfit:
    """The whole look of a person."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    shoes: tuple[float, float, float]
    shirt: Garment
    bottom: Garment
    bottom_kind: str  # one of BOTTOMS
    sleeve: float  # sleeve length from the shoulder joint along the arm, metres
    hair_length: float  # how far hair reaches below the head joint at the back, metres
    cloth_thickness: float  # how far clothes stand off the skin, metres
    hair_volume: float  # how far hair stands off the scalp, metres
    skirt_flare: float  # extra stand-off of a skirt per metre below the waist


@dataclass(frozen=True)
class SyntheticPerson:
    """A ground-truth subject: seed, shape ``betas [B]``, outfit and the photo's pose (1-D arrays)."""

    seed: int
    betas: np.ndarray
    outfit: Outfit
    photo_pose: dict[str, np.ndarray]


@dataclass
class PersonRender:
    """One ground-truth view: ``rgb [H, W, 3]`` premultiplied by ``mask [H, W]`` coverage in [0, 1]."""

    rgb: np.ndarray
    mask: np.ndarray


def _colour(rng: np.random.Generator, lo: float = 0.08, hi: float = 0.92) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(lo, hi, 3))


def random_garment(rng: np.random.Generator) -> Garment:
    """A garment with a random colour, a contrasting accent and a pattern."""
    color = np.array(_colour(rng))
    # The accent differs clearly from the colour (a pattern must be visible in a 256² render).
    accent = np.where(color > 0.5, color - rng.uniform(0.35, 0.6, 3), color + rng.uniform(0.35, 0.6, 3))
    return Garment(color=tuple(float(c) for c in color), accent=tuple(float(c) for c in np.clip(accent, 0.02, 0.98)),
                   pattern=str(rng.choice(PATTERNS)), period=float(rng.uniform(0.05, 0.12)))


def random_outfit(rng: np.random.Generator) -> Outfit:
    """A seeded outfit: skin and hair from natural tones, free clothing colours and patterns."""
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.95, 1.05)
    hair = _HAIR_TONES[rng.integers(len(_HAIR_TONES))]
    return Outfit(skin=tuple(float(c) for c in np.clip(skin, 0, 1)), hair=tuple(float(c) for c in hair),
                  shoes=_colour(rng, 0.05, 0.7), shirt=random_garment(rng), bottom=random_garment(rng),
                  bottom_kind=str(rng.choice(BOTTOMS)), sleeve=float(rng.uniform(0.12, 0.62)),
                  hair_length=float(rng.uniform(0.0, 0.25)), cloth_thickness=float(rng.uniform(0.008, 0.02)),
                  hair_volume=float(rng.uniform(0.01, 0.04)), skirt_flare=float(rng.uniform(0.1, 0.3)))


def photo_pose(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A relaxed frontal photo pose: arms lowered 0.9-1.2 rad, slight bends; ``{name: [3k]}`` float32."""
    pose = {name: np.zeros(size, np.float32) for name, size in SMPLX_POSE_SIZES.items()}
    body = pose["body_pose"].reshape(21, 3)
    joint = {name: i for i, name in enumerate(BODY_JOINT_NAMES)}
    lower = rng.uniform(0.9, 1.2, 2)
    body[joint["left_shoulder"]] = (0.0, rng.uniform(-0.3, 0.0), -lower[0])  # -z lowers the left arm
    body[joint["right_shoulder"]] = (0.0, rng.uniform(0.0, 0.3), lower[1])  # mirrored
    body[joint["left_elbow"]] = (0.0, -rng.uniform(0.05, 0.5), 0.0)  # -y bends the forearm forward
    body[joint["right_elbow"]] = (0.0, rng.uniform(0.05, 0.5), 0.0)
    body[joint["left_hip"]] = (0.0, 0.0, rng.uniform(0.0, 0.12))  # legs a little apart
    body[joint["right_hip"]] = (0.0, 0.0, -rng.uniform(0.0, 0.12))
    body[joint["head"]] = (rng.uniform(-0.1, 0.1), rng.uniform(-0.15, 0.15), 0.0)
    pose["global_orient"][:] = (0.0, rng.uniform(-0.15, 0.15), 0.0)  # a slight turn
    for name in ("left_hand_pose", "right_hand_pose"):  # relaxed, slightly curled fingers
        z_limits = np.array([JOINT_LIMITS[joint][2] for joint in POSE_FIELD_JOINTS[name]], np.float32)  # [15, 2]
        curl = np.where(np.abs(z_limits[:, 0]) > np.abs(z_limits[:, 1]), z_limits[:, 0], z_limits[:, 1])
        pose[name].reshape(15, 3)[:, 2] = 0.15 * rng.uniform(0.5, 1.0) * curl
    return pose


def make_person(seed: int, num_betas: int = 10) -> SyntheticPerson:
    """The person of ``seed``: shape within ±1.5 std of the first betas, outfit and photo pose."""
    rng = np.random.default_rng([7, seed])
    betas = np.zeros(num_betas, np.float32)
    betas[: min(4, num_betas)] = rng.uniform(-1.5, 1.5, min(4, num_betas))
    outfit = random_outfit(rng)
    return SyntheticPerson(seed=seed, betas=betas, outfit=outfit, photo_pose=photo_pose(rng))


# -- appearance ----------------------------------------------------------------------------------


def pattern_mask(pattern: str, position: np.ndarray, period: float,
                 shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Where a pattern shows its accent colour, ``bool [N]``, for canonical points ``[N, 3]`` (metres),
    the pattern's origin moved to ``shift`` (x, y metres).

    stripes: horizontal bands of half a period; checks: squares in the x-y plane; dots: one dot
    of radius 0.3 periods per period-sized cell.
    """
    x, y = (position[:, 0] - shift[0]) / period, (position[:, 1] - shift[1]) / period
    if pattern == "plain":
        return np.zeros(len(position), bool)
    if pattern == "stripes":
        return np.floor(2.0 * y) % 2 == 0
    if pattern == "checks":
        return (np.floor(x) + np.floor(y)) % 2 == 0
    if pattern == "dots":
        return (x - np.floor(x) - 0.5) ** 2 + (y - np.floor(y) - 0.5) ** 2 < 0.3**2
    raise ValueError(f"unknown pattern {pattern!r}; choose one of {PATTERNS}")


def _garment_colors(garment: Garment, position: np.ndarray) -> np.ndarray:
    accent = pattern_mask(garment.pattern, position, garment.period, garment.shift)[:, None]
    return np.where(accent, np.array(garment.accent, np.float32), np.array(garment.color, np.float32))


@dataclass(frozen=True)
class BodyLandmarks:
    """Canonical (zero-pose, shaped) heights and reaches of a person's body, metres."""

    shoulder_x: float  # |x| of the shoulder joints
    waist_y: float
    knee_y: float
    ankle_y: float
    head_y: float  # head joint
    head_z: float


def body_landmarks(body: BodyModel, betas: np.ndarray) -> BodyLandmarks:
    """Landmarks of the shaped body in the zero pose, from its joints."""
    with torch.no_grad():
        joints = body(betas=torch.as_tensor(betas, dtype=torch.float32)[None]).rest_joints[0].numpy()
    index = {name: i for i, name in enumerate(body.joint_names)}

    def mean(*names):
        return joints[[index[n] for n in names]].mean(axis=0)

    pelvis, spine1 = mean("pelvis"), mean("spine1")
    return BodyLandmarks(shoulder_x=float(abs(mean("left_shoulder")[0] - mean("right_shoulder")[0]) / 2),
                         waist_y=float(0.5 * (pelvis[1] + spine1[1])), knee_y=float(mean("left_knee", "right_knee")[1]),
                         ankle_y=float(mean("left_ankle", "right_ankle")[1]), head_y=float(mean("head")[1]),
                         head_z=float(mean("head")[2]))


def outfit_regions(outfit: Outfit, marks: BodyLandmarks, position: np.ndarray, part: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """Which surface points ``[N]`` the shirt, bottom, shoes and hair cover (bool each), for canonical
    zero-pose ``position [N, 3]`` (metres) and ``part [N]`` indices into ``PART_NAMES``."""
    x, y, z = position[:, 0], position[:, 1], position[:, 2]
    limbs_and_trunk = ~np.isin(part, _HEAD_PARTS + _HAND_PARTS + _SHOE_PARTS)
    hem = {"trousers": marks.ankle_y + 0.04, "shorts": marks.knee_y + 0.12, "skirt": marks.knee_y - 0.02}
    head = part == _PART["head"]
    return {
        "shirt": limbs_and_trunk & (y >= marks.waist_y) & (np.abs(x) <= marks.shoulder_x + outfit.sleeve),
        "bottom": limbs_and_trunk & (y < marks.waist_y) & (y >= hem[outfit.bottom_kind]),
        "shoes": np.isin(part, _SHOE_PARTS),
        "hair": head & ((y > marks.head_y + 0.08) | ((z < marks.head_z - 0.02) & (y > marks.head_y - outfit.hair_length))),
    }


def outfit_albedo(outfit: Outfit, marks: BodyLandmarks, position: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Albedo ``[N, 3]`` sRGB of surface points: canonical zero-pose ``position [N, 3]`` (metres),
    ``part [N]`` indices into ``PART_NAMES``."""
    regions = outfit_regions(outfit, marks, position, part)
    colors = np.broadcast_to(np.array(outfit.skin, np.float32), (len(position), 3)).copy()
    if outfit.bottom_kind == "skirt":
        # A skirt hangs straight: one pattern coordinate across both legs (|x| keeps it symmetric).
        bottom_position = np.stack([np.abs(position[:, 0]), position[:, 1], position[:, 2]], axis=1)
    else:
        bottom_position = position
    colors[regions["shirt"]] = _garment_colors(outfit.shirt, position[regions["shirt"]])
    colors[regions["bottom"]] = _garment_colors(outfit.bottom, bottom_position[regions["bottom"]])
    colors[regions["shoes"]] = outfit.shoes
    colors[regions["hair"]] = outfit.hair
    colors[part == _PART["eyes"]] = (0.12, 0.1, 0.1)
    return colors


def outfit_standoff(outfit: Outfit, marks: BodyLandmarks, position: np.ndarray, part: np.ndarray) -> np.ndarray:
    """How far the dressed surface stands off the skin along the normal, ``[N]`` metres.

    Clothes and hair have thickness, so a dressed person is not the bare body model: the naive
    body-mesh baseline misses it, an avatar has to learn it from the photo.
    """
    regions = outfit_regions(outfit, marks, position, part)
    standoff = np.zeros(len(position), np.float32)
    standoff[regions["shirt"] | regions["bottom"]] = outfit.cloth_thickness
    if outfit.bottom_kind == "skirt":
        below = np.clip(marks.waist_y - position[:, 1], 0.0, None)
        standoff[regions["bottom"]] += outfit.skirt_flare * below[regions["bottom"]]
    standoff[regions["shoes"]] = 0.5 * outfit.cloth_thickness
    standoff[regions["hair"]] = outfit.hair_volume
    return standoff


# -- appearance drift -----------------------------------------------------------------------------
# A pose-guided video model keeps a person's outfit only roughly: colours wander a little from frame to
# frame, patterns slide over the cloth, and now and then a garment comes out clearly wrong (another
# colour, another pattern). Drift changes the look only; what covers which surface point, and so the
# silhouette, stays the person's. Mild drift, every frame: hue ± DRIFT_HUE turns, saturation and value
# × (1 ± DRIFT_SATURATION / DRIFT_VALUE) per garment, pattern slid by up to ± DRIFT_SLIDE periods;
# skin and hair a few per cent. With probability OFF_FRAME_PROBABILITY a frame is "off": one garment's
# hue turns by OFF_HUE turns and its pattern is swapped for another or rescaled by OFF_PERIOD_SCALE.
DRIFT_HUE, DRIFT_SATURATION, DRIFT_VALUE, DRIFT_SLIDE = 0.03, 0.15, 0.10, 0.2
DRIFT_SKIN_HUE, DRIFT_SKIN_VALUE, DRIFT_HAIR_VALUE = 0.01, 0.05, 0.10
OFF_FRAME_PROBABILITY, OFF_HUE, OFF_PERIOD_SCALE = 0.25, (0.08, 0.2), (0.6, 1.6)
_DRIFT_STREAM = 13  # keeps drift draws apart from make_person's ([7, seed]) and the held-out poses' ([11, seed])


def shift_hsv(color: tuple[float, float, float], hue: float, saturation: float, value: float
              ) -> tuple[float, float, float]:
    """``color`` (sRGB in [0, 1]) with its hue turned by ``hue`` (turns) and its saturation and value
    scaled by ``saturation`` / ``value``, clipped to [0, 1]."""
    h, s, v = colorsys.rgb_to_hsv(*color)
    return colorsys.hsv_to_rgb((h + hue) % 1.0, min(s * saturation, 1.0), min(v * value, 1.0))


def _mild_tone(rng: np.random.Generator, hue: float, saturation: float, value: float
               ) -> tuple[float, float, float]:
    """A random (hue turn, saturation factor, value factor) within ± the given spreads."""
    return (float(rng.uniform(-hue, hue)), 1.0 + float(rng.uniform(-saturation, saturation)),
            1.0 + float(rng.uniform(-value, value)))


def drift_garment(garment: Garment, rng: np.random.Generator, off: bool = False) -> Garment:
    """``garment`` as one video frame might draw it: both colours toned alike (mildly, or by a large hue
    turn when ``off``), the pattern slid by up to ± DRIFT_SLIDE periods; ``off`` also swaps the pattern
    for another one or rescales its period and places it anywhere."""
    hue, saturation, value = _mild_tone(rng, DRIFT_HUE, DRIFT_SATURATION, DRIFT_VALUE)
    pattern, period = garment.pattern, garment.period
    slide = rng.uniform(-DRIFT_SLIDE, DRIFT_SLIDE, 2) * period
    if off:
        hue += float(rng.choice([-1.0, 1.0]) * rng.uniform(*OFF_HUE))
        if rng.random() < 0.5:
            pattern = str(rng.choice([p for p in PATTERNS if p != garment.pattern]))
        else:
            period *= float(rng.uniform(*OFF_PERIOD_SCALE))
        slide = rng.uniform(0.0, period, 2)
    return dataclasses.replace(garment, color=shift_hsv(garment.color, hue, saturation, value),
                               accent=shift_hsv(garment.accent, hue, saturation, value), pattern=pattern,
                               period=period, shift=tuple(float(a + b) for a, b in zip(garment.shift, slide)))


def drift_outfit(outfit: Outfit, rng: np.random.Generator) -> Outfit:
    """``outfit``'s look as one video frame might draw it (see DRIFT_*): colours and patterns only, so
    ``outfit_regions`` / ``outfit_standoff`` (what is covered, how thick) are unchanged."""
    off_garment = rng.choice(["shirt", "bottom"]) if rng.random() < OFF_FRAME_PROBABILITY else None
    skin_hue, _, skin_value = _mild_tone(rng, DRIFT_SKIN_HUE, 0.0, DRIFT_SKIN_VALUE)
    hair_value = 1.0 + float(rng.uniform(-DRIFT_HAIR_VALUE, DRIFT_HAIR_VALUE))
    shoes = shift_hsv(outfit.shoes, *_mild_tone(rng, DRIFT_HUE, DRIFT_SATURATION, DRIFT_VALUE))
    return dataclasses.replace(
        outfit, skin=shift_hsv(outfit.skin, skin_hue, 1.0, skin_value),
        hair=shift_hsv(outfit.hair, 0.0, 1.0, hair_value), shoes=shoes, shirt=drift_garment(outfit.shirt, rng, off_garment == "shirt"),
        bottom=drift_garment(outfit.bottom, rng, off_garment == "bottom"))


def drifted_person(person: SyntheticPerson, frame: int) -> SyntheticPerson:
    """``person`` with the outfit as video frame ``frame`` draws it (``drift_outfit``), deterministic in
    (``person.seed``, ``frame``); shape and photo pose unchanged."""
    rng = np.random.default_rng([_DRIFT_STREAM, person.seed, frame])
    return dataclasses.replace(person, outfit=drift_outfit(person.outfit, rng))


# -- rendering ------------------------------------------------------------------------------------


def posed_vertices(body: BodyModel, betas: np.ndarray, pose: dict[str, np.ndarray]) -> np.ndarray:
    """``[V, 3]`` bare-body vertices (metres) of shape ``betas`` in ``pose`` (1-D or ``[1, k]`` arrays)."""
    return _posed(body, betas, pose).vertices[0].numpy()


def _posed(body: BodyModel, betas: np.ndarray, pose: dict[str, np.ndarray]):
    tensors = {k: torch.as_tensor(np.asarray(v, np.float32)).reshape(1, -1) for k, v in pose.items()
               if k not in ("betas", "expression")}
    with torch.no_grad():
        return body(betas=torch.as_tensor(betas, dtype=torch.float32)[None], **tensors)


def dressed_vertices(body: BodyModel, person: SyntheticPerson, pose: dict[str, np.ndarray]) -> np.ndarray:
    """``[V, 3]`` vertices of the dressed person in ``pose``: the bare body plus ``outfit_standoff``
    along the zero-pose normals, carried into the pose by the vertices' blended joint rotations."""
    canonical = posed_vertices(body, person.betas, {})
    faces = body.faces.numpy()
    standoff = outfit_standoff(person.outfit, body_landmarks(body, person.betas), canonical,
                               body.part_labels.numpy())
    offset = torch.as_tensor(standoff[:, None] * vertex_normals(canonical, faces), dtype=torch.float32)
    out = _posed(body, person.betas, pose)
    with torch.no_grad():
        rotations = torch.einsum("vj,jab->vab", body.lbs_weights.float(), out.joint_transforms[0, :, :3, :3])
        return (out.vertices[0] + torch.einsum("vab,vb->va", rotations, offset)).numpy()


def render_person(body: BodyModel, person: SyntheticPerson, pose: dict[str, np.ndarray], viewmat: np.ndarray,
                  K: np.ndarray, size: int, renderer: MeshRenderer) -> PersonRender:
    """The dressed person in ``pose`` seen by ``viewmat [4, 4]``, ``K [3, 3]`` at ``size``² pixels.

    Rendered at ``SUPERSAMPLE``× the size with per-pixel outfit colours and a camera-attached
    Lambert light, then box-filtered, so edges and patterns are anti-aliased.
    """
    s = SUPERSAMPLE
    K_big = np.asarray(K, np.float64).copy()
    K_big[:2] *= s
    canonical = posed_vertices(body, person.betas, {})
    out = renderer.render(dressed_vertices(body, person, pose), body.faces.numpy(), viewmat, K_big, size * s,
                          size * s, vertex_attrs={"canonical": canonical,
                                                  "part": body.part_labels.numpy()[:, None].astype(np.float32)},
                          flat_attrs=("part",))
    covered = out["face_id"] >= 0
    part = np.rint(out["part"][covered, 0]).astype(int)
    albedo = outfit_albedo(person.outfit, body_landmarks(body, person.betas), out["canonical"][covered], part)
    light = LIGHT_DIRECTION_CAM / np.linalg.norm(LIGHT_DIRECTION_CAM)
    big = np.zeros((size * s, size * s, 3), np.float32)
    big[covered] = np.clip(lambert(albedo, out["normal"][covered], light, np.array([LIGHT_AMBIENT]),
                                   np.array([LIGHT_DIFFUSE])), 0.0, 1.0)
    rgb = big.reshape(size, s, size, s, 3).mean(axis=(1, 3))
    mask = covered.astype(np.float32).reshape(size, s, size, s).mean(axis=(1, 3))
    return PersonRender(rgb=rgb, mask=mask)


def photo_camera(body: BodyModel, person: SyntheticPerson, size: int, distance: float = 3.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The frontal input camera: ``viewmat [4, 4]``, ``K [3, 3]`` framing the photo pose (1.2× its height)."""
    y = posed_vertices(body, person.betas, person.photo_pose)[:, 1]
    return front_camera(size, distance, float((y.min() + y.max()) / 2), float(y.max() - y.min()))


def on_background(render: PersonRender, background: float | np.ndarray = 1.0) -> np.ndarray:
    """``[H, W, 3]`` the render composited over a plain background colour."""
    return render.rgb + (1.0 - render.mask[..., None]) * np.asarray(background, np.float32)


def person_subject(body: BodyModel, person: SyntheticPerson, size: int, renderer: MeshRenderer) -> Subject:
    """The input photo as a Subject with the *known* fit: exact (dressed) mask, GT SMPL-X params and
    camera, geometry maps of the bare GT body (what prep renders from a perfect fit) and Retinex
    albedo (as prep)."""
    from core.prep.albedo import estimate_albedo

    view, K = photo_camera(body, person, size)
    photo = render_person(body, person, person.photo_pose, view, K, size, renderer)
    params = {"betas": person.betas, **person.photo_pose}
    star = posed_vertices(body, person.betas, star_pose())
    geo = renderer.render(posed_vertices(body, person.betas, person.photo_pose), body.faces.numpy(), view, K, size,
                          size, vertex_attrs={"part": PART_PALETTE[body.part_labels.numpy()], "position": star},
                          flat_attrs=("part",))
    inside = geo["mask"][..., None]
    return Subject(
        image=photo.rgb, mask=photo.mask, albedo=estimate_albedo(photo.rgb, photo.mask) * photo.mask[..., None],
        K=K.astype(np.float32), smplx={k: np.asarray(v, np.float32).reshape(-1) for k, v in params.items()},
        geometry={"depth": geo["depth"], "normal": geo["normal"], "part_seg": geo["part"] * inside,
                  "position": geo["position"]},
        info={"camera": {"viewmat": view.tolist()}, "synthetic": True, "person_seed": person.seed},
    )


# -- held-out evaluation set --------------------------------------------------------------------


@dataclass
class HeldoutView:
    """One evaluation render's set-up: which group, a label, the GT pose (1-D arrays) and camera."""

    group: str  # "motion" (built-in motions), "random" (unseen random poses) or "view" (novel views)
    label: str
    pose: dict[str, np.ndarray]
    viewmat: np.ndarray
    K: np.ndarray


MOTION_PHASES = (0.3, 0.8)  # where in each clip the held-out frames sit (training frames are spread evenly)


def heldout_views(body: BodyModel, person: SyntheticPerson, size: int, motions: list[str],
                  num_random: int = 6, view_azimuths_deg: tuple[float, ...] = (45.0, 90.0, 180.0, -90.0)
                  ) -> list[HeldoutView]:
    """The evaluation set of one person, deterministic from its seed.

    Novel poses use the photo's camera; built-in motion frames at ``MOTION_PHASES`` of each clip,
    random plausible poses (spread 0.35, yaw ±0.6 rad) never used in training; novel views show the
    photo pose from cameras orbiting the body's centre at the photo's distance.
    """
    view, K = photo_camera(body, person, size)
    shape_only = {"betas": person.betas}
    views = []
    for name in motions:
        clip = load_builtin(name)
        for phase in MOTION_PHASES:
            index = int(phase * clip.num_frames)
            frame = {k: np.asarray(v, np.float32).reshape(-1) for k, v in clip.frame(index).items() if k != "expression"}
            views.append(HeldoutView("motion", f"{name}:{index}", {**shape_only, **frame}, view, K))
    rng = np.random.default_rng([11, person.seed])
    for i in range(num_random):
        pose = {k: v.reshape(-1) for k, v in random_plausible_pose(rng, spread=0.35, max_yaw=0.6).items()}
        views.append(HeldoutView("random", f"random:{i}", {**shape_only, **pose}, view, K))
    centre = camera_center(view)
    distance = float(np.linalg.norm(centre[[0, 2]]))
    target = torch.tensor([0.0, float(centre[1]), 0.0])
    for azimuth in view_azimuths_deg:
        orbit = orbit_camera(target, distance, math.radians(azimuth)).numpy()
        views.append(HeldoutView("view", f"view:{azimuth:+.0f}", {**shape_only, **person.photo_pose}, orbit, K))
    return views
