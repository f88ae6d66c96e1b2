"""Location per request: which country codes exist, how each provider writes
one into the proxy credentials, and the session key of a key in a country.

A provider preset lists its :class:`Place` entries: one per location
parameter it reads (today ``country``; a city or an ASN is one more entry),
each a fragment written just before the session id. :func:`location_text`
turns a request's location into those fragments, or raises
:class:`LocationError` when the preset cannot express it: a request never
leaves from a silently wrong place.

Pure logic: no Scrapy import, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from .secrets import shown

#: Where a preset's location fragments go in the credentials (internal when
#: the preset places the session id; a ``{session}`` template may hold it).
LOCATION = "{location}"
INVALID = "country/invalid"
UNSUPPORTED = "country/unsupported"

# ISO 3166-1 alpha-2, the 249 assigned codes (as in tzdata's iso3166.tab).
COUNTRY_CODES = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI
    BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN
    CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK
    FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK
    ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP
    NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF
    TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW""".split()  # noqa: SIM905 - a table reads better
)
# Codes people write for an assigned one (reserved, not assigned).
_HINTS = {"UK": "GB", "EL": "GR"}

# PacketStream reads a country name, not a code (unverified: client code
# only). Countries missing here are refused, never guessed.
PACKETSTREAM_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "AR": "Argentina", "AT": "Austria", "AU": "Australia", "BE": "Belgium",
        "BR": "Brazil", "CA": "Canada", "CH": "Switzerland", "CL": "Chile",
        "CN": "China", "CO": "Colombia", "CZ": "CzechRepublic", "DE": "Germany",
        "DK": "Denmark", "ES": "Spain", "FI": "Finland", "FR": "France",
        "GB": "UnitedKingdom", "GR": "Greece", "HK": "HongKong", "HU": "Hungary",
        "ID": "Indonesia", "IE": "Ireland", "IL": "Israel", "IN": "India",
        "IT": "Italy", "JP": "Japan", "MX": "Mexico", "MY": "Malaysia",
        "NL": "Netherlands", "NO": "Norway", "NZ": "NewZealand",
        "PH": "Philippines", "PL": "Poland", "PT": "Portugal", "RO": "Romania",
        "SE": "Sweden", "SG": "Singapore", "TH": "Thailand", "TR": "Turkey",
        "UA": "Ukraine", "US": "UnitedStates", "VN": "Vietnam",
        "ZA": "SouthAfrica",
    }
)  # fmt: skip


class LocationError(ValueError):
    """A location a request cannot have: *reason* is what its record and
    stat say (``country/invalid``, ``country/unsupported``)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Place:
    """Where a provider reads one location parameter (*param*): *fragment*,
    with the value in place of ``{}``, written before the session id; the
    value written in *style*: the code in ``upper`` or ``lower`` case, or
    its name in *names* (``names``)."""

    param: str
    fragment: str
    style: Literal["upper", "lower", "names"] = "lower"
    names: Mapping[str, str] | None = None

    @property
    def marker(self) -> str:
        """The fragment's fixed part: shows a URL already sets *param*."""
        return self.fragment.partition("{}")[0]

    def text(self, value: str, provider: str) -> str:
        if self.style == "upper":
            return self.fragment.format(value)
        if self.style == "lower":
            return self.fragment.format(value.lower())
        name = (self.names or {}).get(value)
        if name is None:
            raise LocationError(
                UNSUPPORTED,
                f"the {provider} preset has no name for {self.param} {value}: its "
                f"names are known for {', '.join(sorted(self.names or {}))}",
            )
        return self.fragment.format(name)


def country_code(value: object) -> str:
    """*value* (untrusted: meta, settings) as an ISO 3166-1 alpha-2 code in
    upper case; :class:`LocationError` if it is none."""
    code = value.strip().upper() if isinstance(value, str) else None
    if code in COUNTRY_CODES:
        return code
    hint = _HINTS.get(code or "")
    raise LocationError(
        INVALID,
        f"{shown(value)} is not an ISO 3166-1 alpha-2 country code (two letters "
        f"such as US, DE, BR){f'; for this country write {hint}' if hint else ''}",
    )


def location_text(
    places: tuple[Place, ...], location: Mapping[str, str], provider: str
) -> str:
    """The fragments that put *location* (param -> value) where *places*
    say, in their order; :class:`LocationError` for a param with no place."""
    missing = set(location) - {place.param for place in places}
    if missing:
        param = min(missing)
        raise LocationError(
            UNSUPPORTED,
            f"the {provider} proxy URL cannot choose a {param}"
            if places
            else f"the {provider} preset cannot choose a {param}",
        )
    return "".join(
        place.text(location[place.param], provider)
        for place in places
        if place.param in location
    )


def located_key(key: str, country: str | None) -> str:
    """The session key of *key* in *country*: its own generation, ban and
    session id. NUL never occurs in a key derived from a URL (Scrapy
    percent-encodes it), so it never equals a key without a country."""
    return key if not country else f"{key}\x00{country}"
