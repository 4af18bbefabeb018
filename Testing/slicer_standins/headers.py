"""Read a widget's Qt interface (base class, Q_PROPERTYs, signals, methods) from its C++ header."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .qtcore import normalize_signature

HEADERS = Path(__file__).resolve().parents[3] / "shared" / "slicer" / "headers"


@dataclass
class Interface:
    name: str
    base: str
    properties: dict[str, str]
    read_only: frozenset[str]
    signals: tuple[str, ...]
    methods: frozenset[str]


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def read_interface(class_name: str) -> Interface:
    """The interface ``class_name`` declares in ``<class_name>.h`` (its own members, not inherited ones)."""
    text = _strip_comments((HEADERS / f"{class_name}.h").read_text())
    declaration = re.search(rf"class\s+(?:\w+_EXPORT\s+)?{class_name}\s*:\s*public\s+(\w+)", text)
    if declaration is None:
        raise ValueError(f"no declaration of {class_name} in its header")
    body = text[declaration.end() :]
    properties, read_only = {}, set()
    for match in re.finditer(r"Q_PROPERTY\(\s*([\w:<>]+\s*\*?)\s+(\w+)\s+([^)]*)\)", body):
        properties[match.group(2)] = match.group(1).strip()
        if "WRITE" not in match.group(3):
            read_only.add(match.group(2))
    signals: list[str] = []
    methods: set[str] = set()
    section = "private"
    for line in body.splitlines():
        stripped = line.strip()
        label = re.match(r"(public|protected|private)?\s*(Q_SIGNALS|signals|Q_SLOTS|slots)?\s*:$", stripped)
        if label and stripped not in (":",):
            section = (label.group(2) and "signals" in label.group(2).lower() and "signals") or (
                label.group(1) or "public"
            )
            if label.group(2) and "slot" in label.group(2).lower():
                section = "public" if label.group(1) != "protected" and label.group(1) != "private" else "hidden"
            continue
        call = re.match(r"(?:virtual\s+|static\s+|Q_INVOKABLE\s+)*[\w:<>,\s\*&]+?\b(\w+)\s*\(([^;{]*)\)", stripped)
        if call is None or call.group(1) in ("Q_PROPERTY", "Q_OBJECT", "Q_ENUMS", "Q_FLAGS", "Q_DECLARE_PRIVATE"):
            continue
        if section == "signals":
            signals.append(normalize_signature(f"{call.group(1)}({call.group(2)})"))
        elif section == "public":
            methods.add(call.group(1))
    constructor = re.compile(rf"^\s*(explicit\s+)?{class_name}\s*\(", re.M)
    if constructor.search(body):
        methods.discard(class_name)
    return Interface(
        class_name, declaration.group(1), properties, frozenset(read_only), tuple(signals), frozenset(methods)
    )
