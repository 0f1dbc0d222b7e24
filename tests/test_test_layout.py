"""The tests keep their own layout: helpers they share live in ``tests/support``,
conftest.py files hold only fixtures and hooks, and no file imports a conftest.py or a
test module (that would hide where a helper lives and run the other module's import)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
SUPPORT = TESTS / "support"


def python_files(folder: Path) -> list[Path]:
    """Every .py file under ``folder``, but those of installed packages (openai-node's)."""
    return sorted(path for path in folder.rglob("*.py") if "node_modules" not in path.parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Every module the code imports, anywhere in it, made absolute from ``package``:
    ``from a.b import c`` counts as ``a.b`` and as ``a.b.c`` (``c`` may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    package = ".".join(path.relative_to(TESTS.parent).parent.parts)
    return imported_modules(path.read_text(encoding="utf-8"), package)


def is_conftest_or_test_module(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last == "conftest" or last.startswith("test_")


def name(path: Path) -> str:
    return str(path.relative_to(TESTS.parent))


def test_the_check_sees_every_way_of_importing_a_conftest_or_a_test_module() -> None:
    code = ("import os\nimport tests.conftest\nfrom . import conftest\n"
            "from .test_app import KEY\nfrom tests.api import test_serving\n"
            "def later():\n    from ..engine.test_errors import SAMPLES\n"
            "from tests.support import fuzzing\nfrom tests.support.clients import AUTH\n")
    modules = imported_modules(code, "tests.api")
    assert {module for module in modules if is_conftest_or_test_module(module)} == {
        "tests.conftest", "tests.api.conftest", "tests.api.test_app", "tests.api.test_serving",
        "tests.engine.test_errors"}
    assert {"os", "tests.support.fuzzing", "tests.support.clients"} <= modules


def offenders(found: dict[str, list[str]]) -> dict[str, list[str]]:
    return {path: names for path, names in found.items() if names}


def test_no_file_of_the_tests_imports_a_conftest_or_a_test_module() -> None:
    wrong = offenders({name(path): sorted(filter(is_conftest_or_test_module, imports_of(path)))
                       for path in python_files(TESTS)})
    assert not wrong, f"move what these need into tests/support: {wrong}"


def test_the_tests_import_of_their_own_only_tests_support_and_never_benchmarks() -> None:
    def foreign(module: str) -> bool:
        top = module.split(".")[0]
        return top == "benchmarks" or (top == "tests" and module != "tests.support"
                                       and not module.startswith("tests.support."))

    wrong = offenders({name(path): sorted(filter(foreign, imports_of(path)))
                       for path in python_files(TESTS)})
    assert not wrong, f"move what these need into tests/support: {wrong}"


def test_no_support_module_imports_a_conftest() -> None:
    files = python_files(SUPPORT)
    assert len(files) > 5
    wrong = offenders({name(path): sorted(module for module in imports_of(path)
                                          if module.rsplit(".", 1)[-1] == "conftest")
                       for path in files})
    assert not wrong, f"helpers that need a conftest's helper: {wrong}"


def is_fixture_or_hook(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return node.name.startswith("pytest_") or any(
        "fixture" in ast.unparse(decorator) for decorator in node.decorator_list)


def test_conftest_files_define_only_fixtures_and_hooks() -> None:
    conftests = sorted(path for path in TESTS.rglob("conftest.py")
                       if "node_modules" not in path.parts)
    assert name(TESTS / "conftest.py") in map(name, conftests)
    wrong: dict[str, list[str]] = {}
    for path in conftests:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) or (
                    isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    and not is_fixture_or_hook(node)):
                wrong.setdefault(name(path), []).append(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                wrong.setdefault(name(path), []).append(ast.unparse(node).split("=")[0].strip())
    assert not wrong, f"move these into tests/support: {wrong}"


def test_every_folder_of_tests_is_a_package() -> None:
    folders = {path.parent for path in python_files(TESTS)}
    missing = sorted(name(folder) for folder in folders if not (folder / "__init__.py").exists())
    assert not missing, "each needs an __init__.py, as the tests import by package"
