"""Safe npz files: never unpickled, written atomically, errors name the file."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.io.atomic import atomic_path


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], compress: bool = True) -> None:
    """Write ``arrays`` to ``path`` atomically (compressed by default)."""
    writer = np.savez_compressed if compress else np.savez
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            writer(f, **{k: np.asarray(v) for k, v in arrays.items()})


def load_npz(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read every array of an npz without pickle; missing/corrupt file or keys -> one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError("file not found", path)
    if not zipfile.is_zipfile(path):
        raise UserError("not a valid .npz file (empty, truncated or another format)", path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise UserError("contains pickled Python objects, which are never loaded; re-save it with plain arrays",
                            path) from None
        raise UserError(f"not a valid .npz file ({err})", path) from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UserError(f"not a valid .npz file ({type(err).__name__}: {err})", path) from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise UserError(f"missing keys {', '.join(missing)}", path)
    return arrays
