"""aaa_core's layers: a module imports only from its own layer or a lower one, and ``aaa_core.io`` imports
nothing of the project, so a renderer that writes a JSON loads neither model code nor torch."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# lowest first; a module's layer is that of the longest prefix of its dotted name listed here
LAYERS = [
    {"aaa_core", "aaa_core.errors", "aaa_core.io", "aaa_core.stats", "aaa_core.progress"},
    {"aaa_core.config", "aaa_core.runtime", "aaa_core.distributed"},
    {"aaa_core.data", "aaa_core.models"},
    {"aaa_core.attacks"},
    {"aaa_core.training"},
    {"aaa_core.evaluation"},
    {"aaa_core.reporting"},
    {"aaa_core.cli"},
]
ISOLATED = {"aaa_core.io"}   # import nothing of the project
# the package's own __init__ is layer 0 for everything that imports it (INPUT_SHAPES) and imports nothing at
# its top; its one public loader (``aaa_core.load_defended``) reaches the models inside the function
FACADE = {"aaa_core"}


def layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        for rank, names in enumerate(LAYERS):
            if prefix in names:
                return rank
    raise KeyError(f"{module} is in no layer of tests/test_layout.py")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path, top_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every project import in the file, at any depth (a lazy import counts too), or only
    at the module's top level."""
    out = []
    tree = ast.parse(path.read_text())
    for node in (tree.body if top_only else ast.walk(tree)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aaa_core":
            names = [f"{node.module}.{a.name}" for a in node.names]
            # `from aaa_core.x import y` imports module aaa_core.x.y where that is a module, else aaa_core.x
            out += [(node.lineno, n if _is_module(n, root) else node.module) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "aaa_core"]
    return out


def _is_module(dotted: str, root: Path) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def violations(root: Path) -> list[str]:
    found = []
    for path in sorted((root / "aaa_core").rglob("*.py")):
        me = module_name(path, root)
        for line, target in imported(path, root, top_only=me in FACADE):
            if me in ISOLATED and target != me:
                found.append(f"{path.relative_to(root)}:{line}: {me} imports {target} (it imports nothing of the project)")
            elif layer(target) > layer(me):
                found.append(f"{path.relative_to(root)}:{line}: {me} (layer {layer(me)}) imports {target} "
                             f"(layer {layer(target)})")
    return found


def test_no_module_imports_a_higher_layer():
    assert violations(ROOT) == []


def test_every_module_has_a_layer():
    for path in (ROOT / "aaa_core").rglob("*.py"):
        layer(module_name(path, ROOT))


@pytest.mark.parametrize("planted, expected", [
    ("aaa_core/training/losses.py", "imports aaa_core.reporting.verdicts (layer 6)"),
    ("aaa_core/io.py", "it imports nothing of the project"),
    ("aaa_core/progress.py", "imports aaa_core.reporting.verdicts (layer 6)"),
])
def test_an_upward_import_is_found(tmp_path, planted, expected):
    """The check fails on a planted fault: a lazy upward import inside a function."""
    copy = tmp_path / "repo"
    (copy / "aaa_core").mkdir(parents=True)
    for path in (ROOT / "aaa_core").rglob("*.py"):
        target = copy / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    with (copy / planted).open("a") as f:
        f.write("\n\ndef _planted():\n    from aaa_core.reporting.verdicts import judge\n")
    found = violations(copy)
    assert any(planted in v and expected in v for v in found), found
