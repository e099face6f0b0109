"""Photo -> Subject folder: load, perceive, crop, fit SMPL-X, albedo, geometry targets, save.

``prepare_subject`` is what ``persona-studio prep`` and the studio call. A Subject folder that already
holds the same photo (by hash), body model and prep settings is returned as is (the cache). Bad
input raises a one-line ``UserError`` before anything is written; the folder is written atomically.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import UserError
from core.prep.crop import crop_image, crop_intrinsics, crop_points, default_intrinsics, person_crop
from core.prep.image_io import load_photo
from core.prep.landmarks import bone_directions, keypoints_for_fitting
from core.prep.perception import perceive_photo
from core.prep.supplied import SuppliedMaps, load_supplied
from core.subject import SUBJECT_FORMAT, Subject, file_hash

PREP_VERSION = 4  # bump when prep's outputs change, so older cached Subjects are recomputed
CUT_OFF_WEIGHT = 0.2  # confidence multiplier for limb points mediapipe guessed at a cut-off border
CUT_OFF_BAND = 0.1  # a limb "reaches" a cut-off border within this fraction of the person's height
DEBUG_PNG = "debug.png"
FULL_FRAME = 0.98  # body coverage of the crop that only a rendering fault produces

Progress = Callable[[str, float], None]

# Limbs as chains of fitting names, proximal to distal (a cut limb is unreliable from the cut on).
_HAND_NAMES = ("thumb1", "thumb2", "thumb3", "thumb", "index1", "index2", "index3", "index", "middle1", "middle2",
               "middle3", "middle", "ring1", "ring2", "ring3", "ring", "pinky1", "pinky2", "pinky3", "pinky")
LIMB_CHAINS: dict[str, tuple[str, ...]] = {
    **{f"{side}_arm": (f"{side}_elbow", f"{side}_wrist", *(f"{side}_{n}" for n in _HAND_NAMES))
       for side in ("left", "right")},
    **{f"{side}_leg": (f"{side}_knee", f"{side}_ankle", f"{side}_heel", f"{side}_big_toe")
       for side in ("left", "right")},
}
_CUT_OFF_PREFIX = "person is cut off at the "


def prepare_subject(
    photo_path: str | Path,
    out_dir: str | Path,
    config=None,
    person: int | None = None,
    debug: bool = False,
    progress: Progress | None = None,
    model=None,
    supplied: SuppliedMaps | None = None,
) -> Subject:
    """Prepare one photo into a Subject folder and return the Subject.

    Args:
        photo_path: the user's photo (JPEG, PNG, ...).
        out_dir: the Subject folder to write (replaced atomically; parents created).
        config: a ``core.config.Config`` (None = defaults); uses ``prep`` and ``body``.
        person: None = the person the pose detector picks; K = the K-th largest person-like region.
        debug: also write ``debug.png`` (fit overlay) into the folder.
        progress: optional ``callable(stage: str, fraction: float)``.
        model: an already loaded ``core.body.BodyModel`` to use instead of loading ``config.body.model``.
        supplied: the user's own mask and albedo images for the photo (``core.prep.supplied``), used instead
            of prep's estimates; None: those beside the photo (``<photo name>.mask.png`` ...), if any.
    Returns:
        The Subject. ``info["cached"]`` is True (in memory only) when an existing folder was reused.
    Raises:
        UserError: unreadable photo, no person, bad body model file, bad supplied map, ``out_dir`` holding
            something other than a Subject (nothing is written then).
    """
    from core.config import Config

    config = config or Config()
    report = progress or (lambda stage, fraction: None)
    photo_path, out_dir = Path(photo_path), Path(out_dir)
    report("load photo", 0.0)
    photo = load_photo(photo_path, config.prep.max_side)  # raises the one-line errors for bad files
    supplied = SuppliedMaps.for_photo(photo_path) if supplied is None else supplied
    supplied_mask, supplied_albedo = load_supplied(supplied, photo.size)  # and so do the user's maps
    if supplied_mask is not None:
        photo = dataclasses.replace(photo, alpha=supplied_mask)  # used as the mask, as an RGBA photo's alpha
    check_output_folder(out_dir)
    key = cache_key(photo_path, config, person, supplied)
    cached = load_cached(out_dir, key)
    if cached is not None:
        if debug and not (out_dir / DEBUG_PNG).exists():
            _write_debug(cached, out_dir, model or _load_model(config))
        cached.info["cached"] = True
        report("cached: same photo, body model and settings", 1.0)
        return cached

    warm = threading.Thread(target=_warm_rasterizer, daemon=True)
    warm.start()  # numba's kernels load while mediapipe runs
    try:
        clock = time.perf_counter()
        report("perceive", 0.0)
        perception = perceive_photo(photo, refine="grabcut" if config.prep.grabcut else None, person=person)
        perceive_s = time.perf_counter() - clock
        model = model or _load_model(config)
    finally:
        # Also when perception fails: a process that exits while this thread is inside numba's
        # OpenMP pool aborts ("terminate called without an active exception").
        warm.join()
    subject, projected = build_subject(photo, perception, model, config.prep, report, supplied_albedo)
    subject.info = {**key, **subject.info}
    subject.info["body_model"] = {**key["body_model"], **subject.info["body_model"]}
    subject.info["timings"]["perceive_s"] = perceive_s
    report("save", 0.0)
    subject.save(out_dir)
    if debug:
        _write_debug(subject, out_dir, model, projected)
    report("done", 1.0)
    return subject


def build_subject(photo, perception, model, prep, report: Progress,
                  albedo_image: np.ndarray | None = None) -> tuple[Subject, np.ndarray]:
    """Crop, fit, albedo and geometry for one perceived photo -> (Subject, ``[K, 2]`` fitted keypoints px).
    ``albedo_image`` [H, W, 3]: the user's albedo of the whole photo, cropped instead of estimating one.

    ``info`` holds everything but the cache key: photo path/size/scale, crop, focal, camera, warnings,
    people, hand sources, body model, fit metrics (incl. the silhouette IoU) and timings.
    """
    from core.prep.albedo import estimate_albedo
    from core.prep.fit import fit_smplx, prep_fit_weights
    from core.prep.geometry import render_geometry, silhouette_metrics

    inputs = crop_inputs(photo, perception, prep)
    keypoints, mask, K = inputs["keypoints"], inputs["mask"], inputs["K"]
    fit = fit_smplx(model, inputs["names"], keypoints[:, :2], keypoints[:, 2], mask, K, prep.fit_iterations,
                    valid=inputs["valid"], progress=report, bones=inputs["bones"],
                    weights=prep_fit_weights(prep))
    timings = {"fit_s": fit.metrics["time_s"]}
    report("albedo", 0.0)
    clock = time.perf_counter()
    if albedo_image is None:
        albedo = estimate_albedo(inputs["image"], mask)
    else:
        albedo = np.clip(crop_image(albedo_image, inputs["crop"]), 0.0, 1.0).astype(np.float32)
    timings["albedo_s"] = time.perf_counter() - clock
    report("geometry", 0.0)
    clock = time.perf_counter()
    geometry = render_geometry(model, fit.params, K, mask.shape[1], mask.shape[0])
    body_mask = geometry.pop("mask")
    if body_mask.mean() > FULL_FRAME:  # the crop has margins around the person: never a real fit
        raise RuntimeError("the mesh renderer covered the whole crop (an OpenGL fault?); nothing was written, "
                           "run prep again")
    timings["geometry_s"] = time.perf_counter() - clock
    metrics = {**fit.metrics, **silhouette_metrics(body_mask, mask, inputs["valid"])}
    subject = Subject(
        image=inputs["image"], mask=mask, albedo=albedo, K=K.astype(np.float32), smplx=fit.params,
        keypoint_names=list(inputs["names"]), keypoints=keypoints, geometry=geometry,
        info=subject_info(photo, perception, model, inputs, metrics, timings),
    )
    return subject, fit.projected


def subject_info(photo, perception, model, inputs: dict, metrics: dict, timings: dict) -> dict:
    """The descriptive part of ``subject.json`` (JSON-ready)."""
    from core.prep.fit import PHOTO_VIEWMAT

    return {
        "photo_path": str(photo.path.resolve()),
        "photo_size": list(photo.orig_size),
        "photo_scale": photo.scale,
        "crop": dataclasses.asdict(inputs["crop"]),
        "focal": float(inputs["K"][0, 0]),
        "focal_35mm": photo.focal_35mm,
        "camera": {"viewmat": PHOTO_VIEWMAT.tolist(),
                   "convention": "OpenCV camera at the world origin looking along -z, y up (SMPL-X world)"},
        "warnings": list(perception.warnings),
        "people": perception.people,
        "hand_sources": dict(perception.hand_sources),
        "body_model": {"num_vertices": model.num_vertices, "num_betas": model.num_betas,
                       "num_expression": model.num_expression},
        "fit": metrics,
        "timings": timings,
    }


def check_output_folder(out_dir: Path) -> None:
    """Refuse to replace anything but a Subject folder: saving swaps the whole folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("exists and is not a folder; choose a new folder for the Subject", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "subject.json").is_file():
        raise UserError("is a non-empty folder that is not a Subject; choose a new or empty folder", out_dir)


