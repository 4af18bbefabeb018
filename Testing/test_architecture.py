"""The shape of the engine: module-level imports only go downwards, and light entry points stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "MRIDenoiseLib"

LAYERS = [
    {"errors", "volume", "progress", "machine", "__main__"},
    {
        "validation",
        "diffusion",
        "spherical",
        "noise",
        "noise_spectrum",
        "bands",
        "masks",
        "normalization",
        "io",
        "registration",
        "metrics",
        "viz",
        "dti",
    },
    {"nets"},
    {"models"},
    {"inference"},
    {"denoisers"},
    {"pipeline", "demo", "bids", "cohort"},
    {"training"},
    {"adaptation"},
    {"cli"},
]
"""From the bottom up: a module may import (at module level) from its own layer or the ones below only."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports() -> dict[str, set[str]]:
    """Each engine module's imports of other engine modules at module level (deferred imports are free)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                targets.add(".".join(base + ([node.module] if node.module else [])))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("MRIDenoiseLib"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("MRIDenoiseLib")}
        graph[name] = targets
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next((index for index, members in enumerate(LAYERS) if top in members), len(LAYERS))


def test_every_engine_module_has_a_layer():
    tops = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.rglob("*.py")} - {"__init__"}
    assert tops <= set().union(*LAYERS), f"add to LAYERS: {sorted(tops - set().union(*LAYERS))}"


def test_imports_only_go_downwards():
    upward = [
        f"{module} -> {target}"
        for module, targets in _module_level_imports().items()
        for target in targets
        if module != "MRIDenoiseLib" and target != "MRIDenoiseLib" and _layer(target) > _layer(module)
    ]
    assert not upward, "module-level imports that go up a layer:\n" + "\n".join(sorted(upward))


def test_the_engine_never_imports_slicer_code():
    for path in PACKAGE.rglob("*.py"):
        assert "MRIDenoiseSlicer" not in path.read_text() or path.name == "__init__.py", path


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_the_q_space_denoiser_does_not_pull_in_training():
    loaded = _loaded_after("import MRIDenoiseLib.denoisers.qspace")
    assert not {m for m in loaded if m.startswith("MRIDenoiseLib.training")}
    assert "MRIDenoiseLib.pipeline" not in loaded


@pytest.mark.parametrize("arguments", [["--help"], ["models", "list"], ["models", "info", "nlm"]])
def test_light_commands_load_no_deep_learning_stack(arguments):
    """``--help`` and the catalogue commands answer without torch or MONAI (well under a second)."""
    code = (
        "import contextlib, io\nfrom MRIDenoiseLib.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main({arguments!r})"
    )
    loaded = _loaded_after(code)
    assert not loaded & {"torch", "monai", "scipy.stats"}, sorted(loaded & {"torch", "monai", "scipy.stats"})
