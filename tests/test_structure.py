"""The package's shape: rooms of modest size, imports that only go down, cells a reader can hold in view."""
import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "transformer_nb"
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))
MAX_MODULE_LINES, MAX_EXPORTED_CELL_LINES, MAX_COLUMNS = 650, 40, 88

# Bottom to top: a module may import only modules listed before it.
FLOORS = ["registry", "course", "tokenization", "tasks", "components", "modern", "options",
          "architectures", "anatomy", "interop", "seq2seq", "families", "checkpoint",
          "batches", "distributed", "training", "train", "inference", "audit", "practical", "paper",
          "grading", "exercises_3_6", "exercises_beyond", "exercises"]


def modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_"))


def imported(module: str) -> set[str]:
    "The package modules `module` imports, at any depth of its code."
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level and node.module is None:  # from . import a, b
                found |= {a.name for a in node.names}
                continue
            name = ("transformer_nb." if node.level else "") + (node.module or "")
            if name.startswith("transformer_nb."):
                found.add(name.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("transformer_nb.")}
    return found - {module}


@pytest.mark.parametrize("module", modules())
def test_module_is_at_most_650_lines(module):
    n = len((PACKAGE / f"{module}.py").read_text(encoding="utf-8").splitlines())
    assert n <= MAX_MODULE_LINES, f"{module}.py has {n} lines; split it into two rooms"


def test_every_module_has_a_floor():
    missing = set(modules()) - set(FLOORS)
    assert not missing, f"add {sorted(missing)} to FLOORS in tests/test_structure.py"


@pytest.mark.parametrize("module", modules())
def test_imports_only_go_down(module):
    floor = FLOORS.index(module)
    upward = [m for m in imported(module) if FLOORS.index(m) > floor]
    assert not upward, f"{module} imports {upward}, which sit above it"


def code_cells(nb: Path):
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    return [("".join(c["source"]), i) for i, c in enumerate(cells) if c["cell_type"] == "code"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_exported_cells_are_short(nb):
    long = [(i, len(s.splitlines())) for s, i in code_cells(nb)
            if s.startswith("#| export") and len(s.splitlines()) > MAX_EXPORTED_CELL_LINES]
    assert not long, f"exported cells over {MAX_EXPORTED_CELL_LINES} lines (cell, lines): {long}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_fits_the_page(nb):
    wide = [(i, len(line)) for s, i in code_cells(nb) for line in s.splitlines()
            if len(line) > MAX_COLUMNS]
    assert not wide, f"code lines over {MAX_COLUMNS} columns (cell, width): {wide}"
