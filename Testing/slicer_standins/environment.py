"""Slicer's Python layer for tests: real MRML (slicer-core) and Slicer's own Python, stand-ins for compiled Qt.

:func:`install` makes ``import slicer, qt, ctk`` behave as inside Slicer:

- real: ``slicer`` from the slicer-core wheel (MRML scene, nodes, logic), and Slicer's own pure-Python
  package from ``../shared/slicer/python/slicer`` (``util``, ``ScriptedLoadableModule``,
  ``parameterNodeWrapper``, ``i18n``, ``packaging``) loaded over it;
- stood in: the compiled ``qt`` and ``ctk`` modules, the qMRML widgets, ``slicer.app`` and its module
  manager, and the C++ side of a scripted module (:class:`ScriptedModuleHost` loads a module file the
  way ``qSlicerScriptedLoadableModule`` does).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

from . import widgets
from .qtcore import QObject
from .uiloader import QFile, QUiLoader

SHARED_PYTHON = Path(__file__).resolve().parents[3] / "shared" / "slicer" / "python"
SAMPLE_DATA_MODULE = SHARED_PYTHON.parent / "templates" / "Modules" / "Scripted" / "SampleData" / "SampleData.py"


class QTimer(QObject):
    """Fires only when a test calls ``fire()`` (no event loop), so nothing depends on wall time."""

    PROPERTIES: ClassVar[dict[str, str]] = {"interval": "int", "singleShot": "bool", "active": "bool"}
    READ_ONLY = frozenset({"active"})
    SIGNALS = ("timeout()",)
    METHODS = frozenset({"start", "stop", "setInterval", "isActive", "singleShot"})
    INSPECTION = frozenset({"fire"})

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._values.update(interval=0, singleShot=False, active=False)

    def setInterval(self, milliseconds: int) -> None:
        self.interval = milliseconds

    def start(self, *milliseconds: int) -> None:
        self._values["active"] = True

    def stop(self) -> None:
        self._values["active"] = False

    def isActive(self) -> bool:
        return bool(self._values["active"])

    def fire(self) -> bool:
        """Deliver one timeout if the timer runs; returns whether it ran."""
        if self._values["active"]:
            self.emit("timeout()")
        return bool(self._values["active"])

    @staticmethod
    def singleShot(milliseconds: int, slot) -> None:
        slot()


class QSettings:
    """In-memory settings (what ``slicer.util.settingsValue`` reads)."""

    store: ClassVar[dict[str, Any]] = {}

    def value(self, key: str, default: Any = None) -> Any:
        return self.store.get(key, default)

    def setValue(self, key: str, value: Any) -> None:
        self.store[key] = value

    def contains(self, key: str) -> bool:
        return key in self.store


class QDesktopServices:
    opened: ClassVar[list[str]] = []

    @classmethod
    def openUrl(cls, url) -> bool:
        cls.opened.append(url.toLocalFile() if hasattr(url, "toLocalFile") else str(url))
        return True


class QUrl:
    def __init__(self, text: str = "") -> None:
        self._text = text

    @staticmethod
    def fromLocalFile(path: str) -> QUrl:
        return QUrl("file://" + str(path))

    def toLocalFile(self) -> str:
        return self._text.removeprefix("file://")


class QApplication:
    @staticmethod
    def setOverrideCursor(cursor) -> None:
        pass

    @staticmethod
    def restoreOverrideCursor() -> None:
        pass

    @staticmethod
    def processEvents() -> None:
        pass


class QIcon:
    def __init__(self, path: str = "") -> None:
        self.path = path


class QFileDialog:
    """``getOpenFileName`` returns what a test queued in ``answers`` (the file a user would pick)."""

    answers: ClassVar[list[str]] = []

    @classmethod
    def getOpenFileName(cls, *arguments) -> str:
        return cls.answers.pop(0) if cls.answers else ""


class QMessageBox:
    Ok, Cancel, Yes, No = 0x400, 0x400000, 0x4000, 0x10000
    NoIcon, Information, Warning, Critical, Question = 0, 1, 2, 3, 4


class Qt:
    UserRole, ToolTipRole, DisplayRole = widgets.USER_ROLE, widgets.TOOLTIP_ROLE, widgets.DISPLAY_ROLE
    WaitCursor, ArrowCursor, ShiftModifier, NoModifier = 3, 0, 0x02000000, 0
    AlignLeft, AlignRight, AlignCenter, Vertical, Horizontal = 1, 2, 0x84, 2, 1


class ModuleManager(QObject):
    SIGNALS = ("moduleAboutToBeUnloaded(QString)", "moduleLoaded(QString)")
    METHODS = frozenset({"module"})

    def __init__(self) -> None:
        super().__init__()
        self._modules: dict[str, Any] = {}

    def module(self, name: str):
        return self._modules.get(name)


class CommandOptions:
    def __init__(self, no_main_window: bool) -> None:
        self.noMainWindow = no_main_window


class StartupEnvironment:
    def __init__(self) -> None:
        import os

        self._values = dict(os.environ)

    def keys(self):
        return list(self._values)

    def value(self, key: str) -> str:
        return self._values[key]


class Application(QObject):
    """``slicer.app`` as far as a scripted module uses it."""

    PROPERTIES: ClassVar[dict[str, str]] = {
        "applicationName": "QString",
        "cachePath": "QString",
        "slicerHome": "QString",
        "temporaryPath": "QString",
    }
    SIGNALS = ("startupCompleted()", "aboutToQuit()")
    METHODS = frozenset(
        {
            "testingEnabled",
            "commandOptions",
            "moduleManager",
            "processEvents",
            "setOverrideCursor",
            "restoreOverrideCursor",
            "mrmlScene",
            "layoutManager",
            "userSettings",
            "settings",
            "startupEnvironment",
            "applicationLogic",
            "translate",
        }
    )

    def __init__(self, cache: Path, testing: bool = True, no_main_window: bool = False) -> None:
        super().__init__()
        self._values.update(
            applicationName="Slicer",
            cachePath=str(cache),
            slicerHome=str(cache / "home"),
            temporaryPath=str(cache / "tmp"),
        )
        self._testing, self._options, self._manager = testing, CommandOptions(no_main_window), ModuleManager()

    def testingEnabled(self) -> bool:
        return self._testing

    def commandOptions(self) -> CommandOptions:
        return self._options

    def moduleManager(self) -> ModuleManager:
        return self._manager

    def processEvents(self) -> None:
        pass

    def setOverrideCursor(self, cursor) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def mrmlScene(self):
        import slicer

        return slicer.mrmlScene

    def layoutManager(self):
        return None

    def translate(self, context: str, text: str) -> str:
        return text  # no translation files loaded: the source language, as in an English Slicer

    def applicationLogic(self):
        return None

    def userSettings(self) -> QSettings:
        return QSettings()

    def settings(self) -> QSettings:
        return QSettings()

    def startupEnvironment(self) -> StartupEnvironment:
        return StartupEnvironment()


class qSlicerScriptedLoadableModule(QObject):
    """The C++ module object a scripted module's ``__init__(parent)`` fills in."""

    PROPERTIES: ClassVar[dict[str, str]] = {
        "title": "QString",
        "categories": "QStringList",
        "contributors": "QStringList",
        "helpText": "QString",
        "acknowledgementText": "QString",
        "dependencies": "QStringList",
        "icon": "QIcon",
        "hidden": "bool",
        "path": "QString",
        "index": "int",
        "associatedNodeTypes": "QStringList",
    }
    METHODS = frozenset({"widgetRepresentation", "createNewWidgetRepresentation", "logic"})

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._values.update(path=str(path), categories=[], dependencies=[], contributors=[])
        self._widget: qSlicerScriptedLoadableModuleWidget | None = None
        self._python_module: types.ModuleType | None = None

    def widgetRepresentation(self):
        if self._widget is None:
            self._widget = self.createNewWidgetRepresentation()
        return self._widget

    def createNewWidgetRepresentation(self):
        widget_class = getattr(self._python_module, f"{self.objectName}Widget")
        representation = qSlicerScriptedLoadableModuleWidget()
        representation.setLayout(widgets.QVBoxLayout())
        representation._python = widget_class(representation)
        representation._python.setup()
        return representation

    def logic(self):
        return None


