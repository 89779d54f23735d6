"""The layers of lyra_core: each folder is one layer and imports only from its own or lower ones.

Order, lowest first: utils, geometry, scene, rendering, models, pipelines, data, evaluation,
mapping, training, cli. ``weights`` holds shipped files, imports nothing of the package and may
be used by any layer; the package's ``__init__`` re-exports the public API. No module of
lyra_core imports lyra_ros (the core runs without ROS).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lyra_core

LAYERS = (
    "utils",
    "geometry",
    "scene",
    "rendering",
    "models",
    "pipelines",
    "data",
    "evaluation",
    "mapping",
    "training",
    "cli",
)
PACKAGE_ROOT = Path(lyra_core.__file__).parent


def _layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "lyra_core", module
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """Every ``lyra_core``/``lyra_ros`` module imported by ``path`` (also inside functions)."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
                base = package[: len(package) - node.level]
                module = ".".join((*base, node.module) if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return [(line, m) for line, m in found if m.split(".")[0] in ("lyra_core", "lyra_ros")]


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE_ROOT.rglob("*.py") if p.parent != PACKAGE_ROOT)


def test_every_subpackage_is_a_known_layer():
    folders = {p.name for p in PACKAGE_ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - {"weights"} == set(LAYERS)
    loose = {p.name for p in PACKAGE_ROOT.glob("*.py")}
    assert loose == {"__init__.py"}, f"modules outside a layer folder: {loose}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_imports_go_down_the_layers(path: Path):
    own = path.relative_to(PACKAGE_ROOT).parts[0]
    for line, module in _imports(path):
        assert not module.startswith("lyra_ros"), f"{path.name}:{line} imports {module}"
        if own == "weights":
            pytest.fail(f"weights/ must not import the package ({path.name}:{line}: {module})")
        target = _layer_of(module)
        if target == "weights":
            continue  # shipped files: any layer may locate them
        assert target in LAYERS, f"{path.name}:{line} imports {module} outside any layer"
        assert LAYERS.index(target) <= LAYERS.index(own), (
            f"{path.relative_to(PACKAGE_ROOT)}:{line} ({own}) imports {module} ({target}), "
            "a higher layer"
        )


def test_the_check_sees_upward_and_relative_imports():
    """The checker itself: absolute, relative and function-level imports are all seen."""
    path = PACKAGE_ROOT / "geometry" / "probe.py"
    source = (
        "from lyra_core.training.losses import lyra_loss\n"
        "def f():\n    from ..rendering import render\n"
    )
    found = [module for _, module in _imports(path, source)]
    assert found == ["lyra_core.training.losses", "lyra_core.rendering"]
    assert LAYERS.index(_layer_of(found[0])) > LAYERS.index("geometry")