def cache_key(photo_path: Path, config, person: int | None, supplied: SuppliedMaps = SuppliedMaps()) -> dict:
    """What makes two prep runs give the same Subject: photo bytes, body model file, prep settings, and the
    bytes of the user's supplied maps (only when there are any, so Subjects made without stay valid)."""
    from core.body.model_file import resolve_model_path

    model_path, source = resolve_model_path(config.body.model or None)
    model_id = {"source": source, "path": str(model_path.resolve())}
    if model_path.is_file():
        model_id["size"] = model_path.stat().st_size
    prep = {"version": PREP_VERSION, "person": person, "num_betas": config.body.num_betas,
            **dataclasses.asdict(config.prep)}
    fingerprint = supplied.fingerprint()
    if fingerprint:
        prep["supplied"] = fingerprint
    return {"photo_hash": file_hash(photo_path), "body_model": model_id, "prep": prep}


def load_cached(out_dir: Path, key: dict) -> Subject | None:
    """The Subject in ``out_dir`` if it was made with the same ``cache_key``, else None."""
    meta = out_dir / "subject.json"
    if not meta.is_file():
        return None
    try:
        subject = Subject.load(out_dir)
    except (UserError, OSError, KeyError, ValueError):
        return None  # an unreadable or foreign folder is simply recomputed (and replaced)
    info = subject.info
    same_model = {k: info.get("body_model", {}).get(k) for k in key["body_model"]} == key["body_model"]
    if info.get("format") == SUBJECT_FORMAT and info.get("photo_hash") == key["photo_hash"] and same_model \
            and info.get("prep") == key["prep"]:
        return subject
    return None


