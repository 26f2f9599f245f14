"""After the book build: every chapter page exists, shows each figure its notebook draws, and works offline.

Catches what Sphinx does not warn about: a plotting backend that swallows figures (MPLBACKEND=Agg in
the kernel's environment), a chapter missing from the HTML, maths that would need a CDN.
Usage: python .ci/check_book.py [_build/html]
"""
import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
html_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "_build" / "html"
problems = []
for nb in sorted((root / "nbs").glob("[0-9][0-9]*.ipynb")):
    page = html_dir / "nbs" / (nb.stem + ".html")
    if not page.exists():
        problems.append(f"{page} is missing")
        continue
    html = page.read_text(encoding="utf-8")
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    executed = [c for c in cells if c["cell_type"] == "code" and "skip-execution" not in c.get("metadata", {}).get("tags", [])]
    expected = sum(len(re.findall(r"^\s*plt\.show\(\)", "".join(c["source"]), re.M)) for c in executed)
    images = len(re.findall(r'<img [^>]*src="[^"]*_images/[^"]*\.png"', html))
    if images < expected:
        problems.append(f"{page.name}: {images} figure(s) rendered, {expected} expected (is MPLBACKEND set to Agg?)")
    if "cdn.jsdelivr.net/npm/mathjax" in html:
        problems.append(f"{page.name}: MathJax is loaded from a CDN, so maths does not render offline")
    print(f"{page.name}: {images} figures")
# Algorithm boxes: the number Sphinx gives each box must be the paper's number in its label (algorithm-N).
for page in sorted(html_dir.glob("nbs/*.html")):
    html = page.read_text(encoding="utf-8")
    for label, shown in re.findall(r'id="algorithm-(\d+)".*?<span class="caption-number">Algorithm (\d+)', html, re.S):
        if label != shown:
            problems.append(f"{page.name}: the box for the paper's Algorithm {label} is numbered {shown}")
# The list of algorithms (book/algorithms.md) links every box in the book, in numerical order.
boxes = sorted({int(n) for page in html_dir.glob("nbs/*.html")
                for n in re.findall(r'id="algorithm-(\d+)"', page.read_text(encoding="utf-8"))})
listed = [int(n) for n in re.findall(r'href="[^"]*#algorithm-(\d+)"',
                                     (html_dir / "book" / "algorithms.html").read_text(encoding="utf-8"))]
if listed != boxes:
    problems.append(f"algorithms.html lists the boxes {listed}, the book has {boxes}")
if problems:
    sys.exit("book check failed:\n  " + "\n  ".join(problems))
print("book check passed")
