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
    PersonTrait,
    Source,
)
from .flows import (
    BREAKDOWN_PROPERTIES,
    OFFSET_FIELDS,
    TYPED_STEPS,
    FlowProgress,
    FlowReentry,
    OnboardingFlow,
    Segment,
    Step,
    offset_columns,
    offsets_of,
    offsets_to_gaps,
)
from .privacy import ErasedIdentity, Erasure

__all__ = [
    "BREAKDOWN_PROPERTIES",
    "OFFSET_FIELDS",
    "TYPED_STEPS",
    "ErasedIdentity",
    "Erasure",
    "Event",
    "EventDedupe",
    "EventType",
    "FailedEvent",
    "FlowProgress",
    "FlowReentry",
    "Identity",
    "IdentityKind",
    "OnboardingFlow",
    "Person",
    "PersonTrait",
    "Segment",
    "Source",
    "Step",
    "offset_columns",
    "offsets_of",
    "offsets_to_gaps",
]
