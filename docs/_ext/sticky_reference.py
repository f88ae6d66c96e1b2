"""Sphinx object types for the reference pages (docs/reference/).

Each entry of the reference is a directive that Sphinx indexes and can
link to, and that tests/test_reference.py reads back to check it against
the code:

- settings: Sphinx's own ``{confval}`` (with ``:type:`` and ``:default:``);
- ``{metakey}`` sticky_proxy_key: a ``Request.meta`` key;
- ``{stat}`` sticky_proxy/rerolls sticky_proxy/rerolls/count: one or more
  stats (names separated by spaces: stat names hold none), ``<word>`` for a
  part that varies;
- ``{closereason}`` sticky_proxy_auth_failed: a spider close reason;
- commands: Sphinx's own ``{program}`` and ``{option}``.

Each has a role of the same name for links (``{stat}`` names with a
``<part>`` cannot be linked: the role reads ``<...>`` as a target).
"""

from __future__ import annotations

from typing import Any

from sphinx.domains.std import GenericObject


class StatNames(GenericObject):
    """``{stat}`` with several names on its line, one entry per name."""

    indextemplate = "pair: %s; stat"

    def get_signatures(self) -> list[str]:
        return self.arguments[0].split()


# Types the API's signatures name that no page documents (Scrapy's, the
# standard library's, and internal ones): shown as code, without a link,
# since no intersphinx may reach the network. Any other missing target
# stays a warning, which the build treats as an error.
EXTERNAL_TYPES = frozenset(
    {
        "AsyncIterator",
        "BaseSettings",
        "Crawler",
        "HealthStore",
        "Iterable",
        "Request",
        "Response",
        "StickyProxyConfig",
        "re.Pattern",
    }
)


def _external_type(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") == "py" and node.get("reftarget") in EXTERNAL_TYPES:
        return contnode
    return None


def setup(app: Any) -> dict[str, Any]:
    app.add_object_type(
        "metakey", "metakey", indextemplate="pair: %s; Request.meta key"
    )
    app.add_object_type("stat", "stat", indextemplate="pair: %s; stat")
    app.add_directive_to_domain("std", "stat", StatNames, override=True)
    app.add_object_type(
        "closereason", "closereason", indextemplate="pair: %s; close reason"
    )
    app.connect("missing-reference", _external_type)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