class qSlicerScriptedLoadableModuleWidget(widgets.QWidget):
    PROPERTIES: ClassVar[dict[str, str]] = {"isEntered": "bool"}
    METHODS = frozenset({"self", "enter", "exit", "setMRMLScene", "mrmlScene"})

    def __init__(self) -> None:
        super().__init__()
        self._values["isEntered"] = False
        self._python = None

    def self(self):
        return self._python

    def enter(self) -> None:
        self._values["isEntered"] = True
        self._python.enter()

    def exit(self) -> None:
        self._python.exit()
        self._values["isEntered"] = False


class _NotStoodIn(widgets.QWidget):
    """A compiled class the module does not use: present for ``type(widget) in (...)`` checks only."""

    def __init__(self, *arguments) -> None:
        raise RuntimeError(f"{type(self).__name__} is not stood in (no header in ../shared/slicer/headers)")


def _not_stood_in(name: str) -> type:
    return type(name, (_NotStoodIn,), {})


def _qt_module() -> types.ModuleType:
    qt = types.ModuleType("qt")
    for name in ("QObject",):
        setattr(qt, name, QObject)
    for name in (
        "QWidget",
        "QFrame",
        "QLabel",
        "QAbstractButton",
        "QPushButton",
        "QToolButton",
        "QCheckBox",
        "QComboBox",
        "QDoubleSpinBox",
        "QSpinBox",
        "QProgressBar",
        "QPlainTextEdit",
        "QLineEdit",
        "QTextEdit",
        "QSlider",
        "QGroupBox",
        "QLayout",
        "QVBoxLayout",
        "QHBoxLayout",
        "QFormLayout",
        "QGridLayout",
    ):
        setattr(qt, name, getattr(widgets, name))
    for value in (QTimer, QSettings, QDesktopServices, QUrl, QApplication, QIcon, QFileDialog, QMessageBox, Qt, QFile):
        setattr(qt, value.__name__, value)
    qt.QUiLoader = lambda: QUiLoader(_ui_classes())
    qt.QColor = type("QColor", (), {})
    qt.QMenu = qt.QAction = qt.QSizePolicy = _not_stood_in("QMenu")
    return qt


