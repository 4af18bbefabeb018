"""The model catalogue: bundled entries in Resources/Models/catalog.json plus user models.

User models (fine-tuned or trained by the user) live in ``user-catalog.json`` in the cache
folder and are listed beside the bundled ones.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ModelError
from .paths import bundled_models_dir, cache_dir

CATALOG_NAME = "catalog.json"
PLANES = ("auto", "all")
"""How a 2.5-D network is run over a volume (see ``ModelEntry.planes``)."""
USER_CATALOG_NAME = "user-catalog.json"


@dataclass
class ModelEntry:
    """One selectable method: a trained network with weights, or a classical filter."""

    id: str
    title: str
    description: str
    kind: Literal["network", "classical"]
    architecture: str
    input: Literal["scalar", "dwi"] = "scalar"
    arguments: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    sha256: str | None = None
    size: int | None = None
    urls: list[str] = field(default_factory=list)
    license: str = ""
    citation: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    gradient_table: dict[str, list] | None = None
    planes: Literal["auto", "all"] = "auto"
    """"all": a 2.5-D network is run along the three axes of an isotropic volume and the passes
    averaged (three times the work, better); "auto": one pass along the coarsest axis."""
    default: bool = False
    user: bool = False

    def __post_init__(self) -> None:
        if self.planes not in PLANES:
            raise ModelError(f"catalogue entry {self.id!r}: planes must be one of {PLANES}, got {self.planes!r}")
        if self.kind == "network" and not (self.weights and self.sha256):
            raise ModelError(f"catalogue entry {self.id!r} is a network without weights or sha256")

    def network_arguments(self) -> dict[str, Any]:
        """Constructor arguments, with the measurement count of a q-space model's gradient table."""
        if self.gradient_table:
            return {**self.arguments, "measurements": len(self.gradient_table["bvalues"])}
        return dict(self.arguments)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("user")
        return record


class Catalog:
    """Bundled and user models, looked up by id."""

    def __init__(self, entries: list[ModelEntry]) -> None:
        self.entries = {entry.id: entry for entry in entries}
        defaults = [entry for entry in entries if entry.default]
        if len(defaults) != 1:
            raise ModelError(f"the catalogue must mark exactly one default model, found {len(defaults)}")
        self.default_id = defaults[0].id

    def get(self, model_id: str | None) -> ModelEntry:
        """The entry for ``model_id``; the default one for None."""
        key = model_id or self.default_id
        try:
            return self.entries[key]
        except KeyError:
            raise ModelError(f"unknown model id {key!r}; known: {', '.join(sorted(self.entries))}") from None

    def __iter__(self):
        return iter(self.entries.values())


def load_catalog(bundled: Path | None = None, user: Path | None = None) -> Catalog:
    """Read the bundled catalogue and, when present, the user catalogue in the cache folder."""
    bundled = bundled or bundled_models_dir() / CATALOG_NAME
    entries = [ModelEntry(**raw) for raw in _read_json(bundled)["models"]]
    user = user or cache_dir() / USER_CATALOG_NAME
    if user.exists():
        for raw in _read_json(user)["models"]:
            entry = ModelEntry(**{**raw, "default": False})
            entry.user = True
            entries.append(entry)
    return Catalog(entries)


def register_user_model(entry: ModelEntry, user: Path | None = None) -> None:
    """Add or replace a user model in the user catalogue (written atomically)."""
    user = user or cache_dir() / USER_CATALOG_NAME
    records = _read_json(user)["models"] if user.exists() else []
    records = [r for r in records if r["id"] != entry.id] + [{**entry.to_dict(), "default": False}]
    write_json_atomic(user, {"models": records})


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(handle, "w") as stream:
        json.dump(payload, stream, indent=2)
        stream.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read model catalogue {path}: {error}") from None
