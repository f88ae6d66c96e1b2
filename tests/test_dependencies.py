"""Every import is a declared dependency, and the test helpers that start
servers put the server's own words on screen when it does not start."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

from .redis_server import RedisServer
from .servers import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
DIST = "scrapy-sticky-proxy"
# Our own top-level names: the package, the tests, the benchmarks, and the
# example project's modules (its spiders import ``demo``).
LOCAL = {"scrapy_sticky_proxy", "tests", "bench", "demo"}
# Which requirements each tree may rely on: the package itself only on
# install_requires and the ``redis`` and ``playwright`` extras (each
# imported only where asked for, with a message naming the extra when
# missing).
TREES = {
    "scrapy_sticky_proxy": ("", "redis", "playwright"),
    "tests": ("", "test"),
    "example_project": ("", "redis", "test"),
    "bench": ("", "test", "bench"),
}
# Tools the tests run as programs rather than import: module or script ->
# the distribution that provides it.
PROGRAMS = {"scrapyd": "scrapyd", "scrapyd-deploy": "scrapyd-client"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extras: tuple[str, ...]) -> set[str]:
    """Distributions our installed metadata requires, for these extras
    ("" is install_requires)."""
    names = set()
    for requirement in md.requires(DIST) or ():
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert name is not None
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if (extra.group(1) if extra else "") in extras:
            names.add(canonical(name.group(0)))
    return names


def imported_modules(tree: Path) -> dict[str, str]:
    """Top-level module -> first file importing it, for every absolute
    import under *tree*, lazy ones inside functions included."""
    found: dict[str, str] = {}
    for path in sorted(tree.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(tree.parent)))
    return found


# Import name -> distribution, for optional modules CI does not install (the
# bench extra) and whose names differ; installed ones are looked up.
NOT_INSTALLED = {"rotating_proxies": "scrapy-rotating-proxies"}


def distributions_of(module: str) -> set[str]:
    found = md.packages_distributions().get(module)
    if found:
        return {canonical(d) for d in found}
    return {canonical(NOT_INSTALLED.get(module, module))}


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_import_is_declared(tree: str) -> None:
    allowed = declared(TREES[tree])
    missing = []
    for module, where in imported_modules(ROOT / tree).items():
        if module in sys.stdlib_module_names or module in LOCAL:
            continue
        providers = distributions_of(module)
        if not providers & allowed:
            missing.append(f"{module} ({where}; from {sorted(providers) or '?'})")
    assert not missing, f"imported but not declared for {tree}: {missing}"


def test_programs_the_tests_run_are_declared() -> None:
    text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    allowed = declared(TREES["tests"])
    for program, dist in PROGRAMS.items():
        assert program in text, f"{program} is no longer used: update PROGRAMS"
        assert canonical(dist) in allowed, f"{dist} is not in the test extra"


def test_the_checker_sees_an_undeclared_import(tmp_path: Path) -> None:
    # The check itself can fail: an import of a real, installed but
    # undeclared distribution is reported.
    (tmp_path / "x.py").write_text("def f():\n    import pluggy\n")
    assert set(imported_modules(tmp_path)) == {"pluggy"}
    assert not distributions_of("pluggy") & declared(TREES["scrapy_sticky_proxy"])


def test_a_server_that_exits_shows_its_output() -> None:
    server = ServerProcess(
        "fake-server",
        [sys.executable, "-c", "print('cannot bind: Address already in use')"],
    )
    with pytest.raises(RuntimeError) as info:
        server.wait_ready("Ready")
    assert "fake-server exited with 0" in str(info.value)
    assert "Address already in use" in str(info.value)


def test_a_server_that_never_gets_ready_is_stopped_with_its_output() -> None:
    server = ServerProcess(
        "slow-server",
        [
            sys.executable,
            "-c",
            "import time; print('warming up', flush=True); time.sleep(600)",
        ],
    )
    with pytest.raises(RuntimeError, match="did not start within 1 s") as info:
        server.wait_ready("Ready", timeout=1)
    assert "warming up" in str(info.value)
    assert server.proc.poll() is not None


def test_a_missing_scrapyd_is_named() -> None:
    # What hid the missing test extra: the module's own error is on screen.
    server = ServerProcess("scrapyd", [sys.executable, "-m", "no_such_scrapyd"])
    with pytest.raises(RuntimeError, match="No module named no_such_scrapyd"):
        server.wait_ready("Site starting")


def test_redis_server_shows_why_it_did_not_start(tmp_path: Path) -> None:
    first = RedisServer(tmp_path).start()
    try:
        with pytest.raises(RuntimeError) as info:
            RedisServer(tmp_path, port=first.port).start()
        assert "Address already in use" in str(info.value)
    finally:
        first.stop()


def test_ci_runs_the_readme_test_command_in_a_new_virtualenv() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("# 2. The tests", 1)[1].split("```", 1)[0]
    command = block.splitlines()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    lines = ci.splitlines()
    # In a subshell: under set -e a failure left of && would not stop CI.
    line = f"( {command} )"
    assert line in lines
    assert lines.index(line) > lines.index('python3 -m venv "$venv"')
