"""Opening avatar bundles (a folder, or a .persona file) for the studio, in a background thread."""
from __future__ import annotations

import queue
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import UserError
from persona_studio.panels.project import PERSONA_SUFFIX
from persona_studio.session import SessionAvatar


def load_avatar_file(path: Path, body):
    """(avatar, body, manifest) from a bundle folder, or from a .persona file where this build's
    ``core.export`` reads them."""
    if path.suffix.lower() != PERSONA_SUFFIX:
        from core.avatar.bundle import load_bundle

        return load_bundle(path, body)
    try:
        from core.export.persona_file import load_avatar
    except ImportError:
        raise UserError(f"this build cannot read {PERSONA_SUFFIX} files; open the avatar's bundle folder", path) from None
    return load_avatar(path, body)


def check_bundle_path(path: Path) -> None:
    """A UserError at once for something that is neither a bundle folder nor an existing .persona file
    (the slow checks happen while loading)."""
    from core.avatar.bundle import read_manifest

    if path.suffix.lower() == PERSONA_SUFFIX:
        if not path.is_file():
            raise UserError("file not found", path)
    else:
        read_manifest(path)


@dataclass(frozen=True)
class LoadedBundle:
    """One finished load: ``shown`` and ``manifest`` on success, else the one-line ``error``."""

    path: Path
    shown: SessionAvatar | None = None
    manifest: dict | None = None
    error: str | None = None


class BundleLoader:
    """Loads bundles in daemon threads; the UI takes the results in the order they finish (``take()``)."""

    def __init__(self, body_model: Callable[[], object]):
        """``body_model()`` returns the shared body model (called in the loading thread)."""
        self._body_model = body_model
        self._results: queue.SimpleQueue[LoadedBundle] = queue.SimpleQueue()
        self.loading = 0  # loads started and not yet taken (UI thread)

    def start(self, path: str | Path) -> Path:
        """Check ``path`` (UserError at once) and start loading it; returns it as a Path."""
        path = Path(path)
        check_bundle_path(path)
        self.loading += 1
        threading.Thread(target=self._load, args=(path,), name="bundle-loader", daemon=True).start()
        return path

    def take(self) -> list[LoadedBundle]:
        """The loads finished since the last call (UI thread)."""
        done = []
        while not self._results.empty():
            done.append(self._results.get_nowait())
        self.loading -= len(done)
        return done

    def _load(self, path: Path) -> None:
        try:
            avatar, body, manifest = load_avatar_file(path, self._body_model())
            params = {k: np.asarray(v, np.float32) for k, v in (manifest.get("subject") or {}).items()}
            self._results.put(LoadedBundle(path, SessionAvatar(avatar, body, params, path.name), manifest))
        except UserError as err:
            self._results.put(LoadedBundle(path, error=str(err)))
        except Exception as err:  # noqa: BLE001  (a bug: keep the app alive, say which file, log the traceback)
            traceback.print_exc()
            self._results.put(LoadedBundle(path, error=f"internal error opening {path}: {type(err).__name__}: {err}"))
