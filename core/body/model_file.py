"""SMPL-X-format model files (.npz): which one to use, and checking it before ``smplx`` reads it.

``smplx`` opens npz files with ``allow_pickle=True`` and reads every member, so no file reaches it
unchecked: we read only the npy headers and the small index arrays ourselves (never unpickling),
check keys, shapes, dtypes and index ranges, and when a file carries pickled members (the licensed
``SMPLX_NEUTRAL.npz`` has two dicts, ``joint2num`` and ``part2num``) smplx gets a temporary copy
holding only the numeric arrays it needs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from core.body.parts import PART_NAMES
from core.body.skeleton import NUM_JOINTS, PARENTS
from core.errors import UserError
from core.paths import BODY_DATA_DIR

FORMAT_VERSION = "persona-smplx-cc0/1"
"""``format_version`` of the embedded model file; a file naming another ``persona-smplx-cc0`` major is refused."""

EMBEDDED_MODEL_PATH = BODY_DATA_DIR / "smplx_persona_cc0.npz"
MODEL_ENV_VAR = "PERSONA_SMPLX_MODEL"
USER_MODEL_FILENAME = "SMPLX_NEUTRAL.npz"  # looked for when a folder is given

NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)

# What smplx.SMPLX reads from an npz (without the face contour), with the expected layout:
# letters are sizes taken from the file (V vertices, F faces, K blend shapes, C hand PCA
# components, L landmarks), numbers are fixed; kind: f float, i integer.
SMPLX_KEYS: dict[str, tuple[tuple[str | int, ...], str]] = {
    "v_template": (("V", 3), "f"),
    "f": (("F", 3), "i"),
    "shapedirs": (("V", 3, "K"), "f"),
    "posedirs": (("V", 3, NUM_POSE_BASIS), "f"),
    "J_regressor": ((NUM_JOINTS, "V"), "f"),
    "weights": (("V", NUM_JOINTS), "f"),
    "kintree_table": ((2, NUM_JOINTS), "i"),
    "hands_componentsl": (("C", 45), "f"),
    "hands_componentsr": (("C", 45), "f"),
    "hands_meanl": ((45,), "f"),
    "hands_meanr": ((45,), "f"),
    "lmk_faces_idx": (("L",), "i"),
    "lmk_bary_coords": (("L", 3), "f"),
}
# Our own optional keys (the embedded model has them all).
EXTRA_KEYS: dict[str, tuple[tuple[str | int, ...], str]] = {
    "format_version": ((), "U"),
    "num_betas": ((), "i"),
    "expression_names": (("E",), "U"),
    "extra_joint_names": (("X",), "U"),
    "extra_joint_vertex_ids": (("X",), "i"),
    "part_labels": (("V",), "i"),
    "part_names": (("P",), "U"),
}
_SMALL_KEYS = ("f", "kintree_table", "lmk_faces_idx")  # index arrays we load to check their values


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A checked SMPL-X-format npz.

    Attributes:
        path: the file.
        source: ``"embedded"`` (our CC0 model) or ``"user"``.
        num_vertices, num_faces: mesh size.
        num_shape_columns: ``shapedirs.shape[-1]`` (400 = 300 shape + 100 expression for SMPL-X 2020).
        extras: our optional keys found in the file (``EXTRA_KEYS``), loaded.
        has_pickled_members: True if members we do not need hold pickled objects (never loaded).
    """

    path: Path
    source: str
    num_vertices: int
    num_faces: int
    num_shape_columns: int
    extras: dict[str, np.ndarray]
    has_pickled_members: bool


def resolve_model_path(path: str | Path | None = None) -> tuple[Path, str]:
    """Which model file to use -> ``(path, source)``.

    Order: ``path`` > ``$PERSONA_SMPLX_MODEL`` > the embedded file. A folder means its
    ``SMPLX_NEUTRAL.npz``. ``source`` is ``"embedded"`` for the embedded file, else ``"user"``.
    """
    if path is None:
        path = os.environ.get(MODEL_ENV_VAR) or EMBEDDED_MODEL_PATH
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / USER_MODEL_FILENAME
    is_embedded = path.exists() and EMBEDDED_MODEL_PATH.exists() and path.resolve() == EMBEDDED_MODEL_PATH.resolve()
    return path, "embedded" if is_embedded else "user"


