"""Quality against ground truth on dressed synthetic people (PSNR / SSIM / mask IoU).

    python benchmarks/quality.py --preset preview              # 6 people, the preset's schedule
    python benchmarks/quality.py --quick                       # 2 people, short schedule
    python benchmarks/quality.py --subjects 3 --set train.iterations=300 --fit known
    python benchmarks/quality.py --quick --align fit scale none   # train once, one table per alignment
    python benchmarks/quality.py --quick --frames oracle          # train on GT renders instead of generated frames
    python benchmarks/quality.py --quick --methods full --set loss.generated.normal=0.1   # one variant only
    python benchmarks/quality.py --merge results/a.json results/b.json --tag 6people   # one table from runs

Each person (core.synthetic_people, deterministic from its seed) is rendered once from the front as
the input photo. ``--fit prep`` (default) sends that photo through our real prep (mediapipe mask +
keypoints, SMPL-X fit, albedo), like a user's photo; ``--fit known`` skips prep and uses the GT body's
parameters, exact mask and geometry. Held-out renders: built-in motion frames (not the training
frames' phases), unseen random plausible poses (both from the photo's camera) and novel views of the
photo pose (orbiting cameras). As the paper evaluates, each method is driven by the *fitted* shape in
the GT pose, aligned per held-out frame to the GT body (``--align``, core/quality/alignment.py; decided
from the bare bodies only and shared by all methods); the mask IoU shows how far the fitted shape and
the GT body still disagree.

Training frames (``--frames``): ``offline`` (default) = our generator, the warmed avatar re-rendered
along the built-in motions; ``oracle`` = the GT person rendered in the generator's motion poses, a
stand-in for a pose-guided video model (core/quality/oracle.py; held-out motion frames left out);
``oracle-noisy`` = the same with a seeded per-frame colour shift and blur of the RGB, as a video model is
not pixel-consistent; ``oracle-drift`` = the GT person re-rendered per frame with its outfit's look
drifted (garment colours / patterns wander, on about a quarter of the frames one garment is clearly
off; core.synthetic_people.drift_outfit), as a video model does not hold the person's identity, with
the same masks and geometry targets as ``oracle``.

Methods, all in this run on the same subjects: (a) mesh = the fitted body mesh with the photo's
colours projected on it; (b) no balanced sampling; (c) no geometry weighting; (d) no pose offsets;
(e) the full method. (b)-(e) share prep, warm-up and generated frames per subject.

Metrics on a white background with the GT mask, over the box around both silhouettes (see
core/quality/metrics.py). LPIPS is not reported: its pretrained weights are not available offline.
Writes ``quality_<preset>[_quick][_<frames>][_<tag>][_<align>].md`` (``_<frames>`` unless offline) /
``.json`` (table, updated after every subject)
and ``.png`` (contact sheet: GT | (a) .. (e), three held-out renders per subject) into --out.

Variants train with torch on every core, as ``reconstruct`` does from the command line: this script sets
OMP_WAIT_POLICY=PASSIVE before torch loads (unless it is set already; tables before session 10 trained on
one thread, which splits torch's sums differently: the runs part ways a little, as messi5's input view
measured 24.43 dB on two threads and 24.63 on one).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: before torch loads OpenMP

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("mesh", "no_balanced", "no_geometry", "no_pose_offsets", "full")
METHOD_TITLES = {"mesh": "(a) mesh+photo", "no_balanced": "(b) no balanced", "no_geometry": "(c) no geometry",
                 "no_pose_offsets": "(d) no pose offs.", "full": "(e) full"}
GROUPS = {"novel poses": ("motion", "random"), "motion poses": ("motion",), "random poses": ("random",),
          "novel views": ("view",), "input view": ("input",)}
QUICK_SETS = ["train.iterations=150", "frames.warmup_iterations=60", "frames.num_generated=24"]
SHEET_TITLE_HEIGHT = 22  # pixels of column titles above a contact sheet
SHEET_LABELS = ("motion", "random", "view")  # one held-out render of each group per subject on the sheet
ALIGN_TEXT = {"fit": "GT hands/face + fitted shape, global orientation, body pose, scale and shift fitted per frame "
                     "to the GT body's vertices (area-weighted L2; same for all methods)",
              "fit-joints": "GT hands/face + fitted shape, global orientation, body pose, scale and shift fitted per "
                            "frame to the GT body's 55 joints (weak pull to the GT pose; same for all methods)",
              "scale": "GT pose + fitted shape, scale+shift aligned to the GT joints",
              "none": "GT pose + fitted shape, unaligned",
              "photometric": "from 'fit', each method's own global orientation, body pose and shift fitted to the "
                             "held-out image with its avatar frozen (L1 RGB over white + L1 alpha vs the GT mask, "
                             "Adam; the mesh is posed by its Gaussians' fit)"}

FRAME_SOURCES = ("offline", "oracle", "oracle-noisy", "oracle-drift")
FRAME_TEXT = {"offline": "offline generator (warmed avatar re-rendered)",
              "oracle": "ORACLE (GT person rendered in the generator's motion poses, held-out frames left out)",
              "oracle-noisy": "ORACLE-NOISY (GT person in the generator's poses, RGB with per-frame colour shift "
                              "±8 % gain ±0.03 offset and 0.6 px blur)",
              "oracle-drift": "ORACLE-DRIFT (GT person in the generator's poses re-rendered with per-frame outfit "
                              "drift: garment hue ±0.03 turn, saturation ±15 %, value ±10 %, pattern slid ±0.2 "
                              "period; 25 % of frames one garment off: hue ±0.08-0.2 turn, pattern swapped or "
                              "rescaled; masks and geometry targets as oracle)"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_subject(body, person, config, fit: str, workdir: Path, renderer):
    """The input photo as a Subject: through real prep, or with the known GT fit."""
    from core.io.images import save_png
    from core.prep.pipeline import prepare_subject
    from core.synthetic_people import on_background, person_subject, photo_camera, render_person

    size = config.prep.crop_size
    if fit == "known":
        return person_subject(body, person, size, renderer)
    view, K = photo_camera(body, person, size)
    photo = workdir / f"person{person.seed}.png"
    # A light grey backdrop, like a plain wall; mediapipe segments the person from it.
    save_png(photo, on_background(render_person(body, person, person.photo_pose, view, K, size, renderer), 0.92))
    return prepare_subject(photo, workdir / f"subject{person.seed}", config, model=body)


def frame_source(body, person, subject, config, frames: str, renderer, geometry: str = "fitted"):
    """The training frames' source for ``--frames``: None (the offline generator) or an oracle source
    (``geometry``: ``--oracle-geometry``)."""
    from core.quality.oracle import degrade_frames, oracle_frames

    if frames == "offline":
        return None

    def source(avatar, progress):
        made = oracle_frames(avatar, body, person, subject.smplx, config.frames, renderer, progress,
                             drift=frames == "oracle-drift", geometry=geometry)
        return degrade_frames(made, person.seed) if frames == "oracle-noisy" else made
    return source


def evaluate_subject(body, person, config, fit: str, aligns: list[str], workdir: Path, renderer,
                     frames: str = "offline", oracle_geometry: str = "fitted",
                     methods: tuple[str, ...] = METHODS) -> dict[str, dict]:
    """Train the variants among ``methods`` on one person once and score them (and the mesh) on its
    held-out renders under each alignment mode in ``aligns``; returns ``{mode: result}``."""
    from core.quality.methods import VARIANTS, shared_start, train_variant

    timings = {}
    clock = time.perf_counter()
    subject = make_subject(body, person, config, fit, workdir, renderer)
    timings["subject_s"] = time.perf_counter() - clock
    log(f"person {person.seed}: subject ready ({fit}); fitted betas {np.round(subject.smplx['betas'][:4], 2)} "
        f"vs GT {np.round(person.betas[:4], 2)}")

    last = {"t": 0.0}

    def report(stage, fraction, info):
        if time.perf_counter() - last["t"] > 60 or fraction >= 1.0:
            last["t"] = time.perf_counter()
            log(f"person {person.seed}: {stage} {100 * fraction:.0f}%")

    clock = time.perf_counter()
    start = shared_start(body, subject, config, report, frame_source(body, person, subject, config, frames, renderer,
                                                                              oracle_geometry))
    log(f"person {person.seed}: {len(start.frames)} training frames ({start.frames.source})")
    timings["shared_s"] = time.perf_counter() - clock
    avatars = {}
    for variant in (v for v in VARIANTS if v in methods):
        clock = time.perf_counter()
        avatars[variant] = train_variant(start, body, config, variant, report)
        timings[f"train_{variant}_s"] = time.perf_counter() - clock
    results = {}
    for align in aligns:
        clock = time.perf_counter()
        result = score_heldout(body, person, config, start, avatars, align, renderer)
        results[align] = {**result, "timings": {**timings, "eval_s": time.perf_counter() - clock}}
    return results


def score_heldout(body, person, config, start, avatars: dict, align: str, renderer) -> dict:
    """Every method's metrics on the person's held-out renders, each frame posed by alignment ``align``."""
    from core.quality.alignment import alignment_error, eval_pose
    from core.quality.methods import (eval_params, photometric_pose, render_avatar, render_mesh_baseline,
                                      variant_config)
    from core.quality.metrics import composite_white, image_metrics
    from core.synthetic_people import HeldoutView, heldout_views, photo_camera, render_person

    size = config.train.render_size
    view, K = photo_camera(body, person, size)
    views = [HeldoutView("input", "input", {"betas": person.betas, **person.photo_pose}, view, K)]
    views += heldout_views(body, person, size, config.frames.motions)
    methods = ("mesh", *avatars)
    scores: dict[str, list[dict]] = {m: [] for m in methods}
    scales, body_errors = [], []
    sheet: dict[str, list[np.ndarray]] = {}
    for held in views:
        gt = render_person(body, person, held.pose, held.viewmat, held.K, size, renderer)
        gt_white = composite_white(gt.rgb, gt.mask)
        truth = eval_params(held.pose, person.betas)
        # decided from the two bare bodies only, before any method renders; the same for all methods
        pose = eval_pose(body, eval_params(held.pose, start.betas), truth, align)
        scales.append(pose.alignment.scale)
        body_errors.append(alignment_error(body, pose, truth))

        def own_pose(avatar, refined):  # the method's pose: shared, or fitted to the image with its avatar
            if align != "photometric":
                return pose
            return photometric_pose(avatar, body, pose, held.viewmat, held.K, size, config, refined, gt_white,
                                    gt.mask)

        # the mesh is the untrained avatar's surface drawn as a mesh: its Gaussians stand in for it in the fit
        renders = {"mesh": render_mesh_baseline(start.initial, body, own_pose(start.initial, False), held.viewmat,
                                                held.K, size, renderer)}
        for variant, avatar in avatars.items():
            refined = variant_config(config, variant).ablation.pose_offsets  # the render it was trained for
            renders[variant] = render_avatar(avatar, body, own_pose(avatar, refined), held.viewmat, held.K, size,
                                             config, refined)
        for method, (rgb, alpha) in renders.items():
            scores[method].append({"group": held.group, "label": held.label,
                                   **image_metrics(rgb, gt_white, gt.mask, alpha)})
        if held.group in SHEET_LABELS and held.group not in sheet:
            sheet[held.group] = [gt_white] + [renders[m][0] for m in methods]
    log(f"person {person.seed}: alignment {align}: scale {np.mean(scales):.3f} (1 = fitted body as big as the GT), "
        f"bare fitted body to GT body {100 * np.mean(body_errors):.2f} cm RMS")
    return {"seed": person.seed, "betas_gt": person.betas.tolist(), "betas_fit": start.betas.tolist(),
            "alignment_scale": float(np.mean(scales)), "alignment_rms_m": float(np.mean(body_errors)),
            "scores": scores, "sheet": sheet}


def group_mean(rows: list[dict], kinds: tuple[str, ...], key: str) -> float:
    values = [r[key] for r in rows if r["group"] in kinds]
    return float(np.mean(values)) if values else float("nan")


def scored_methods(results: list[dict]) -> tuple[str, ...]:
    """The methods the results score (all of ``METHODS`` unless ``--methods`` chose fewer), in table order."""
    return tuple(m for m in METHODS if m in results[0]["scores"])


def format_table(results: list[dict], header: str) -> str:
    """Markdown: per group, PSNR / SSIM / IoU per subject and the mean, then the targets."""
    lines = [header, ""]
    methods = scored_methods(results)
    for group, kinds in GROUPS.items():
        lines += [f"**{group}** — PSNR dB / SSIM / mask IoU", "",
                  "| subject | " + " | ".join(METHOD_TITLES[m] for m in methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for result in results:
            cells = [" / ".join(f"{group_mean(result['scores'][m], kinds, k):{f}}"
                                for k, f in (("psnr", ".2f"), ("ssim", ".3f"), ("iou", ".3f"))) for m in methods]
            lines.append(f"| person {result['seed']} | " + " | ".join(cells) + " |")
        means = [" / ".join(f"{mean_over(results, m, kinds, k):{f}}"
                            for k, f in (("psnr", ".2f"), ("ssim", ".3f"), ("iou", ".3f"))) for m in methods]
        lines += ["| **mean** | " + " | ".join(f"**{c}**" for c in means) + " |", ""]
    lines += target_lines(results)
    return "\n".join(lines) + "\n"


def mean_over(results: list[dict], method: str, kinds: tuple[str, ...], key: str) -> float:
    return float(np.mean([group_mean(r["scores"][method], kinds, key) for r in results]))


def target_lines(results: list[dict]) -> list[str]:
    """The issue's targets, checked on the means (novel poses)."""
    kinds = GROUPS["novel poses"]
    full = mean_over(results, "full", kinds, "psnr")
    gain = full - mean_over(results, "mesh", kinds, "psnr")
    lines = [f"- full vs (a) on novel poses: {gain:+.2f} dB PSNR (target ≥ +2 dB): {'met' if gain >= 2 else 'NOT met'}"]
    for method in (m for m in ("no_balanced", "no_geometry", "no_pose_offsets") if m in scored_methods(results)):
        drop = {k: mean_over(results, "full", kinds, k) - mean_over(results, method, kinds, k)
                for k in ("psnr", "ssim", "iou")}
        verdict = "worse than full" if drop["psnr"] > 0 else "NOT worse than full"
        lines.append(f"- {METHOD_TITLES[method]} on novel poses: full leads by {drop['psnr']:+.2f} dB, "
                     f"SSIM {drop['ssim']:+.4f}, IoU {drop['iou']:+.4f} → {verdict}")
    return lines


