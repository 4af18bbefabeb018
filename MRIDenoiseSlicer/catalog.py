"""The model list for the panel, without importing torch (so it works before installation)."""

from __future__ import annotations

from pathlib import Path

from MRIDenoiseLib.models.catalog import load_catalog
from MRIDenoiseLib.models.store import import_weights as import_into_cache
from MRIDenoiseLib.models.store import locate_weights


def catalog_rows() -> list[dict[str, object]]:
    """Catalogue entries with where their weights are ('bundled', 'cached', 'missing', ...)."""
    rows = []
    for entry in load_catalog():
        _, status = locate_weights(entry)
        rows.append(
            {
                "id": entry.id,
                "title": entry.title,
                "description": entry.description,
                "input": entry.input,
                "default": entry.default,
                "weights": status,
            }
        )
    return rows


def import_weights(model_id: str | None, path: str | Path) -> Path:
    """Check a user-picked weights file against the model's sha256 and copy it into the cache."""
    return import_into_cache(load_catalog().get(model_id), Path(path))
