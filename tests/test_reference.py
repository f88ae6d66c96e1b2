"""The reference (docs/reference/*.md) against the code (issue 17).

The reference pages are the one place where settings, meta keys, stats,
close reasons, commands and the public classes are described; each entry
is a Sphinx directive (``{confval}``, ``{metakey}``, ``{stat}``,
``{closereason}``, ``{option}``, ``autoclass``). These tests read the
entries back and compare them with what the code defines, both ways: a
name the code has and the reference lacks fails (naming the page to add it
to), and so does a name the reference has and the code does not. Each
documented default written as a plain value is the code's default.

Nothing here reads README.md, and nothing here starts a crawl.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scrapy.settings import Settings

import scrapy_sticky_proxy
from scrapy_sticky_proxy import _meta
from scrapy_sticky_proxy.command import StickyProxyCommand
from scrapy_sticky_proxy.commands.crawl import FAILURES
from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.config.names import KNOWN_SETTINGS

from .test_loud_config import config_string_names

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "scrapy_sticky_proxy"
REFERENCE = ROOT / "docs" / "reference"
URL = "http://user-{session}:s3cret-pw@gw.example:8000"


# -- reading the reference ---------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    names: tuple[str, ...]
    options: dict[str, str]


def entries(page: str, directive: str) -> list[Entry]:
    """The ```{directive} entries of docs/reference/<page>."""
    text = (REFERENCE / page).read_text(encoding="utf-8")
    found = []
    for match in re.finditer(
        rf"^```\{{{directive}\}} (.+)\n((?::\w+: .*\n)*)", text, re.M
    ):
        options = dict(re.findall(r"^:(\w+): (.*)$", match.group(2), re.M))
        found.append(Entry(tuple(match.group(1).split()), options))
    return found


def names(page: str, directive: str) -> set[str]:
    return {name for entry in entries(page, directive) for name in entry.names}


def differences(code: set[str], documented: set[str], what: str, page: str) -> str:
    """An assertion message that says what to add where, or what to drop."""
    lines = []
    if missing := sorted(code - documented):
        lines.append(
            f"{what} missing from docs/reference/{page}: {', '.join(missing)}; "
            f"add an entry for each there"
        )
    if extra := sorted(documented - code):
        lines.append(
            f"{what} in docs/reference/{page} that the code does not have: "
            f"{', '.join(extra)}; remove them there (or fix the name)"
        )
    return "\n".join(lines)


# -- settings ------------------------------------------------------------------


def test_every_setting_the_code_reads_is_in_the_reference_and_back() -> None:
    assert config_string_names() == KNOWN_SETTINGS
    documented = names("settings.md", "confval")
    ours = {name for name in documented if name.startswith("STICKY_PROXY_")}
    problem = differences(set(KNOWN_SETTINGS), ours, "settings", "settings.md")
    assert not problem, problem
    # Other packages' settings documented here are ones config/ reads.
    read = "".join(p.read_text() for p in (PACKAGE / "config").glob("*.py"))
    foreign = {n for n in documented - ours if f'"{n}"' not in read}
    assert not foreign, f"docs/reference/settings.md: config/ reads no {foreign}"


def test_every_provider_preset_is_in_the_reference() -> None:
    from scrapy_sticky_proxy.routing.providers import PRESETS

    text = (REFERENCE / "settings.md").read_text(encoding="utf-8")
    entry = text.split("```{confval} STICKY_PROXY_PROVIDER\n", 1)[1].split("```", 1)[0]
    documented = set(re.findall(r"`([a-z]+)`", entry))
    problem = differences(set(PRESETS), documented, "provider presets", "settings.md")
    assert not problem, problem


def warm_up(request: Any, session: Any) -> None:
    return None


