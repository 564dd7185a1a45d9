"""The interface every channel implements, and the lookup from a channel's name to its class.

A channel sends one rendered message. It raises :class:`TransportError` for failures:
``permanent=True`` when retrying cannot help (a refused address, a 4xx), otherwise the pipeline
retries with backoff. ``at_most_once`` channels (email, SMS: their providers' calls are not
idempotent) are never retried when the outcome is unknown after a crash; the others are.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from onboarding.models import Person
    from triggers.models import Message


logger = logging.getLogger(__name__)


class TransportError(Exception):
    """A send that did not succeed. ``permanent``: retrying will not help (fallback or review).
    ``unknown``: the request may have reached the provider with no answer back (an at-most-once
    channel's timeout): the message is marked ``unknown`` and reviewed, never retried."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        retry_after: int | None = None,
        unknown: bool = False,
    ):
        super().__init__(message)
        self.permanent = permanent or unknown
        self.retry_after = retry_after
        self.unknown = unknown


@dataclass(frozen=True)
class SendResult:
    provider_id: str = ""


@dataclass
class Outgoing:
    """A message between :meth:`Channel.start` and :meth:`Channel.finish`: built, and its
    conversation with the provider possibly begun, but not yet anything the provider may act on.
    ``state`` is the channel's own (an email's bytes and its open SMTP transaction)."""

    message: Message
    person: Person
    state: object = None


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

    # A send in parts, for the delivery pipeline (triggers/delivery/pipeline.py): ``prepare``
    # once the message's claim is committed (in the pass's writer thread when it has one), then a
    # helper thread runs ``start`` while the pipeline commits the hand-over mark, and the
    # pipeline calls ``finish`` once that mark is on disk (or ``abandon`` if it was refused).

    def prepare(self, message: Message, person: Person) -> Outgoing:
        """Build what will be sent, with no I/O (it may run in another thread than the send, and
        a little before it). The default builds nothing."""
        return Outgoing(message, person)

    def start(self, outgoing: Outgoing) -> None:
        """Everything a send does before the provider can have the message: for email, the SMTP
        transaction up to, not including, the end of its data. Nothing here may let the message
        reach anyone (the pipeline runs it before the message is marked as handed); it may raise
        :class:`TransportError` (nothing was sent). The default does nothing: the whole call is
        in :meth:`finish`."""

    def finish(self, outgoing: Outgoing) -> SendResult:
        """The provider call proper, from which on the provider may have the message."""
        return self.send(outgoing.message, outgoing.person)

    def abandon(self, outgoing: Outgoing) -> None:
        """The message must not go out after all (its hand-over mark was refused): drop what
        :meth:`start` began, so that the provider never gets it."""

    def open(self) -> None:
        """Called once before a delivery pass's first send on this channel (e.g. to set up a
        connection that the pass's sends reuse). A channel used outside a pass is never opened
        and must work anyway."""

    def close(self) -> None:
        """Called once at the end of a delivery pass that opened the channel, even after errors."""


class ChannelSet:
    """The channels of one delivery pass: one instance per channel, opened on first use and all
    closed by :meth:`close` (the pipeline calls it in a ``finally``)."""

    def __init__(self) -> None:
        self._opened: dict[str, Channel] = {}
        # The pipeline's claims may run in a second thread (pipeline._deliver_overlapped).
        self._lock = threading.Lock()

    def __call__(self, name: str) -> Channel:
        channel = self._opened.get(name)
        if channel is None:
            with self._lock:
                channel = self._opened.get(name)
                if channel is None:
                    channel = channel_for(name)
                    channel.open()
                    self._opened[name] = channel
        return channel

    def close(self) -> None:
        for name, channel in self._opened.items():
            try:
                channel.close()
            except Exception:  # one channel's broken close must not hide the pass's results
                logger.warning("closing channel %s failed", name, exc_info=True)
        self._opened.clear()


def channel_for(name: str) -> Channel:
    """The channel class named for ``name`` in ``settings.ONRAMP_CHANNELS`` (a dotted path).

    Each channel is imported on its own, so one whose optional dependency is missing fails only
    its own sends (an :class:`UnavailableChannel`: retried, so installing the dependency lets
    them go out), never the others'.
    """
    try:
        path = settings.ONRAMP_CHANNELS[name]
    except KeyError:
        raise TransportError(f"unknown channel {name!r}", permanent=True) from None
    try:
        cls = import_string(path)
    except ImportError as error:
        return UnavailableChannel(name, f"channel {name!r} cannot be loaded ({path}): {error}")
    return cls()


class UnavailableChannel(Channel):
    """Stands in for a channel whose module cannot be imported: each of its sends fails and is
    retried with backoff, while the other channels' sends go on."""

    def __init__(self, name: str, problem: str):
        self.name = name
        self.problem = problem

    def send(self, message: Message, person: Person) -> SendResult:
        raise TransportError(self.problem)
