"""The README's main job: the example project's crawl on the embedded
sandbox, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .conftest import assert_absent

PROJECT = Path(__file__).resolve().parent.parent / "example_project"


def copy_of_project(where: Path) -> Path:
    """A copy of example_project (its files as in a clone) under *where*.
    A crawl in the project writes there (its FEEDS, which ``-O`` adds to,
    and its give-up file): in the checkout, a test running at the same time
    in another pytest-xdist worker would see those files appear."""
    project = where / "example_project"
    ignore = shutil.ignore_patterns("__pycache__", "*.jsonl", ".scrapy")
    shutil.copytree(PROJECT, project, ignore=ignore)
    return project


def crawl_example(
    *args: str,
    path_first: Path | None = None,
    spider: str = "demo",
    environ: dict[str, str] | None = None,
    **settings: object,
) -> subprocess.CompletedProcess[str]:
    """``scrapy crawl <spider>`` in (a copy of) example_project, as a user runs
    it (in *environ* if given, else in ours)."""
    command = [sys.executable, "-m", "scrapy", "crawl", spider, *args]
    for name, value in settings.items():
        command += ["-s", f"{name}={value}"]
    # This checkout's code, whatever an editable install points to.
    path = [str(PROJECT.parent)] if path_first is None else [str(path_first)]
    if path_first is not None:
        path.append(str(PROJECT.parent))
    with tempfile.TemporaryDirectory(prefix="example-") as where:
        return subprocess.run(
            command,
            cwd=copy_of_project(Path(where)),
            env={
                **(os.environ if environ is None else environ),
                "PYTHONPATH": os.pathsep.join(path),
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def test_example_crawl(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    proc = crawl_example(
        "-O",
        str(items),
        STICKY_PROXY_GAVE_UP_FILE=tmp_path / "gave_up.jsonl",
        DEMO_ITEMS=40,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    pages = [r for r in rows if "title" in r]
    parts = [r for r in rows if "part" in r]
    assert len(pages) == 40 and len(parts) == 120
    assert "Demo summary (finished): items=40 distinct_exits=40 " in proc.stdout
    assert "items_split_across_exits=0" in proc.stdout
    assert "rerolls=0" not in proc.stdout  # the demo site bans a fifth of exits
    assert_absent("sandbox-secret-pw", proc.stdout + proc.stderr)


def test_example_pool_with_warmup(tmp_path: Path) -> None:
    """``scrapy crawl demo_pool``: every request is banned without the
    cookie /warmup sets for its exit, so no ban means each of the pool's 4
    sessions warmed up once and kept its cookie."""
    items = tmp_path / "items.jsonl"
    # As a user runs it: without the tests' own setting (conftest.py), and
    # with a cache of tldextract's own, empty.
    environ = {**os.environ, "TLDEXTRACT_CACHE": str(tmp_path / "tld")}
    del environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"]
    proc = crawl_example(
        "-O", str(items), spider="demo_pool", environ=environ, DEMO_ITEMS=40
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The site's cookie made Scrapy check its domain against the Public
    # Suffix List: read from tldextract's copy, none fetched (before: from
    # publicsuffix.org, a DNS query off this machine first).
    assert (tmp_path / "tld" / "publicsuffix.org-tlds").is_dir()
    assert not (tmp_path / "tld" / "urls").exists()
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    assert len(rows) == 40 and len({r["exit"] for r in rows}) == 4
    summary = "items=40 distinct_exits=4 warmups=4 bans=0 gave_up=0"
    assert f"Pool summary (finished): {summary}" in proc.stdout
    assert_absent("sandbox-secret-pw", proc.stdout + proc.stderr)


def test_redis_backend_needs_an_asyncio_reactor() -> None:
    proc = crawl_example(
        STICKY_PROXY_BACKEND="redis",
        TWISTED_REACTOR="twisted.internet.selectreactor.SelectReactor",
    )
    assert "TWISTED_REACTOR: the redis backend needs asyncio" in proc.stderr


def test_example_crawl_without_the_redis_extra(tmp_path: Path) -> None:
    """The README's main command installs the package without extras: the
    project must not need scrapy-redis for `scrapy crawl demo` (Scrapy
    imports every spider module, demo_redis's included)."""
    blocked = tmp_path / "blocked" / "scrapy_redis"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(
        'raise ImportError("scrapy-redis is not installed")\n'
    )
    proc = crawl_example(
        "-O", str(tmp_path / "items.jsonl"), path_first=blocked.parent, DEMO_ITEMS=5
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Demo summary (finished): items=5 " in proc.stdout


def test_two_crawlers_script_finishes_and_leaves_nothing_behind() -> None:
    # The README's two-crawler block: one command that ends by itself.
    before = sorted(PROJECT.rglob("*"))
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "two_crawlers.py"), "--items", "30"],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT.parent)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "items+follow-ups=120 (expected 120), pages served twice: 0" in proc.stdout
    after = sorted(p for p in PROJECT.rglob("*") if "__pycache__" not in p.parts)
    assert after == [p for p in before if "__pycache__" not in p.parts]
