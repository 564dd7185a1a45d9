"""Hashing people onto arms; pure (no Django), so any process computes the same arm."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Arm(Protocol):
    weight: int


A = TypeVar("A", bound=Arm)

_SCALE = float(16**15)


def position(seed: str, person_id: int) -> float:
    digest = hashlib.sha256(f"{seed}:{person_id}".encode()).hexdigest()
    return int(digest[:15], 16) / _SCALE


def pick(variants: Sequence[A], at: float) -> A:
    """The arm whose cumulative-weight range holds ``at``."""
    total = sum(v.weight for v in variants)
    if total <= 0:
        raise ValueError("an experiment needs at least one arm with a positive weight")
    edge = 0.0
    for variant in variants:
        edge += variant.weight / total
        if at < edge:
            return variant
    return variants[-1]
