"""A stand-in for Colab's `google.colab` module, for CI only.

The chapters' first cell installs the package when `google.colab` has been imported, as it is in every
Colab kernel. CI starts its reader kernel through start_kernel.py, which imports this stub first, so
that cell runs as on Colab (installing the wheel that TRANSFORMER_NB_PACKAGE names).
"""
IN_CI_STUB = True