def _ctk_module() -> types.ModuleType:
    ctk = types.ModuleType("ctk")
    for name in ("ctkCollapsibleButton", "ctkSliderWidget", "ctkCheckBox", "ctkDoubleSpinBox"):
        setattr(ctk, name, getattr(widgets, name))
    for name in (
        "ctkCheckablePushButton",
        "ctkDoubleSlider",
        "ctkComboBox",
        "ctkRangeWidget",
        "ctkDoubleRangeSlider",
        "ctkPathLineEdit",
        "ctkDirectoryButton",
        "ctkColorPickerButton",
        "ctkWidgetsUtils",
    ):
        setattr(ctk, name, _not_stood_in(name))
    return ctk


def _ui_classes() -> dict[str, type]:
    qt, ctk, slicer = sys.modules["qt"], sys.modules["ctk"], sys.modules["slicer"]
    classes = {
        name: getattr(qt, name) for name in dir(qt) if name.startswith("Q") and isinstance(getattr(qt, name), type)
    }
    classes.update({name: getattr(ctk, name) for name in dir(ctk) if name.startswith("ctk")})
    classes.update(
        {
            name: getattr(slicer, name)
            for name in ("qMRMLNodeComboBox", "qMRMLWidget", "qSlicerWidget", "qMRMLSliderWidget")
        }
    )
    return classes


def install(cache: Path, testing: bool = True, no_main_window: bool = False) -> types.ModuleType:
    """Set up ``slicer``, ``qt`` and ``ctk`` as inside Slicer; returns the ``slicer`` package."""
    import slicer
    import vtk  # noqa: F401  (slicer-core's VTK)

    sys.modules["qt"], sys.modules["ctk"] = _qt_module(), _ctk_module()
    if str(SHARED_PYTHON / "slicer") not in slicer.__path__:
        slicer.__path__.append(str(SHARED_PYTHON / "slicer"))
    for name in ("qMRMLNodeComboBox", "qMRMLWidget", "qSlicerWidget", "qMRMLSliderWidget"):
        setattr(slicer, name, getattr(widgets, name))
    for name in ("qMRMLSpinBox", "qMRMLRangeWidget"):
        setattr(slicer, name, _not_stood_in(name))
    slicer.qSlicerScriptedLoadableModule = qSlicerScriptedLoadableModule
    slicer.qSlicerScriptedLoadableModuleWidget = qSlicerScriptedLoadableModuleWidget
    util = _load_file("slicer.util", SHARED_PYTHON / "slicer" / "util.py")  # Slicer's own, over slicer-core's copy
    slicer.util = util
    for name in list(sys.modules):
        if name.startswith("slicer.parameterNodeWrapper") or name in ("slicer.ScriptedLoadableModule", "slicer.i18n"):
            del sys.modules[name]
    slicer.app = Application(cache, testing, no_main_window)
    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.modules = types.SimpleNamespace()
    return slicer


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ScriptedModuleHost:
    """Loads scripted modules as Slicer's module factory does: every top-level ``.py`` of a module folder."""

    @staticmethod
    def load_folder(folder: Path) -> dict[str, qSlicerScriptedLoadableModule]:
        """Each top-level .py must define a class of its own name; Slicer reports an error otherwise."""
        return {path.stem: ScriptedModuleHost.load(path) for path in sorted(folder.glob("*.py"))}

    @staticmethod
    def load(path: Path) -> qSlicerScriptedLoadableModule:
        import slicer

        python_module = _load_file(path.stem, path)
        module_class = getattr(python_module, path.stem, None)
        if module_class is None:
            raise RuntimeError(f"class {path.stem} was not found in {path}")
        module = qSlicerScriptedLoadableModule(path)
        module.setObjectName(path.stem)
        module._python_module = python_module
        instance = module_class(module)
        setattr(slicer.modules, path.stem.lower(), module)
        setattr(slicer.modules, f"{path.stem}Instance", instance)
        slicer.app.moduleManager()._modules[path.stem] = module
        return module

    @staticmethod
    def load_sample_data() -> types.ModuleType:
        """Slicer's SampleData module (its static registration API; nothing is downloaded)."""
        return _load_file("SampleData", SAMPLE_DATA_MODULE)
