"""The model catalogue: bundled entries in Resources/Models/catalog.json plus user models.

User models (fine-tuned or trained by the user) live in ``user-catalog.json`` in the cache
folder and are listed beside the bundled ones.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ModelError
from .hashing import sha256_of
from .paths import bundled_models_dir, cache_dir, committed_user_models_dir, staging_dir

CATALOG_NAME = "catalog.json"
PLANES = ("auto", "all")
"""How a 2.5-D network is run over a volume (see ``ModelEntry.planes``)."""
REFINEMENTS = ("wiener", "wiener-share", "wiener-share-interleaved", "wiener-share-interleaved-faded")
"""Second stages a network entry can name (see ``ModelEntry.refinement``)."""
USER_CATALOG_NAME = "user-catalog.json"
log = logging.getLogger(__name__)
GROUPS = ("recommended", "papers", "classical", "diffusion", "user")
"""How the panel groups the catalogue, in the order it shows the groups (see :func:`model_group`)."""


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
    refinement: str | None = None
    """"wiener": the network's output guides an empirical Wiener step in DCT blocks at low noise
    (``denoisers/refinement.py``); "wiener-share": the share of that step measured on the scan, up to
    a higher noise level; "wiener-share-interleaved": the same on a quarter of the blocks;
    "wiener-share-interleaved-faded": the same with the step's change faded out in the air; None: the
    network alone."""
    default: bool = False
    default_dwi: bool = False
    """The method a diffusion-weighted series gets when no model is named (at most one entry)."""
    requires: list[str] = field(default_factory=list)
    """Optional packages the method needs beyond the engine's (pip requirements, installed on first use)."""
    superseded_by: str | None = None
    """The id of the release that replaced this one; listed only when earlier versions are asked for."""
    user: bool = False

    def __post_init__(self) -> None:
        if self.planes not in PLANES:
            raise ModelError(f"catalogue entry {self.id!r}: planes must be one of {PLANES}, got {self.planes!r}")
        if self.refinement is not None and (self.kind != "network" or self.refinement not in REFINEMENTS):
            raise ModelError(
                f"catalogue entry {self.id!r}: refinement must be one of {REFINEMENTS} on a network, "
                f"got {self.refinement!r}"
            )
        if self.kind == "network" and not (self.weights and self.sha256):
            raise ModelError(f"catalogue entry {self.id!r} is a network without weights or sha256")

    def weights_file(self) -> tuple[str, str]:
        """(file name or user path, sha256) of a network entry's weights; both exist for every network."""
        if self.weights is None or self.sha256 is None:
            raise ModelError(f"{self.id!r} has no weights (it is a {self.kind})")
        return self.weights, self.sha256

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
        dwi_defaults = [entry.id for entry in entries if entry.default_dwi]
        if len(dwi_defaults) > 1:
            raise ModelError(f"the catalogue marks {len(dwi_defaults)} diffusion defaults: {dwi_defaults}")
        self.default_dwi_id = dwi_defaults[0] if dwi_defaults else None

    def get(self, model_id: str | None) -> ModelEntry:
        """The entry for ``model_id``; the default one for None."""
        key = model_id or self.default_id
        try:
            return self.entries[key]
        except KeyError:
            raise ModelError(f"unknown model id {key!r}; known: {', '.join(sorted(self.entries))}") from None

    def __iter__(self):
        return iter(self.entries.values())


def user_catalog_path() -> Path:
    """The user catalogue new user models are registered in: the job's staging folder, else the cache."""
    return (staging_dir() or cache_dir()) / USER_CATALOG_NAME


def load_catalog(bundled: Path | None = None, user: Path | None = None) -> Catalog:
    """Read the bundled catalogue, the user catalogue in the cache folder and a job's staged models."""
    bundled = bundled or bundled_models_dir() / CATALOG_NAME
    entries = [ModelEntry(**raw) for raw in _read_json(bundled)["models"]]
    user_catalogs = [user] if user else [cache_dir() / USER_CATALOG_NAME]
    staged = staging_dir()
    if user is None and staged is not None:
        user_catalogs.append(staged / USER_CATALOG_NAME)
    for path in user_catalogs:
        if path.exists():
            entries += _user_entries(path)
    return Catalog(entries)


