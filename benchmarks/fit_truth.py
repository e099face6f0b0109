"""The photo fit against ground truth: prep's SMPL-X fit of dressed synthetic people, measured where it matters.

    python benchmarks/fit_truth.py                          # people 0..5, the default fit only
    python benchmarks/fit_truth.py --people 6 --variant no-world:world_directions=0

Each person (core.synthetic_people, deterministic from its seed) is rendered from the front as the input
photo, on a light grey backdrop, and goes through our real perception (mediapipe mask + keypoints) once;
then every fit variant runs on the same crop, keypoints and mask. The baseline (``default``) is prep's
fit (``FitWeights`` with the preset's ``prep.silhouette_uncovered``); ``--variant NAME:field=value,...``
adds fits with fields of ``FitWeights`` changed from it.

Columns (means over people; the GT body and the fitted body share the mesh, so vertices correspond):
- kp %: prep's own metric, 2D keypoint error of the fit to mediapipe's points, % of person height;
- reg % / reg90 %: mean / 90th percentile 2D distance between where the fitted body and the GT body put
  each vertex that the GT body shows in the photo, % of the person's height. This is how far the photo's
  colours land from their true place on the avatar's surface; face reg %: the same over the head's
  vertices (head, jaw, eyes), where a few pixels misplace the features;
- IoU: bare fitted body mask vs bare GT body mask in the photo;
- PA-MPJPE: body joints (22) after a similarity Procrustes, mm;
- bone °: mean angle between fitted and GT world directions of the limb bones (upper/lower arms and legs,
  spine to neck, neck to head); worst °: the largest of them, mean over people;
- height cm: |fitted - GT| standing height (T-pose, top of head to lowest vertex);
- shape cm: mean vertex distance between the fitted and GT T-posed bodies after a similarity Procrustes
  (proportions only: overall size cannot be seen in one photo and the quality benchmark aligns it away);
- fit s: the optimisation alone.
Below the table: the perceived mask's IoU with the GT dressed mask, and mediapipe's own limb joints against
the GT joints (% of height): the 2D error the fit starts from.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BONES = (("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
         ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
         ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("spine1", "neck"), ("neck", "head"))
COLUMNS = ("kp_pct", "reg_pct", "reg90_pct", "face_reg_pct", "iou", "pa_mpjpe_mm", "bone_deg", "worst_bone_deg", "height_cm",
           "shape_cm", "fit_s")


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:field=value,field=value`` -> (name, overrides of ``FitWeights``); values are floats or ints."""
    from core.prep.fit import FitWeights

    name, _, body = text.partition(":")
    fields = {f.name: f for f in dataclasses.fields(FitWeights)}
    overrides = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--variant {text!r}: FitWeights has no field {key!r}")
        overrides[key] = int(value) if fields[key].type in (int, "int") else float(value)
    return name, overrides


def procrustes_error(source: np.ndarray, target: np.ndarray) -> float:
    """Mean distance after the best similarity transform of ``source [N, 3]`` onto ``target [N, 3]``."""
    a, b = source - source.mean(0), target - target.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    s[-1] *= d
    u[:, -1] *= d
    rotation = u @ vt
    scale = s.sum() / (a ** 2).sum()
    return float(np.linalg.norm(scale * a @ rotation - b, axis=1).mean())


