"""User-facing errors: one line, naming the file and what to do. Tracebacks are for bugs."""
from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error caused by the user's input; the CLI and app print ``str(err)`` as one line."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        text = f"{self.path}: {message}" if self.path is not None else message
        super().__init__(" ".join(text.split()))
