"""Run inside a venv that has only the wheel and its runtime dependencies.

Imports every public module of transformer_nb, checks that no development tool came along,
and runs the README's usage example. Usage: python check_wheel.py path/to/README.md
"""
import importlib, importlib.util, pkgutil, re, sys
from pathlib import Path

import transformer_nb

for dev_tool in ("nbdev", "jupyter_book", "pytest", "transformers"):
    assert importlib.util.find_spec(dev_tool) is None, f"{dev_tool} is installed: the runtime venv is not clean"

modules = [m.name for m in pkgutil.walk_packages(transformer_nb.__path__, "transformer_nb.")]
for name in modules:
    importlib.import_module(name)
print(f"transformer_nb {transformer_nb.__version__} from {Path(transformer_nb.__file__).parent}")
print("imported:", ", ".join(modules))
assert "site-packages" in transformer_nb.__file__, "imported the source tree, not the installed wheel"

readme = Path(sys.argv[1]).read_text(encoding="utf-8")
example = re.search(r"<!-- example:start -->\s*```python\n(.*?)```", readme, re.S)
assert example, "README has no marked usage example"
exec(compile(example.group(1), "README example", "exec"), {"__name__": "__readme__"})
print("README example ran")

# The Tatoeba sample ships inside the wheel: it loads with no network and no ../shared folder.
import os
import urllib.request

from transformer_nb import tasks


def no_network(*args, **kwargs):
    raise OSError("this check runs without a network")


urllib.request.urlopen = no_network
os.environ.pop("TRANSFORMER_NB_DATA", None)
assert tasks.find_repo_root() is None, "ran inside a checkout: the shared data folder would be found"
pairs = tasks.load_tatoeba()
assert len(pairs) == 5000 and "site-packages" in str(tasks.data_file("tatoeba-eng-fra-5k.tsv"))
licence = Path(tasks.__file__).parent / "data" / "TATOEBA.md"
assert "CC BY 2.0 FR" in licence.read_text(encoding="utf-8")
print(f"load_tatoeba() from the wheel, offline: {len(pairs)} pairs, licence {licence.name} present")
