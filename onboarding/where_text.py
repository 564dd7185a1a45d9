"""Property filters (``where``) as people type them: ``key=value`` lines, or a JSON object.

Shared by every editor that takes a filter (flow steps, segments, trigger rules), so they read and
write the same text the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError


def parse_scalar(text: str) -> Any:
    """``100`` → 100, ``true`` → True, ``"100"`` → "100", anything else → the text itself."""
    text = text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, bool | int | float | str):
        return value
    return text


def format_scalar(value: Any) -> str:
    """The inverse of :func:`parse_scalar`: text that would read back as another type is quoted."""
    if isinstance(value, str):
        return json.dumps(value) if parse_scalar(value) != value else value
    return json.dumps(value)


def parse_where(text: str) -> dict[str, Any]:
    """A property filter from ``key=value`` lines or a JSON object; empty text is no filter."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as error:
            raise ValidationError(f"Not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise ValidationError("Write a JSON object, or key=value lines.")
        return value
    where: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"Line {number}: write key=value (for example plan=pro).")
        where[key.strip()] = parse_scalar(value)
    return where


def format_where(where: Mapping[str, Any] | None) -> str:
    if not where:
        return ""
    if any(isinstance(value, dict | list) for value in where.values()):
        return json.dumps(where, ensure_ascii=False)
    return "\n".join(f"{key}={format_scalar(value)}" for key, value in where.items())
