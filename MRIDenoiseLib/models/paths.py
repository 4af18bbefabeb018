"""Where bundled resources and the weights cache live."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_VARIABLE = "MRIDENOISE_CACHE_DIR"
OFFLINE_VARIABLE = "MRIDENOISE_OFFLINE"


def resources_dir() -> Path:
    """The extension's Resources folder (beside the MRIDenoiseLib package)."""
    return Path(__file__).resolve().parents[2] / "Resources"


def bundled_models_dir() -> Path:
    return resources_dir() / "Models"


def cache_dir() -> Path:
    """MRIDENOISE_CACHE_DIR, else the platform's per-user cache folder."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mridenoise"


def offline() -> bool:
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")
