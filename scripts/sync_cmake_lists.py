"""Rewrite the file lists of CMakeLists.txt from what is on disk (run after adding or removing files).

python scripts/sync_cmake_lists.py
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_scripts() -> list[str]:
    engine = (
        str(path.relative_to(REPO))
        for folder in ("MRIDenoiseLib", "MRIDenoiseSlicer")
        for path in (REPO / folder).rglob("*.py")
    )
    return ["MRIDenoise.py", *sorted(engine)]


def module_resources() -> list[str]:
    return sorted(str(path.relative_to(REPO)) for path in (REPO / "Resources").rglob("*") if path.is_file())


def replace_block(text: str, name: str, entries: list[str]) -> str:
    body = "\n".join(f"  {entry}" for entry in entries)
    updated, count = re.subn(
        rf"set\({name}\n.*?\n(\s*)\)", lambda m: f"set({name}\n{body}\n{m.group(1)})", text, flags=re.S
    )
    if count != 1:
        raise SystemExit(f"set({name} ...) not found in CMakeLists.txt")
    return updated


def main() -> None:
    path = REPO / "CMakeLists.txt"
    text = replace_block(path.read_text(), "MODULE_PYTHON_SCRIPTS", module_scripts())
    path.write_text(replace_block(text, "MODULE_PYTHON_RESOURCES", module_resources()))


if __name__ == "__main__":
    main()
