"""The pip distribution ``lyra-world`` (pyproject.toml): declared dependencies, the wheel, the
console scripts.

- every third-party module the code imports is declared: lyra_core's in
  ``[project].dependencies`` (optional ones, imported behind a guard, in an extra), lyra_ros's
  there or in the ``ros`` extra;
- requirements/*.txt (the pinned environment of scripts/setup_env.sh and CI) pin every declared
  requirement, inside its declared range;
- the version is written once (``lyra_core.__version__``) and package.xml agrees;
- the wheel holds every module, the shipped student weights and the console scripts;
- ``lyra --help`` and ``python -m lyra_core.cli`` run.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import lyra_core
from lyra_core import cli

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
FIRST_PARTY = {"lyra_core", "lyra_ros", "__future__"}

OPTIONAL_MODULES = {"gsplat": "cuda", "mamba_ssm": "mamba"}
"""Modules lyra_core uses only when installed (pure-PyTorch code otherwise) -> their extra."""

NOT_ON_PYPI = {
    "tf2_msgs": "built from its message definition by scripts/build_ros_interfaces.py",
    "tf2_ros": "system ROS 2 only; lyra_ros falls back to its own TfBuffer",
    "cv_bridge": "system ROS 2 only; lyra_ros converts images itself",
    "sensor_msgs_py": "system ROS 2 only; lyra_ros packs point clouds itself",
}
"""ROS modules lyra_ros uses that no pip distribution provides (lyra_ros only)."""

GUARD_EXCEPTIONS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def requirements(extra: str | None = None) -> list[Requirement]:
    texts = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def names(reqs: list[Requirement]) -> set[str]:
    return {canonicalize_name(req.name) for req in reqs}


# --------------------------------------------------------------------------- imports


def _catches_import_errors(node: ast.Try) -> bool:
    for handler in node.handlers:
        if handler.type is None:
            return True
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(t, ast.Name) and t.id in GUARD_EXCEPTIONS for t in types):
            return True
    return False


def _suppresses_import_errors(node: ast.With) -> bool:
    for item in node.items:
        call = item.context_expr
        if (
            isinstance(call, ast.Call)
            and ast.unparse(call.func).endswith("suppress")
            and any(isinstance(a, ast.Name) and a.id in GUARD_EXCEPTIONS for a in call.args)
        ):
            return True
    return False


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body and _catches_import_errors(parent):
            return True
        if isinstance(parent, ast.With) and _suppresses_import_errors(parent):
            return True
        child, parent = parent, parents.get(parent)
    return False


def third_party_imports(package: str) -> dict[str, dict[str, list[str]]]:
    """Top-level third-party module -> {"guarded" | "plain": ["file:line", ...]} for every
    import under ``src/package`` (function-level ones too). ``guarded``: inside a ``try`` that
    catches ImportError (or broader) or a ``contextlib.suppress(ImportError)``, or looked up by
    name with ``importlib.util.find_spec`` (the caller handles None)."""
    found: dict[str, dict[str, list[str]]] = {}
    for path in sorted((SRC / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules, is_guarded = [alias.name for alias in node.names], _guarded(node, parents)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules, is_guarded = [node.module], _guarded(node, parents)
            elif (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith("find_spec")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                modules, is_guarded = [node.args[0].value], True
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in FIRST_PARTY:
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                kind = "guarded" if is_guarded else "plain"
                found.setdefault(top, {}).setdefault(kind, []).append(where)
    return found


@functools.cache
def installed_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    """Canonical names of the distributions that provide ``module`` (installed ones; for one
    that is not installed, the module's own name, e.g. mamba_ssm -> mamba-ssm)."""
    installed = installed_distributions().get(module, [])
    return {canonicalize_name(name) for name in installed} or {canonicalize_name(module)}


def test_lyra_core_imports_are_declared():
    core = names(requirements())
    extras = {extra: names(requirements(extra)) for extra in PROJECT["optional-dependencies"]}
    everything = core.union(*extras.values())
    problems = []
    for module, sites in sorted(third_party_imports("lyra_core").items()):
        dists = distributions_of(module)
        if module in OPTIONAL_MODULES:
            extra = OPTIONAL_MODULES[module]
            if not dists & extras[extra]:
                problems.append(f"{module} (optional): not in extra {extra!r}")
        elif "plain" in sites:
            if not dists & core:
                problems.append(f"{module} {sites['plain'][:3]}: not in [project].dependencies")
        elif not dists & everything:
            problems.append(f"{module} {sites['guarded'][:3]}: in no dependency or extra")
    assert not problems, "\n".join(problems)


def test_lyra_ros_imports_are_declared():
    allowed = names(requirements()) | names(requirements("ros"))
    problems = []
    for module, sites in sorted(third_party_imports("lyra_ros").items()):
        if module in NOT_ON_PYPI:
            continue
        if not distributions_of(module) & allowed:
            where = (sites.get("plain") or sites["guarded"])[:3]
            problems.append(f"{module} {where}: not in [project].dependencies or extra 'ros'")
    assert not problems, "\n".join(problems)


def test_every_dependency_is_imported():
    """No stale entries: each core dependency provides a module that lyra_core imports."""
    imported = set(third_party_imports("lyra_core"))
    provided: dict[str, set[str]] = {}
    for module, dists in installed_distributions().items():
        for dist in dists:
            provided.setdefault(canonicalize_name(dist), set()).add(module)
    unused = [
        req.name
        for req in requirements()
        if canonicalize_name(req.name) in provided
        and not provided[canonicalize_name(req.name)] & imported
    ]
    assert not unused, f"declared but never imported by lyra_core: {unused}"


# --------------------------------------------------------------------------- pins


def pinned_versions() -> dict[str, tuple[str, str]]:
    """Canonical name -> (pinned version, file) from requirements/*.txt and setup_env.sh."""
    pins = {}
    for path in sorted((ROOT / "requirements").glob("*.txt")):
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line:
                continue
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: unpinned {line}"
            pins[canonicalize_name(req.name)] = (specs[0].version, path.name)
    setup_env = (ROOT / "scripts" / "setup_env.sh").read_text()
    torch_pin = re.search(r'torch_spec="torch==([^"]+)"', setup_env)
    assert torch_pin, "scripts/setup_env.sh no longer pins torch as torch_spec"
    pins["torch"] = (torch_pin.group(1), "scripts/setup_env.sh")
    return pins


def test_pinned_environment_satisfies_the_declared_ranges():
    pins = pinned_versions()
    problems = []
    for extra in [None, *PROJECT["optional-dependencies"]]:
        for req in requirements(extra):
            name = canonicalize_name(req.name)
            label = f"{req} ({'dependencies' if extra is None else 'extra ' + extra})"
            if name not in pins:
                problems.append(f"{label}: not pinned in requirements/*.txt")
            elif not req.specifier.contains(pins[name][0], prereleases=True):
                problems.append(f"{label}: {pins[name][1]} pins {pins[name][0]}")
    assert not problems, "\n".join(problems)


def test_version_is_written_once():
    assert "version" in PROJECT.get("dynamic", []) and "version" not in PROJECT
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "lyra_core.__version__"
    }
    assert "version" not in (ROOT / "setup.py").read_text()
    package_xml = (ROOT / "package.xml").read_text()
    ros_version = re.search(r"<version>([^<]+)</version>", package_xml)
    assert ros_version and ros_version.group(1) == lyra_core.__version__, "package.xml version"


