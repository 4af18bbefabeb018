"""Stand-in widgets: Qt 5 base classes (documented subset) and CTK / qMRML classes built from their headers.

Behaviour is kept to what the real widget does with the same calls: ranges clamp values, a combo
box's current index moves with its items, a node combo box lists only the node classes its
``nodeTypes`` (and ``showChildNodeTypes``) allow and selects nothing for a node it does not list.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .headers import read_interface
from .qtcore import QObject

USER_ROLE = 0x0100
TOOLTIP_ROLE = 3
DISPLAY_ROLE = 0


class QWidget(QObject):
    PROPERTIES: ClassVar[dict[str, str]] = {
        "enabled": "bool",
        "visible": "bool",
        "toolTip": "QString",
        "statusTip": "QString",
        "whatsThis": "QString",
        "windowTitle": "QString",
        "styleSheet": "QString",
        "minimumWidth": "int",
        "minimumHeight": "int",
        "maximumWidth": "int",
        "maximumHeight": "int",
        "sizePolicy": "QSizePolicy",
        "minimumSize": "QSize",
        "maximumSize": "QSize",
        "accessibleName": "QString",
        "focusPolicy": "Qt::FocusPolicy",
    }
    SIGNALS = ("customContextMenuRequested(QPoint)", "windowTitleChanged(QString)")
    METHODS = frozenset(
        {
            "layout",
            "setLayout",
            "show",
            "hide",
            "setEnabled",
            "setVisible",
            "isVisible",
            "update",
            "setToolTip",
            "isEnabled",
        }
    )

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._values.update(enabled=True, visible=True, toolTip="")
        self._layout = None

    def isWidgetType(self) -> bool:
        return True

    def layout(self):
        return self._layout

    def setLayout(self, layout) -> None:
        self._layout = layout
        layout._owner = self

    def show(self) -> None:
        self._values["visible"] = True

    def hide(self) -> None:
        self._values["visible"] = False

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = enabled

    def setVisible(self, visible: bool) -> None:
        self.visible = visible

    def isVisible(self) -> bool:
        return bool(self._values["visible"])

    def isEnabled(self) -> bool:
        return bool(self._values["enabled"])

    def setToolTip(self, text: str) -> None:
        self.toolTip = text

    def update(self) -> None:
        pass


class QLayout(QObject):
    PROPERTIES: ClassVar[dict[str, str]] = {"spacing": "int", "margin": "int"}
    METHODS = frozenset({"addWidget", "addLayout", "addRow", "addStretch", "count"})

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__()
        self._owner = None
        self._items: list[Any] = []
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def addWidget(self, widget, *arguments) -> None:
        self._items.append(widget)
        if self._owner is not None:
            widget.setParent(self._owner)

    def addLayout(self, layout, *arguments) -> None:
        self._items.append(layout)

    def addRow(self, *items) -> None:
        for item in items:
            if isinstance(item, QWidget):
                self.addWidget(item)

    def addStretch(self, *arguments) -> None:
        pass

    def count(self) -> int:
        return len(self._items)


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


class QGridLayout(QLayout):
    pass


class QFrame(QWidget):
    PROPERTIES: ClassVar[dict[str, str]] = {"frameShape": "QFrame::Shape", "frameShadow": "QFrame::Shadow"}


class QLabel(QFrame):
    PROPERTIES: ClassVar[dict[str, str]] = {
        "text": "QString",
        "wordWrap": "bool",
        "textFormat": "Qt::TextFormat",
        "alignment": "Qt::Alignment",
        "openExternalLinks": "bool",
        "textInteractionFlags": "Qt::TextInteractionFlags",
    }
    SIGNALS = ("linkActivated(QString)", "linkHovered(QString)")
    METHODS = frozenset({"setText", "clear"})

    def __init__(self, text: str = "", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._values["text"] = text

    def setText(self, text: str) -> None:
        self.text = text

    def clear(self) -> None:
        self.text = ""


class QAbstractButton(QWidget):
    PROPERTIES: ClassVar[dict[str, str]] = {
        "text": "QString",
        "icon": "QIcon",
        "checkable": "bool",
        "checked": "bool",
        "autoRepeat": "bool",
        "shortcut": "QKeySequence",
        "iconSize": "QSize",
        "down": "bool",
        "autoExclusive": "bool",
    }
    SIGNALS = ("clicked()", "clicked(bool)", "pressed()", "released()", "toggled(bool)")
    METHODS = frozenset({"click", "setText", "setChecked", "isChecked", "toggle"})

    def __init__(self, text: str = "", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._values.update(text=text, checkable=False, checked=False)

    def set_checked(self, value: bool) -> None:
        value = bool(value)
        if value != self._values["checked"]:
            self._values["checked"] = value
            self.emit("toggled(bool)", value)
            self._checked_changed(value)

    def _checked_changed(self, value: bool) -> None:
        pass

    def setText(self, text: str) -> None:
        self.text = text

    def setChecked(self, value: bool) -> None:
        self.checked = value

    def isChecked(self) -> bool:
        return bool(self._values["checked"])

    def toggle(self) -> None:
        self.checked = not self._values["checked"]

    def click(self) -> None:
        """What a user's click does: nothing when disabled, else toggle if checkable and emit clicked."""
        if not self._values["enabled"]:
            return
        if self._values["checkable"]:
            self.checked = not self._values["checked"]
        self.emit("clicked()")
        self.emit("clicked(bool)", bool(self._values["checked"]))


