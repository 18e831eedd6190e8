"""
Sphinx configuration: the narrative pages in docs/ and the API reference,
built from the package's reST docstrings (``.ci/docs`` runs it with -W).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from socketdock import __version__  # noqa: E402  # after the path is set

project = "SocketDock"
release = version = __version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary"]
exclude_patterns = ["_build"]
root_doc = "index"
autosummary_generate = True
autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_member_order = "bysource"
# The docstrings say what the signatures already give; type hints stay there.
autodoc_typehints = "none"
# Optional libraries the cluster and the tuned pieces need at import time.
autodoc_mock_imports = ["txredisapi", "httptools"]
html_theme = "alabaster"
# Methods that override Twisted's have its epytext docstrings: not ours to show.
autodoc_inherit_docstrings = False
