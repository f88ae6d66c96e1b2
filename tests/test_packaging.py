"""The version is written once, and the lowest-versions run of CI pins
exactly the floors setup.cfg declares.

What the built sdist and wheel hold is checked by ``.ci/package`` (it needs
a build and a fresh virtualenv, too slow for the suite)."""

from __future__ import annotations

import configparser
import importlib.metadata as md
import re
import runpy
import sys
from pathlib import Path

from setuptools.config.setupcfg import read_configuration

import scrapy_sticky_proxy

ROOT = Path(__file__).resolve().parent.parent
VERSION = scrapy_sticky_proxy.__version__
# Runtime requirements whose floors CI installs (.ci/lowest.txt): the
# package's own and those of its ``redis`` extra (redis-py, scrapy-redis).
FLOORED = ("", "redis")
# A version written as a literal: `version = "1.2"`, `__version__ = '1.2'`,
# `version: 1.2`.
LITERAL = re.compile(
    r"""^\s*(?:__version__|version|release)\s*[:=]\s*["']?\d+\.\d""", re.MULTILINE
)


def floors() -> dict[str, str]:
    """Distribution -> its ``>=`` floor, from setup.cfg."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in FLOORED[1:]:
        lines += config["options.extras_require"][extra].splitlines()
    found = {}
    for line in filter(None, (line.strip() for line in lines)):
        match = re.fullmatch(r"([A-Za-z0-9._-]+)\s*>=\s*([0-9.]+)", line)
        assert match, f"setup.cfg: {line!r} has no plain >= floor"
        found[match.group(1).lower()] = match.group(2)
    return found


def pins() -> dict[str, str]:
    found = {}
    for text in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        line = text.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            found[name.strip().lower()] = version.strip()
    return found


def test_lowest_versions_run_pins_every_declared_floor() -> None:
    def release(version: str) -> tuple[int, ...]:
        parts = tuple(int(p) for p in version.split("."))
        return parts + (0,) * (3 - len(parts))

    declared, pinned = floors(), pins()
    assert set(pinned) == set(declared)
    for name, floor in declared.items():
        assert release(pinned[name]) == release(floor), name


def test_setup_cfg_and_the_docs_take_the_version_from_the_package() -> None:
    assert read_configuration(ROOT / "setup.cfg")["metadata"]["version"] == VERSION
    path = list(sys.path)
    try:
        conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    finally:
        sys.path[:] = path
    assert conf["release"] == conf["version"] == VERSION


def test_installed_metadata_says_the_package_version() -> None:
    # What pip built from setup.cfg (CI: the editable install of the clone).
    assert md.version("scrapy-sticky-proxy") == VERSION


def test_no_other_file_writes_a_version() -> None:
    # The example project's own egg (for scrapyd-deploy) has its own version.
    allowed = {"scrapy_sticky_proxy/__init__.py", "example_project/setup.py"}
    files = [ROOT / "setup.cfg", ROOT / "pyproject.toml"]
    for tree in ("scrapy_sticky_proxy", "docs", "example_project", "tests"):
        files += (ROOT / tree).rglob("*.py")
    written = [
        str(path.relative_to(ROOT))
        for path in files
        if str(path.relative_to(ROOT)) not in allowed
        and LITERAL.search(path.read_text())
    ]
    assert not written
    assert LITERAL.search((ROOT / "scrapy_sticky_proxy" / "__init__.py").read_text())