def _user_entries(path: Path) -> list[ModelEntry]:
    """The valid entries of a user catalogue; a broken file or entry is skipped with a warning, never fatal,
    so the bundled models keep working (the file is left as it is for the user to repair)."""
    try:
        records = _read_json(path)["models"]
        if not isinstance(records, list):
            raise TypeError("'models' is not a list")
    except (ModelError, KeyError, TypeError) as error:
        log.warning("ignoring the user model catalogue %s: %s", path, error)
        return []
    entries = []
    for raw in records:
        try:
            entry = ModelEntry(**{**raw, "default": False, "default_dwi": False})
        except (TypeError, ModelError) as error:
            log.warning("ignoring a malformed entry of %s: %s", path, error)
            continue
        entry.user = True
        entries.append(entry)
    return entries


def register_user_model(entry: ModelEntry, user: Path | None = None) -> None:
    """Add or replace a user model in the user catalogue (written atomically)."""
    user = user or user_catalog_path()
    records = _read_json(user).get("models") if user.exists() else []
    if not isinstance(records, list):
        raise ModelError(f"cannot add a model to {user}: the file is not a model catalogue; repair or remove it")
    records = [r for r in records if r["id"] != entry.id] + [{**entry.to_dict(), "default": False}]
    write_json_atomic(user, {"models": records})


def new_user_model_id(stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``...: an id no model has yet, so a new model never replaces an earlier one."""
    taken = {entry.id for entry in load_catalog()}
    candidate, number = stem, 1
    while candidate in taken or (committed_user_models_dir() / candidate).exists():
        number += 1
        candidate = f"{stem}-{number}"
    return candidate


def adopt_staged_models(staging: Path) -> list[str]:
    """Commit the user models a job staged in ``staging``: weights moved into the cache, checked, registered.

    Returns the ids adopted. Called only once the job has succeeded, so a cancelled or failed job
    never leaves a model behind.
    """
    catalog_path = staging / USER_CATALOG_NAME
    if not catalog_path.exists():
        return []
    adopted = []
    for raw in _read_json(catalog_path)["models"]:
        entry = ModelEntry(**{**raw, "default": False})
        source = Path(entry.weights or "")
        if entry.id in {e.id for e in load_catalog(user=cache_dir() / USER_CATALOG_NAME)}:
            entry.id = new_user_model_id(entry.id)  # registered meanwhile by another job: keep both
        target = committed_user_models_dir() / entry.id / source.name
        if not source.is_file() or sha256_of(source) != entry.sha256:
            raise ModelError(f"staged model {entry.id!r}: its weights are missing or fail their checksum")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        entry.weights = str(target)
        register_user_model(entry, cache_dir() / USER_CATALOG_NAME)
        adopted.append(entry.id)
    return adopted


def remove_user_model(model_id: str) -> None:
    """Delete a user model: its catalogue entry (rewritten atomically), then its weights folder in the cache."""
    path = cache_dir() / USER_CATALOG_NAME
    records = _read_json(path)["models"] if path.exists() else []
    found = [r for r in records if r["id"] == model_id]
    if not found:
        raise ModelError(f"{model_id!r} is not a user model; only fine-tuned or trained models can be removed")
    write_json_atomic(path, {"models": [r for r in records if r["id"] != model_id]})
    folder = Path(found[0].get("weights") or "").parent
    models_root = committed_user_models_dir().resolve()
    if folder.is_dir() and models_root in folder.resolve().parents:
        shutil.rmtree(folder, ignore_errors=True)


def model_group(entry: ModelEntry) -> str:
    """The panel group of an entry, one of :data:`GROUPS`."""
    if entry.user:
        return "user"
    if entry.default:
        return "recommended"
    if entry.input == "dwi":
        return "diffusion"
    if entry.kind == "classical":
        return "classical"
    return "papers"


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
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read model catalogue {path}: {error}") from None
    if not isinstance(payload, dict):
        raise ModelError(f"cannot read model catalogue {path}: not a JSON object")
    return payload
