"""The package's layers: data flows one way (``docs/architecture.md``).

Each subpackage may import only from the layers below its own; a new import that goes
upwards (e.g. ``physics`` reading a file through ``io``) or a cycle fails here.
"""

import ast
from pathlib import Path

import cryohydra

ROOT = Path(cryohydra.__file__).parent

# Bottom to top; a package imports only from strictly lower layers.
LAYERS = [
    {"data", "geometry"},
    {"physics"},
    {"io"},
    {"metrics", "models"},
    {"reconstruct", "simulate"},
    {"inference", "orient"},
    {"report"},
    {"analysis", "jobs"},
    {"cli", "demo"},
    {"__main__"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _imports(path: Path) -> set[str]:
    """Top-level cryohydra subpackages imported by a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "cryohydra" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_package_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(LEVEL), sorted((packages | modules) - set(LEVEL))


def test_imports_only_go_down():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        own = relative.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for other in _imports(path) - {own}:
            if LEVEL[other] >= LEVEL[own]:
                wrong.append(f"{relative} imports cryohydra.{other}")
    assert not wrong, "\n".join(wrong)


def test_physics_imports_nothing_of_ours_but_geometry():
    for path in (ROOT / "physics").rglob("*.py"):
        assert _imports(path) <= {"physics", "geometry"}, path
