"""Where the project's shipped files live (presets, motions, shaders, embedded body model)."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PRESETS_DIR = REPO_ROOT / "presets"
MOTIONS_DIR = PRESETS_DIR / "motions"
SHADERS_DIR = REPO_ROOT / "shaders"
BODY_DATA_DIR = Path(__file__).resolve().parent / "body" / "data"
