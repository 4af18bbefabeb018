"""Where bundled resources and the weights cache live."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_VARIABLE = "MRIDENOISE_CACHE_DIR"
OFFLINE_VARIABLE = "MRIDENOISE_OFFLINE"
STAGING_VARIABLE = "MRIDENOISE_STAGING_DIR"
"""When set, new user models are written into this folder instead of the cache; the caller commits
them with :func:`MRIDenoiseLib.models.catalog.adopt_staged_models` once the whole job succeeded."""


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


def staging_dir() -> Path | None:
    """The folder of a job whose user models are not committed yet (MRIDENOISE_STAGING_DIR), if any."""
    configured = os.environ.get(STAGING_VARIABLE)
    return Path(configured).expanduser() if configured else None


def committed_user_models_dir() -> Path:
    """The cache folder holding the weights of committed user models (fine-tuned or trained here)."""
    return cache_dir() / "user-models"


def user_models_dir() -> Path:
    """Where new user models' weights are written: the staging folder of a job, else the cache."""
    return staging_dir() or committed_user_models_dir()


def offline() -> bool:
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")