# What a setting needs around it to shape the configuration at all.
POOLED = {"STICKY_PROXY_SESSION_POOL": "host"}
CONTEXT: dict[str, dict[str, Any]] = {
    "STICKY_PROXY_SESSION_POOL_SIZE": POOLED,
    "STICKY_PROXY_SESSION_POOL_SIZES": POOLED,
    "STICKY_PROXY_SESSION_SLOTS": POOLED,
    "STICKY_PROXY_SESSION_SLOT_CONCURRENCY": POOLED,
    "STICKY_PROXY_WARMUP_MAX_FAILURES": {"STICKY_PROXY_WARMUP": warm_up},
    "STICKY_PROXY_SHARE_COOKIES": {"STICKY_PROXY_BACKEND": "redis"},
}
# A value other than the default, where "one more" or "not" does not do.
OTHER: dict[str, Any] = {
    "STICKY_PROXY_PROVIDER": "tor",
    "STICKY_PROXY_KEY": "host",
    "STICKY_PROXY_SESSION_POOL": "host",
    "STICKY_PROXY_SESSION_POOL_SIZES": {"example.com": 2},
    "STICKY_PROXY_BAN_STATUSES": [403],
    "STICKY_PROXY_BAN_PATTERNS": ["captcha"],
    "STICKY_PROXY_BAN_EXCEPTIONS": ["builtins.ConnectionResetError"],
    "STICKY_PROXY_ALLOW_HANDLERS": ["myproject.handlers.Handler"],
    "STICKY_PROXY_BACKEND": "redis",
    "STICKY_PROXY_NAMESPACE": "elsewhere",
    "STICKY_PROXY_SERIALIZER_CLASSES": ["myproject.requests.MyRequest"],
    "REDIS_PARAMS": {"socket_timeout": 3},
}
# Documented defaults the configuration object cannot show.
UNSEEN = {
    # Changes which names the check refuses, not the configuration: its
    # default (nothing let through) is what test_loud_config's misspelt-name
    # tests rely on.
    "STICKY_PROXY_EXTRA_SETTINGS",
    # Scrapy's own default; we only check credentials against it.
    "HTTPPROXY_AUTH_ENCODING",
}


def plain_defaults() -> Iterator[tuple[str, Any]]:
    """(setting, default) for every default written as one Python literal
    in backquotes; prose defaults ("unset", "3 x DOWNLOAD_TIMEOUT") are not."""
    for entry in entries("settings.md", "confval"):
        text = entry.options.get("default", "")
        if match := re.fullmatch(r"`([^`]+)`", text):
            try:
                value = ast.literal_eval(match.group(1))
            except (ValueError, SyntaxError):
                continue  # a name, such as `DOWNLOAD_DELAY`
            yield entry.names[0], value


def parsed(**values: Any) -> StickyProxyConfig:
    values.setdefault("STICKY_PROXY_URL", URL)
    return StickyProxyConfig.from_settings(Settings(values))


def other_than(name: str, default: Any) -> Any:
    if name in OTHER:
        return OTHER[name]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default * 2
    raise AssertionError(f"{name}: give a value other than {default!r} in OTHER")


def test_the_defaults_are_read_from_the_reference() -> None:
    """The parsing below cannot skip them all unseen."""
    found = dict(plain_defaults())
    assert len(found) >= 45, sorted(found)
    assert found["STICKY_PROXY_MAX_REROLLS"] == 5


@pytest.mark.parametrize(
    ("name", "default"),
    [(name, value) for name, value in plain_defaults() if name not in UNSEEN],
    ids=repr,
)
def test_a_documented_default_is_the_code_default(name: str, default: Any) -> None:
    """Set to its documented default, a setting parses as when it is
    absent; set to another value, it does not (or the first check could
    not fail)."""
    context = CONTEXT.get(name, {})
    absent = parsed(**context)
    assert parsed(**context, **{name: default}) == absent, (
        f"{name}: the default in docs/reference/settings.md, {default!r}, is "
        "not the code's"
    )
    assert parsed(**context, **{name: other_than(name, default)}) != absent


# -- Request.meta keys ---------------------------------------------------------------


def test_every_public_meta_key_is_in_the_reference_and_back() -> None:
    """The public keys are _meta's constants whose value has no leading
    underscore (the private ones start with ``_sticky_proxy_``)."""
    code = {
        value
        for name, value in vars(_meta).items()
        if name.isupper() and isinstance(value, str) and not value.startswith("_")
    }
    problem = differences(code, names("meta.md", "metakey"), "meta keys", "meta.md")
    assert not problem, problem


# -- close reasons -------------------------------------------------------------------


