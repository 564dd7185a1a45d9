"""The interface every channel implements, and the registry from channel name to class.

A channel sends one rendered message. It raises :class:`TransportError` for failures:
``permanent=True`` when retrying cannot help (a refused address, a 4xx), otherwise the pipeline
retries with backoff. ``at_most_once`` channels (email, SMS: their providers' calls are not
idempotent) are never retried when the outcome is unknown after a crash; the others are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from onboarding.models import Person
    from triggers.models import Message


class TransportError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, retry_after: int | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class SendResult:
    provider_id: str = ""


class Channel:
    name: ClassVar[str]
    # Whether an unknown outcome (crash after the provider call) may be retried automatically.
    at_most_once: ClassVar[bool] = True
    # Whether "sending" is just the commit of the message row (no external call).
    in_database: ClassVar[bool] = False
    html: ClassVar[bool] = False

    def address(self, person: Person) -> str | None:
        """Where this person is reached on this channel, or None when they cannot be."""
        return str(person.pk)

    def send(self, message: Message, person: Person) -> SendResult:
        raise NotImplementedError


_REGISTRY: dict[str, type[Channel]] = {}


def register(cls: type[Channel]) -> type[Channel]:
    _REGISTRY[cls.name] = cls
    return cls


def channel_for(name: str) -> Channel:
    from . import email, in_app, sms, webhook  # noqa: F401  (registration)

    try:
        return _REGISTRY[name]()
    except KeyError:
        raise TransportError(f"unknown channel {name!r}", permanent=True) from None
