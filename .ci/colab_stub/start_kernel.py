"""Start an IPython kernel that looks like Colab's: `google.colab` is already imported (a stub)."""
import google.colab  # noqa: F401  (the stub next to this file)
from ipykernel import kernelapp

kernelapp.launch_new_instance()