def contact_sheet(results: list[dict], crop: float = 0.6) -> np.ndarray:
    """Rows: three held-out renders per subject; columns: GT | (a) .. (e); the centre ``crop`` of the width."""
    import cv2

    from core.io.images import to_uint8

    rows = []
    for result in results:
        for group in SHEET_LABELS:
            tiles = result["sheet"].get(group)
            if tiles is None:
                continue
            w = tiles[0].shape[1]
            lo = int(w * (1 - crop) / 2)
            row = np.concatenate([t[:, lo:w - lo] for t in tiles], axis=1)
            row = np.ascontiguousarray(to_uint8(row))
            cv2.putText(row, f"person {result['seed']} {group}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                        cv2.LINE_AA)
            rows.append(row)
    sheet = np.concatenate(rows, axis=0)
    tile_w = sheet.shape[1] // (1 + len(scored_methods(results)))
    title = np.full((SHEET_TITLE_HEIGHT, sheet.shape[1], 3), 255, np.uint8)
    for i, name in enumerate(("ground truth",) + tuple(METHOD_TITLES[m] for m in scored_methods(results))):
        cv2.putText(title, name, (i * tile_w + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([title, sheet], axis=0)


SAME_RUN_KEYS = ("config", "fit", "align", "frames")  # what runs must share to be merged into one table


def merge_runs(paths: list[Path]) -> tuple[dict, list[dict]]:
    """The results of several runs' JSON files (``paths``) as one run: their first file's metadata and every
    person, in seed order. Runs must share config, fit, alignment and frames and score the same methods;
    a person may appear once only. Raises ValueError naming the file that does not fit."""
    first, results = None, []
    for path in paths:
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable quality JSON ({type(err).__name__})") from None
        if not isinstance(run, dict) or "results" not in run or not all(k in run for k in SAME_RUN_KEYS):
            raise ValueError(f"{path}: not a quality JSON (no results or run settings)")
        if first is None:
            first = run
        differing = [k for k in SAME_RUN_KEYS if run[k] != first[k]]
        if differing:
            raise ValueError(f"{path}: different {', '.join(differing)} from {paths[0]}; only runs of one protocol merge")
        results += run["results"]
    seeds = [r["seed"] for r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a person appears in more than one run (seeds {sorted(seeds)})")
    if len({tuple(sorted(r["scores"])) for r in results}) != 1:
        raise ValueError("the runs score different methods")
    return first, sorted(results, key=lambda r: r["seed"])


def merged_header(header: str, seeds: list[int], sources: list[Path]) -> str:
    """``header`` of one of the merged runs, with the people count and seeds of the merge."""
    rest = header.partition(" — ")[2]
    return (f"Quality on {len(seeds)} synthetic people (seeds {', '.join(map(str, seeds))}) — {rest} "
            f"Merged from {', '.join(p.name for p in sources)} (same code, config and protocol).")


def stack_sheets(paths: list[Path]) -> np.ndarray:
    """The runs' contact sheets ``paths`` one under the other, the column titles kept once (same columns)."""
    from core.io.images import load_png

    sheets = [load_png(p, 3) for p in paths]
    if len({s.shape[1] for s in sheets}) != 1:
        raise ValueError("the runs' contact sheets have different widths (different methods?)")
    return np.concatenate([sheets[0]] + [s[SHEET_TITLE_HEIGHT:] for s in sheets[1:]], axis=0)


def write_merge(paths: list[Path], out: Path, tag: str) -> int:
    """``--merge``: one table, JSON and contact sheet from several runs' files."""
    from core.errors import UserError
    from core.io.atomic import write_text_atomic
    from core.io.images import save_png

    try:
        first, results = merge_runs(paths)
        sheets = [p.with_suffix(".png") for p in paths]
        sheet = stack_sheets(sheets) if all(p.exists() for p in sheets) else None
    except (ValueError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    header = merged_header(first["header"], [r["seed"] for r in results], paths)
    name = os.path.commonprefix([p.stem for p in paths]).rstrip("_") + f"_{tag or 'merged'}"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{name}.md", format_table(results, header))
    write_text_atomic(out / f"{name}.json", json.dumps({**{k: first[k] for k in SAME_RUN_KEYS}, "header": header,
                                                        "merged_from": [p.name for p in paths],
                                                        "results": results}, indent=1))
    if sheet is not None:
        save_png(out / f"{name}.png", sheet)
    print((out / f"{name}.md").read_text())
    return 0


def main() -> int:
    from core.allocator import keep_freed_memory
    from core.quality.alignment import ALIGN_MODES
    from core.quality.oracle import ORACLE_GEOMETRY

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="preview")
    parser.add_argument("--subjects", type=int, default=None, help="number of people (default 6, --quick 2)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--quick", action="store_true", help=f"2 people and {' '.join(QUICK_SETS)}")
    parser.add_argument("--fit", choices=("prep", "known"), default="prep",
                        help="prep: the photo goes through mediapipe + fit; known: use the GT body's fit")
    parser.add_argument("--align", choices=ALIGN_MODES, nargs="+", default=["fit"],
                        help="fit: per held-out frame, fit the fitted-shape body's global orientation, body pose, "
                             "scale and shift to the GT body's vertices (hands/face stay GT); fit-joints: the same "
                             "on the GT joints; scale: only a "
                             "least-squares scale + shift of the joints (prep's size/depth ambiguity); none: GT pose "
                             "+ fitted shape as is; photometric: from fit, each method's pose and shift fitted to the "
                             "held-out image with its avatar frozen (slow: 24 render steps per method and frame). "
                             "All but photometric pose every method alike. Several modes: trained "
                             "once, one table per mode (file name ends in _<mode>)")
    parser.add_argument("--frames", choices=FRAME_SOURCES, default="offline",
                        help="training frames: offline = our generator (warmed avatar re-rendered); oracle = the GT "
                             "person in the generator's motion poses (a stand-in for a video model); oracle-noisy = "
                             "oracle with a seeded per-frame colour shift and blur of the RGB; oracle-drift = the "
                             "GT person re-rendered per frame with its outfit's colours / patterns drifted")
    parser.add_argument("--oracle-geometry", choices=ORACLE_GEOMETRY, default="fitted",
                        help="oracle frames' depth / normal / part targets: fitted = the bare fitted body (as "
                             "imported videos get); person = the dressed GT person (as geometry estimators on "
                             "video frames would give)")
    parser.add_argument("--methods", nargs="+", choices=METHODS[1:], default=list(METHODS[1:]),
                        help="which of the avatar variants to train (the mesh baseline is always scored; full is "
                             "always trained: the targets compare with it)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--tag", default="", help="appended to the output files' name "
                        "(quality_<preset>[_quick][_<frames>]_<tag>[_<align>], frames unless offline, "
                        "align when several)")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="train nothing: one table (and contact sheet) from these runs' JSON files, which must "
                             "share code, config and protocol (e.g. seeds 0-3 and 4-5 run apart)")
    args = parser.parse_args()
    if args.merge:
        return write_merge(args.merge, Path(args.out), args.tag)
    keep_freed_memory()  # as the command line

    from core.body import BodyModel
    from core.config import config_to_dict, load_preset
    from core.errors import UserError
    from core.io.atomic import write_text_atomic
    from core.io.images import save_png
    from core.render.mesh import MeshRenderer
    from core.synthetic_people import make_person

    sets = (QUICK_SETS if args.quick else []) + args.set
    methods = tuple(m for m in METHODS if m in ("mesh", "full", *args.methods))
    try:
        config = load_preset(args.preset, sets)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    count = args.subjects or (2 if args.quick else 6)
    body = BodyModel.load(config.body.model or None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = (f"quality_{config.name}{'_quick' if args.quick else ''}"
            f"{'_' + args.frames if args.frames != 'offline' else ''}{'_' + args.tag if args.tag else ''}")
    aligns = list(dict.fromkeys(args.align))
    names = {a: stem + (f"_{a}" if len(aligns) > 1 else "") for a in aligns}
    fit_text = ("photo through our prep (mediapipe + SMPL-X fit)" if args.fit == "prep"
                else "KNOWN fit (GT body parameters, exact mask and geometry; prep skipped)")
    headers = {a: (f"Quality on {count} synthetic people (seeds {args.first_seed}..{args.first_seed + count - 1}) — "
                   f"preset {config.name}, overrides {sets or 'none'}; input: {fit_text}; "
                   f"{config.train.iterations} steps, warm-up {config.frames.warmup_iterations}, "
                   f"{config.frames.num_generated} generated frames, training frames: {FRAME_TEXT[args.frames]}"
                   f"{'; oracle geometry targets from the DRESSED GT person' if args.oracle_geometry == 'person' else ''}; "
                   f"{config.avatar.num_gaussians} Gaussians "
                   f"(requested); eval {config.train.render_size}² on white with the GT mask, box around both "
                   f"silhouettes; alignment '{a}': {ALIGN_TEXT[a]}; LPIPS not computed (no weights offline).")
               for a in aligns}
    log(headers[aligns[0]])
    results: dict[str, list[dict]] = {a: [] for a in aligns}
    started = time.perf_counter()
    renderer = MeshRenderer()
    with tempfile.TemporaryDirectory(prefix="persona-quality-") as tmp:
        for seed in range(args.first_seed, args.first_seed + count):
            person = make_person(seed, body.num_betas)
            for align, result in evaluate_subject(body, person, config, args.fit, aligns, Path(tmp), renderer,
                                                     args.frames, args.oracle_geometry, methods).items():
                results[align].append(result)
            for align in aligns:
                name = names[align]
                table = format_table(results[align], headers[align] + f" ({len(results[align])}/{count} people done, "
                                     f"{(time.perf_counter() - started) / 60:.1f} min)")
                write_text_atomic(out / f"{name}.md", table)
                write_text_atomic(out / f"{name}.json", json.dumps(
                    {"header": headers[align], "config": config_to_dict(config), "fit": args.fit, "align": align,
                     "frames": args.frames,
                     "results": [{k: v for k, v in r.items() if k != "sheet"} for r in results[align]]}, indent=1))
                save_png(out / f"{name}.png", contact_sheet(results[align]))
            log(f"person {seed} done; tables in {', '.join(str(out / f'{n}.md') for n in names.values())}")
    renderer.close()
    for align in aligns:
        print((out / f"{names[align]}.md").read_text())
        print(f"contact sheet: {out / f'{names[align]}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
