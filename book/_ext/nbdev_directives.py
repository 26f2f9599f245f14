"""Sphinx extension for the course's notebooks in Jupyter Book.

* Hides nbdev's `#| ...` directive lines at the top of code cells (they mean nothing to a reader).
* Shows an exercise stub's error (cells tagged `raises-exception`) as its last line, "NotImplementedError: write
  the rotation here", not as a traceback through the grader with the paths of the machine that built the book.
* Marks cells tagged `skip-execution` (GPU runs) with a note that they were not run for this book.
* Serves the "Open in Colab" badge from the book itself, so that pages render completely offline.
* Numbers each algorithm box with the paper's number, taken from its label `algorithm-N` (sphinx-proof
  numbers boxes in order of appearance, and a chapter may present Algorithm 13 before Algorithm 11).
* Drops repeated inline <script> lines from the written pages: the theme renders some inline scripts
  twice, and the second `const THEBE_JS_URL = ...` raises a JavaScript SyntaxError on every page.
* Titles sphinx-proof's index of the algorithm boxes "List of algorithms".
* Turns progress bars off in the kernels that execute the chapters (tqdm reads TQDM_DISABLE): a bar is
  useful while a cell runs, and only noise on a printed page.
* Gives a cell's figure caption (cell metadata `mystnb.figure`) to its first displayed output only: a cell
  that shows a plot and then a table of the same numbers gets one numbered figure, not two.
* Cites an entry whose authors end in "and others" as "Brown *et al.*, 2020", like every other long list.
* Labels the reference list the way the text cites it ("Vaswani et al., 2017"), sorted by author: the
  bibliography style `authoryear` (bibtex_default_style in _config.yml).
The notebooks themselves are not changed.
"""
import os
import re

from docutils import nodes

DIRECTIVE = re.compile(r"^\s*#\|.*$")
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "/book/_static/colab-badge.svg"  # relative to the book's source folder
GPU_NOTE = ("Not run when this book was built: this cell needs a GPU. Open the chapter in Colab with a GPU "
            "runtime to run it; the text around it says what it produces and roughly how long it takes.")


def _strip(text: str) -> str:
    lines = text.splitlines()
    while lines and DIRECTIVE.match(lines[0]):
        lines.pop(0)
    return "\n".join(lines)


def strip_directives(app, doctree):
    for block in list(doctree.findall(nodes.literal_block)):
        text = block.astext()
        if not DIRECTIVE.match(text.split("\n", 1)[0]):
            continue
        stripped = _strip(text)
        block.children = [nodes.Text(stripped)]
        block.rawsource = stripped


def note_unexecuted_cells(app, doctree):
    for cell in list(doctree.findall(nodes.container)):
        if "tag_skip-execution" in cell.get("classes", []):
            note = nodes.note("", nodes.paragraph("", GPU_NOTE))
            cell.insert(0, note)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short_stub_errors(app, doctree):
    "An exercise stub's error as its last line, not a traceback through the grader and the build's paths."
    for cell in list(doctree.findall(nodes.container)):
        if "tag_raises-exception" not in cell.get("classes", []):
            continue
        for block in cell.findall(nodes.literal_block):
            if "traceback" not in block.get("classes", []):
                continue
            lines = [line for line in ANSI.sub("", block.astext()).splitlines() if line.strip()]
            last = lines[-1] if lines else ""
            block.children = [nodes.Text(last)]
            block.rawsource = last


def local_colab_badge(app, doctree):
    for image in doctree.findall(nodes.image):
        if image.get("uri") == COLAB_BADGE:
            image["uri"] = LOCAL_BADGE
            image["candidates"] = {"*": LOCAL_BADGE.lstrip("/")}


BOX_NUMBER = re.compile(r'(id="algorithm-(\d+)">\s*<p class="admonition-title"><span class="caption-number">'
                        r'Algorithm )\d+')
