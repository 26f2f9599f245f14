"""Run every chapter as a reader does: in a fresh kernel of a venv that holds only the installed wheel,
its runtime dependencies, a Jupyter kernel and the packages Colab preinstalls; from a folder outside the
checkout; every cell top to bottom, including the hidden Colab install cell (a stub `google.colab` makes
it run and TRANSFORMER_NB_PACKAGE points it at the wheel) and every `#| gpu` cell in smoke mode.

Usage: python .ci/run_chapters.py --python READER_VENV/bin/python --wheel dist/x.whl --work DIR
Prints each chapter's time; on failure names the chapter, the cell and the error, and exits 1.
"""
import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def chapters() -> list[Path]:
    "The notebooks in the book's order (_toc.yml)."
    listed = re.findall(r"file:\s*(nbs/\S+)", (ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return [ROOT / f"{f}.ipynb" for f in listed]


def reader_kernel(python: str, wheel: Path, work: Path) -> Path:
    "A kernelspec 'reader': the reader venv's Python, started through the Colab stub."
    cache = work / "cache"  # the reader's download cache, holding Tiny Shakespeare as if downloaded
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt", cache)
    spec_dir = work / "jupyter" / "kernels" / "reader"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [python, str(ROOT / ".ci" / "colab_stub" / "start_kernel.py"),
                 "-f", "{connection_file}", "--IPKernelApp.log_level=ERROR"],
        "display_name": "reader (wheel + Colab stub)", "language": "python",
        "env": {"TRANSFORMER_NB_SMOKE": "1", "TRANSFORMER_NB_PACKAGE": str(wheel.resolve()),
                "TRANSFORMER_NB_CACHE": str(cache), "MPLBACKEND": "Agg"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return work / "jupyter"


def failing_cell(nb, error: CellExecutionError) -> str:
    "The index and first line of the cell that raised, found from the executed outputs."
    for i, cell in enumerate(nb.cells):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return f"cell {i} ({cell.source.splitlines()[0] if cell.source else ''!r})"
    return "an unknown cell"


def run_chapter(path: Path, work: Path, timeout: int) -> tuple[float, str | None]:
    "Execute one chapter in the reader kernel; returns (seconds, error or None)."
    nb = nbformat.read(path, as_version=4)
    folder = work / "run" / path.stem  # outside the checkout: the wheel is what imports
    folder.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(nb, kernel_name="reader", timeout=timeout,
                            skip_cells_with_tag="run-everything-in-ci",  # GPU cells too
                            resources={"metadata": {"path": str(folder)}})
    start = time.perf_counter()
    try:
        client.execute()
        error = None
    except CellExecutionError as e:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # no terminal colours in the log
        error = f"{failing_cell(nb, e)}:\n{plain[-3000:]}"
    nbformat.write(nb, work / f"{path.stem}.executed.ipynb")
    return time.perf_counter() - start, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the reader venv's python")
    parser.add_argument("--wheel", required=True, type=Path)
    parser.add_argument("--work", required=True, type=Path, help="a folder outside the checkout")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("chapters", nargs="*", help="notebook stems (default: every chapter)")
    args = parser.parse_args()
    work = args.work.resolve()
    assert ROOT not in work.parents, "the work folder must be outside the checkout"
    os.environ["JUPYTER_PATH"] = str(reader_kernel(args.python, args.wheel, work))
    os.environ.pop("TRANSFORMER_NB_DATA", None)  # a reader has no shared data folder
    todo = [p for p in chapters() if not args.chapters or p.stem in args.chapters]
    failures, total = [], time.perf_counter()
    for path in todo:
        seconds, error = run_chapter(path, work, args.timeout)
        print(f"{path.stem:<22} {seconds:6.1f} s  {'FAILED' if error else 'ok'}", flush=True)
        if error:
            failures.append(f"{path.name}, {error}")
    print(f"{len(todo)} chapters in {time.perf_counter() - total:.0f} s")
    for failure in failures:
        print(f"\n=== {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
