"""A set of training frames (generated or imported) stored as one npz.

Arrays (T frames, square H = W):
  rgb [T, H, W, 3] uint8, mask [T, H, W] uint8, depth [T, H, W] float16 (metres, 0 = empty),
  normal [T, H, W, 3] float16 (camera space), part_seg [T, H, W, 3] uint8,
  K [T, 3, 3], viewmat [T, 4, 4], and SMPL-X parameters per frame (``[T, k]`` per name).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.io.images import to_uint8
from core.io.npz import load_npz, save_npz
from core.subject import SMPLX_POSE_SIZES

FRAMESET_FORMAT = "persona-frames/1"
IMAGE_KEYS = ("rgb", "mask", "depth", "normal", "part_seg")
# How each image is stored: colours and masks as [0, 1] in 8 bits, depth and normals as float16.
STORAGE_DTYPES = {"rgb": np.uint8, "mask": np.uint8, "depth": np.float16, "normal": np.float16, "part_seg": np.uint8}


# Our offline generator's frames (core.frames.generated): the photo-warmed avatar re-rendered.
GENERATED_SOURCE = "generated"


@dataclass
class FrameSet:
    """Training frames other than the photo. Image arrays as documented in the module."""

    rgb: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    part_seg: np.ndarray
    K: np.ndarray
    viewmat: np.ndarray
    params: dict[str, np.ndarray]
    source: str = GENERATED_SOURCE  # generated | imported | mixed (concat of both)
    labels: list[str] = field(default_factory=list)  # e.g. "wave:17" (motion and frame)

    def __len__(self) -> int:
        return len(self.rgb)

    def frame(self, i: int) -> dict[str, np.ndarray]:
        """Frame ``i`` as float32 images in [0, 1] (depth metres, normals unit) plus camera and params."""
        return {
            "rgb": self.rgb[i].astype(np.float32) / 255.0,
            "mask": self.mask[i].astype(np.float32)[..., None] / 255.0,
            "depth": self.depth[i].astype(np.float32)[..., None],
            "normal": self.normal[i].astype(np.float32),
            "part_seg": self.part_seg[i].astype(np.float32) / 255.0,
            "K": self.K[i].astype(np.float32),
            "viewmat": self.viewmat[i].astype(np.float32),
            "params": {k: v[i].astype(np.float32) for k, v in self.params.items()},
        }

    def save(self, path: str | Path) -> None:
        arrays = {k: getattr(self, k) for k in IMAGE_KEYS}
        arrays.update({"K": self.K, "viewmat": self.viewmat, "format": np.array(FRAMESET_FORMAT),
                       "source": np.array(self.source), "labels": np.array(self.labels, dtype=str)})
        arrays.update({f"param_{k}": v for k, v in self.params.items()})
        save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> "FrameSet":
        data = load_npz(path, required=("format", *IMAGE_KEYS, "K", "viewmat"))
        if str(data["format"]) != FRAMESET_FORMAT:
            raise UserError(f"unsupported frames format {str(data['format'])!r} (this version reads {FRAMESET_FORMAT})",
                            path)
        params = {k[len("param_"):]: v for k, v in data.items() if k.startswith("param_")}
        return cls(**{k: data[k] for k in IMAGE_KEYS}, K=data["K"], viewmat=data["viewmat"], params=params,
                   source=str(data["source"]), labels=[str(x) for x in data["labels"]])

    @classmethod
    def concat(cls, sets: list["FrameSet"]) -> "FrameSet":
        """One FrameSet of all frames of ``sets`` in order (same image size; a parameter missing from
        one set is zero there). The source is the common one, else ``"mixed"``. A single set is
        returned as it is (no copy of its images)."""
        if len(sets) == 1:
            return sets[0]
        sizes = {s.rgb.shape[1:3] for s in sets}
        if len(sizes) != 1:
            raise ValueError(f"frame sets differ in image size: {sorted(sizes)}")
        widths = {}
        for s in sets:
            for key, value in s.params.items():
                if widths.setdefault(key, value.shape[1]) != value.shape[1]:
                    raise ValueError(f"parameter {key!r} has widths {widths[key]} and {value.shape[1]}")
        params = {key: np.concatenate([s.params.get(key, np.zeros((len(s), width), np.float32)) for s in sets])
                  for key, width in widths.items()}
        sources = {s.source for s in sets}
        return cls(**{k: np.concatenate([getattr(s, k) for s in sets]) for k in (*IMAGE_KEYS, "K", "viewmat")},
                   params=params, source=sources.pop() if len(sources) == 1 else "mixed",
                   labels=[label for s in sets for label in s.labels])

    @classmethod
    def from_frames(cls, frames: list[dict[str, np.ndarray]], source: str, labels: list[str]) -> "FrameSet":
        """One FrameSet of per-frame renders, float (as returned by ``frame``) or already ``pack_frame``-ed
        (what a producer of many frames should keep: a float 512^2 frame takes 44 bytes a pixel, a packed one 15)."""
        packed = [pack_frame(f) for f in frames]

        def stack(key):
            return np.stack([f[key] for f in packed])

        names = [k for k in SMPLX_POSE_SIZES if k in frames[0]["params"]] + \
            [k for k in ("betas", "expression") if k in frames[0]["params"]]
        size = (len(frames), *frames[0]["rgb"].shape[:2])
        return cls(
            rgb=stack("rgb"), mask=stack("mask").reshape(size), depth=stack("depth").reshape(size),
            normal=stack("normal"), part_seg=stack("part_seg"),
            K=stack("K").astype(np.float32), viewmat=stack("viewmat").astype(np.float32),
            params={k: np.stack([np.asarray(f["params"][k], np.float32).reshape(-1) for f in frames]) for k in names},
            source=source, labels=labels)


def pack_frame(frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``frame`` with its images in their storage dtypes (``STORAGE_DTYPES``; float colours and masks in [0, 1]
    are rounded to 8 bits); images already stored so, and every other entry, are passed on as they are."""
    packed = dict(frame)
    for key, dtype in STORAGE_DTYPES.items():
        image = np.asarray(frame[key])
        if image.dtype != dtype:
            packed[key] = to_uint8(image) if dtype == np.uint8 else image.astype(dtype)
    return packed
