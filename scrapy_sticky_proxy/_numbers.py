"""A number read from Redis, a file or meta (untrusted) that a float holds."""

from __future__ import annotations

import math
from typing import TypeGuard


def finite(value: object) -> TypeGuard[float]:
    """Whether *value* is an int or a float (not a bool) that is finite as a
    float: a 400-digit int from JSON is not (``math.isfinite`` raises
    OverflowError on it)."""
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is int:
        return -(2**1023) < value < 2**1023
    return False
