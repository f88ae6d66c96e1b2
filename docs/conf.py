"""Sphinx configuration of the scrapy-sticky-proxy documentation.

Built in CI with warnings as errors (``.ci/run``):
``python -m sphinx -W --keep-going -n -b html docs <out>``. Pages are
Markdown (MyST). Nothing here reaches the network: no intersphinx.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "_ext"))  # sticky_reference

from scrapy_sticky_proxy import __version__  # noqa: E402

project = "scrapy-sticky-proxy"
author = "the scrapy-sticky-proxy authors"
copyright = "2026, the scrapy-sticky-proxy authors"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sticky_reference",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False
# Links are checked inside the site only (myst and -n above): a linkcheck
# run must not reach the network, so every external URL is skipped.
linkcheck_ignore = [r"https?://", r"mailto:"]

html_theme = "furo"
html_title = f"scrapy-sticky-proxy {release}"
