"""Another checkout's code in this process, to time it against this one in
the same run (``python -m bench.per_request --old PATH``).

The package of the checkout at *PATH* is copied, renamed
``old_scrapy_sticky_proxy``, into a temporary directory put on
``sys.path``: its modules import each other relatively, so both versions
load side by side. What they read by dotted name from the settings
(``"scrapy_sticky_proxy.auth.StickyProxyAuth"`` ...) is only compared as
text by the start-time wiring checks, never imported.

    git worktree add /tmp/old-main main
    python -m bench.per_request --old /tmp/old-main
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import sys
import tempfile
from pathlib import Path

NAME = "old_scrapy_sticky_proxy"


def load(checkout: str) -> str:
    """The name under which *checkout*'s package is importable."""
    source = Path(checkout) / "scrapy_sticky_proxy"
    if not (source / "__init__.py").is_file():
        raise SystemExit(f"--old: no scrapy_sticky_proxy package in {checkout}")
    home = tempfile.mkdtemp(prefix="bench-old-")
    atexit.register(shutil.rmtree, home, True)
    shutil.copytree(
        source, Path(home) / NAME, ignore=shutil.ignore_patterns("__pycache__")
    )
    sys.path.insert(0, home)
    importlib.invalidate_caches()
    importlib.import_module(NAME)
    return NAME
