"""Layers that point one way: views (api/) and the feed's transport (realtime/) call the
domain, the domain calls storage and the event bus, and nothing imports in a circle."""
import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "saathii"


def modules():
    """{module name: path} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name, path, known, top_level_only):
    """The package's modules that a module imports (at its top level, or anywhere)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if not top_level_only else (
        node for statement in tree.body
        for node in ([statement] if not isinstance(statement, (ast.Try, ast.If))
                     else ast.walk(statement)))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{module}.{alias.name}"
                found.add(full if full in known else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module in known and module != name}


def test_no_modules_import_each_other_in_a_circle():
    known = modules()
    graph = {name: imported(name, path, known, True) for name, path in known.items()}
    circles = []
    for start in graph:  # a path back to itself from any module it imports
        seen, frontier = set(), list(graph[start])
        while frontier:
            module = frontier.pop()
            if module == start:
                circles.append(start)
                break
            if module not in seen:
                seen.add(module)
                frontier.extend(graph[module])
    assert circles == [], f"modules on an import circle: {circles}"


def test_the_domain_imports_neither_the_views_nor_the_transport():
    """Nor the request's authentication (auth.py asks the domain for the account)."""
    known = modules()
    crossing = {name: sorted(module for module in imported(name, path, known, False)
                             if module.startswith(("saathii.api", "saathii.realtime", "saathii.auth")))
                for name, path in known.items() if name.startswith("saathii.domain")}
    assert {name: found for name, found in crossing.items() if found} == {}


@pytest.mark.skipif(bool(os.environ.get("TEST_DATABASE_URL")),
                    reason="no database involved: run once, on the SQLite pass")
def test_each_module_imports_on_its_own():
    """Imported first, alone, each module loads (no order-dependent circular import).
    One interpreter for all: the package's modules are dropped before each, except the
    metrics module once loaded (its metrics register in prometheus_client's registry
    once a process)."""
    names = sorted(modules(), key=lambda name: name != "saathii.metrics")
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'saathii' or m.startswith('saathii.')]:\n"
        "        if loaded != 'saathii.metrics':\n"
        "            del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as err:\n"
        "        failed.append(f'{name}: {err!r}')\n"
        "print('\\n'.join(failed))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", result.stdout
