"""The event and people store, onboarding flows and segments.

Write paths live in ``onboarding.services`` and ``onboarding.tracking``; nothing important happens in
``save()`` or signals.
"""

from .events import (
    Event,
    EventDedupe,
    EventType,
    FailedEvent,
    Identity,
    IdentityKind,
    Person,
    Source,
)
from .flows import FlowProgress, OnboardingFlow, Segment, Step
from .privacy import ErasedIdentity, Erasure

__all__ = [
    "ErasedIdentity",
    "Erasure",
    "Event",
    "EventDedupe",
    "EventType",
    "FailedEvent",
    "FlowProgress",
    "Identity",
    "IdentityKind",
    "OnboardingFlow",
    "Person",
    "Segment",
    "Source",
    "Step",
]
