"""Sphinx extension: hide nbdev's `#| ...` directive lines in the book's code cells.

nbdev reads directives such as `#| export` from the first lines of a cell; they mean nothing to a reader,
and myst-nb would otherwise print them verbatim. The notebooks themselves are not changed.
"""
import re

from docutils import nodes

DIRECTIVE = re.compile(r"^\s*#\|.*$")


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


def setup(app):
    app.connect("doctree-read", strip_directives)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
