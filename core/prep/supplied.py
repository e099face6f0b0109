"""Maps a user made with stronger tools than prep's, given beside the photo; each replaces prep's own estimate.

- mask: the person's silhouette, e.g. from SAM (white on the person, black elsewhere; an image with an alpha
  channel, such as a cut-out PNG, gives its alpha). Replaces mediapipe's segmentation and GrabCut, as an
  RGBA photo's own alpha does.
- albedo: the photo without its shading, e.g. from an intrinsic-image model. Replaces the Retinex estimate.

Both must show the photo's whole frame: any size with the photo's aspect ratio (they are resized to it).
They are given on the command line (``--mask``, ``--albedo``) or found beside the photo as
``<photo name>.mask.<ext>`` and ``<photo name>.albedo.<ext>`` (``messi5.jpg``: ``messi5.mask.png``), which is
how the studio finds them for a dropped photo. Bad files raise one-line ``UserError``s naming the file, before
prep writes anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UserError

MIN_MASK_SHARE = 0.002  # of the photo's pixels: a mask with less marks no person
MAX_MASK_SHARE = 0.98  # a mask with more marks everything: blank or inverted
SIDECAR_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class SuppliedMaps:
    """Paths of the user's maps for one photo; None where prep estimates its own."""

    mask: Path | None = None
    albedo: Path | None = None

    @classmethod
    def for_photo(cls, photo: str | Path, mask: str | Path | None = None,
                  albedo: str | Path | None = None) -> "SuppliedMaps":
        """The maps given (paths), and for those not given the ones beside ``photo`` (see the module)."""
        return cls(Path(mask) if mask else sidecar(photo, "mask"), Path(albedo) if albedo else sidecar(photo, "albedo"))

    def described(self) -> str:
        """"mask m.png and albedo a.png" (what is given), or "" for none."""
        return " and ".join(f"{name} {path.name}" for name, path in (("mask", self.mask), ("albedo", self.albedo))
                            if path)

    def fingerprint(self) -> dict:
        """{"mask": sha256, "albedo": sha256} of the given files (empty when none): part of prep's cache key,
        so a changed file makes a new Subject and a moved one does not."""
        from core.subject import file_hash

        return {name: file_hash(path) for name, path in (("mask", self.mask), ("albedo", self.albedo)) if path}


def sidecar(photo: str | Path, kind: str) -> Path | None:
    """``<photo name>.<kind>.<ext>`` beside ``photo`` for the first of SIDECAR_EXTENSIONS that exists, else None."""
    photo = Path(photo)
    for extension in SIDECAR_EXTENSIONS:
        candidate = photo.with_name(f"{photo.stem}.{kind}{extension}")
        if candidate.is_file():
            return candidate
    return None


def load_supplied(maps: SuppliedMaps, size: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The given maps at the photo's ``size`` = (width, height): (mask [H, W] float32 in [0, 1] or None,
    albedo [H, W, 3] float32 sRGB in [0, 1] or None). Raises UserError for an unreadable file, another aspect
    ratio, or a mask that marks nothing or everything."""
    from core.prep.albedo import albedo_from_file

    mask = None if maps.mask is None else mask_from_file(maps.mask, size)
    albedo = None if maps.albedo is None else albedo_from_file(maps.albedo, size)
    return mask, albedo


def mask_from_file(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A user's person mask at the photo's ``size`` = (width, height): its alpha channel where it has one
    (transparent = not the person), else its grey level. [H, W] float32 in [0, 1]."""
    from core.prep.image_io import load_matching

    image = load_matching(path, size, "mask")
    mask = image.alpha if image.alpha is not None else image.rgb.mean(axis=-1)
    share = float((mask > 0.5).mean())
    if share < MIN_MASK_SHARE:
        raise UserError("mask marks no person (black or transparent everywhere); it must be white on the person",
                        path)
    if share > MAX_MASK_SHARE:
        raise UserError(f"mask is white on {share:.0%} of the photo; it must be white on the person only and black "
                        "elsewhere (is it inverted?)", path)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)
