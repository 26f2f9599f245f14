"""The README is the front door: its example must run and its two set-up commands must exist."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_example_runs():
    example = re.search(r"<!-- example:start -->\s*```python\n(.*?)```", README, re.S)
    assert example, "README needs a python block after <!-- example:start -->"
    code = example.group(1)
    assert len(code.strip().splitlines()) <= 14, "keep the example short"
    exec(compile(code, "README example", "exec"), {"__name__": "__readme__"})


def test_readme_setup_commands_exist():
    for script in ("bash .ci/build-book", "bash .ci/test"):
        assert script in README
        assert (ROOT / script.split()[1]).is_file()
