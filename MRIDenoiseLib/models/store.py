"""Finding a model's weights: bundled file, then cache, then a verified download."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..progress import CancelToken, ProgressCallback, no_progress
from .catalog import ModelEntry, load_catalog, model_group
from .download import download_verified
from .hashing import sha256_of
from .paths import bundled_models_dir, cache_dir, offline


def cached_path(entry: ModelEntry) -> Path:
    """Where the cache keeps an entry's weights (keyed by checksum, so versions never clash)."""
    weights, sha256 = entry.weights_file()
    return cache_dir() / "weights" / sha256[:16] / weights


def locate_weights(entry: ModelEntry) -> tuple[Path | None, str]:
    """The verified local file of an entry, if any, and where it was found.

    The second value is 'bundled', 'cached', 'missing', or 'corrupt' (a local file whose
    checksum does not match; it is never used).
    """
    if entry.kind != "network":
        return None, "not needed"
    status = "missing"
    weights, sha256 = entry.weights_file()
    candidates = [(Path(weights), "user")] if entry.user else []
    candidates += [(bundled_models_dir() / weights, "bundled"), (cached_path(entry), "cached")]
    for path, origin in candidates:
        if path.is_file():
            if sha256_of(path) == sha256:
                return path, origin
            status = "corrupt"
    return None, status


def describe_models() -> list[dict[str, Any]]:
    """One row per catalogue entry, with where its weights are (see :func:`locate_weights`)."""
    rows = []
    for entry in load_catalog():
        _, status = locate_weights(entry)
        rows.append(
            {
                "id": entry.id,
                "title": entry.title,
                "description": entry.description,
                "kind": entry.kind,
                "input": entry.input,
                "default": entry.default,
                "default_dwi": entry.default_dwi,
                "user": entry.user,
                "group": model_group(entry),
                "superseded_by": entry.superseded_by,
                "requires": list(entry.requires),
                "weights": status,
            }
        )
    return rows


def resolve_weights(
    entry: ModelEntry, progress: ProgressCallback = no_progress, cancel: CancelToken | None = None
) -> Path:
    """A verified local weights file for ``entry``, downloading it into the cache if needed."""
    path, status = locate_weights(entry)
    if path is not None:
        return path
    if entry.user:
        problem = "fails its checksum (sha256 mismatch)" if status == "corrupt" else "is missing"
        raise ModelError(f"user model {entry.id!r}: its weights file {entry.weights} {problem}")
    target = cached_path(entry)
    if status == "corrupt" and (offline() or not entry.urls):
        raise ModelError(
            f"checksum mismatch: the local weights of {entry.id!r} do not match sha256 {entry.sha256}; "
            f"replace {entry.weights} in {bundled_models_dir()} or {target.parent}"
        )
    if offline():
        raise ModelError(
            f"model {entry.id!r} needs {entry.weights} (sha256 {entry.sha256}) and MRIDENOISE_OFFLINE is set: "
            f"copy the file to {target} or {bundled_models_dir() / entry.weights_file()[0]}"
        )
    if status == "corrupt" and target.exists():
        target.unlink()
    return download_verified(entry.urls, target, entry.weights_file()[1], progress, cancel)


def import_weights(entry: ModelEntry, source: Path) -> Path:
    """Copy a weights file the user picked into the cache after checking its sha256."""
    actual = sha256_of(source)
    if actual != entry.sha256:
        raise ModelError(f"{source.name} is not the weights of {entry.id!r}: sha256 {actual}, expected {entry.sha256}")
    target = cached_path(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(source.read_bytes())
        if sha256_of(name) != entry.sha256:
            raise ModelError(f"copying {source.name} into the cache failed (checksum changed); nothing was cached")
        os.replace(name, target)
    finally:
        Path(name).unlink(missing_ok=True)
    return target
