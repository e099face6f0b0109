"""Recent projects: photos reconstructed and avatar bundles opened, newest first, in a small JSON file
in the user's config folder (``$XDG_CONFIG_HOME/persona-studio/recent.json``, default ``~/.config``)."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core.io.atomic import write_text_atomic

RECENT_FORMAT = "persona-studio-recent/1"
MAX_RECENT = 10
KINDS = ("photo", "bundle")


def config_dir() -> Path:
    """The studio's folder for user settings (not created here)."""
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "persona-studio"
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "persona-studio"


@dataclass(frozen=True)
class RecentEntry:
    """A photo (``output``: the folder its run writes to) or an avatar bundle folder."""

    kind: str
    path: str
    output: str = ""
    opened: float = 0.0  # seconds since the epoch

    @property
    def label(self) -> str:
        return f"{'Photo' if self.kind == 'photo' else 'Avatar'}: {Path(self.path).name}"


class RecentProjects:
    """The recent list; ``add`` saves at once (atomically). A missing or unreadable file is an empty
    list, never an error: losing the list must not stop the app."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else config_dir() / "recent.json"
        self.entries: list[RecentEntry] = self._load()

    def _load(self) -> list[RecentEntry]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(data, dict) or data.get("format") != RECENT_FORMAT or not isinstance(data.get("entries"), list):
            return []
        entries = []
        for item in data["entries"]:
            try:
                entry = RecentEntry(kind=str(item["kind"]), path=str(item["path"]), output=str(item.get("output", "")),
                                    opened=float(item.get("opened", 0.0)))
            except (KeyError, TypeError, ValueError):
                continue
            if entry.kind in KINDS:
                entries.append(entry)
        return entries[:MAX_RECENT]

    def add(self, kind: str, path: str | Path, output: str | Path = "") -> None:
        """Put ``path`` first (once), keep ``MAX_RECENT`` entries, save. Write failures are ignored:
        the list is a convenience (the caller may still show the problem)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        path = str(Path(path).expanduser().resolve())
        entry = RecentEntry(kind, path, str(output), time.time())
        self.entries = [entry] + [e for e in self.entries if (e.kind, e.path) != (kind, path)][:MAX_RECENT - 1]
        self.save()

    def save(self) -> None:
        text = json.dumps({"format": RECENT_FORMAT, "entries": [asdict(e) for e in self.entries]}, indent=2)
        try:
            write_text_atomic(self.path, text)
        except OSError as err:
            print(f"warning: could not save the recent-projects list to {self.path}: {err}", file=sys.stderr)
