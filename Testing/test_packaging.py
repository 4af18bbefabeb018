"""Static checks of the Slicer module: the .ui, the parameter node and CMake cannot drift apart."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "MRIDenoise.py"
UI = REPO / "Resources" / "UI" / "MRIDenoise.ui"
CMAKE = REPO / "CMakeLists.txt"


def _ui_widgets() -> dict[str, str | None]:
    """Widget name -> its SlicerParameterName (None when unbound)."""
    widgets = {}
    for widget in ElementTree.parse(UI).getroot().iter("widget"):
        bound = None
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound = prop.findtext("string")
        widgets[widget.get("name")] = bound
    return widgets


def _module_tree() -> ast.Module:
    return ast.parse(MODULE.read_text())


def _parameter_fields() -> set[str]:
    for node in _module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == "MRIDenoiseParameterNode":
            return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError("MRIDenoiseParameterNode not found")


def _manually_bound() -> dict[str, str]:
    for node in _module_tree().body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MANUALLY_BOUND_PARAMETERS":
            return ast.literal_eval(node.value)
    return {}


def test_every_widget_the_module_uses_exists_in_the_ui():
    referenced = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text()))
    missing = referenced - set(_ui_widgets())
    assert referenced and not missing, f"widgets used in MRIDenoise.py but absent from the .ui: {sorted(missing)}"


def test_every_parameter_is_bound_to_a_widget():
    bound = {name for name in _ui_widgets().values() if name}
    manual = _manually_bound()
    assert set(manual.values()) <= set(_ui_widgets()), "manually bound widgets must exist in the .ui"
    unbound = _parameter_fields() - bound - set(manual)
    assert not unbound, f"parameter-node fields without a widget: {sorted(unbound)}"
    stray = bound - _parameter_fields()
    assert not stray, f"the .ui binds names that are not parameter-node fields: {sorted(stray)}"


def _cmake_list(name: str) -> set[str]:
    block = re.search(rf"set\({name}\n(.*?)\n\s*\)", CMAKE.read_text(), re.S)
    assert block, f"{name} not found in CMakeLists.txt"
    return {line.strip() for line in block.group(1).splitlines() if line.strip()}


def test_cmake_lists_every_python_file_of_the_module():
    on_disk = {"MRIDenoise.py"} | {
        str(path.relative_to(REPO))
        for folder in ("MRIDenoiseLib", "MRIDenoiseSlicer")
        for path in (REPO / folder).rglob("*.py")
    }
    listed = _cmake_list("MODULE_PYTHON_SCRIPTS")
    hint = "run scripts/sync_cmake_lists.py"
    assert on_disk - listed == set(), f"missing from CMakeLists.txt ({hint}): {sorted(on_disk - listed)}"
    assert listed - on_disk == set(), f"listed but not on disk: {sorted(listed - on_disk)}"


def test_cmake_lists_every_resource():
    on_disk = {str(p.relative_to(REPO)) for p in (REPO / "Resources").rglob("*") if p.is_file()}
    listed = _cmake_list("MODULE_PYTHON_RESOURCES")
    assert on_disk == listed, f"not listed: {sorted(on_disk - listed)}; stale: {sorted(listed - on_disk)}"


def test_cmake_registers_the_slicer_self_test():
    text = CMAKE.read_text()
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "class MRIDenoiseTest(ScriptedLoadableModuleTest)" in MODULE.read_text()


def test_module_file_holds_no_algorithm():
    """MRIDenoise.py delegates: it imports no numerical library at module level."""
    top_level = {
        alias.name.split(".")[0] for node in _module_tree().body if isinstance(node, ast.Import) for alias in node.names
    }
    top_level |= {
        node.module.split(".")[0] for node in _module_tree().body if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not top_level & {"numpy", "torch", "scipy", "SimpleITK", "MRIDenoiseLib", "monai"}


def test_one_requirements_list_for_slicer_and_pip():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["dependencies"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["Resources/requirements.txt"]
    assert "REQUIREMENTS_FILE" in MODULE.read_text() and not re.search(r'"torch>=', MODULE.read_text())
    lines = [line for line in (REPO / "Resources/requirements.txt").read_text().splitlines() if line[:1].isalpha()]
    assert lines and all(">=" in line for line in lines), "every requirement carries its minimum version"


def test_extension_has_a_licence_and_a_real_screenshot():
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    url = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', CMAKE.read_text()).group(1)
    icon = re.search(r'set\(EXTENSION_ICONURL "([^"]+)"\)', CMAKE.read_text()).group(1)
    assert url != icon
    path = REPO / url.split("/main/", 1)[1]
    assert path.is_file() and path.suffix == ".png"


def test_loading_the_module_needs_no_numerical_package():
    """Slicer builds the module (its help comes from the catalogue) before any dependency is installed."""
    import subprocess
    import sys

    probe = (
        "import sys, MRIDenoiseSlicer.catalog as c; c.catalogue_help_html(); c.grouped_models(); "
        "print(sorted(m for m in ('numpy', 'torch', 'monai', 'scipy', 'SimpleITK') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
