"""Find the person in a photo: soft mask, 33 body + 2 x 21 hand + 478 face keypoints, bbox, warnings.

Backed by mediapipe's legacy ``solutions`` API (imported lazily: it takes 1-2 s):
- Holistic (``static_image_mode``, ``model_complexity=1``, segmentation, refined face with irises).
  Complexity 0 and 2 fetch weights at run time and fail offline, so they are never used.
- Hands (``model_complexity=1``, the "full" model shipped in the wheel) on a crop around a wrist
  whose hand Holistic missed.
- SelfieSegmentation (general model) only to notice *other* people: Holistic tracks one person and
  its mask covers only that person.

Keypoint arrays are [N, 3] = (x px, y px, confidence) in the corner-origin pixel convention of
``core.prep.image_io``; confidence is BlazePose's visibility for the body, 1 for hand/face points
Holistic found, ``FALLBACK_HAND_CONFIDENCE`` for hands found by the Hands fallback, 0 when missing
(x, y are then 0). Left/right are the *person's* sides (on messi5.jpg, facing the camera, the right
wrist is on the image's left); cut-off warnings name *image* sides.

Several people: Holistic follows whichever person its pose detector picks. We count "person-like
regions" as connected components of (Holistic mask > 0.5) OR (SelfieSegmentation > 0.5) whose area is
at least 1 % of the image and 20 % of the tracked person's mask. This misses people that touch (one
component) or that SelfieSegmentation fails on (it is tuned for close-ups), and can count a large
person-coloured object. With several regions we keep Holistic's choice (usually the most completely
visible person, not necessarily the largest region) and warn; ``person=K`` picks the K-th largest
region instead: the photo is cropped to it, the other regions are painted out, and Holistic is rerun.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import UserError, require
from core.io.atomic import atomic_path
from core.io.native_log import quiet_native_logs
from core.prep.crop import Crop, crop_image, person_crop, uncrop_points

NUM_BODY, NUM_HAND, NUM_FACE = 33, 21, 478
FALLBACK_HAND_CONFIDENCE = 0.7  # hands found on a wrist crop and assigned by proximity: trusted less
MIN_PERSON_HEIGHT = 200  # pixels; below this the fit and texture get poor
MIN_REGION_OF_IMAGE, MIN_REGION_OF_PERSON = 0.01, 0.2  # "person-like region" area thresholds
PERCEPTION_FORMAT_VERSION = 1

_LEFT_WRIST, _RIGHT_WRIST, _LEFT_ELBOW, _RIGHT_ELBOW = 15, 16, 13, 14
_HAND_POINTS = {"left": (15, 17, 19, 21), "right": (16, 18, 20, 22)}  # wrist, pinky, index, thumb knuckles
_HEAD = (0, 2, 5, 7, 8)  # nose, eyes, ears
_LIMBS = tuple(range(11, 17)) + tuple(range(23, 33))  # shoulders .. wrists, hips .. feet
_FEET = (27, 28, 29, 30, 31, 32)  # ankles, heels, foot indices


@dataclass
class Perception:
    """What we know about the person in one photo (all pixel units, image of ``mask.shape``).

    Attributes:
        mask: [H, W] float32 soft person mask in [0, 1].
        body: [33, 3] BlazePose points (x, y, visibility).
        body_world: [33, 4] BlazePose's metric 3D points (x, y, z metres around the hips' centre, in the
            camera's axes: x right, y down, z away; visibility); zeros when the detector gave none.
        left_hand, right_hand: [21, 3] hand points (x, y, confidence; 0 when missing).
        face: [478, 3] face-mesh points incl. 10 iris points (x, y, confidence).
        bbox: (x0, y0, x1, y1) of the person, clipped to the image.
        warnings: one-line messages for the user (cut off, small, several people ...).
        people: number of person-like regions seen (see module docstring); 1 for a single person.
        hand_sources: "holistic", "hands" (fallback) or "" (not found), for keys "left" and "right".
    """

    mask: np.ndarray
    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray
    face: np.ndarray
    bbox: tuple[float, float, float, float]
    warnings: list[str] = field(default_factory=list)
    people: int = 1
    hand_sources: dict[str, str] = field(default_factory=dict)
    body_world: np.ndarray = field(default_factory=lambda: np.zeros((NUM_BODY, 4), np.float32))


def perceive_photo(photo, refine: str | None = "grabcut", person: int | None = None) -> Perception:
    """``perceive`` a ``core.prep.image_io.Photo``; its alpha channel, if any, is used as the mask."""
    return perceive(photo.rgb, refine=refine, person=person, alpha=photo.alpha, path=photo.path)


def perceive(
    rgb: np.ndarray,
    refine: str | None = "grabcut",
    person: int | None = None,
    alpha: np.ndarray | None = None,
    path: str | Path | None = None,
) -> Perception:
    """Find one person in ``rgb`` ([H, W, 3] float in [0, 1] or uint8).

    Args:
        refine: "grabcut" to refine the segmentation with OpenCV GrabCut seeded from it, or None.
        person: None = the person the pose detector picks; K >= 1 = the K-th largest person-like region.
        alpha: [H, W] user-supplied mask (e.g. an RGBA photo's alpha); replaces the segmentation.
        path: the photo's path, only for error messages.
    Raises:
        UserError: no person found, or ``person`` larger than the number of regions.
    """
    if refine not in ("grabcut", None):
        raise ValueError(f"refine must be 'grabcut' or None, not {refine!r}")
    image = _to_uint8(rgb)
    height, width = image.shape[:2]
    found, regions, warnings = _find_person(image, person, path)
    hand_sources = {side: ("holistic" if found[f"{side}_hand"][0, 2] > 0 else "") for side in ("left", "right")}
    known = {side: found[f"{side}_hand"] for side in ("left", "right")}
    for side, hand in fallback_hands(image, found["body"], known).items():
        found[f"{side}_hand"] = hand
        hand_sources[side] = "hands"
    if alpha is not None:
        mask = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)
    elif refine == "grabcut":
        mask, refine_warning = refine_mask_grabcut(image, found["mask"])
        warnings += [refine_warning] if refine_warning else []
    else:
        mask = found["mask"]
    bbox = person_bbox(mask, found["body"], (width, height))
    if bbox is None:
        raise UserError("no person found in the photo (empty person mask); use a clearer full-body photo", path)
    warnings += cutoff_warnings(mask, found["body"], bbox)
    person_height = bbox[3] - bbox[1]
    if person_height < MIN_PERSON_HEIGHT:
        warnings.append(
            f"person is only {person_height:.0f} px tall; results improve above {MIN_PERSON_HEIGHT} px, "
            "use a larger photo"
        )
    return Perception(
        mask=mask.astype(np.float32),
        body=found["body"],
        left_hand=found["left_hand"],
        right_hand=found["right_hand"],
        face=found["face"],
        body_world=found["body_world"],
        bbox=bbox,
        warnings=warnings,
        people=max(1, len(regions)),
        hand_sources=hand_sources,
    )


def _find_person(
    image: np.ndarray, person: int | None, path: str | Path | None
) -> tuple[dict[str, np.ndarray], list[np.ndarray], list[str]]:
    """Run Holistic on the whole photo or on the requested person-like region.

    Returns (Holistic arrays in full-image pixels, person-like regions [H, W] bool largest first, warnings).
    """
    found = _run_holistic(image)
    tracked = found["mask"] > 0.5 if found else np.zeros(image.shape[:2], bool)
    regions = _person_regions((_selfie_segmentation(image) > 0.5) | tracked, int(tracked.sum()))
    if person is not None:
        if not 1 <= person <= len(regions):
            raise UserError(f"person {person} asked for (--person), but {len(regions)} person-like region(s) were found "
                            "in the photo", path)
        chosen = regions[person - 1]
        if found is None or _overlap(chosen, tracked) < 0.5:
            others = np.logical_or.reduce([r for r in regions if r is not chosen] + [np.zeros_like(chosen)])
            found = _holistic_on_region(image, chosen, others)
            if found is None:
                raise UserError(
                    f"no body pose found in person-like region {person}; the pose detector needs the face "
                    "or body clearly visible",
                    path,
                )
        return found, regions, []
    if found is None and regions:
        # The pose detector sees a 224-px view of the whole photo; a small person can need a crop.
        found = _holistic_on_region(image, regions[0], np.zeros_like(regions[0]))
    if found is None:
        raise UserError("no person found in the photo; use a photo showing one person, ideally full body", path)
    warnings = []
    if len(regions) > 1:
        picked = 1 + int(np.argmax([_overlap(r, found["mask"] > 0.5) for r in regions]))
        warnings.append(
            f"{len(regions)} person-like regions found; using the one the pose detector picked "
            f"(region {picked} by size); choose the K-th largest with --person K (studio: Person on the Project tab)"
        )
    return found, regions, warnings


# --- mediapipe runners ------------------------------------------------------------------------------


def _run_holistic(image: np.ndarray) -> dict[str, np.ndarray] | None:
    """Holistic on a [H, W, 3] uint8 image -> arrays in pixels, or None when no body was found."""
    holistic = require("mediapipe.python.solutions.holistic", "finding the person in the photo")
    height, width = image.shape[:2]
    with quiet_native_logs(), holistic.Holistic(
        static_image_mode=True, model_complexity=1, enable_segmentation=True, refine_face_landmarks=True
    ) as model:
        result = model.process(image)
    return holistic_arrays(result, width, height)


def holistic_arrays(result, width: int, height: int) -> dict[str, np.ndarray] | None:
    """A Holistic result -> body [33, 3], hands [21, 3], face [478, 3] (pixels, confidence), body_world
    [33, 4] (metres, visibility; see ``Perception``) and mask [H, W] (zeros when Holistic gave none); None
    when no body was found."""
    if result.pose_landmarks is None:
        return None
    mask = result.segmentation_mask
    return {
        "body": _landmarks_to_array(result.pose_landmarks, NUM_BODY, width, height, use_visibility=True),
        "left_hand": _landmarks_to_array(result.left_hand_landmarks, NUM_HAND, width, height),
        "right_hand": _landmarks_to_array(result.right_hand_landmarks, NUM_HAND, width, height),
        "face": _landmarks_to_array(result.face_landmarks, NUM_FACE, width, height),
        "body_world": _world_landmarks(getattr(result, "pose_world_landmarks", None), result.pose_landmarks),
        "mask": np.zeros((height, width), np.float32) if mask is None else np.clip(mask, 0, 1).astype(np.float32),
    }


def _selfie_segmentation(image: np.ndarray) -> np.ndarray:
    """[H, W] float32 "any person" probability from mediapipe's general selfie-segmentation model."""
    from mediapipe.python.solutions import selfie_segmentation

    with quiet_native_logs(), selfie_segmentation.SelfieSegmentation(model_selection=0) as model:
        return np.asarray(model.process(image).segmentation_mask, np.float32)


def _landmarks_to_array(landmarks, count: int, width: int, height: int, use_visibility: bool = False) -> np.ndarray:
    """mediapipe NormalizedLandmarkList -> [count, 3] (x px, y px, confidence); zeros when missing."""
    out = np.zeros((count, 3), np.float32)
    if landmarks is None:
        return out
    points = landmarks.landmark
    if len(points) != count:
        raise RuntimeError(f"mediapipe returned {len(points)} landmarks, expected {count}")
    for i, point in enumerate(points):
        out[i] = (point.x * width, point.y * height, point.visibility if use_visibility else 1.0)
    return out


def _world_landmarks(world, image_landmarks) -> np.ndarray:
    """mediapipe LandmarkList (metres) -> [33, 4] (x, y, z, visibility of the image landmark); zeros if None."""
    out = np.zeros((NUM_BODY, 4), np.float32)
    if world is None or len(world.landmark) != NUM_BODY:
        return out
    for i, (point, seen) in enumerate(zip(world.landmark, image_landmarks.landmark)):
        out[i] = (point.x, point.y, point.z, seen.visibility)
    return out


def _holistic_on_region(image: np.ndarray, region: np.ndarray, others: np.ndarray) -> dict[str, np.ndarray] | None:
    """Holistic on a crop around ``region`` [H, W] bool with ``others`` painted out; results in full-image pixels."""
    import cv2

    height, width = image.shape[:2]
    ys, xs = np.nonzero(region)
    crop = person_crop((width, height), (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), margin=0.15, square=False)
    cropped = crop_image(image, crop, fill=0.0)
    hidden = crop_image(cv2.dilate(others.astype(np.uint8), np.ones((9, 9), np.uint8)), crop) > 0.5
    cropped[hidden] = np.median(image.reshape(-1, 3), axis=0)  # a flat patch the detector ignores
    found = _run_holistic(_to_uint8(cropped / 255.0))
    if found is None:
        return None
    for key in ("body", "left_hand", "right_hand", "face"):
        found[key] = _uncrop_keypoints(found[key], crop)
    found["mask"] = _paste_mask(found["mask"], crop, (height, width))
    return found


def _uncrop_keypoints(points: np.ndarray, crop: Crop) -> np.ndarray:
    """Map found keypoints back to the full image; missing points (conf 0) stay at zero."""
    out = uncrop_points(points, crop).astype(np.float32)
    out[points[:, 2] <= 0] = 0.0
    return out


def _paste_mask(mask: np.ndarray, crop: Crop, shape: tuple[int, int]) -> np.ndarray:
    """Place a crop-sized (unscaled) mask back into an all-zero [H, W] canvas."""
    canvas = np.zeros(shape, np.float32)
    height, width = shape
    x0, y0 = max(crop.x0, 0), max(crop.y0, 0)
    x1, y1 = min(crop.x0 + crop.width, width), min(crop.y0 + crop.height, height)
    canvas[y0:y1, x0:x1] = mask[y0 - crop.y0 : y1 - crop.y0, x0 - crop.x0 : x1 - crop.x0]
    return canvas


# --- hands fallback ---------------------------------------------------------------------------------


def fallback_hands(image: np.ndarray, body: np.ndarray, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Find the hands Holistic missed with mediapipe Hands on a crop around each wrist.

    Args:
        image: [H, W, 3] uint8 RGB.
        body: [33, 3] BlazePose points (x px, y px, visibility).
        known: side ("left"/"right") -> [21, 3] hand already found (confidence > 0), or missing/zeros.
    Returns:
        side -> [21, 3] hand (confidence ``FALLBACK_HAND_CONFIDENCE``) for each side that was missing,
        visible (wrist visibility > 0.3, inside the image) and found.
    Hands' own left/right label is not used: it assumes a mirrored selfie and proved unreliable on
    crops (it called messi5's left hand "right" with score 0.80). Instead a candidate is assigned to
    a side by proximity: its wrist must be nearer that body wrist than the other one, within 0.6 of a
    forearm length, and it must not duplicate the other side's known hand.
    """
    def present(side: str) -> bool:
        return side in known and known[side][0, 2] > 0

    missing = [side for side in ("left", "right") if not present(side) and _wrist_in_view(body, side, image)]
    if not missing:
        return {}
    from mediapipe.python.solutions import hands

    filled: dict[str, np.ndarray] = {}
    settings = {"static_image_mode": True, "max_num_hands": 2, "model_complexity": 1, "min_detection_confidence": 0.5}
    with hands.Hands(**settings) as model:
        for side in missing:
            other = "right" if side == "left" else "left"
            other_hand = filled.get(other, known.get(other) if present(other) else None)
            hand = _pick_hand(_hands_near_wrist(model, image, body, side), body, side, other_hand)
            if hand is not None:
                filled[side] = hand
    return filled


def _wrist_in_view(body: np.ndarray, side: str, image: np.ndarray) -> bool:
    x, y, visibility = body[_LEFT_WRIST if side == "left" else _RIGHT_WRIST]
    height, width = image.shape[:2]
    return visibility > 0.3 and 0 <= x < width and 0 <= y < height


def _forearm_length(body: np.ndarray, side: str) -> float:
    wrist, elbow = (_LEFT_WRIST, _LEFT_ELBOW) if side == "left" else (_RIGHT_WRIST, _RIGHT_ELBOW)
    return float(np.linalg.norm(body[wrist, :2] - body[elbow, :2]))


def _hands_near_wrist(model, image: np.ndarray, body: np.ndarray, side: str) -> list[np.ndarray]:
    """Hands on a 256-px crop around one wrist -> candidate hands [21, 3] in image pixels."""
    height, width = image.shape[:2]
    centre = body[list(_HAND_POINTS[side]), :2].mean(axis=0)
    half = max(0.75 * _forearm_length(body, side), 24.0)  # the hand is ~0.75 forearm long
    box = (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)
    crop = person_crop((width, height), box, margin=0.0, out_size=256)
    result = model.process(_to_uint8(crop_image(image, crop) / 255.0))
    return [
        uncrop_points(_landmarks_to_array(landmarks, NUM_HAND, crop.out_width, crop.out_height), crop)
        for landmarks in result.multi_hand_landmarks or []
    ]


def _pick_hand(
    candidates: list[np.ndarray], body: np.ndarray, side: str, other_hand: np.ndarray | None
) -> np.ndarray | None:
    """The candidate nearest ``side``'s wrist that passes the proximity and duplicate tests, or None."""
    wrist = body[_LEFT_WRIST if side == "left" else _RIGHT_WRIST, :2]
    other_wrist = body[_RIGHT_WRIST if side == "left" else _LEFT_WRIST, :2]
    best, best_distance = None, 0.6 * max(_forearm_length(body, side), 24.0)
    for points in candidates:
        if other_hand is not None and _same_hand(points, other_hand):
            continue
        distance = float(np.linalg.norm(points[0, :2] - wrist))
        if distance < best_distance and distance < float(np.linalg.norm(points[0, :2] - other_wrist)):
            best, best_distance = points, distance
    if best is None:
        return None
    best = best.astype(np.float32)
    best[:, 2] = FALLBACK_HAND_CONFIDENCE
    return best


def _same_hand(a: np.ndarray, b: np.ndarray) -> bool:
    """Two [21, 3] hands are the same if their points are closer than half the hand's size."""
    size = float(np.ptp(b[:, :2], axis=0).max())
    return float(np.median(np.linalg.norm(a[:, :2] - b[:, :2], axis=1))) < 0.5 * max(size, 1.0)


# --- masks, regions, bbox, warnings -----------------------------------------------------------------


def _person_regions(people_mask: np.ndarray, tracked_area: int) -> list[np.ndarray]:
    """Connected components of ``people_mask`` [H, W] bool big enough to be a person, largest first."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(people_mask.astype(np.uint8), connectivity=8)
    min_area = max(MIN_REGION_OF_IMAGE * people_mask.size, MIN_REGION_OF_PERSON * tracked_area)
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    keep.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [labels == i for i in keep]


def _overlap(region: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of ``mask`` [H, W] bool that lies inside ``region``."""
    return float((region & mask).sum()) / max(int(mask.sum()), 1)


def refine_mask_grabcut(image: np.ndarray, mask: np.ndarray, iterations: int = 3) -> tuple[np.ndarray, str]:
    """Snap a soft person mask's edge to the image with OpenCV GrabCut seeded from it.

    GrabCut may only move the edge within a band of 2.5 % of the person's size (>= 3 px) around the
    segmentation's 0.5 contour: deeper inside is sure foreground, farther out sure background. An
    unconstrained GrabCut was tried first and, on the grey basketball1.png, cut off the top of the
    head, filled the gap between the legs and dropped the shoes; the band keeps it a refinement.
    Grey photos are left alone (GrabCut's colour models cannot separate the person there).
    Args:
        image: [H, W, 3] uint8 RGB (or float in [0, 1]).
        mask: [H, W] float soft mask in [0, 1].
    Returns:
        ([H, W] float32 mask with a 1-px soft edge, warning or ""). If GrabCut still changes the mask a
        lot (IoU with the segmentation < 0.75, e.g. on thin limbs) the segmentation is returned, with a warning.
    """
    import cv2

    image = _to_uint8(image)
    person = (mask > 0.5).astype(np.uint8)
    if not person.any():
        return mask.astype(np.float32), ""
    if _is_grey(image):
        # GrabCut separates by colour; on basketball1.png it cut the head's top off even within the band.
        return mask.astype(np.float32), "grey photo: kept the segmentation mask (GrabCut refinement needs colour)"
    ys, xs = np.nonzero(person)
    extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    band = max(3, round(0.025 * extent))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    seeds = np.full(mask.shape, cv2.GC_BGD, np.uint8)
    seeds[cv2.dilate(person, disk) > 0] = cv2.GC_PR_BGD
    seeds[person > 0] = cv2.GC_PR_FGD
    seeds[cv2.erode(person, disk) > 0] = cv2.GC_FGD
    height, width = mask.shape
    x0, x1 = max(xs.min() - 3 * band, 0), min(xs.max() + 3 * band + 1, width)
    y0, y1 = max(ys.min() - 3 * band, 0), min(ys.max() + 3 * band + 1, height)
    sub_seeds = np.ascontiguousarray(seeds[y0:y1, x0:x1])
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(
        np.ascontiguousarray(image[y0:y1, x0:x1, ::-1]), sub_seeds, None, background, foreground,
        iterations, cv2.GC_INIT_WITH_MASK,
    )  # fmt: skip
    refined = np.zeros(mask.shape, np.float32)
    refined[y0:y1, x0:x1] = np.isin(sub_seeds, (cv2.GC_FGD, cv2.GC_PR_FGD))
    iou = float((person & (refined > 0.5)).sum()) / max(float((person | (refined > 0.5)).sum()), 1.0)
    if iou < 0.75:
        warning = f"GrabCut refinement disagreed with the segmentation (IoU {iou:.2f}); kept the segmentation"
        return mask.astype(np.float32), warning
    return cv2.GaussianBlur(refined, (3, 3), 0.6), ""


def person_bbox(
    mask: np.ndarray, body: np.ndarray, image_size: tuple[int, int]
) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) px around mask > 0.5 and confidently seen body points, clipped to the image; None if empty."""
    width, height = image_size
    ys, xs = np.nonzero(mask > 0.5)
    points = body[body[:, 2] > 0.5, :2]
    xs_all = np.concatenate([xs.astype(np.float32), xs + 1.0, points[:, 0]])
    ys_all = np.concatenate([ys.astype(np.float32), ys + 1.0, points[:, 1]])
    if xs.size == 0:
        return None
    x0, x1 = float(np.clip(xs_all.min(), 0, width)), float(np.clip(xs_all.max(), 0, width))
    y0, y1 = float(np.clip(ys_all.min(), 0, height)), float(np.clip(ys_all.max(), 0, height))
    return (x0, y0, x1, y1)


def cutoff_sides(mask: np.ndarray, body: np.ndarray, bbox: tuple[float, float, float, float]) -> list[str]:
    """Image sides ("top", "bottom", "left", "right") where the person is cut off by the frame.

    A side counts when the mask (> 0.25, as segmentation fades at the frame) reaches the outer 1.5 %
    band of the frame along more than 0.5 % of the person's extent, when a key body point (head,
    limbs, feet) is predicted beyond it, or, for the bottom, when the feet are not visible (ankle
    visibility < 0.3) and the person reaches the bottom 5 % of the frame. Measured on messi5.jpg crops
    (head, foot, leg, arm cut): mediapipe then pulls the landmarks inside the frame, so the mask test
    is what catches them.
    """
    height, width = mask.shape
    person = mask > 0.25
    band = max(2, round(0.015 * min(height, width)))
    extent = max(bbox[2] - bbox[0], bbox[3] - bbox[1], 1.0)
    touch = max(2, int(0.005 * extent))
    bands = {
        "top": person[:band].any(axis=0), "bottom": person[-band:].any(axis=0),
        "left": person[:, :band].any(axis=1), "right": person[:, -band:].any(axis=1),
    }  # fmt: skip
    sides = {side for side, hits in bands.items() if int(hits.sum()) >= touch}
    key = body[list(_HEAD + _LIMBS)]
    if (key[:, 1] < 0).any():
        sides.add("top")
    if (key[:, 1] > height).any():
        sides.add("bottom")
    if (key[:, 0] < 0).any():
        sides.add("left")
    if (key[:, 0] > width).any():
        sides.add("right")
    feet_hidden = body[[27, 28], 2].max() < 0.3
    if feet_hidden and bbox[3] > 0.95 * height:
        sides.add("bottom")
    return [side for side in ("top", "bottom", "left", "right") if side in sides]


def cutoff_warnings(mask: np.ndarray, body: np.ndarray, bbox: tuple[float, float, float, float]) -> list[str]:
    """One warning per cut-off side, plus one if the feet are not visible at all."""
    warnings = [f"person is cut off at the {side}" for side in cutoff_sides(mask, body, bbox)]
    if body[list(_FEET), 2].max() < 0.3 and not any("bottom" in w for w in warnings):
        warnings.append("the feet are not visible (occluded?); the fitted legs will be guessed")
    return warnings


def _is_grey(image: np.ndarray) -> bool:
    """True when an [H, W, 3] uint8 image has (almost) no colour: 99 % of pixels within 2 levels across channels."""
    spread = image.max(axis=-1).astype(np.int16) - image.min(axis=-1)
    return float(np.percentile(spread, 99)) <= 2


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] or uint8 -> contiguous uint8 RGB."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        rgb = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(rgb)


# --- files -----------------------------------------------------------------------------------------


def save_perception(path: str | Path, perception: Perception) -> None:
    """Write ``perception`` to an .npz (no pickles), atomically."""
    arrays = {
        "version": np.array(PERCEPTION_FORMAT_VERSION),
        "mask": perception.mask.astype(np.float32),
        "body": perception.body,
        "body_world": perception.body_world,
        "left_hand": perception.left_hand,
        "right_hand": perception.right_hand,
        "face": perception.face,
        "bbox": np.array(perception.bbox, np.float64),
        "warnings": np.array(perception.warnings, dtype=np.str_).reshape(-1),
        "people": np.array(perception.people),
        "hand_sources": np.array([perception.hand_sources.get(s, "") for s in ("left", "right")], dtype=np.str_),
    }
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def load_perception(path: str | Path) -> Perception:
    """Read a file written by ``save_perception``; UserError if it is not one."""
    expected = {"body": (NUM_BODY, 3), "left_hand": (NUM_HAND, 3), "right_hand": (NUM_HAND, 3), "face": (NUM_FACE, 3)}
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != PERCEPTION_FORMAT_VERSION:
                raise UserError(f"perception file version {int(data['version'])} is not supported", path)
            arrays = {key: data[key].astype(np.float32) for key in expected}
            mask = data["mask"].astype(np.float32)
            bbox = tuple(float(v) for v in data["bbox"])
            warnings = [str(w) for w in data["warnings"]]
            people = int(data["people"])
            sources = [str(s) for s in data["hand_sources"]]
            # files written before the 3D points existed read as "none detected"
            world = data["body_world"].astype(np.float32) if "body_world" in data.files else None
    except (OSError, KeyError, ValueError) as err:
        raise UserError(f"not a readable perception file ({err})", path) from None
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise UserError(f"perception file has {key} of shape {arrays[key].shape}, expected {shape}", path)
    if mask.ndim != 2 or len(bbox) != 4:
        raise UserError("perception file has a malformed mask or bbox", path)
    if world is None:
        world = np.zeros((NUM_BODY, 4), np.float32)
    if world.shape != (NUM_BODY, 4):
        raise UserError(f"perception file has body_world of shape {world.shape}, expected {(NUM_BODY, 4)}", path)
    return Perception(
        mask=mask, bbox=bbox, warnings=warnings, people=people, body_world=world,
        hand_sources=dict(zip(("left", "right"), sources)), **arrays,
    )  # fmt: skip