def close_reasons() -> set[str]:
    """Module-level ``NAME = "sticky_proxy_..."`` constants outside _meta:
    the reasons the package closes a spider with."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_meta.py" or "sandbox" in path.parts:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and re.fullmatch(r"sticky_proxy_[a-z_]+", node.value.value)
            ):
                found.add(node.value.value)
    return found


def test_every_close_reason_is_in_the_reference_and_back() -> None:
    documented = names("close-reasons.md", "closereason")
    problem = differences(
        close_reasons(), documented, "close reasons", "close-reasons.md"
    )
    assert not problem, problem


def test_every_close_reason_makes_scrapy_crawl_exit_with_1() -> None:
    """Each is a crawl that failed (the reference says so of all of them).
    sticky_proxy_warmup_error, added after the exit status, exited with 0."""
    assert close_reasons() == FAILURES


# -- commands ------------------------------------------------------------------------


def test_every_option_of_scrapy_sticky_proxy_is_in_the_reference_and_back() -> None:
    parser, command = argparse.ArgumentParser(), StickyProxyCommand()
    command.settings = Settings()
    command.add_options(parser)
    options = {  # Scrapy's own (--logfile, --set, ...) are in "Global Options"
        option
        for group in parser._action_groups
        if group.title != "Global Options"
        for action in group._group_actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    syntax = StickyProxyCommand().syntax()
    subcommands = set(re.findall(r"(?:^|\| )([a-z_]+)", syntax))
    assert subcommands == {"status", "requeue"}
    text = (REFERENCE / "commands.md").read_text(encoding="utf-8")
    program = text.split("```{program} scrapy sticky_proxy", 1)[1]
    program = program.split("```{program}", 1)[0]
    documented = set(re.findall(r"^```\{option\} (\S+)", program, re.M))
    problem = differences(
        options | subcommands, documented, "scrapy sticky_proxy", "commands.md"
    )
    assert not problem, problem


# -- the public API ------------------------------------------------------------------


def test_every_public_name_is_in_the_reference_and_back() -> None:
    text = (REFERENCE / "api.md").read_text(encoding="utf-8")
    documented = set(
        re.findall(
            r"^\.\. auto(?:class|exception):: scrapy_sticky_proxy\.(\w+)$", text, re.M
        )
    )
    problem = differences(
        set(scrapy_sticky_proxy.__all__), documented, "classes", "api.md"
    )
    assert not problem, problem


# -- stats ---------------------------------------------------------------------------
#
# The stats the package can write, found in its source: the first argument
# of every call of a stats collector's inc_value / set_value / max_value,
# the stats_base_key of get_retry_request (which writes <key>/count and
# <key>/reason_count/<reason>), and the keys every counters() method returns
# (written by _stats.Counter.flush). An argument is followed back through
# module constants, local assignments and, for a parameter, every call of
# its function in the package (Counter.inc's callers give most names); a
# part that stays unknown is "<*>", and matches any "<word>" of the
# reference.

SINKS = ("inc_value", "set_value", "max_value", "min_value")
# Calls of a callable kept in an attribute: (module, attribute) -> the
# function it holds.
ALIASES = {("ledger.py", "_inc"): "inc"}  # Ledger(..., count.inc)
# Names whose values the source cannot tell, by (module, function, name);
# each value must be a string constant of the package. "counters()" stands
# for the keys every counters() method returns.
DYNAMIC: dict[tuple[str, str, str], tuple[str, ...]] = {
    # router.refused() returns which stat the refusal counts under.
    ("middleware.py", "process_exception", "stat"): (
        "returns of routing/router.py refused",
    ),
    # Counter.flush writes what the stores' counters() return.
    ("_stats.py", "flush", "name"): ("counters()",),
}
UNKNOWN = "<*>"


class Source:
    """The package's modules, parsed, with each node's enclosing function."""

    def __init__(self) -> None:
        self.modules: dict[str, tuple[ast.Module, dict[str, Any]]] = {}
        self.function_of: dict[ast.AST, ast.FunctionDef | None] = {}
        self.module_of: dict[ast.AST, str] = {}
        self.used: set[tuple[str, str, str]] = set()
        self.origin: dict[str, str] = {}  # string constant -> where it is
        for path in sorted(PACKAGE.rglob("*.py")):
            if "sandbox" in path.parts:
                continue
            rel = path.relative_to(PACKAGE).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"))
            parts = path.with_suffix("").relative_to(PACKAGE).parts
            dotted = ".".join(("scrapy_sticky_proxy", *parts))
            module = importlib.import_module(dotted.removesuffix(".__init__"))
            self.modules[rel] = (tree, vars(module))
            self._index(tree, rel, None)
        self.calls = [
            node
            for tree, _ in self.modules.values()
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
        ]

    def _index(self, node: ast.AST, rel: str, function: Any) -> None:
        for child in ast.iter_child_nodes(node):
            self.function_of[child] = function
            self.module_of[child] = rel
            is_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            self._index(child, rel, child if is_function else function)

    def callee(self, call: ast.Call) -> str | None:
        """The name of the function *call* calls, aliases followed."""
        func = call.func
        if isinstance(func, ast.Name):
            return func.id
        if isinstance(func, ast.Attribute):
            rel = self.module_of[call]
            return ALIASES.get((rel, func.attr), func.attr)
        return None

    def values(self, node: ast.AST, depth: int = 0) -> list[str]:
        """Every string *node* can hold, UNKNOWN for the parts it cannot tell."""
        rel = self.module_of.get(node, "")
        namespace = self.modules.get(rel, (None, {}))[1]
        if depth > 6:
            return [UNKNOWN]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.origin.setdefault(node.value, f"{rel}:{node.lineno}")
            return [node.value]
        if isinstance(node, ast.IfExp):
            return self.values(node.body, depth + 1) + self.values(
                node.orelse, depth + 1
            )
        if isinstance(node, ast.JoinedStr):
            parts = [
                self.values(
                    p.value if isinstance(p, ast.FormattedValue) else p, depth + 1
                )
                for p in node.values
            ]
            return ["".join(combo) for combo in itertools.product(*parts)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = (
                self.values(node.left, depth + 1),
                self.values(node.right, depth + 1),
            )
            return [a + b for a, b in itertools.product(left, right)]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = namespace.get(node.value.id)
            value = getattr(owner, node.attr, None) if owner is not None else None
            return [value] if isinstance(value, str) else [UNKNOWN]
        if isinstance(node, ast.Name):
            function = self.function_of.get(node)
            where = (rel, getattr(function, "name", ""), node.id)
            if where in DYNAMIC:
                self.used.add(where)
                return [v for given in DYNAMIC[where] for v in self._given(given)]
            if function is not None and (
                found := self._local(function, node.id, depth)
            ):
                return found
            value = namespace.get(node.id)
            return [value] if isinstance(value, str) else [UNKNOWN]
        return [UNKNOWN]

    def _given(self, value: str) -> list[str]:
        if value.startswith("returns of "):
            return self.returns(*value.removeprefix("returns of ").split())
        if value != "counters()":
            return [value]
        return [key for key, _ in self.counters()]

    def returns(self, rel: str, name: str) -> list[str]:
        """Every string function *name* of module *rel* returns."""
        tree, _ = self.modules[rel]
        (function,) = (
            node
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name == name
        )
        found = [
            value
            for node in ast.walk(function)
            if isinstance(node, ast.Return) and node.value is not None
            for value in self.values(node.value, depth=1)
        ]
        return found or [UNKNOWN]

    def _local(self, function: Any, name: str, depth: int) -> list[str] | None:
        """A local assigned once, or a parameter followed to its callers."""
        assigned = [
            n.value
            for n in ast.walk(function)
            if isinstance(n, ast.Assign)
            and len(n.targets) == 1
            and isinstance(n.targets[0], ast.Name)
            and n.targets[0].id == name
        ]
        if len(assigned) == 1:
            return self.values(assigned[0], depth + 1)
        params = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
        if name not in params and name not in [a.arg for a in function.args.kwonlyargs]:
            return None
        if params and params[0] in ("self", "cls"):
            params = params[1:]
        found = []
        for call in self.calls:
            if self.callee(call) != function.name or call is function:
                continue
            if isinstance(call.func, ast.Attribute) and isinstance(
                call.func.value, ast.Name
            ):
                here = self.module_of[call]
                if (
                    call.func.value.id == "self"
                    and here != self.module_of[function]
                    and (here, call.func.attr) not in ALIASES
                ):
                    continue  # another class's method of that name
            given = {k.arg: k.value for k in call.keywords if k.arg}
            if name in params and params.index(name) < len(call.args):
                given[name] = call.args[params.index(name)]
            if name in given:
                found += self.values(given[name], depth + 1)
        return found or None

    def counters(self) -> Iterator[tuple[str, ast.AST]]:
        """(name, node) of the keys counters() methods return."""
        for tree, _ in self.modules.values():
            for function in ast.walk(tree):
                if (
                    isinstance(function, ast.FunctionDef)
                    and function.name == "counters"
                ):
                    for node in ast.walk(function):
                        keys = (
                            [k for k in node.keys if k is not None]
                            if isinstance(node, ast.Dict)
                            else [node.key]
                            if isinstance(node, ast.DictComp)
                            else []
                        )
                        for key in keys:
                            for value in self.values(key):
                                yield value, key

    def stats(self) -> dict[str, str]:
        """Stat name patterns -> where the code writes them."""
        found: dict[str, str] = {}
        for call in self.calls:
            where = f"{self.module_of[call]}:{call.lineno}"
            callee = self.callee(call)
            if callee in SINKS and call.args:
                for value in self.values(call.args[0]):
                    found.setdefault(value, where)
            for keyword in call.keywords:
                if callee == "get_retry_request" and keyword.arg == "stats_base_key":
                    for value in self.values(keyword.value):
                        found.setdefault(f"{value}/count", where)
                        found.setdefault(f"{value}/reason_count/{UNKNOWN}", where)
        return {
            name: self._origin(name) or where
            for name, where in found.items()
            if name.startswith(("sticky_proxy/", UNKNOWN))
        }

    def _origin(self, name: str) -> str | None:
        """Where the longest string constant in *name* is (a name passed to
        Counter.inc is written in _stats.py but spelt at its caller)."""
        parts = [c for c in self.origin if len(c) > 2 and c in name and c[-1] != "/"]
        return self.origin[max(parts, key=len)] if parts else None


def matches(pattern: str, other: str) -> bool:
    """Whether *pattern* (parts that vary as <word> or <*>) can be *other*."""
    regex = "".join(
        ".+" if re.fullmatch(r"<[^>]+>", part) else re.escape(part)
        for part in re.split(r"(<[^>]+>)", pattern)
    )
    return re.fullmatch(regex, other) is not None


def test_every_stat_the_code_can_write_is_in_the_reference_and_back() -> None:
    source = Source()
    code = source.stats()
    vague = sorted(
        f"{name} ({where})"
        for name, where in code.items()
        if re.match(r"(sticky_proxy/)?<\*>($|/)", name)
    )
    assert not vague, (
        f"cannot tell which stats these write: {', '.join(vague)}; name the values "
        "in DYNAMIC (tests/test_reference.py)"
    )
    documented = names("stats.md", "stat")
    missing = sorted(
        f"{name} (written at {where})"
        for name, where in code.items()
        if not any(matches(doc, name) for doc in documented)
    )
    extra = sorted(
        doc
        for doc in documented
        if not any(matches(name, doc) or matches(doc, name) for name in code)
    )
    problem = differences(set(missing), set(), "stats", "stats.md") + differences(
        set(), set(extra), "stats", "stats.md"
    )
    assert not problem, problem
    assert len(code) > 50


def test_the_dynamic_stat_names_are_still_the_code() -> None:
    source = Source()
    source.stats()
    assert source.used == set(DYNAMIC), "DYNAMIC has entries the code no longer has"
    constants = {
        node.value
        for tree, _ in source.modules.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    for values in DYNAMIC.values():
        plain = {v for v in values if v != "counters()" and " " not in v}
        assert plain <= constants


def test_what_the_addon_installs_is_the_reference_table() -> None:
    """Each component at the setting and priority api.md's table says."""
    from scrapy_sticky_proxy.addon import Addon

    settings = Settings({"STICKY_PROXY_URL": URL})
    Addon().update_settings(settings)
    installed = {
        (path, setting, str(priority))
        for setting in ("DOWNLOADER_MIDDLEWARES", "SPIDER_MIDDLEWARES", "EXTENSIONS")
        for path, priority in settings[setting].items()
        if path.startswith("scrapy_sticky_proxy")
    }
    handlers = settings["DOWNLOAD_HANDLERS"]
    installed |= (
        {(handlers["http"], "DOWNLOAD_HANDLERS", "`http` and `https`")}
        if handlers["http"] == handlers["https"]
        else set()
    )
    text = (REFERENCE / "api.md").read_text(encoding="utf-8")
    documented = set(
        re.findall(
            r"^\| `(scrapy_sticky_proxy\.[\w.]+)` \| `(\w+)`, ([^|]+?) \|", text, re.M
        )
    )
    problem = differences(
        {" ".join(row) for row in installed},
        {" ".join(row) for row in documented},
        "components the addon installs",
        "api.md",
    )
    assert not problem, problem
