"""Make every copy of the repository's address follow settings.ini (git_url and branch).

The address also appears where a reader needs it without running code: the book's repository and Colab
buttons (_config.yml), each chapter's "Open in Colab" badge and Colab install cell, the README and the
landing page. To move the repository, edit git_url in settings.ini and run `python .ci/sync_repo_url.py`:
it replaces the old address (the one _config.yml still holds) everywhere. tests/test_project.py fails
while any copy differs.
"""
import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
cfg = configparser.ConfigParser(delimiters=["="])
cfg.read(ROOT / "settings.ini")
new_url, new_branch = cfg["DEFAULT"]["git_url"].rstrip("/"), cfg["DEFAULT"]["branch"]

book = ROOT / "_config.yml"
book_text = book.read_text(encoding="utf-8")
old_url = re.search(r"^\s*url:\s*(\S+)", book_text, re.M).group(1).rstrip("/")
old_branch = re.search(r"^\s*branch:\s*(\S+)", book_text, re.M).group(1)


def colab(url: str, branch: str) -> str:
    return f"colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{branch}/"


changed = []
for path in [book, ROOT / "README.md", ROOT / "book" / "intro.md", *sorted((ROOT / "nbs").glob("*.ipynb"))]:
    text = path.read_text(encoding="utf-8")
    new = text.replace(colab(old_url, old_branch), colab(new_url, new_branch)).replace(old_url, new_url)
    if path == book:
        new = re.sub(r"^(\s*branch:\s*)\S+", rf"\g<1>{new_branch}", new, flags=re.M)
    if new != text:
        path.write_text(new, encoding="utf-8")
        changed.append(path.name)
print("updated: " + ", ".join(changed) if changed else f"every copy already points at {new_url} ({new_branch})")
