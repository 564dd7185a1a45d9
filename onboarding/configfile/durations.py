"""Durations as written in configuration: ``90s``, ``5m``, ``24h``, ``7d``.

One parser and one formatter, shared by every section of the configuration file and by segment
definitions, so a duration reads and writes the same way everywhere. The formatter picks the
largest unit that divides the value exactly (``86400`` → ``1d``, ``90`` → ``90s``), so export is
deterministic and an imported file exports back to the canonical spelling.
"""

from __future__ import annotations

import re

UNITS: dict[str, int] = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(\d+)([smhd])$")
# Far beyond any sensible window or delay (about 27 years); keeps values inside 32-bit columns.
MAX_SECONDS = 10**9


class DurationError(ValueError):
    """A duration that is not ``<whole number><s|m|h|d>``."""


def parse_duration(text: object) -> int:
    """Seconds in ``text`` (``"90s"``, ``"5m"``, ``"24h"``, ``"7d"``); zero is allowed."""
    if not isinstance(text, str):
        raise DurationError("must be a duration such as 90s, 5m, 24h or 7d")
    match = _DURATION.match(text.strip())
    if match is None:
        raise DurationError(f"must be a duration such as 90s, 5m, 24h or 7d, not {text!r}")
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if seconds > MAX_SECONDS:
        raise DurationError(f"is too long ({text!r}; at most {MAX_SECONDS // 86400}d)")
    return seconds


def is_duration(text: object) -> bool:
    return isinstance(text, str) and _DURATION.match(text.strip()) is not None


def format_duration(seconds: int) -> str:
    """The canonical spelling: the largest unit that divides ``seconds`` exactly; 0 is ``0s``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
        raise DurationError(f"cannot format {seconds!r} as a duration")
    if seconds == 0:
        return "0s"
    for unit, size in UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: 1 second divides everything")
