"""Animation sanity of a trained avatar across the built-in motions (issue 4's targets).

    python benchmarks/animation.py --avatar messi_avatar            # 8 frames of every built-in motion
    python benchmarks/animation.py --avatar messi_avatar --frames 4 --size 192

For each motion frame the avatar and the subject's SMPL-X body take the same pose; we measure the
silhouette IoU of the avatar's alpha against the body mesh's mask (front and side cameras), the share of
that mask the avatar covers ("covered", the lower of the two views: holes and lost limbs lower it, clothes
beyond the bare body do not, while they do lower the IoU) and the distance of the Gaussian centres from the
posed body surface (core/animation_check.py).

Rows, measured in the same run:
  trained, refined   the bundle as the studio shows it (pose-dependent offsets from the MLP)
  trained, base      the same Gaussians without the pose network (LBS only)
  initial            a fresh avatar for the same subject: Gaussians on the body surface with their
                     initial scales and opacities, nothing learned -- the floor for the distance
                     (what skinning alone costs); its thin initial splats leave the silhouette
                     gappier than a trained avatar's
Targets (issue 4): IoU >= 0.85 and p99 distance <= 8 cm, on every motion.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.animation_check import FrameCheck, check_frames  # noqa: E402
from core.avatar.build import build_avatar  # noqa: E402
from core.config import AvatarConfig  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.export import load_avatar  # noqa: E402
from core.export.poses import resolve_motion, subject_shape  # noqa: E402
from core.motion import builtin_motions  # noqa: E402
from core.render.mesh import MeshRenderer  # noqa: E402
from core.threads import single_torch_thread  # noqa: E402

IOU_TARGET = 0.85
P99_TARGET_CM = 8.0


class Unrefined:
    """An avatar whose pose network is switched off: ``pose(..., body_pose)`` ignores the pose."""

    def __init__(self, avatar):
        self._avatar = avatar

    def pose(self, shaped, transforms, body_pose=None):
        return self._avatar.pose(shaped, transforms, None)


def frame_indices(count: int, wanted: int) -> list[int]:
    """``wanted`` frames spread over ``count`` (offset so periodic clips are not sampled in phase)."""
    return sorted({int(round(x)) for x in np.linspace(count / (2 * wanted), count - 1, wanted)})


def summarise(checks: list[FrameCheck]) -> dict[str, float]:
    ious = np.array([[c.iou[v] for v in ("front", "side")] for c in checks])
    return {"iou_front": float(ious[:, 0].mean()), "iou_side": float(ious[:, 1].mean()),
            "iou_min": float(ious.min()), "covered_min": min(min(c.covered.values()) for c in checks),
            "p99_cm": max(c.p99_cm for c in checks),
            "max_cm": max(c.max_cm for c in checks)}


def verdict(row: dict[str, float]) -> str:
    return "ok" if row["iou_min"] >= IOU_TARGET and row["p99_cm"] <= P99_TARGET_CM else "MISSED"


def format_row(row: dict[str, float]) -> str:
    return (f"{row['iou_front']:>10.3f}{row['iou_side']:>10.3f}{row['iou_min']:>9.3f}{row['covered_min']:>9.3f}"
            f"{row['p99_cm']:>8.2f}{row['max_cm']:>8.2f}  {verdict(row)}")


@single_torch_thread()
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", required=True, help="bundle folder or .persona file (from reconstruct)")
    parser.add_argument("--frames", type=int, default=8, help="frames measured per motion")
    parser.add_argument("--size", type=int, default=256, help="render size in pixels (square)")
    parser.add_argument("--motions", nargs="*", default=None, help="built-in names or .npz clips (default: all)")
    args = parser.parse_args()
    try:
        avatar, body, manifest = load_avatar(args.avatar)
        motions = [resolve_motion(m) for m in (args.motions or builtin_motions())]
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    betas = subject_shape(manifest, body)["betas"][0].numpy()
    initial = build_avatar(body, betas, AvatarConfig(**manifest.get("avatar_config", {})))
    variants = {"trained, refined": avatar, "trained, base": Unrefined(avatar), "initial": initial}
    print(f"avatar {args.avatar}: {avatar.num_gaussians} Gaussians; {args.frames} frames per motion at "
          f"{args.size}^2; targets: IoU >= {IOU_TARGET}, p99 distance <= {P99_TARGET_CM} cm")
    header = f"{'motion':<14}{'variant':<18}{'IoU front':>10}{'IoU side':>10}{'IoU min':>9}{'covered':>9}" \
             f"{'p99 cm':>8}{'max cm':>8}  verdict"
    print(header)
    print("-" * len(header))
    renderer = MeshRenderer()
    totals: dict[str, list[FrameCheck]] = {name: [] for name in variants}
    start = time.perf_counter()
    try:
        for motion in motions:
            indices = frame_indices(motion.num_frames, args.frames)
            for name, variant in variants.items():
                checks = check_frames(variant, body, manifest, motion, indices, args.size, renderer)
                totals[name] += checks
                row = summarise(checks)
                print(f"{motion.name:<14}{name:<18}{format_row(row)}")
    finally:
        renderer.close()
    print("-" * len(header))
    for name, checks in totals.items():
        row = summarise(checks)
        print(f"{'all':<14}{name:<18}{format_row(row)}")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
