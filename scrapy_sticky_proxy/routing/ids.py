"""The session id codec: ``(key, generation)`` -> the id a provider accepts.

The same pair gives the same id in every process and run, different pairs
give different ids, and the id always fits the provider's alphabet and length
(:class:`IdRules`), whatever the key holds, so it can be written into a proxy
URL without escaping.

Pure logic: no Scrapy import, no I/O.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from typing import Any

ALNUM = string.ascii_letters + string.digits
#: Characters an id may use at all: RFC 3986 "unreserved", which never need
#: escaping in a URL's userinfo and can never inject a header.
_URL_SAFE = frozenset(ALNUM + "-._~")
_STEM_LEN = 12
_DIGEST_SIZE = 64  # BLAKE2b's longest: one byte per character of the stem
_PERSON = b"sticky-proxy"
_PERSON_GEN = b"sticky-proxy/gen"
_RETRY_CHARS = frozenset("r" + string.digits)


@dataclass(frozen=True)
class IdRules:
    """What a provider accepts as a session id.

    *alphabet* lists the allowed characters (a subset of ``A-Za-z0-9-._~``,
    at least two distinct ones); ids are *min_len* to *max_len* long.
    """

    alphabet: str
    min_len: int
    max_len: int
    _charset: frozenset[str] = field(init=False, repr=False, compare=False)
    _table: bytes = field(init=False, repr=False, compare=False)
    _pad: str = field(init=False, repr=False, compare=False)
    _stem_len: int = field(init=False, repr=False, compare=False)
    _can_suffix: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        charset = frozenset(self.alphabet)
        if len(charset) < 2:
            raise ValueError("IdRules.alphabet needs at least two distinct characters")
        if not charset <= _URL_SAFE:
            raise ValueError("IdRules.alphabet may only hold A-Za-z0-9 and -._~")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError("IdRules needs 1 <= min_len <= max_len")
        object.__setattr__(self, "_charset", charset)
        # Sorted: the encoding does not depend on how the alphabet is spelled.
        digits = "".join(sorted(charset))
        # Byte b of the digest -> digits[b % len(digits)], for bytes.translate.
        table = bytes(ord(digits[b % len(digits)]) for b in range(256))
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_pad", digits[0])
        stem_len = max(self.min_len, min(_STEM_LEN, self.max_len))
        object.__setattr__(self, "_stem_len", stem_len)
        object.__setattr__(self, "_can_suffix", charset >= _RETRY_CHARS)

    def accepts(self, value: str) -> bool:
        """Whether *value* is a valid id under these rules."""
        return self.min_len <= len(value) <= self.max_len and self._charset.issuperset(
            value
        )


# Prepared once: a copy is cheaper than a new one.
_HASH = hashlib.blake2b(digest_size=_DIGEST_SIZE, person=_PERSON)
_HASH_GEN = hashlib.blake2b(digest_size=_DIGEST_SIZE, person=_PERSON_GEN)


def _encode(data: str, prepared: Any, rules: IdRules) -> str:
    """One character per digest byte (see :func:`session_id`): a C-level
    ``bytes.translate`` instead of a base conversion of a 128-bit integer,
    which cost about two thirds of a new key's routing (issue 16)."""
    hasher = prepared.copy()
    hasher.update(data.encode("utf-8", "surrogatepass"))
    length = rules._stem_len
    stem = hasher.digest()[:length].translate(rules._table).decode("ascii")
    if length > _DIGEST_SIZE:  # only rules that ask for ids this long
        stem += rules._pad * (length - _DIGEST_SIZE)
    return stem


def session_id(key: str, generation: int, rules: IdRules) -> str:
    """The session id for *key* at re-roll *generation* under *rules*.

    - Generation 0 of a key that already fits the rules is the key itself
      (a YouTube video id such as ``dQw4w9WgXcQ`` is used as is).
    - Otherwise the *stem* is made of the first ``L = clamp(12, min_len,
      max_len)`` bytes of the BLAKE2b-512 digest of the key (UTF-8, lone
      surrogates kept via ``surrogatepass``; personalised ``sticky-proxy``),
      each byte ``b`` written as ``digits[b % len(digits)]``, where *digits*
      is the alphabet in sorted order (past 64 characters, the first digit
      repeated). With 62 characters a character carries 5.94 of the 5.95
      bits it could (the remainder of 256 / 62 favours 8 characters
      slightly): 12 carry 71.3 bits. IPRoyal's "exactly 8" rule leaves 47.6
      bits: about one chance in 40,000 that two of 100,000 keys share an
      exit. Nothing secret goes in (an id is a hash of its key only), and
      nothing but the key's hash comes out.
    - Generation ``n > 0`` is ``stem + "r" + str(n)`` when ``r`` and the digits
      are allowed and it fits *max_len*; otherwise the L-character encoding of
      ``key + "\\0" + str(n)`` hashed under a second personalisation
      (``sticky-proxy/gen``), so it can never equal generation 0 of the key
      ``key + "\\0" + str(n)``.

    Deterministic (never uses :func:`hash`), so every process agrees.
    """
    if not isinstance(key, str):
        raise TypeError(f"session key must be a str, not {type(key).__name__}")
    if generation < 0:
        raise ValueError(f"generation must be >= 0, got {generation}")
    if generation == 0:
        # accepts(), without the call; ":" (in every URL) is in no alphabet
        fits = rules.min_len <= len(key) <= rules.max_len and ":" not in key
        if fits and rules._charset.issuperset(key):
            return key
        return _encode(key, _HASH, rules)
    if rules._can_suffix:
        retry = f"{_encode(key, _HASH, rules)}r{generation}"
        if len(retry) <= rules.max_len:
            return retry
    return _encode(f"{key}\x00{generation}", _HASH_GEN, rules)
