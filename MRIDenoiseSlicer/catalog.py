"""Weights the user picks by hand, checked without importing torch (works before installation)."""

from __future__ import annotations

from pathlib import Path

from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.models.store import import_weights as import_into_cache


def import_weights(model_id: str | None, path: str | Path) -> Path:
    """Check a user-picked weights file against the model's sha256 and copy it into the cache."""
    return import_into_cache(load_catalog().get(model_id), Path(path))
