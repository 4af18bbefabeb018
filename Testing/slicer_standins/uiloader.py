"""``qt.QUiLoader`` and ``qt.QFile`` stand-ins: build stand-in widgets from a Qt Designer .ui file.

Like Qt's loader it instantiates each class by name, applies each property and makes each
``<connection>``; unlike it (it only prints a warning) an unknown class, a property the class does
not declare, or a signal or slot it does not have is an error, so such a .ui fails its test.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from .qtcore import QObject, normalize_signature
from .widgets import QLayout, QWidget


class QFile:
    ReadOnly = 1

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def open(self, mode: int) -> bool:
        return self.exists()

    def remove(self) -> bool:
        self.path.unlink(missing_ok=True)
        return True


def _value(element: ElementTree.Element) -> Any:
    kind = element.tag
    text = element.text or ""
    if kind in ("string", "enum", "set", "cstring"):
        return text
    if kind == "bool":
        return text.strip() == "true"
    if kind == "number":
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "stringlist":
        return [child.text or "" for child in element.findall("string")]
    return {child.tag: child.text for child in element}  # size, rect, sizepolicy, font...


class QUiLoader:
    def __init__(self, classes: dict[str, type]) -> None:
        self._classes = classes

    def load(self, qfile: QFile) -> QWidget:
        root = ElementTree.parse(qfile.path).getroot()
        self._by_name: dict[str, QObject] = {}
        top = self._widget(root.find("widget"), None)
        for connection in root.iter("connection"):
            self._connect(connection)
        return top

    def _widget(self, element: ElementTree.Element, parent: QWidget | None) -> QWidget:
        class_name = element.get("class")
        if class_name not in self._classes:
            raise RuntimeError(f"the .ui uses class {class_name}, which is not available")
        widget = self._classes[class_name]()
        if parent is not None:
            widget.setParent(parent)
        widget.setObjectName(element.get("name", ""))
        self._by_name[widget.objectName] = widget
        self._properties(widget, element)
        self._children(widget, element, widget)
        return widget

    def _properties(self, target: QObject, element: ElementTree.Element) -> None:
        for prop in element.findall("property"):
            name, value = prop.get("name"), _value(prop[0])
            if prop.get("stdset") == "0":
                target.setProperty(name, value)
            elif name not in type(target).declared_properties():
                raise RuntimeError(f"{type(target).__name__} {target.objectName!r}: no property {name!r}")
            else:
                setattr(target, name, value)

    def _children(self, owner: QWidget, element: ElementTree.Element, layout_owner: QObject) -> None:
        for child in element:
            if child.tag == "widget":
                self._widget(child, owner)
            elif child.tag == "layout":
                layout = self._layout(child)
                if isinstance(layout_owner, QWidget):
                    layout_owner.setLayout(layout)
                self._children(owner, child, layout)
            elif child.tag == "item":
                self._children(owner, child, layout_owner)

    def _layout(self, element: ElementTree.Element) -> QLayout:
        class_name = element.get("class")
        if class_name not in self._classes:
            raise RuntimeError(f"the .ui uses layout {class_name}, which is not available")
        layout = self._classes[class_name]()
        layout.setObjectName(element.get("name", ""))
        return layout

    def _connect(self, connection: ElementTree.Element) -> None:
        sender = self._by_name[connection.findtext("sender")]
        receiver = self._by_name[connection.findtext("receiver")]
        slot = normalize_signature(connection.findtext("slot"))
        slot_name = slot.partition("(")[0]
        if slot_name not in type(receiver).declared_methods():
            raise RuntimeError(f"{type(receiver).__name__} has no slot {slot}")
        sender.connect(connection.findtext("signal"), getattr(receiver, slot_name))
