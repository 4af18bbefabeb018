"""The catalogue as the panel shows it, checked without importing torch (works before installation).

Weights the user picks by hand, the grouped model list, the help text and user-model removal all
come from the one catalogue (Resources/Models/catalog.json plus the user catalogue), so the panel
never keeps a second, hand-written list.
"""

from __future__ import annotations

import html
from pathlib import Path

from MRIDenoiseLib.models.catalog import GROUPS, load_catalog, model_group
from MRIDenoiseLib.models.paths import committed_user_models_dir
from MRIDenoiseLib.models.store import describe_models
from MRIDenoiseLib.models.store import import_weights as import_into_cache

GROUP_TITLES = {
    "recommended": "Recommended",
    "papers": "Published methods (papers 000-004)",
    "classical": "Classical filters",
    "diffusion": "Diffusion-weighted series",
    "user": "Your models",
}
"""Heading of each catalogue group in the panel's model list and help text."""


def import_weights(model_id: str | None, path: str | Path) -> Path:
    """Check a user-picked weights file against the model's sha256 and copy it into the cache."""
    return import_into_cache(load_catalog().get(model_id), Path(path))


def grouped_models(show_superseded: bool = False) -> list[tuple[str, list[dict[str, object]]]]:
    """(group title, rows) in panel order, recommended first; superseded releases only when asked for.

    Each row is a :func:`MRIDenoiseLib.models.store.describe_models` row. Empty groups are left out.
    """
    rows = [row for row in describe_models() if show_superseded or not row["superseded_by"]]
    return [
        (GROUP_TITLES[group], members)
        for group in GROUPS
        if (members := [row for row in rows if row["group"] == group])
    ]


def user_models_folder() -> Path:
    """The folder holding the weights of fine-tuned and trained user models (created if missing)."""
    folder = committed_user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def catalogue_help_html() -> str:
    """The module's help list of methods, generated from the catalogue (current releases only)."""
    catalog = load_catalog()
    sections = []
    for group in GROUPS:
        entries = [e for e in catalog if model_group(e) == group and not e.superseded_by and not e.user]
        if not entries:
            continue
        items = "".join(
            f"<li><b>{html.escape(e.title)}</b> (<code>{e.id}</code>): {html.escape(_first_sentence(e.description))}"
            "</li>"
            for e in entries
        )
        sections.append(f"<p><i>{GROUP_TITLES[group]}</i></p><ul>{items}</ul>")
    superseded = sorted(e.id for e in catalog if e.superseded_by)
    if superseded:
        sections.append(
            "<p>Earlier releases ("
            + ", ".join(superseded)
            + ") are listed when <i>Show earlier versions</i> is on.</p>"
        )
    return "".join(sections)


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + ("." if dot else "")
