"""The layers keep to themselves: only ``api`` speaks HTTP, nothing below the service
knows OpenAI's names, and every import between the package's parts goes down.

The parts, from the top: ``cli`` (and ``__main__``) → ``deploy`` (``serve --ray``: its
ingress builds the whole app; its RayEngine is an EngineClient) → ``app`` (wires the parts
once) → ``api`` (HTTP) → ``service`` → ``protocol``, ``engine``, ``storage`` and
``builtin`` side by side (the service uses the request models, the engine seam and the
store; the engine finds the built-in pipeline through entry points, never by import) →
``metrics``, ``logs`` → ``config`` (settings, models, keys, limits: imported by every
layer, importing none) → the package's own ``__init__`` (``__version__``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import diffuserve

PACKAGE = Path(diffuserve.__file__).parent
HTTP_MODULES = ("fastapi", "starlette", "uvicorn", "httpx")

#: The package's top-level parts (a subpackage, or a module at the top), from the top
#: down. A part may import the parts of the rows below its own, never one of a row
#: above or of its own row: no import goes up or sideways, so none closes a circle.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("deploy",),
    ("app",),
    ("api",),
    ("service",),
    ("protocol", "engine", "storage", "builtin"),
    ("metrics", "logs"),
    ("config",),
    ("__init__",),
)
ROW = {part: row for row, parts in enumerate(LAYERS) for part in parts}


def _imported(node: ast.AST, package: str) -> list[str]:
    """The modules ``node`` imports (``from a import b`` names ``a.b`` too, which is
    either a submodule or a name of ``a``); relative imports resolved from ``package``,
    the one the importing file lies in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        anchor = parts[:len(parts) - node.level + 1]
        base = ".".join([*anchor, *([base] if base else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)] if base else []


def _package_of(path: Path) -> str:
    """``…/diffuserve/config/keys.py`` → ``diffuserve.config``."""
    return ".".join(path.relative_to(PACKAGE.parent).parent.parts)


def imports_of(folder: str) -> dict[str, set[str]]:
    """Every module imported by each file under ``folder`` of the package (inside
    functions and ``TYPE_CHECKING`` blocks too: a lazy import still loads the module)."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        package = _package_of(path)
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names.update(_imported(node, package))
        found[str(path.relative_to(PACKAGE))] = names
    assert found, f"no Python file under {folder!r}: a rule about it would check nothing"
    return found


def part_of_file(path: str) -> str:
    """``engine/local/engine.py`` → ``engine``; ``app.py`` → ``app``."""
    first = Path(path).parts[0]
    return "__init__" if path == "__init__.py" else first.removesuffix(".py")


def part_of_module(name: str) -> str | None:
    """The part of the package ``name`` lies in (``diffuserve.config.keys`` → ``config``,
    ``diffuserve.__version__`` → ``__init__``); None outside the package."""
    top, *rest = name.split(".")
    if top != "diffuserve":
        return None
    if rest and ((PACKAGE / rest[0]).is_dir() or (PACKAGE / f"{rest[0]}.py").is_file()):
        return rest[0]
    return "__init__"


def arrows() -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) → ``file imports module`` for each import that
    crosses from one part of the package to another."""
    found: dict[tuple[str, str], list[str]] = {}
    for path, names in imports_of(".").items():
        source = part_of_file(path)
        for name in sorted(names):
            target = part_of_module(name)
            if target is not None and target != source:
                found.setdefault((source, target), []).append(f"{path} imports {name}")
    return found


def test_every_part_of_the_package_has_a_place_in_the_layers() -> None:
    parts = {part_of_file(path) for path in imports_of(".")}
    assert parts == set(ROW), "place a new part in LAYERS (or drop a gone one)"


def test_no_import_goes_up_or_sideways_between_the_parts() -> None:
    wrong = [f"{where} ({target} is {'beside' if ROW[target] == ROW[source] else 'above'} "
             f"{source})"
             for (source, target), found in arrows().items() if ROW[target] <= ROW[source]
             for where in found]
    assert not wrong, "\n".join(wrong)


def test_the_parts_import_one_another_without_a_circle() -> None:
    graph: dict[str, set[str]] = {}
    for source, target in arrows():
        graph.setdefault(source, set()).add(target)
    done: set[str] = set()

    def circle_from(part: str, trail: list[str]) -> list[str] | None:
        if part in trail:
            return [*trail[trail.index(part):], part]
        if part in done:
            return None
        for target in sorted(graph.get(part, ())):
            found = circle_from(target, [*trail, part])
            if found:
                return found
        done.add(part)
        return None

    for part in sorted(graph):
        circle = circle_from(part, [])
        assert circle is None, " → ".join(circle)


def test_config_imports_nothing_of_diffuserve_but_itself() -> None:
    # Not even lazily: every layer (and each engine process) reads the settings, and
    # must not load the service, the protocol or a store by doing so.
    for path, names in imports_of("config").items():
        other = {name for name in names
                 if part_of_module(name) not in (None, "config")}
        assert not other, f"{path} imports {sorted(other)}"


def test_reading_the_settings_or_running_the_engine_loads_no_layer_above() -> None:
    # What a fresh process loads, lazy imports at module level included: an engine
    # replica needs the engine, the settings and the metrics, nothing of the server.
    script = ("import sys, diffuserve.config, diffuserve.engine.local.engine, "
              "diffuserve.engine.plugins; "
              "print(*sorted({n.split('.')[1] for n in sys.modules "
              "if n.startswith('diffuserve.')}))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True).stdout.split()
    assert set(loaded) <= {"config", "engine", "metrics"}, loaded


def test_deploy_reaches_the_http_layers_only_through_build_app() -> None:
    # The Ray ingress serves the app that `diffuserve serve` serves (diffuserve.app);
    # it never picks pieces out of the api, the service or the protocol itself.
    for path, names in imports_of("deploy").items():
        bad = {name for name in names
               if part_of_module(name) in ("api", "service", "protocol")}
        assert not bad, f"{path} imports {sorted(bad)}"


def test_the_ray_engine_imports_what_an_engine_may() -> None:
    # RayEngine is an EngineClient beside LocalEngine: it knows the engine's types and
    # the settings, not the app its ingress serves.
    names = imports_of("deploy")["deploy/ray_engine.py"]
    parts = {part_of_module(name) for name in names} - {None}
    assert parts <= {"deploy", "engine", "config", "metrics"}, sorted(map(str, parts))


@pytest.mark.parametrize("layer", ["engine", "storage", "service", "protocol", "builtin",
                                   "config"])
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
