"""The layers keep to themselves: only ``api`` speaks HTTP, and nothing below the service
knows OpenAI's names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import diffuserve

PACKAGE = Path(diffuserve.__file__).parent
HTTP_MODULES = ("fastapi", "starlette", "uvicorn", "httpx")


def imports_of(folder: str) -> dict[str, set[str]]:
    """Every module imported by each file under ``folder`` of the package."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(PACKAGE))] = names
    return found


@pytest.mark.parametrize("layer", ["engine", "storage", "service", "protocol", "builtin"])
def test_only_the_api_layer_imports_http_libraries(layer: str) -> None:
    for path, names in imports_of(layer).items():
        http = {name for name in names if name.split(".")[0] in HTTP_MODULES}
        assert not http, f"{path} imports {sorted(http)}"


@pytest.mark.parametrize("layer", ["engine", "storage"])
def test_engine_and_storage_know_nothing_above_them(layer: str) -> None:
    above = ("diffuserve.api", "diffuserve.service", "diffuserve.protocol", "diffuserve.app",
             "diffuserve.cli")
    for path, names in imports_of(layer).items():
        bad = {name for name in names if name.startswith(above)}
        assert not bad, f"{path} imports {sorted(bad)}"


def test_the_engine_finds_the_builtin_pipeline_through_entry_points_only() -> None:
    # Neither an import nor a module name handed to importlib: the built-in model's
    # pipeline is registered in the `diffuserve.pipelines` group as any other would be.
    for path, names in imports_of("engine").items():
        assert not {name for name in names if name.startswith("diffuserve.builtin")}, path
    for path in (PACKAGE / "engine").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "diffuserve.builtin" not in text, f"{path.relative_to(PACKAGE)} names it"


@pytest.mark.parametrize("layer", ["engine", "storage"])
def test_engine_and_storage_name_no_http_status_or_openai_model(layer: str) -> None:
    for path in (PACKAGE / layer).rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for word in ("status_code", "Retry-After", "dall-e", "gpt-image"):
            assert word not in text, f"{path.relative_to(PACKAGE)} mentions {word!r}"


def test_the_trainer_is_not_in_the_installed_package() -> None:
    assert not (PACKAGE / "training").exists()
    for path, names in imports_of(".").items():
        assert not {name for name in names if name.startswith("train_builtin")}, path
