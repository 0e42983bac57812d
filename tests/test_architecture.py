"""The architecture rules of the README's "For developers" section, enforced.

- importing the package imports neither Qt nor torch (nor napari);
- the core, io and phantom modules import no GUI and no torch;
- imports flow one way: docks and the command line on top, the core at the bottom;
- no module grows past 600 lines.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_connectome"

# Rank of each part of the package: a module may import only parts of lower or equal rank.
RANKS = {
    "core": 0,
    "synthetic": 0,
    "_phantom": 0,
    "io": 1,
    "models": 1,
    "_reader": 2,
    "_writer": 2,
    "_sample_data": 2,
    "segmentation": 2,
    "blockwise": 2,
    "synapse_detection": 2,
    "_virtual_display": 2,
    "_widgets": 3,
    "_demo": 4,
    "cli": 4,
}
GUI_OR_TORCH = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "torch")
PURE_PARTS = ("core", "synthetic", "_phantom", "io")


def _part(module_path: Path) -> str:
    relative = module_path.relative_to(PACKAGE)
    first = relative.parts[0].removesuffix(".py")
    for part in RANKS:
        if first == part or first.startswith(part + "_") or first.startswith(part):
            return part
    return first


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _imports(module_path: Path):
    tree = ast.parse(module_path.read_text())
    package_parts = module_path.relative_to(PACKAGE).parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module or "", None
            else:
                base = list(package_parts)[: len(package_parts) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
                names = [a.name for a in node.names] if not node.module and not base else []
                yield "napari_connectome." + target if target else "napari_connectome", names


def _internal_part(name: str, names) -> list[str]:
    if not name.startswith("napari_connectome"):
        return []
    rest = name.split(".")[1:]
    if rest:
        return [rest[0]]
    return list(names or [])


def test_import_does_not_load_qt_torch_or_napari():
    code = (
        "import sys, napari_connectome, napari_connectome.synthetic, napari_connectome.io, "
        "napari_connectome.core.metrics, napari_connectome._reader, napari_connectome.cli\n"
        f"bad = [m for m in {GUI_OR_TORCH!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module_path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_down_and_core_stays_pure(module_path):
    part = _part(module_path)
    rank = RANKS.get(part)
    for name, names in _imports(module_path):
        if part in PURE_PARTS:
            assert name.split(".")[0] not in GUI_OR_TORCH, f"{module_path.name} imports {name}"
        for target in _internal_part(name, names):
            target_rank = RANKS.get(_part(PACKAGE / f"{target}.py"))
            if rank is not None and target_rank is not None:
                assert target_rank <= rank, f"{part} (rank {rank}) imports {target}"


@pytest.mark.parametrize("module_path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(module_path):
    lines = len(module_path.read_text().splitlines())
    assert lines <= 600, f"{module_path.name} has {lines} lines; split it by what it does"
