"""The three products share one source: check that notebooks, book config, package metadata and README agree."""
import configparser
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = configparser.ConfigParser(delimiters=["="])
SETTINGS.read(ROOT / "settings.ini")
CFG = SETTINGS["DEFAULT"]
NOTEBOOKS = sorted((ROOT / "nbs").glob("[0-9A-Z]*.ipynb"))  # chapters 01-09 and appendices B, C


def cells(nb_path):
    return json.loads(nb_path.read_text(encoding="utf-8"))["cells"]


def source(cell):
    return "".join(cell["source"])


def tags(cell):
    return set(cell.get("metadata", {}).get("tags", []))


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_chapter_is_in_the_book_and_every_book_page_exists():
    listed = toc_files()
    for nb in NOTEBOOKS:
        assert f"nbs/{nb.stem}" in listed, f"{nb.name} is missing from _toc.yml"
    for f in listed:
        assert (ROOT / f"{f}.ipynb").exists() or (ROOT / f"{f}.md").exists(), f"_toc.yml lists a missing page: {f}"


def test_chapters_are_listed_in_paper_order():
    chapters = [f for f in toc_files() if f.startswith("nbs/")]
    assert chapters == sorted(chapters, key=lambda f: (not f[4].isdigit(), f))  # 01..09, then appendices


def test_repository_url_is_the_same_everywhere():
    url = CFG["git_url"]
    book = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert book["repository"]["url"] == url and book["repository"]["branch"] == CFG["branch"]
    colab = ("https://colab.research.google.com/github/" + url.removeprefix("https://github.com/")
             + f"/blob/{CFG['branch']}/nbs/")
    for nb in NOTEBOOKS:
        first = source(cells(nb)[0])
        assert colab + nb.name in first, f"{nb.name}: Colab badge must point at {colab + nb.name}"
    readme = (ROOT / "README.md").read_text()
    assert url in readme
    for nb in NOTEBOOKS:  # the Colab install cell installs from the same repository
        install = [source(c) for c in cells(nb) if "google.colab" in source(c)]
        assert all(f"git+{url}" in src for src in install), nb.name


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_layout(nb):
    cs = cells(nb)
    first = source(cs[0])
    number = re.match(r"0*(\d+|[A-Z])", nb.name).group(1)  # "05" -> "5", "07a" -> "7", appendix "B" -> "B"
    assert cs[0]["cell_type"] == "markdown" and first.startswith(f"# {number}. "), "title '# N. ...' first"
    assert re.search(r"^> \S", first, re.M), "a one-line '> summary' under the title"
    code = [c for c in cs if c["cell_type"] == "code"]
    default_exp = [c for c in code if "#| default_exp" in source(c)]
    assert len(default_exp) <= 1
    for c in default_exp:
        assert "remove-cell" in tags(c)
    install = [c for c in code if "google.colab" in source(c)]
    assert install and all("remove-cell" in tags(c) for c in install), "a hidden Colab install cell"
    for c in code:
        src = source(c)
        if "nbdev_export()" in src:
            assert {"remove-cell", "skip-execution"} <= tags(c)
        flags = set(re.findall(r"^#\|\s*(slow|gpu)\b", src, re.M))
        if "gpu" in flags:  # GPU-only cells: skipped by nbdev_test (tst_flags) *and* by the book build (tag)
            assert "skip-execution" in tags(c), "a #| gpu cell needs the skip-execution tag"
        if "skip-execution" in tags(c) and "nbdev_export()" not in src:
            assert "gpu" in flags, "only #| gpu cells (and the export cell) may skip execution in the book"
        if "raises-exception" in tags(c):  # an exercise stub: skipped by nbdev_test, its error shown in the book
            assert src.startswith("#| notest\n") and "raise NotImplementedError" in src, \
                "only exercise stubs (#| notest, raising NotImplementedError) may raise"
        assert not c.get("execution_count"), "run nbdev_clean before committing"


def has_exercises(nb) -> bool:
    return any(c["cell_type"] == "markdown" and source(c).startswith("## Exercises") for c in cells(nb))


EXERCISE_CHAPTERS = [nb for nb in NOTEBOOKS if re.match(r"0[3-9]|10", nb.name) and has_exercises(nb)]


def test_every_chapter_from_3_to_10_has_exercises():
    "A chapter in parts (06 and 06b, 07a-07c) needs exercises in at least one of them."
    assert {int(nb.name[:2]) for nb in EXERCISE_CHAPTERS} == set(range(3, 11))
    assert {nb.stem for nb in EXERCISE_CHAPTERS} >= {"07a_training", "07b_inference"}


@pytest.mark.parametrize("nb", EXERCISE_CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_graded_exercises(nb):
    """Chapters 3-10 end (before the export cell) with '## Exercises': per exercise a stub cell
    (`#| notest`, tag raises-exception, raises NotImplementedError, calls check) and a worked
    solution (tag hide-input: folded in the book) that calls check and runs everywhere."""
    cs = cells(nb)
    heads = [i for i, c in enumerate(cs) if c["cell_type"] == "markdown" and source(c).startswith("## Exercises")]
    assert len(heads) == 1, "one '## Exercises' section"
    section = cs[heads[0]:-1]
    assert "nbdev_export()" in source(cs[-1]), "the Exercises section comes just before the export cell"
    assert not any(c["cell_type"] == "markdown" and source(c).startswith("## ") for c in section[1:])
    stubs = [c for c in section if "raises-exception" in tags(c)]
    solutions = [c for c in section if "hide-input" in tags(c)]
    assert 3 <= len(stubs) == len(solutions) <= 6
    for c in stubs:
        assert source(c).startswith("#| notest\n") and "check(" in source(c)
    for c in solutions:
        assert "check(" in source(c) and "#| notest" not in source(c)
    assert not any("#| export" in source(c) for c in section), "exercise code is not exported"
    for before, after in zip(section, section[1:]):  # prose before each code cell
        if after["cell_type"] == "code":
            assert before["cell_type"] == "markdown", "prose before each code cell"


def test_settings_keep_the_tags_and_skip_the_long_cells():
    assert "tags" in CFG["allowed_cell_metadata_keys"].split()
    assert {"slow", "gpu", "notest"} <= set(CFG["tst_flags"].split())
    assert CFG["renderer"] == "fastcore.docments.MarkdownRenderer"


def test_runtime_requirements_do_not_cap_torch():
    reqs = CFG["requirements"].split()
    torch_req = next(r for r in reqs if r.startswith("torch"))
    assert "<" not in torch_req and "==" not in torch_req, "an upper bound would replace Colab's torch"
    assert {"einops", "numpy", "matplotlib", "tqdm"} <= {re.split(r"[<>=!~]", r)[0] for r in reqs}


def test_every_module_comes_from_a_notebook():
    for py in (ROOT / "transformer_nb").glob("*.py"):
        if py.name in ("__init__.py", "_modidx.py"):
            continue
        header = next((line for line in py.read_text().splitlines()[:5] if line.startswith("# AUTOGENERATED!")), "")
        assert header.startswith("# AUTOGENERATED! DO NOT EDIT! File to edit: ../nbs/"), py.name
        nb = header.split("../nbs/")[1].split(".ipynb")[0] + ".ipynb"
        assert (ROOT / "nbs" / nb).exists()
