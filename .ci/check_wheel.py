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
