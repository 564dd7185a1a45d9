"""Errors of the tracking API: each carries a machine-readable code and the JSON path it is about."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused event: its index in the batch (None for a single call), why, and its payload."""

    index: int | None
    problem: Problem
    payload: str


class EnvelopeError(Exception):
    """The request as a whole cannot be read: answered with a 4xx and nothing is stored."""

    def __init__(self, status: int, code: str, path: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.problem = Problem(code, path, message)


class EventRejected(Exception):
    """One event is invalid; the others in its batch are still stored."""

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(code, path, message)
