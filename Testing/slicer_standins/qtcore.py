"""Stand-ins for compiled Qt objects as PythonQt shows them: declared properties, signals, slots.

Only what is compiled (PythonQt's ``qt``, CTK and qMRML widgets, ``slicer.app``) is stood in. Each
class declares its Qt properties, signals and callable methods; anything else is refused, so a
binding or call that real Slicer would not honour fails here too. CTK and qMRML classes take their
declarations from the C++ headers in ``../shared/slicer/headers`` (see :mod:`.headers`); the Qt base
classes declare the subset of Qt 5's documented properties and signals the module can touch.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, ClassVar


def normalize_signature(signature: str) -> str:
    """Qt's normalised form: ``valueChanged(const QString &)`` -> ``valueChanged(QString)``."""
    name, _, arguments = signature.partition("(")
    kept = []
    for argument in arguments.rstrip(")").split(","):
        argument = re.sub(r"=.*$", "", argument).replace("const ", "").replace("&", "").strip()
        if not argument:
            continue
        words = argument.replace("*", " * ").split()
        if len(words) > 1 and words[-1] != "*" and not words[-1][0].isupper() and words[-1] not in ("int", "bool"):
            words = words[:-1]  # drop the parameter name
        kept.append("".join(w if w == "*" else (" " + w if i else w) for i, w in enumerate(words)).strip())
    return f"{name.strip()}({','.join(kept)})"


