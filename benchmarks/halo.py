"""Halos round a reconstructed avatar in its photo's view, and how far its Gaussians' scales grew.

    python benchmarks/halo.py OUTPUT_DIR [OUTPUT_DIR ...]

OUTPUT_DIR is a ``reconstruct`` output (the bundle with ``work/subject``). For each it renders the avatar in the
photo's pose and view and prints: the pixels more than 3 px outside the photo's mask where the avatar's alpha
exceeds 0.05 (a translucent halo of over-grown Gaussians shows here), their summed alpha, the input-view PSNR the
run recorded, and scale / start-scale quantiles over all Gaussians and per part (hands, head, thighs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.avatar.bundle import load_bundle  # noqa: E402
from core.body import PART_NAMES  # noqa: E402
from core.config import RenderConfig  # noqa: E402
from core.reconstruct import photo_view  # noqa: E402
from core.subject import Subject  # noqa: E402

PARTS = ("right_hand", "left_hand", "head", "left_thigh", "right_thigh")


def outside_alpha(alpha: np.ndarray, mask: np.ndarray, margin: int = 3, floor: float = 0.05) -> tuple[int, float]:
    """(pixels, summed alpha) of ``alpha [H, W]`` above ``floor`` more than ``margin`` px outside ``mask [H, W]``."""
    import cv2

    size = 2 * margin + 1
    near = cv2.dilate((mask > 0.5).astype(np.uint8), np.ones((size, size), np.uint8)) > 0
    far = alpha[~near]
    return int((far > floor).sum()), float(far.sum())


def report(folder: Path) -> None:
    avatar, body, manifest = load_bundle(folder)
    subject = Subject.load(folder / "work" / "subject")
    pose = {key: np.asarray(value, np.float32) for key, value in manifest["subject"].items()}
    out = photo_view(avatar, body, subject, RenderConfig(), pose)
    pixels, summed = outside_alpha(out.alpha.numpy()[..., 0], subject.mask)
    print(f"{folder}: {pixels} px of alpha > 0.05 more than 3 px outside the photo's mask (summed alpha {summed:.0f}); "
          f"input-view PSNR {manifest['summary']['photo_psnr']:.2f} dB")
    growth = (avatar.log_scales.exp() / avatar.init_scales).detach().numpy()
    labels = avatar.part_labels.numpy()
    for name, chosen in [("all", np.ones_like(growth, bool))] + [(p, labels == PART_NAMES.index(p)) for p in PARTS]:
        p50, p99, top = np.quantile(growth[chosen], [0.5, 0.99, 1.0])
        print(f"  scale / start {name:<12} p50 {p50:5.2f}  p99 {p99:5.2f}  max {top:5.2f}  over 4x {int((growth[chosen] > 4).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    for folder in parser.parse_args().folders:
        report(folder)


if __name__ == "__main__":
    main()