def test_console_scripts_point_at_main_functions():
    for name, target in PROJECT["scripts"].items():
        module, _, function = target.partition(":")
        path = SRC.joinpath(*module.split(".")).with_suffix(".py")
        if not path.is_file():
            path = SRC.joinpath(*module.split("."), "__init__.py")
        assert path.is_file(), f"{name}: no module {module}"
        tree = ast.parse(path.read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert function in functions, f"{name}: {module} has no top-level {function}()"


# --------------------------------------------------------------------------- the wheel


def shipped_weight_files() -> list[str]:
    folder = SRC / "lyra_core" / "weights"
    return sorted(
        str(path.relative_to(SRC))
        for name in ("student_tiny", "student_tiny_dynamic")
        for path in (folder / name).rglob("*")
        if path.is_file() and path.suffix in (".json", ".safetensors")
    )


@pytest.mark.slow
def test_wheel_holds_modules_weights_and_console_scripts(tmp_path):
    project = tmp_path / "project"  # a copy: an in-tree build would write into build/ and src/
    project.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, project / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in ("lyra_core", "lyra_ros"):
        shutil.copytree(SRC / package, project / "src" / package, ignore=ignore)
    env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--no-cache-dir", "--wheel-dir", str(tmp_path / "dist"), str(project)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("lyra_world-*.whl")
    assert wheel.name.startswith(f"lyra_world-{lyra_core.__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        dist_info = f"lyra_world-{lyra_core.__version__}.dist-info"
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()

    sources = sorted(
        str(path.relative_to(SRC))
        for package in ("lyra_core", "lyra_ros")
        for path in (SRC / package).rglob("*.py")
    )
    missing = [name for name in sources + shipped_weight_files() if name not in members]
    assert not missing, f"not in the wheel: {missing}"
    assert len(shipped_weight_files()) >= 5  # student.json, decoder/ and vae/ config + weights

    scripts = dict(
        line.split(" = ")
        for line in entry_points.split("[console_scripts]")[1].strip().splitlines()
        if " = " in line
    )
    assert scripts == PROJECT["scripts"]
    assert scripts["lyra"] == "lyra_core.cli:main"
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for req in requirements():
        assert any(line.split(":")[1].strip().startswith(req.name) for line in requires), req


# --------------------------------------------------------------------------- the commands


def test_lyra_console_script_and_module_run():
    lyra = Path(sys.executable).with_name("lyra")
    assert lyra.is_file(), f"{lyra} missing: install the package (scripts/setup_env.sh)"
    result = subprocess.run([str(lyra), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: lyra ")
    assert all(command in result.stdout for command in cli.COMMANDS)

    module = subprocess.run(
        [sys.executable, "-m", "lyra_core.cli", "export", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert module.returncode == 0, module.stderr
    assert module.stdout.startswith("usage: lyra export ")
