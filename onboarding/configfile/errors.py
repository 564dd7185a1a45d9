"""Errors that carry the path of the offending value, e.g. ``flows[0].steps[2].event: required``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def join_path(base: str, part: str | int) -> str:
    """``join_path("flows", 0)`` → ``flows[0]``; ``join_path("flows[0]", "slug")`` → ``flows[0].slug``."""
    if isinstance(part, int):
        return f"{base}[{part}]"
    return f"{base}.{part}" if base else part


class ProblemsError(ValueError):
    """One or more problems, all reported together."""

    code = "invalid"

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
