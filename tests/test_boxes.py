"""The algorithm boxes in the notebooks: numbered exactly as the paper numbers its lines (with the `end`
lines), no literal backslash in \\text{...}, and no numbered list glued to the paragraph above it."""
import json
import re
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parents[1] / "nbs"
# The number of numbered lines of each algorithm in arXiv 2207.09238v1, `end` lines included.
PAPER_LINES = {1: 1, 2: 1, 3: 5, 4: 6, 5: 4, 6: 3, 7: 1, 8: 21, 9: 12, 10: 11, 11: 9, 12: 13, 13: 9,
               14: 8, 15: 9}


def boxes(titles: bool = False) -> dict[int, str]:
    "Each box's numbered body (or, with `titles`, its title line), by its number."
    found = {}
    for nb in sorted(NBS.glob("*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            text = "".join(cell["source"])
            for m in re.finditer(r":::\{prf:algorithm\}(.*?)\n:label: algorithm-(\d+)\n(.*?)\n:::", text, re.S):
                found[int(m.group(2))] = m.group(1) if titles else m.group(3)
    return found


def test_every_algorithm_has_a_box():
    assert sorted(n for n in boxes() if n <= 15) == list(range(1, 16))


def test_boxes_after_the_papers_are_marked_beyond_the_paper():
    "The course's own boxes continue the paper's numbering without gaps, and say whose they are."
    own = {n: title for n, title in boxes(titles=True).items() if n > 15}
    assert sorted(own) == list(range(16, 16 + len(own)))
    for n, title in own.items():
        assert "(beyond the paper)" in title, (n, title)
    for n, title in boxes(titles=True).items():
        assert n > 15 or "beyond the paper" not in title, (n, title)


@pytest.mark.parametrize("number", sorted(PAPER_LINES))
def test_box_lines_are_numbered_as_in_the_paper(number):
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", boxes()[number], re.M)]
    assert numbers == list(range(1, PAPER_LINES[number] + 1))


def test_no_literal_backslash_in_text():
    for nb in sorted(NBS.glob("*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            text = "".join(cell["source"])
            if cell["cell_type"] == "markdown":
                assert not re.search(r"\\text\{[^}]*\\_", text), f"{nb.name}: \\_ inside \\text{{}}"


@pytest.mark.parametrize("number", sorted(PAPER_LINES))
def test_no_numbered_line_is_glued_to_a_paragraph(number):
    "CommonMark: a list that does not start at 1 cannot interrupt a paragraph; it needs a blank line."
    lines = boxes()[number].splitlines()
    for above, line in zip(lines, lines[1:]):
        if re.match(r"\d+\. ", line) and above.strip():
            assert re.match(r"\d+\. ", above), (number, line)
