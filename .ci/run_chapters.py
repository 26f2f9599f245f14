"""Run every chapter as a reader does: in a fresh kernel of a venv that holds only the installed wheel,
its runtime dependencies, a Jupyter kernel and the packages Colab preinstalls; from a folder outside the
checkout; every cell top to bottom, including the hidden Colab install cell (a stub `google.colab` makes
it run and TRANSFORMER_NB_PACKAGE points it at the wheel) and every `#| gpu` cell in smoke mode.

Usage: python .ci/run_chapters.py --python READER_VENV/bin/python --wheel dist/x.whl --work DIR
Prints each chapter's time; on failure names the chapter, the cell and the error, and exits 1.

On a GPU machine, `--full-size --keep-gpu-outputs 07b_inference 08_practical 09_layernorm_audit` runs
the GPU cells at their real size and writes their outputs into nbs/ (then run nbdev_clean and commit),
so that the book shows them.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
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


def reader_kernel(python: str, wheel: Path, work: Path, smoke: bool = True) -> Path:
    "A kernelspec 'reader': the reader venv's Python, started through the Colab stub."
    cache = work / "cache"  # the reader's download cache, holding Tiny Shakespeare as if downloaded
    cache.mkdir(parents=True, exist_ok=True)
    shared = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
    if shared.exists():  # elsewhere the chapters download it, as a reader's would
        shutil.copy(shared, cache)
    spec_dir = work / "jupyter" / "kernels" / "reader"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [python, str(ROOT / ".ci" / "colab_stub" / "start_kernel.py"),
                 "-f", "{connection_file}", "--IPKernelApp.log_level=ERROR"],
        "display_name": "reader (wheel + Colab stub)", "language": "python",
        "env": {"TRANSFORMER_NB_SMOKE": "1" if smoke else "0",
                "TRANSFORMER_NB_PACKAGE": str(wheel.resolve()),
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


def run_chapter(path: Path, work: Path, timeout: int):
    "Execute one chapter in the reader kernel; returns (seconds, error or None, notebook)."
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
    return time.perf_counter() - start, error, nb


def _sees_a_gpu(python: str) -> bool:
    probe = "import torch; print(torch.cuda.is_available())"
    return subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.strip() == "True"


def keep_gpu_outputs(executed, path: Path) -> int:
    "Copy the outputs of the executed `#| gpu` cells into the chapter's source; returns how many."
    source = nbformat.read(path, as_version=4)
    ran = {c.get("id"): c for c in executed.cells}
    kept = 0
    for cell in source.cells:
        if cell.cell_type == "code" and re.match(r"#\|\s*gpu\b", cell.source) and cell.id in ran:
            cell.outputs = ran[cell.id].outputs
            kept += 1
    nbformat.write(source, path)
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the reader venv's python")
    parser.add_argument("--wheel", required=True, type=Path)
    parser.add_argument("--work", required=True, type=Path, help="a folder outside the checkout")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--full-size", action="store_true",
                        help="GPU cells at their real size (for a GPU machine), not in smoke mode")
    parser.add_argument("--keep-gpu-outputs", action="store_true",
                        help="with --full-size: write the GPU cells' outputs into nbs/")
    parser.add_argument("chapters", nargs="*", help="notebook stems (default: every chapter)")
    args = parser.parse_args()
    work = args.work.resolve()
    assert ROOT not in work.parents, "the work folder must be outside the checkout"
    if args.keep_gpu_outputs and not args.full_size:
        parser.error("--keep-gpu-outputs needs --full-size: smoke outputs never go into the book")
    if args.keep_gpu_outputs and not _sees_a_gpu(args.python):
        parser.error("--keep-gpu-outputs: the reader's Python sees no CUDA GPU (its cells would run "
                     "at smoke size)")
    kernels = reader_kernel(args.python, args.wheel, work, smoke=not args.full_size)
    os.environ["JUPYTER_PATH"] = str(kernels)
    os.environ.pop("TRANSFORMER_NB_DATA", None)  # a reader has no shared data folder
    todo = [p for p in chapters() if not args.chapters or p.stem in args.chapters]
    failures, total = [], time.perf_counter()
    for path in todo:
        seconds, error, executed = run_chapter(path, work, args.timeout)
        print(f"{path.stem:<22} {seconds:6.1f} s  {'FAILED' if error else 'ok'}", flush=True)
        if error:
            failures.append(f"{path.name}, {error}")
        elif args.keep_gpu_outputs:
            print(f"  kept the outputs of {keep_gpu_outputs(executed, path)} GPU cells")
    print(f"{len(todo)} chapters in {time.perf_counter() - total:.0f} s")
    for failure in failures:
        print(f"\n=== {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