def bone_angles(joints: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Angles (degrees) between fitted and GT world directions of ``BONES``; joints ``[55, 3]``."""
    from core.body.skeleton import JOINT_NAMES

    index = {name: i for i, name in enumerate(JOINT_NAMES)}
    out = []
    for a, b in BONES:
        u, v = joints[index[b]] - joints[index[a]], truth[index[b]] - truth[index[a]]
        cos = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
        out.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.array(out)


def pinhole(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> np.ndarray:
    """World ``points [N, 3]`` -> pixels ``[N, 2]`` through an OpenCV camera (``viewmat [4, 4]``, ``K [3, 3]``)."""
    from core.camera import project_points

    return project_points(points, np.asarray(viewmat), np.asarray(K))[0]


def standing_height(body, betas: np.ndarray) -> float:
    from core.synthetic_people import posed_vertices

    y = posed_vertices(body, betas, {})[:, 1]
    return float(y.max() - y.min())


def truth_in_crop(body, person, K_truth: np.ndarray, photo_scale: float, crop):
    """The GT body in the photo pose (``BodyModel.forward`` output) and the intrinsics ``[3, 3]`` that
    project it straight into prep's crop (the photo loaded at ``photo_scale``, then cropped)."""
    from core.prep.crop import crop_intrinsics
    from core.synthetic_people import _posed

    scaled = np.diag([photo_scale, photo_scale, 1.0]) @ np.asarray(K_truth, np.float64)
    return _posed(body, person.betas, {"betas": person.betas, **person.photo_pose}), crop_intrinsics(scaled, crop)


def score_fit(body, person, params: dict, inputs: dict, photo_scale: float, truth_view, size: int) -> dict:
    """Every column but kp % and fit s for one fit (``params``: prep's SMPL-X arrays, crop camera)."""
    from core.body.parts import FACE_PARTS
    from core.prep.fit import PHOTO_VIEWMAT
    from core.prep.geometry import silhouette_iou
    from core.render.mesh import MeshRenderer, visible_vertices
    from core.synthetic_people import _posed, posed_vertices

    view, K_truth = truth_view
    faces = body.faces.numpy()
    truth_out, K_crop = truth_in_crop(body, person, K_truth, photo_scale, inputs["crop"])
    fit_out = _posed(body, params["betas"], {k: v for k, v in params.items() if k != "betas"})
    truth_vertices, fit_vertices = truth_out.vertices[0].numpy(), fit_out.vertices[0].numpy()
    seen = visible_vertices(truth_vertices, faces, view, K_truth, size, size)
    truth_px = pinhole(truth_vertices, view, K_crop)  # where the photo shows them, in crop pixels
    fit_px = pinhole(fit_vertices, PHOTO_VIEWMAT, inputs["K"])
    height_px = np.ptp(truth_px[:, 1])
    distance = np.linalg.norm(fit_px[seen] - truth_px[seen], axis=1) / height_px
    face = np.isin(body.part_labels, FACE_PARTS)[seen]
    crop_size = inputs["mask"].shape[0]
    renderer = MeshRenderer()
    fit_mask = renderer.render(fit_vertices, faces, PHOTO_VIEWMAT, inputs["K"], crop_size, crop_size)["mask"]
    truth_mask = renderer.render(truth_vertices, faces, view, K_crop, crop_size, crop_size)["mask"]
    joints, truth_joints = fit_out.joints[0].numpy(), truth_out.joints[0].numpy()
    angles = bone_angles(joints, truth_joints)
    return {
        "reg_pct": 100.0 * float(distance.mean()), "reg90_pct": 100.0 * float(np.percentile(distance, 90)),
        "face_reg_pct": 100.0 * float(distance[face].mean()),
        "iou": silhouette_iou(fit_mask, truth_mask, inputs["valid"]),
        "pa_mpjpe_mm": 1000.0 * procrustes_error(joints[:22], truth_joints[:22]),
        "bone_deg": float(angles.mean()), "worst_bone_deg": float(angles.max()),
        "height_cm": 100.0 * abs(standing_height(body, params["betas"]) - standing_height(body, person.betas)),
        "shape_cm": 100.0 * procrustes_error(posed_vertices(body, params["betas"], {}),
                                             posed_vertices(body, person.betas, {})),
    }


DETECTOR_JOINTS = tuple(f"{side}_{joint}" for side in ("left", "right")
                        for joint in ("shoulder", "elbow", "wrist", "knee", "ankle"))


def detector_error(body, person, inputs: dict, photo_scale: float, truth_view) -> float:
    """Mean 2D distance (% of the person's height) between mediapipe's shoulders, elbows, wrists, knees and
    ankles and the GT body's joints: the error the fit inherits from the detector (hips left out: BlazePose
    puts them elsewhere than SMPL-X by definition)."""
    from core.body.skeleton import JOINT_NAMES

    view, K = truth_view
    truth_out, K_crop = truth_in_crop(body, person, K, photo_scale, inputs["crop"])
    truth = pinhole(truth_out.joints[0].numpy(), view, K_crop)
    height = np.ptp(pinhole(truth_out.vertices[0].numpy(), view, K_crop)[:, 1])
    rows = [inputs["names"].index(n) for n in DETECTOR_JOINTS]
    found = inputs["keypoints"][rows, :2]
    distance = np.linalg.norm(found - truth[[JOINT_NAMES.index(n) for n in DETECTOR_JOINTS]], axis=1)
    return 100.0 * float(distance.mean()) / height


def perceive_person(body, person, size: int, workdir: Path, config):
    """Render the person's photo, run mediapipe on it -> (photo, crop inputs, truth camera, IoU of
    the perceived mask with the GT dressed mask, ``detector_error``)."""
    from core.io.images import save_png
    from core.prep.crop import crop_image
    from core.prep.geometry import silhouette_iou
    from core.prep.image_io import load_photo
    from core.prep.perception import perceive_photo
    from core.prep.pipeline import crop_inputs
    from core.render.mesh import MeshRenderer
    from core.synthetic_people import on_background, photo_camera, render_person

    view, K = photo_camera(body, person, size)
    path = workdir / f"person{person.seed}.png"
    render = render_person(body, person, person.photo_pose, view, K, size, MeshRenderer())
    save_png(path, on_background(render, 0.92))
    photo = load_photo(path, max_side=config.prep.max_side)
    perception = perceive_photo(photo, refine="grabcut" if config.prep.grabcut else None)
    inputs = crop_inputs(photo, perception, config.prep)
    truth_mask = crop_image(render.mask if photo.scale == 1.0 else None, inputs["crop"])
    return (photo, inputs, (view, K), silhouette_iou(inputs["mask"], truth_mask, inputs["valid"]),
            detector_error(body, person, inputs, photo.scale, (view, K)))


def run_variant(body, person, photo, inputs, truth_view, size, config, overrides: dict) -> dict:
    from core.prep.fit import fit_smplx, prep_fit_weights

    keypoints = inputs["keypoints"]
    fit = fit_smplx(body, inputs["names"], keypoints[:, :2], keypoints[:, 2], inputs["mask"], inputs["K"],
                    config.prep.fit_iterations, valid=inputs["valid"],
                    weights=prep_fit_weights(config.prep, **overrides),
                    bones=inputs["bones"])
    return {"kp_pct": fit.metrics["body_keypoint_error_pct"], "fit_s": fit.metrics["time_s"],
            **score_fit(body, person, fit.params, inputs, photo.scale, truth_view, size)}


def format_table(rows: dict[str, list[dict]], title: str) -> str:
    lines = [title, "", "| variant | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    base = rows.get("default")
    for name, scores in rows.items():
        cells = [f"{np.mean([s[c] for s in scores]):.2f}" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("per person, reg % (mean vertex misregistration in the photo): " + "; ".join(
        f"{name}: " + " ".join(f"{s['reg_pct']:.2f}" for s in scores) for name, scores in rows.items()))
    if base is not None:
        lines.append("per person, worst bone °: " + "; ".join(
            f"{name}: " + " ".join(f"{s['worst_bone_deg']:.0f}" for s in scores) for name, scores in rows.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=6, help="synthetic people 0..N-1 (default 6)")
    parser.add_argument("--first", type=int, default=0, help="first person's seed")
    parser.add_argument("--size", type=int, default=512, help="photo size in pixels (default 512)")
    parser.add_argument("--variant", action="append", default=[], help="NAME:field=value,... of FitWeights")
    parser.add_argument("--iterations", type=int, nargs=3, default=None, metavar=("CAMERA", "BODY", "HANDS"),
                        help="fit iterations (default: the preview preset's)")
    parser.add_argument("--out", type=Path, default=None, help="write the table here (.md)")
    args = parser.parse_args()

    from core.body import BodyModel
    from core.config import load_preset
    from core.synthetic_people import make_person

    config = load_preset("preview")
    if args.iterations:
        config.prep.fit_iterations = list(args.iterations)
    body = BodyModel.load(config.body.model or None, num_betas=config.body.num_betas)
    variants = [("default", {})] + [parse_variant(v) for v in args.variant]
    rows: dict[str, list[dict]] = {name: [] for name, _ in variants}
    mask_ious, detector_errors = [], []
    with tempfile.TemporaryDirectory(prefix="persona-fit-truth-") as tmp:
        for seed in range(args.first, args.first + args.people):
            person = make_person(seed, body.num_betas)
            clock = time.perf_counter()
            photo, inputs, truth_view, mask_iou, detector = perceive_person(body, person, args.size, Path(tmp), config)
            mask_ious.append(mask_iou)
            detector_errors.append(detector)
            print(f"person {seed}: perceived in {time.perf_counter() - clock:.1f} s, mask IoU {mask_iou:.3f}",
                  file=sys.stderr, flush=True)
            for name, overrides in variants:
                rows[name].append(run_variant(body, person, photo, inputs, truth_view, args.size, config, overrides))
                print(f"person {seed} {name}: " + " ".join(f"{k} {v:.2f}" for k, v in rows[name][-1].items()),
                      file=sys.stderr, flush=True)
    title = (f"Photo fit vs ground truth, {args.people} synthetic people (seeds {args.first}..{args.first + args.people - 1}), "
             f"{args.size}² photos, prep preset 'preview' (fit iterations {list(config.prep.fit_iterations)})")
    table = format_table(rows, title) + "\nperceived person mask (mediapipe + GrabCut) vs GT dressed mask, IoU: " + \
        " ".join(f"{v:.3f}" for v in mask_ious) + f" (mean {np.mean(mask_ious):.3f})" + \
        "\nmediapipe's limb joints vs the GT joints, % of height (what the fit inherits): " + \
        " ".join(f"{v:.2f}" for v in detector_errors) + f" (mean {np.mean(detector_errors):.2f})"
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
