"""What the built sdist and wheel hold, and that they carry one version.

Run by ``.ci/package`` on the files ``python -m build`` made::

    python .ci/check_dist.py DIST_DIR

- the sdist holds every file git tracks (the package, tests/, docs/,
  example_project/, bench/, .ci/, LICENSE, CHANGELOG.md...), except the
  dotfiles at the top: a user can run the tests from it (some read .ci/);
- the wheel holds every tracked file of the package (each module of each
  subpackage, the sandbox's included, and py.typed) and nothing else but its
  .dist-info; tests, docs and the example project stay out of it;
- the sdist's and the wheel's file names, the wheel's METADATA and
  ``scrapy_sticky_proxy.__version__`` (the one place the version is
  written) say the same version.

Exits with 1 and names every problem. Standard library only: it runs in
any Python, before anything is installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "scrapy_sticky_proxy"
NAME = "scrapy-sticky-proxy"


def tracked() -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return {name for name in out.decode().split("\0") if name}


def source_version() -> str:
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise SystemExit(f"no __version__ in {PACKAGE}/__init__.py")


def one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected one {pattern} in {dist}, found {found}")
    return found[0]


def check(dist: Path) -> list[str]:
    problems: list[str] = []
    version = source_version()
    files = tracked()
    stem = f"{PACKAGE}-{version}"

    sdist = one(dist, "*.tar.gz")
    if sdist.name != f"{stem}.tar.gz":
        problems.append(f"sdist {sdist.name}: expected {stem}.tar.gz")
    with tarfile.open(sdist) as archive:
        held = {
            member.name.split("/", 1)[1]
            for member in archive.getmembers()
            if member.isfile() and "/" in member.name
        }
    wanted = {
        name for name in files if name.startswith(".ci/") or not name.startswith(".")
    }
    for name in sorted(wanted - held):
        problems.append(f"sdist lacks {name} (MANIFEST.in)")

    wheel = one(dist, "*.whl")
    if wheel.name != f"{stem}-py3-none-any.whl":
        problems.append(f"wheel {wheel.name}: expected {stem}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        info = f"{stem}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    package_files = {name for name in files if name.startswith(f"{PACKAGE}/")}
    for name in sorted(package_files - members):
        problems.append(f"wheel lacks {name} (setup.cfg packages/package_data)")
    for name in sorted(members):
        if not name.startswith((f"{PACKAGE}/", f"{info}/")):
            problems.append(f"wheel holds {name}, outside the package")
    if metadata["Name"] != NAME or metadata["Version"] != version:
        problems.append(
            f"wheel METADATA says {metadata['Name']} {metadata['Version']}; "
            f"{PACKAGE}.__version__ says {version}"
        )
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(Path(sys.argv[1]))
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_dist: sdist and wheel complete, version {source_version()}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