# a bib entry "X and others" is cited as "X and others, 2020": cite it as the other long lists are cited
OTHERS_CITED = re.compile(r'>([^<>]{1,80}?) and others(, \d{4}[a-z]?</a>| \[<a )')
REF_NUMBER = re.compile(r'(href="[^"]*#algorithm-(\d+)"[^>]*>(?:<span[^>]*>)*Algorithm )\d+')


def _fix_page(html: str) -> str:
    html = html.replace(">Proof Index<", ">List of algorithms<")  # sphinx-proof's index page
    html = OTHERS_CITED.sub(r">\g<1> <em>et al.</em>\g<2>", html)
    html = BOX_NUMBER.sub(r"\g<1>\g<2>", html)
    html = REF_NUMBER.sub(r"\g<1>\g<2>", html)
    lines, seen, kept = html.splitlines(keepends=True), set(), []
    for line in lines:  # repeated identical inline scripts: keep the first
        tag = line.strip()
        if tag.startswith("<script>") and tag.endswith("</script>"):
            if tag in seen:
                continue
            seen.add(tag)
        kept.append(line)
    return "".join(kept)


def fix_written_pages(app, exception):
    "Paper numbers on algorithm boxes and their references; no repeated inline scripts."
    if exception is not None or app.builder.format != "html":
        return
    from pathlib import Path
    for page in Path(app.outdir).rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        fixed = _fix_page(html)
        if fixed != html:
            page.write_text(fixed, encoding="utf-8")


def _author_year_style():
    "A pybtex style: the `plain` list (sorted by author), labelled 'Author et al., year'."
    from pybtex.richtext import Text
    from pybtex.style.formatting.plain import Style as PlainStyle
    from pybtex.style.labels import BaseLabelStyle

    def surname(person) -> str:
        return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            seen = {}
            for entry in sorted_entries:
                people = entry.persons.get("author") or entry.persons.get("editor") or []
                if not people:
                    who = entry.fields.get("title", entry.key).strip("{}")
                elif len(people) == 1 or (len(people) == 2 and "others" in str(people[1])):
                    who = surname(people[0]) + (" et al." if len(people) == 2 else "")
                elif len(people) == 2:
                    who = f"{surname(people[0])} and {surname(people[1])}"
                else:
                    who = f"{surname(people[0])} et al."
                label = f"{who}, {entry.fields.get('year', 'n.d.')}"
                seen[label] = seen.get(label, 0) + 1
                yield label if seen[label] == 1 else f"{label}{chr(ord('a') + seen[label] - 1)}"

    class AuthorYearStyle(PlainStyle):
        default_label_style = AuthorYearLabels

    return AuthorYearStyle


def _caption_first_output_only():
    "Wrap myst-nb's figure context so that only a cell's first display output becomes the figure."
    from contextlib import contextmanager

    import myst_nb.sphinx_ as sphinx_renderer
    original = sphinx_renderer.create_figure_context
    if getattr(original, "first_output_only", False):
        return
    captioned = set()

    @contextmanager
    def first_output_only(renderer, figure_options, line):
        key = (renderer.document["source"], line)  # one key per cell
        if figure_options and key in captioned:
            figure_options = None
        elif figure_options:
            captioned.add(key)
        with original(renderer, figure_options, line):
            yield

    first_output_only.first_output_only = True
    sphinx_renderer.create_figure_context = first_output_only


def setup(app):
    _caption_first_output_only()
    os.environ.setdefault("TQDM_DISABLE", "1")  # inherited by the kernels that execute the chapters
    from pybtex.plugin import register_plugin
    register_plugin("pybtex.style.formatting", "authoryear", _author_year_style())
    # run before Sphinx's own image collector (priority 500) so that the badge is copied like any image
    app.connect("doctree-read", local_colab_badge, priority=400)
    app.connect("doctree-read", strip_directives)
    app.connect("doctree-read", note_unexecuted_cells)
    app.connect("doctree-read", short_stub_errors)
    app.connect("build-finished", fix_written_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