def _accepted_count(slot, offered: int) -> int:
    """PythonQt calls a Python slot with as many of the signal's arguments as the slot accepts."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return offered
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return offered
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return min(offered, len(positional))


class BoundSignal:
    """``widget.someSignal``: all overloads of one signal name; ``connect`` takes the first overload."""

    def __init__(self, owner: QObject, name: str) -> None:
        self._owner, self._name = owner, name

    def _first(self) -> str:
        return next(s for s in self._owner.declared_signals() if s.startswith(self._name + "("))

    def connect(self, slot) -> None:
        self._owner.connect(self._first(), slot)

    def disconnect(self, slot=None) -> None:
        self._owner.disconnect(self._first(), slot)

    def emit(self, *arguments) -> None:
        self._owner.emit(self._first(), *arguments)


class QObject:
    """Qt object with PythonQt's attribute access to properties and ``connect(signature, slot)``."""

    PROPERTIES: ClassVar[dict[str, str]] = {"objectName": "QString"}
    READ_ONLY: ClassVar[frozenset[str]] = frozenset()
    INSPECTION: ClassVar[frozenset[str]] = frozenset()
    SIGNALS: ClassVar[tuple[str, ...]] = ("destroyed()", "destroyed(QObject*)", "objectNameChanged(QString)")
    METHODS: ClassVar[frozenset[str]] = frozenset(
        {
            "property",
            "setProperty",
            "children",
            "parent",
            "setParent",
            "findChildren",
            "connect",
            "disconnect",
            "blockSignals",
            "signalsBlocked",
            "deleteLater",
            "className",
            "inherits",
            "isWidgetType",
            "setObjectName",
            "dynamicPropertyNames",
            "emit",
            "declared_signals",
            "declared_properties",
        }
    )

    def __init__(self, parent: QObject | None = None) -> None:
        object.__setattr__(self, "_values", {"objectName": ""})
        object.__setattr__(self, "_dynamic", {})
        object.__setattr__(self, "_connections", {})
        object.__setattr__(self, "_children", [])
        object.__setattr__(self, "_parent", None)
        object.__setattr__(self, "_blocked", False)
        if parent is not None:
            self.setParent(parent)

    # ---- declarations, merged along the class hierarchy ----------------------------------
    @classmethod
    def declared_properties(cls) -> dict[str, str]:
        merged: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("PROPERTIES", {}))
        return merged

    @classmethod
    def read_only_properties(cls) -> set[str]:
        return set().union(*(vars(k).get("READ_ONLY", frozenset()) for k in cls.__mro__))

    @classmethod
    def declared_signals(cls) -> list[str]:
        merged: list[str] = []
        for klass in cls.__mro__:
            merged += [s for s in vars(klass).get("SIGNALS", ()) if s not in merged]
        return merged

    @classmethod
    def inspection_helpers(cls) -> set[str]:
        """Stand-in helpers for tests to look inside a widget (``INSPECTION``); not Qt API."""
        return set().union(*(vars(k).get("INSPECTION", frozenset()) for k in cls.__mro__))

    @classmethod
    def declared_methods(cls) -> set[str]:
        return set().union(*(vars(k).get("METHODS", frozenset()) for k in cls.__mro__))

    # ---- attribute access as PythonQt gives it -----------------------------------------------
    def __getattribute__(self, name: str) -> Any:
        if name.startswith(("_", "set_", "get_")) or name.isupper():  # stand-in internals, not Qt API
            return object.__getattribute__(self, name)
        cls = type(self)
        if name in cls.declared_properties():
            getter = getattr(cls, f"get_{name}", None)
            return getter(self) if getter else object.__getattribute__(self, "_values").get(name)
        if any(s.startswith(name + "(") for s in cls.declared_signals()):
            return BoundSignal(self, name)
        if name in cls.declared_methods() or name in cls.inspection_helpers() or name == "name":
            if name == "name":
                return self._values["objectName"]
            return object.__getattribute__(self, name)
        raise AttributeError(f"{cls.__name__} has no property, signal or method {name!r} (not in its declaration)")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        cls = type(self)
        if name not in cls.declared_properties():
            raise AttributeError(f"{cls.__name__} has no Qt property {name!r}")
        if name in cls.read_only_properties():
            raise AttributeError(f"{cls.__name__}.{name} is read-only")
        setter = getattr(cls, f"set_{name}", None)
        if setter:
            setter(self, value)
        else:
            self._values[name] = value

    def __bool__(self) -> bool:
        return True

    # ---- QObject API ------------------------------------------------------------------------------
    def property(self, name: str) -> Any:
        if name in type(self).declared_properties():
            return getattr(self, name)
        return self._dynamic.get(name)

    def setProperty(self, name: str, value: Any) -> bool:
        if name in type(self).declared_properties():
            setattr(self, name, value)
            return True
        self._dynamic[name] = value
        return False

    def dynamicPropertyNames(self) -> list[str]:
        return list(self._dynamic)

    def setObjectName(self, name: str) -> None:
        self._values["objectName"] = name

    def className(self) -> str:
        return type(self).__name__

    def inherits(self, name: str) -> bool:
        return any(k.__name__ == name for k in type(self).__mro__)

    def isWidgetType(self) -> bool:
        return False

    def parent(self) -> QObject | None:
        return self._parent

    def setParent(self, parent: QObject | None) -> None:
        if self._parent is not None:
            self._parent._children.remove(self)
        object.__setattr__(self, "_parent", parent)
        if parent is not None:
            parent._children.append(self)

    def children(self) -> list[QObject]:
        return list(self._children)

    def findChildren(self, kind: type = object) -> list[QObject]:
        found = []
        for child in self._children:
            if isinstance(child, kind):
                found.append(child)
            found += child.findChildren(kind)
        return found

    def blockSignals(self, block: bool) -> bool:
        previous = self._blocked
        object.__setattr__(self, "_blocked", bool(block))
        return previous

    def signalsBlocked(self) -> bool:
        return self._blocked

    def deleteLater(self) -> None:
        self.setParent(None)

    def _signature(self, signature: str) -> str:
        normalized = normalize_signature(signature)
        if normalized not in type(self).declared_signals():
            raise RuntimeError(
                f"{type(self).__name__} has no signal {normalized}; declared: {type(self).declared_signals()}"
            )
        return normalized

    def connect(self, signature: str, slot) -> bool:
        self._connections.setdefault(self._signature(signature), []).append(slot)
        return True

    def disconnect(self, signature: str, slot=None) -> bool:
        slots = self._connections.get(self._signature(signature), [])
        if slot is None:
            slots.clear()
        elif slot in slots:
            slots.remove(slot)
        return True

    def emit(self, signature: str, *arguments) -> None:
        if self._blocked:
            return
        for slot in list(self._connections.get(normalize_signature(signature), [])):
            slot(*arguments[: _accepted_count(slot, len(arguments))])