class QPushButton(QAbstractButton):
    PROPERTIES: ClassVar[dict[str, str]] = {"default": "bool", "flat": "bool", "autoDefault": "bool"}


class QToolButton(QAbstractButton):
    PROPERTIES: ClassVar[dict[str, str]] = {"popupMode": "QToolButton::ToolButtonPopupMode", "autoRaise": "bool"}


class QCheckBox(QAbstractButton):
    PROPERTIES: ClassVar[dict[str, str]] = {"tristate": "bool"}
    SIGNALS = ("stateChanged(int)",)

    def __init__(self, text: str = "", parent: QObject | None = None) -> None:
        super().__init__(text, parent)
        self._values["checkable"] = True

    def _checked_changed(self, value: bool) -> None:
        self.emit("stateChanged(int)", 2 if value else 0)


class QComboBox(QWidget):
    PROPERTIES: ClassVar[dict[str, str]] = {
        "currentIndex": "int",
        "currentText": "QString",
        "count": "int",
        "editable": "bool",
        "maxVisibleItems": "int",
        "sizeAdjustPolicy": "QComboBox::SizeAdjustPolicy",
        "currentData": "QVariant",
        "placeholderText": "QString",
    }
    READ_ONLY = frozenset({"currentText", "count", "currentData"})
    SIGNALS = (
        "currentIndexChanged(int)",
        "currentIndexChanged(QString)",
        "currentTextChanged(QString)",
        "activated(int)",
        "activated(QString)",
        "highlighted(int)",
        "editTextChanged(QString)",
    )
    METHODS = frozenset(
        {
            "addItem",
            "addItems",
            "insertItem",
            "insertSeparator",
            "clear",
            "itemData",
            "setItemData",
            "itemText",
            "findData",
            "findText",
            "setCurrentIndex",
            "removeItem",
            "model",
        }
    )
    INSPECTION = frozenset({"is_separator"})

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._items: list[dict[int, Any]] = []
        self._values["currentIndex"] = -1
        self._enabled_items: list[bool] = []

    def get_count(self) -> int:
        return len(self._items)

    def get_currentText(self) -> str:
        index = self._values["currentIndex"]
        return self._items[index][DISPLAY_ROLE] if index >= 0 else ""

    def get_currentData(self) -> Any:
        index = self._values["currentIndex"]
        return self._items[index].get(USER_ROLE) if index >= 0 else None

    def set_currentIndex(self, index: int) -> None:
        index = int(index)
        if index < -1 or index >= len(self._items):
            index = -1
        if index != self._values["currentIndex"]:
            self._values["currentIndex"] = index
            self.emit("currentIndexChanged(int)", index)
            self.emit("currentIndexChanged(QString)", self.get_currentText())
            self.emit("currentTextChanged(QString)", self.get_currentText())

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    def addItem(self, text: str, userData: Any = None) -> None:
        self.insertItem(len(self._items), text, userData)

    def addItems(self, texts: list[str]) -> None:
        for text in texts:
            self.addItem(text)

    def insertItem(self, index: int, text: str, userData: Any = None) -> None:
        self._items.insert(index, {DISPLAY_ROLE: str(text), USER_ROLE: userData})
        if self._values["currentIndex"] == -1:
            self.set_currentIndex(0)  # Qt selects the first item added to an empty combo box
        elif index <= self._values["currentIndex"]:
            self._values["currentIndex"] += 1

    def insertSeparator(self, index: int) -> None:
        self._items.insert(index, {DISPLAY_ROLE: "", USER_ROLE: None, "separator": True})
        if self._values["currentIndex"] >= 0 and index <= self._values["currentIndex"]:
            self._values["currentIndex"] += 1

    def removeItem(self, index: int) -> None:
        del self._items[index]
        if self._values["currentIndex"] >= len(self._items):
            self.set_currentIndex(len(self._items) - 1)

    def clear(self) -> None:
        self._items.clear()
        self.set_currentIndex(-1)

    def itemData(self, index: int, role: int = USER_ROLE) -> Any:
        return self._items[index].get(role) if 0 <= index < len(self._items) else None

    def setItemData(self, index: int, value: Any, role: int = USER_ROLE) -> None:
        self._items[index][role] = value

    def itemText(self, index: int) -> str:
        return self._items[index][DISPLAY_ROLE] if 0 <= index < len(self._items) else ""

    def findData(self, data: Any, role: int = USER_ROLE) -> int:
        return next((i for i, item in enumerate(self._items) if item.get(role) == data and data is not None), -1)

    def findText(self, text: str) -> int:
        return next((i for i, item in enumerate(self._items) if item[DISPLAY_ROLE] == text), -1)

    def is_separator(self, index: int) -> bool:
        """Stand-in inspection helper (not Qt API): whether item ``index`` is a separator."""
        return bool(self._items[index].get("separator"))


