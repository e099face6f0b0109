"""The Subject folder: everything photo prep learns about one photo, as plain versioned files.

```
subject/
  subject.json    format version, photo hash and path, crop, camera, warnings
  image.png       the person crop (RGB)           [H, W, 3]
  mask.png        person mask                     [H, W]
  albedo.png      shading-removed colours         [H, W, 3]
  keypoints.npz   names [K] str, xy [K, 2] px, conf [K]
  smplx.npz       fitted SMPL-X parameters (axis-angle radians, metres) + K, focal
  geometry.npz    rendered from the fitted body: depth [H, W] m, normal [H, W, 3] (camera space),
                  part_seg [H, W, 3], position [H, W, 3] (canonical star-pose position, metres)
```
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.io.atomic import atomic_dir
from core.io.images import load_png, save_png
from core.io.npz import load_npz, save_npz

SUBJECT_FORMAT = "persona-subject/1"

# SMPL-X parameter names and their per-frame sizes (the `smplx` forward keyword arguments).
SMPLX_POSE_SIZES = {
    "global_orient": 3, "body_pose": 63, "left_hand_pose": 45, "right_hand_pose": 45,
    "jaw_pose": 3, "leye_pose": 3, "reye_pose": 3, "transl": 3,
}


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), used as the prep cache key."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Subject:
    """One prepared photo. Arrays are float32; images in [0, 1]."""

    image: np.ndarray  # [H, W, 3]
    mask: np.ndarray  # [H, W]
    albedo: np.ndarray  # [H, W, 3]
    K: np.ndarray  # [3, 3] intrinsics of the crop, pixels
    smplx: dict[str, np.ndarray]  # betas [B], expression [E], and SMPLX_POSE_SIZES entries [k]
    keypoint_names: list[str] = field(default_factory=list)
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # [K, 3] x, y px, conf
    geometry: dict[str, np.ndarray] = field(default_factory=dict)  # depth, normal, part_seg, position
    info: dict = field(default_factory=dict)  # photo_hash, photo_path, crop, warnings, body_model, ...

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.image.shape[0], self.image.shape[1]

    @property
    def viewmat(self) -> np.ndarray:
        """World-to-camera ``[4, 4]`` of the photo (OpenCV axes); the SMPL-X fit lives in that world."""
        camera = self.info.get("camera", {})
        return np.asarray(camera.get("viewmat", np.eye(4)), dtype=np.float32)

    def save(self, folder: str | Path) -> None:
        """Write the whole folder atomically (an existing complete Subject survives a failure)."""
        with atomic_dir(folder) as tmp:
            save_png(tmp / "image.png", self.image)
            save_png(tmp / "mask.png", self.mask)
            save_png(tmp / "albedo.png", self.albedo)
            save_npz(tmp / "keypoints.npz", {"names": np.array(self.keypoint_names, dtype=str),
                                             "keypoints": self.keypoints})
            save_npz(tmp / "smplx.npz", {**self.smplx, "K": self.K})
            save_npz(tmp / "geometry.npz", self.geometry)
            info = {"format": SUBJECT_FORMAT, **self.info}
            (tmp / "subject.json").write_text(json.dumps(info, indent=2, default=_json_default))

    @classmethod
    def load(cls, folder: str | Path) -> "Subject":
        """Read a Subject folder; a missing or foreign folder is a one-line error."""
        folder = Path(folder)
        meta = folder / "subject.json"
        if not meta.exists():
            raise UserError("not a Subject folder (no subject.json); run `persona-studio prep` first", folder)
        try:
            info = json.loads(meta.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"corrupt subject.json: {err}", meta) from None
        if info.get("format") != SUBJECT_FORMAT:
            raise UserError(f"unsupported Subject format {info.get('format')!r} (this version reads {SUBJECT_FORMAT})",
                            meta)
        params = load_npz(folder / "smplx.npz")
        K = params.pop("K")
        keypoints = load_npz(folder / "keypoints.npz")
        return cls(
            image=load_png(folder / "image.png", 3),
            mask=load_png(folder / "mask.png", 1),
            albedo=load_png(folder / "albedo.png", 3),
            K=K,
            smplx=params,
            keypoint_names=[str(n) for n in keypoints["names"]],
            keypoints=keypoints["keypoints"],
            geometry=load_npz(folder / "geometry.npz"),
            info=info,
        )


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