def read_model_file(path: str | Path, source: str = "user") -> ModelFile:
    """Check an SMPL-X-format npz without unpickling anything; any problem -> one-line ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError("body model file not found" if not path.exists() else "is not a file", path)
    if not zipfile.is_zipfile(path):
        if path.suffix.lower() == ".pkl":
            raise UserError("pickle model files are never loaded (unsafe); use the .npz version of the model", path)
        raise UserError("not an .npz archive (empty, truncated or another format); expected an SMPL-X .npz model", path)
    headers = _member_headers(path)
    missing = [key for key in SMPLX_KEYS if key not in headers]
    if missing:
        raise UserError(f"not an SMPL-X model: missing keys {', '.join(missing)}", path)
    pickled = sorted(k for k, (_, dtype) in headers.items() if dtype is None or dtype.hasobject)
    sizes = _check_layouts(path, headers, SMPLX_KEYS, {})
    extras_present = {k: v for k, v in EXTRA_KEYS.items() if k in headers}
    _check_layouts(path, headers, extras_present, sizes)
    arrays = _load(path, [*_SMALL_KEYS, *extras_present])
    _check_values(path, arrays, sizes)
    return ModelFile(
        path=path, source=source, num_vertices=sizes["V"], num_faces=sizes["F"], num_shape_columns=sizes["K"],
        extras={k: arrays[k] for k in extras_present}, has_pickled_members=bool(pickled),
    )


def rest_joints(path: str | Path | None = None) -> np.ndarray:
    """The mean shape's joints in the zero pose, ``[55, 3]`` metres (SMPL-X canonical frame), of the model
    ``resolve_model_path(path)`` picks: ``J_regressor @ v_template``, read without building the body model."""
    model_path, source = resolve_model_path(path)
    model_file = read_model_file(model_path, source)
    arrays = _load(model_file.path, ["v_template", "J_regressor"])
    return arrays["J_regressor"].astype(np.float64) @ arrays["v_template"].astype(np.float64)


@contextlib.contextmanager
def smplx_readable_path(model_file: ModelFile) -> Iterator[Path]:
    """A path smplx may open with ``allow_pickle=True``: the file itself when it has no pickled
    members, else a temporary copy with only the checked numeric arrays smplx reads."""
    if not model_file.has_pickled_members:
        yield model_file.path
        return
    arrays = _load(model_file.path, list(SMPLX_KEYS))
    with tempfile.TemporaryDirectory(prefix="persona-body-") as folder:
        copy = Path(folder) / "SMPLX_NEUTRAL.npz"
        np.savez(copy, **arrays)
        yield copy


def _member_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype | None]]:
    """Key -> (shape, dtype) of each npy member, read from the headers only (dtype None: unreadable)."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype | None]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    headers[info.filename[:-4]] = _npy_header(member)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise UserError(f"corrupt .npz archive ({type(err).__name__}: {err})", path) from None
    return headers


def _npy_header(member) -> tuple[tuple[int, ...], np.dtype | None]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        return (), None
    return tuple(shape), dtype


def _check_layouts(path: Path, headers: dict, layouts: dict, sizes: dict[str, int]) -> dict[str, int]:
    """Check each key's dtype kind and shape against ``layouts``; fills and returns ``sizes``."""
    for key, (layout, kind) in layouts.items():
        shape, dtype = headers[key]
        kinds = {"f": "f", "i": "iu", "U": "US"}[kind]
        if dtype is None or dtype.kind not in kinds:
            wanted = {"f": "floats", "i": "integers", "U": "text"}[kind]
            raise UserError(f"key '{key}' holds {dtype if dtype is not None else 'an unreadable array'}; expected {wanted}",
                            path)
        expected = "[" + ", ".join(str(d) for d in layout) + "]"
        if len(shape) != len(layout):
            raise UserError(f"key '{key}' has shape {list(shape)}; expected {expected}", path)
        for dim, want in zip(shape, layout):
            if isinstance(want, str):
                sizes.setdefault(want, dim)
                want_value = sizes[want]
            else:
                want_value = want
            if dim != want_value:
                raise UserError(f"key '{key}' has shape {list(shape)}; expected {expected} with "
                                + ", ".join(f"{k}={v}" for k, v in sizes.items() if k in layout), path)
    if sizes.get("V", 1) < 1 or sizes.get("F", 1) < 1 or sizes.get("K", 1) < 1:
        raise UserError("the model has no vertices, faces or shape blend shapes", path)
    return sizes


def _load(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in keys}
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise UserError(f"corrupt .npz archive ({type(err).__name__}: {err})", path) from None


def _check_values(path: Path, arrays: dict[str, np.ndarray], sizes: dict[str, int]) -> None:
    faces = arrays["f"]
    if faces.min() < 0 or faces.max() >= sizes["V"]:
        raise UserError(f"faces 'f' index vertices outside 0..{sizes['V'] - 1}", path)
    parents = arrays["kintree_table"][0].astype(np.int64)
    if not np.array_equal(parents[1:], np.array(PARENTS[1:])):
        raise UserError("kinematic tree 'kintree_table' differs from SMPL-X's 55-joint tree", path)
    landmark_faces = arrays["lmk_faces_idx"]
    if landmark_faces.size and (landmark_faces.min() < 0 or landmark_faces.max() >= sizes["F"]):
        raise UserError(f"'lmk_faces_idx' indexes faces outside 0..{sizes['F'] - 1}", path)
    version = arrays.get("format_version")
    if version is not None and str(version) != FORMAT_VERSION:
        raise UserError(f"format_version '{version}' is not supported (expected '{FORMAT_VERSION}'); "
                        "rebuild it with tools/build_body_model.py or update persona-studio", path)
    ids = arrays.get("extra_joint_vertex_ids")
    if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= sizes["V"]):
        raise UserError(f"'extra_joint_vertex_ids' index vertices outside 0..{sizes['V'] - 1}", path)
    labels = arrays.get("part_labels")
    if labels is not None and (labels.min() < 0 or labels.max() >= len(PART_NAMES)):
        raise UserError(f"'part_labels' outside 0..{len(PART_NAMES) - 1}", path)