class QAbstractSpinBox(QWidget):
    PROPERTIES: ClassVar[dict[str, str]] = {
        "readOnly": "bool",
        "suffix": "QString",
        "prefix": "QString",
        "alignment": "Qt::Alignment",
        "specialValueText": "QString",
    }
    SIGNALS = ("editingFinished()",)


class _Ranged:
    """Value clamped into [minimum, maximum] like QDoubleSpinBox, QSpinBox and ctkSliderWidget; valueChanged
    on change. ``_number`` is the value's type (int for QSpinBox), ``_changed`` the signal it emits."""

    _number: type = float
    _changed = "valueChanged(double)"

    def _init_range(self, minimum: float, maximum: float, value: float) -> None:
        self._values.update(minimum=minimum, maximum=maximum, value=value, decimals=2, singleStep=1.0)

    def set_minimum(self, value: float) -> None:
        self._values["minimum"] = self._number(value)
        self._values["maximum"] = max(self._values["maximum"], self._number(value))
        self.set_value(self._values["value"])

    def set_maximum(self, value: float) -> None:
        self._values["maximum"] = self._number(value)
        self._values["minimum"] = min(self._values["minimum"], self._number(value))
        self.set_value(self._values["value"])

    def set_value(self, value: float) -> None:
        clamped = min(max(self._number(value), self._values["minimum"]), self._values["maximum"])
        clamped = self._number(round(clamped, int(self._values["decimals"])))
        if clamped != self._values["value"]:
            self._values["value"] = clamped
            self.emit(self._changed, clamped)

    def set_decimals(self, value: int) -> None:
        self._values["decimals"] = int(value)

    def setRange(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum

    def setValue(self, value: float) -> None:
        self.value = value


class QDoubleSpinBox(_Ranged, QAbstractSpinBox):
    PROPERTIES: ClassVar[dict[str, str]] = {
        "value": "double",
        "minimum": "double",
        "maximum": "double",
        "singleStep": "double",
        "decimals": "int",
    }
    SIGNALS = ("valueChanged(double)", "valueChanged(QString)", "textChanged(QString)")
    METHODS = frozenset({"setRange", "setValue"})

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._init_range(0.0, 99.99, 0.0)


class QSpinBox(_Ranged, QAbstractSpinBox):
    """Integer value clamped into [minimum, maximum] (0 and 99 by default, like Qt's)."""

    PROPERTIES: ClassVar[dict[str, str]] = {"value": "int", "minimum": "int", "maximum": "int", "singleStep": "int"}
    SIGNALS = ("valueChanged(int)", "valueChanged(QString)")
    METHODS = frozenset({"setRange", "setValue"})
    _number = int
    _changed = "valueChanged(int)"

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._init_range(0, 99, 0)
        self._values.update(decimals=0, singleStep=1)


class QProgressBar(QWidget):
    PROPERTIES: ClassVar[dict[str, str]] = {
        "value": "int",
        "minimum": "int",
        "maximum": "int",
        "format": "QString",
        "textVisible": "bool",
        "orientation": "Qt::Orientation",
    }
    SIGNALS = ("valueChanged(int)",)
    METHODS = frozenset({"reset", "setValue", "setRange"})

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._values.update(value=-1, minimum=0, maximum=100)

    def set_value(self, value: int) -> None:
        value = int(value)
        if self._values["minimum"] <= value <= self._values["maximum"] and value != self._values["value"]:
            self._values["value"] = value
            self.emit("valueChanged(int)", value)

    def setValue(self, value: int) -> None:
        self.value = value

    def setRange(self, minimum: int, maximum: int) -> None:
        self._values.update(minimum=minimum, maximum=maximum)

    def reset(self) -> None:
        self._values["value"] = -1


class QPlainTextEdit(QFrame):
    PROPERTIES: ClassVar[dict[str, str]] = {
        "plainText": "QString",
        "readOnly": "bool",
        "maximumBlockCount": "int",
        "placeholderText": "QString",
        "lineWrapMode": "QPlainTextEdit::LineWrapMode",
    }
    SIGNALS = ("textChanged()",)
    METHODS = frozenset({"appendPlainText", "clear", "toPlainText", "setPlainText"})

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._values.update(plainText="", readOnly=False, maximumBlockCount=0)

    def appendPlainText(self, text: str) -> None:
        lines = (self._values["plainText"].split("\n") if self._values["plainText"] else []) + [str(text)]
        limit = int(self._values["maximumBlockCount"])
        if limit > 0:
            lines = lines[-limit:]
        self._values["plainText"] = "\n".join(lines)
        self.emit("textChanged()")

    def clear(self) -> None:
        self._values["plainText"] = ""
        self.emit("textChanged()")

    def toPlainText(self) -> str:
        return self._values["plainText"]

    def setPlainText(self, text: str) -> None:
        self._values["plainText"] = text


class QLineEdit(QWidget):
    PROPERTIES: ClassVar[dict[str, str]] = {"text": "QString", "readOnly": "bool", "placeholderText": "QString"}
    SIGNALS = ("textChanged(QString)", "textEdited(QString)", "editingFinished()", "returnPressed()")


class QTextEdit(QFrame):
    PROPERTIES: ClassVar[dict[str, str]] = {"plainText": "QString", "html": "QString", "readOnly": "bool"}
    SIGNALS = ("textChanged()",)


class QSlider(QWidget):
    PROPERTIES: ClassVar[dict[str, str]] = {"value": "int", "minimum": "int", "maximum": "int"}
    SIGNALS = ("valueChanged(int)",)


class QGroupBox(QWidget):
    PROPERTIES: ClassVar[dict[str, str]] = {"title": "QString", "checkable": "bool", "checked": "bool"}
    SIGNALS = ("toggled(bool)", "clicked(bool)")


# ---- CTK and qMRML: declarations read from the headers ------------------------------------------
def from_header(name: str, base: type, behaviour: tuple[type, ...] = ()) -> type:
    """A stand-in class whose own properties, signals and methods are exactly its header's."""
    interface = read_interface(name)
    if interface.base != base.__name__:
        raise TypeError(f"{name} derives from {interface.base} in its header, not {base.__name__}")
    namespace = {
        "PROPERTIES": interface.properties,
        "READ_ONLY": interface.read_only,
        "SIGNALS": interface.signals,
        "METHODS": interface.methods,
        "__module__": __name__,
    }
    return type(name, (*behaviour, base), namespace)


class _CollapsibleBehaviour:
    def __init__(self, text: str = "", parent: QObject | None = None) -> None:
        super().__init__(text, parent)
        self._values.update(collapsed=False, checkable=True, checked=True)

    def set_collapsed(self, value: bool) -> None:
        if bool(value) != self._values["collapsed"]:
            self._values["collapsed"] = bool(value)
            self.emit("contentsCollapsed(bool)", bool(value))


class _SliderBehaviour(_Ranged):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._init_range(0.0, 99.0, 0.0)


class _SceneBehaviour:
    """qMRMLWidget / qSlicerWidget: ``setMRMLScene`` stores the scene and emits mrmlSceneChanged."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        if scene is not self._scene:
            self._scene = scene
            self.emit("mrmlSceneChanged(vtkMRMLScene*)", scene)

    def mrmlScene(self):
        return self._scene


class _NodeComboBehaviour:
    """qMRMLNodeComboBox: lists scene nodes of ``nodeTypes``; a node it does not list cannot be current."""

    INSPECTION = frozenset({"listed_nodes"})

    def listed_nodes(self) -> list:
        """Stand-in helper: the nodes the combo box offers (what a user would see in its list)."""
        return self.nodes()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._values.update(
            nodeTypes=[],
            showChildNodeTypes=True,
            hideChildNodeTypes=[],
            noneEnabled=False,
            addEnabled=True,
            removeEnabled=True,
            showHidden=False,
            noneDisplay="None",
        )
        self._scene = None
        self._current_id = ""
        self._observers: list[int] = []

    # -- what the combo box lists --
    def _accepts(self, node) -> bool:
        if node is None or (node.GetHideFromEditors() and not self._values["showHidden"]):
            return False
        types = list(self._values["nodeTypes"])
        if any(node.IsA(hidden) for hidden in self._values["hideChildNodeTypes"]):
            return False
        if self._values["showChildNodeTypes"]:
            return any(node.IsA(kind) for kind in types)
        return node.GetClassName() in types

    def nodes(self) -> list:
        if self._scene is None:
            return []
        every = [self._scene.GetNthNode(i) for i in range(self._scene.GetNumberOfNodes())]
        return [node for node in every if self._accepts(node)]

    def nodeCount(self) -> int:
        return len(self.nodes())

    # -- scene --
    def setMRMLScene(self, scene) -> None:
        if self._scene is not None:
            for tag in self._observers:
                self._scene.RemoveObserver(tag)
        self._scene = scene
        self._observers = []
        if scene is not None:
            self._observers = [
                scene.AddObserver(scene.NodeAddedEvent, self._node_added),
                scene.AddObserver(scene.NodeRemovedEvent, self._node_removed),
                scene.AddObserver(scene.EndCloseEvent, lambda caller, event: self._refresh()),
            ]
        self._refresh()

    def mrmlScene(self):
        return self._scene

    def _node_added(self, caller, event) -> None:
        self._refresh()

    def _node_removed(self, caller, event) -> None:
        self._refresh()

    def _refresh(self) -> None:
        listed = self.nodes()
        current = self.currentNode()
        if current is not None and current in listed:
            return
        if not self._values["noneEnabled"] and listed:
            self._select(listed[0].GetID())  # without "None" the combo box always shows a node
        else:
            self._select("")

    # -- selection --
    def currentNode(self):
        if not self._current_id or self._scene is None:
            return None
        return self._scene.GetNodeByID(self._current_id)

    def currentNodeID(self) -> str:
        return self._current_id

    def get_currentNodeID(self) -> str:
        return self._current_id

    def set_currentNodeID(self, node_id: str) -> None:
        self.setCurrentNodeID(node_id)

    def setCurrentNode(self, node) -> None:
        if isinstance(node, str):
            self.setCurrentNodeID(node)
        else:
            self.setCurrentNodeID(node.GetID() if node is not None else "")

    def setCurrentNodeID(self, node_id: str) -> None:
        node = self._scene.GetNodeByID(node_id) if (self._scene is not None and node_id) else None
        if node is None or not self._accepts(node):
            listed = self.nodes()
            self._select("" if self._values["noneEnabled"] or not listed else listed[0].GetID())
            return
        self._select(node_id)

    def _select(self, node_id: str) -> None:
        if node_id == self._current_id:
            return
        self._current_id = node_id
        node = self.currentNode()
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)
        self.emit("currentNodeChanged(bool)", node is not None)
        self.emit("currentNodeIDChanged(QString)", node_id)

    def set_nodeTypes(self, types) -> None:
        self._values["nodeTypes"] = list(types)
        self._refresh()

    def setNodeTypes(self, types) -> None:
        self.set_nodeTypes(types)

    def set_showChildNodeTypes(self, value: bool) -> None:
        self._values["showChildNodeTypes"] = bool(value)
        self._refresh()

    def set_noneEnabled(self, value: bool) -> None:
        self._values["noneEnabled"] = bool(value)
        self._refresh()


ctkCollapsibleButton = from_header("ctkCollapsibleButton", QAbstractButton, (_CollapsibleBehaviour,))
ctkSliderWidget = from_header("ctkSliderWidget", QWidget, (_SliderBehaviour,))
ctkCheckBox = from_header("ctkCheckBox", QCheckBox)
ctkDoubleSpinBox = from_header("ctkDoubleSpinBox", QWidget, (_SliderBehaviour,))
qMRMLWidget = from_header("qMRMLWidget", QWidget, (_SceneBehaviour,))
qSlicerWidget = from_header("qSlicerWidget", QWidget, (_SceneBehaviour,))
qMRMLNodeComboBox = from_header("qMRMLNodeComboBox", QWidget, (_NodeComboBehaviour,))
qMRMLSliderWidget = from_header("qMRMLSliderWidget", ctkSliderWidget)
