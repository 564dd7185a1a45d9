"""What a detector finds: an occurrence of a rule's trigger for one person (DESIGN §4.4).

Its key makes enrollment idempotent: the same occurrence found by two ticks (or two beats) has the
same key, and the database refuses the second enrollment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Occurrence:
    person_id: int
    key: str
    at: datetime
    context: dict[str, Any] = field(default_factory=dict)
    # Its deadline was not after the receipt of the event that completed it: recorded, never sent.
    late: bool = False


def occurrence_stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S.%f")