def crop_inputs(photo, perception, prep) -> dict:
    """The person crop and everything the fitter needs, in crop pixels.

    Returns dict: crop (``core.prep.crop.Crop``), image ``[S, S, 3]``, mask ``[S, S]``, valid ``[S, S]`` bool
    (False on padding outside the photo), K ``[3, 3]`` float64, names [K], keypoints ``[K, 3]`` float32
    (x px, y px, confidence after cut-off down-weighting), bones (``core.prep.landmarks.BoneDirections``).
    """
    width, height = photo.size
    names, xy, conf = keypoints_for_fitting(perception)
    person_height = perception.bbox[3] - perception.bbox[1]
    conf = downweight_cut_off_limbs(names, xy, conf, perception.warnings, (width, height), person_height)
    crop = person_crop((width, height), perception.bbox, prep.crop_margin, prep.crop_size, square=True)
    K = crop_intrinsics(default_intrinsics(width, height, photo.focal_35mm), crop)
    keypoints = np.concatenate([crop_points(xy, crop), conf[:, None]], axis=1).astype(np.float32)
    return {
        "crop": crop,
        "image": np.clip(crop_image(photo.rgb, crop), 0.0, 1.0).astype(np.float32),
        "mask": np.clip(crop_image(perception.mask, crop), 0.0, 1.0).astype(np.float32),
        "valid": crop_image(np.ones((height, width), np.float32), crop) > 0.5,
        "K": K,
        "names": list(names),
        "keypoints": keypoints,
        "bones": bone_directions(perception),
    }


def downweight_cut_off_limbs(names, xy: np.ndarray, conf: np.ndarray, warnings: list[str],
                             image_size: tuple[int, int], person_height: float) -> np.ndarray:
    """Lower the confidence of limb points that mediapipe guessed at a border where the person is cut off.

    For each "person is cut off at the <side>" warning, a limb (``LIMB_CHAINS``) with a point within
    ``CUT_OFF_BAND`` x the person's height of that image side gets ``CUT_OFF_WEIGHT`` x confidence from
    that point to its end. Returns a new ``[K]`` array.
    """
    width, height = image_size
    band = CUT_OFF_BAND * max(person_height, 1.0)
    sides = [w[len(_CUT_OFF_PREFIX):] for w in warnings if w.startswith(_CUT_OFF_PREFIX)]
    distance = {"top": xy[:, 1], "bottom": height - xy[:, 1], "left": xy[:, 0], "right": width - xy[:, 0]}
    index = {name: k for k, name in enumerate(names)}
    conf = np.array(conf, np.float32, copy=True)
    for side in sides:
        if side not in distance:
            continue
        for chain in LIMB_CHAINS.values():
            rows = [index[n] for n in chain if n in index]
            near = [k for k, row in enumerate(rows) if conf[row] > 0 and distance[side][row] < band]
            if near:
                conf[rows[near[0]:]] *= CUT_OFF_WEIGHT
    return conf


def _load_model(config):
    from core.body import BodyModel

    return BodyModel.load(config.body.model or None, num_betas=config.body.num_betas)


def _warm_rasterizer() -> None:
    from core.render import warmup

    warmup()


def _write_debug(subject: Subject, out_dir: Path, model, projected: np.ndarray | None = None) -> None:
    from core.prep.debug import subject_debug_image, write_debug_png
    from core.prep.fit import project_keypoints

    if projected is None:
        projected = project_keypoints(model, subject.smplx, subject.keypoint_names, subject.K)
    write_debug_png(out_dir / DEBUG_PNG, subject_debug_image(subject, projected))
