"""Reading Segment-spec payloads into normalized events.

Pure functions with no database access: every payload either becomes a :class:`TrackedEvent` or
raises :class:`EventRejected` naming the field. The rules follow the Segment HTTP API spec; anything
a Segment library sends is accepted, including fields Onramp does not use.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import jsontext
from .errors import EventRejected

EVENT_TYPES = ("track", "identify", "page", "screen", "alias", "group")
MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 255


@dataclass(slots=True)
class TrackedEvent:
    type: str
    name: str
    user_id: str
    anonymous_id: str
    message_id: str
    timestamp: datetime
    properties: dict[str, Any]
    context: dict[str, Any]
    traits: dict[str, Any] = field(default_factory=dict)
    previous_id: str = ""
    group_id: str = ""
    index: int | None = None

    @property
    def payload_for_storage(self) -> dict[str, Any]:
        """What goes in ``Event.properties``: properties for track/page/screen, traits otherwise."""
        if self.type in ("identify", "group"):
            return self.traits
        return self.properties


def _join(path: str, key: str) -> str:
    """JSON path of ``key`` under ``path``: ``batch[2].userId``, or ``userId`` at the top level."""
    return f"{path}.{key}" if path else key


def _label(path: str) -> str:
    return path or "the body"


def _where(path: str) -> str:
    """The path of a whole event: its place in the batch, or ``body`` for a single call."""
    return path or "body"


def parse_timestamp(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise EventRejected("invalid_type", path, f"{path} must be an ISO 8601 string")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise EventRejected(
            "invalid_timestamp", path, f"{path} is not an ISO 8601 date-time: {value[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise EventRejected("invalid_timestamp", path, f"{path} is out of range") from None


def _optional_id(payload: dict[str, Any], key: str, path: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 5.0 is the number 5 in JSON: the id "5"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EventRejected(
            "invalid_type", _join(path, key), f"{_join(path, key)} must be a string"
        )
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise EventRejected(
            "too_long",
            _join(path, key),
            f"{_join(path, key)} is longer than {MAX_ID_LENGTH} characters",
        )
    return text


def _optional_object(payload: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventRejected(
            "invalid_type", _join(path, key), f"{_join(path, key)} must be an object"
        )
    return value


def _optional_name(payload: dict[str, Any], key: str, path: str, *, required: bool) -> str:
    value = payload.get(key)
    if value is None or value == "":
        if required:
            raise EventRejected(
                "missing_field", _join(path, key), f"{_join(path, key)} is required"
            )
        return ""
    if not isinstance(value, str):
        raise EventRejected(
            "invalid_type", _join(path, key), f"{_join(path, key)} must be a string"
        )
    if len(value) > MAX_NAME_LENGTH:
        raise EventRejected(
            "too_long",
            _join(path, key),
            f"{_join(path, key)} is longer than {MAX_NAME_LENGTH} characters",
        )
    return value


def corrected_timestamp(
    payload: dict[str, Any],
    path: str,
    *,
    received_at: datetime,
    batch_sent_at: datetime | None,
) -> datetime:
    """Segment's clock-skew correction: ``received_at − (sentAt − timestamp)`` when sentAt is known.

    ``timestamp`` falls back to ``originalTimestamp``, and an event with neither happened when it
    was received.
    """
    raw = payload.get("timestamp")
    key = "timestamp"
    if raw is None:
        raw, key = payload.get("originalTimestamp"), "originalTimestamp"
    elif payload.get("originalTimestamp") is not None:
        # Unused when timestamp is given, but a malformed one is still an error, as documented.
        parse_timestamp(payload["originalTimestamp"], _join(path, "originalTimestamp"))
    # sentAt is checked even when there is no timestamp to correct: a malformed one is an error.
    sent_raw = payload.get("sentAt")
    sent_at = (
        parse_timestamp(sent_raw, _join(path, "sentAt")) if sent_raw is not None else batch_sent_at
    )
    if raw is None:
        return received_at
    client_time = parse_timestamp(raw, _join(path, key))
    if sent_at is None:
        return client_time
    try:
        return received_at - (sent_at - client_time)
    except OverflowError:
        raise EventRejected(
            "invalid_timestamp", _join(path, key), f"{_join(path, key)} is out of range"
        ) from None


_encode = jsontext.strict


def _storable_size(payload: dict[str, Any], path: str) -> int:
    """Size in bytes of the event as stored; refuses text that PostgreSQL's jsonb cannot hold."""
    try:
        text = _encode(payload)
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise EventRejected(
            "invalid_string",
            _where(path),
            f"{_label(path)} contains an unpaired surrogate (\\ud800-\\udfff)",
        ) from None
    except (ValueError, RecursionError):
        raise EventRejected(
            "invalid_value", _where(path), f"{_label(path)} is nested too deeply"
        ) from None
    if "\\u0000" in text:
        raise EventRejected(
            "invalid_string", _where(path), f"{_label(path)} contains a NUL character (\\u0000)"
        )
    return size


def parse_event(
    payload: Any,
    path: str,
    *,
    event_type: str | None,
    received_at: datetime,
    batch_sent_at: datetime | None = None,
    max_event_bytes: int,
    max_future: timedelta,
) -> TrackedEvent:
    """Validate one Segment message. ``event_type`` is fixed by the endpoint, or None in a batch."""
    if not isinstance(payload, dict):
        raise EventRejected("invalid_type", _where(path), f"{_label(path)} must be a JSON object")

    size = _storable_size(payload, path)
    if size > max_event_bytes:
        raise EventRejected(
            "event_too_large",
            _where(path),
            f"{_label(path)} is {size} bytes; the limit is {max_event_bytes} bytes",
        )

    declared = payload.get("type")
    if event_type is None:
        if declared is None:
            raise EventRejected(
                "missing_field", _join(path, "type"), f"{_join(path, 'type')} is required"
            )
        if declared not in EVENT_TYPES:
            raise EventRejected(
                "invalid_value",
                _join(path, "type"),
                f"{_join(path, 'type')} must be one of {', '.join(EVENT_TYPES)}",
            )
        event_type = declared
    elif declared is not None and declared != event_type:
        raise EventRejected(
            "invalid_value",
            _join(path, "type"),
            f"{_join(path, 'type')} must be {event_type!r} on this endpoint",
        )

    user_id = _optional_id(payload, "userId", path)
    anonymous_id = _optional_id(payload, "anonymousId", path)
    if not user_id and not anonymous_id:
        raise EventRejected(
            "missing_field",
            _join(path, "userId"),
            f"{_join(path, 'userId')} or {_join(path, 'anonymousId')} is required",
        )

    message_id = _optional_id(payload, "messageId", path) or f"onramp-{uuid.uuid4()}"
    properties = _optional_object(payload, "properties", path)
    context = _optional_object(payload, "context", path)
    traits = _optional_object(payload, "traits", path)
    _optional_object(payload, "integrations", path)

    name = ""
    previous_id = ""
    group_id = ""
    if event_type == "track":
        name = _optional_name(payload, "event", path, required=True)
    elif event_type in ("page", "screen"):
        name = (
            _optional_name(payload, "name", path, required=False)
            or str(properties.get("name") or "")[:MAX_NAME_LENGTH]
        )
    elif event_type == "alias":
        previous_id = _optional_id(payload, "previousId", path)
        if not previous_id:
            raise EventRejected(
                "missing_field",
                _join(path, "previousId"),
                f"{_join(path, 'previousId')} is required",
            )
        if not user_id:
            raise EventRejected(
                "missing_field",
                _join(path, "userId"),
                f"{_join(path, 'userId')} is required for alias",
            )
    elif event_type == "group":
        group_id = _optional_id(payload, "groupId", path)
        if not group_id:
            raise EventRejected(
                "missing_field", _join(path, "groupId"), f"{_join(path, 'groupId')} is required"
            )
        traits = {**traits, "groupId": group_id}
    if event_type == "identify" and not traits:
        context_traits = context.get("traits")
        if isinstance(context_traits, dict):
            traits = context_traits

    timestamp = corrected_timestamp(
        payload, path, received_at=received_at, batch_sent_at=batch_sent_at
    )
    if timestamp - received_at > max_future:
        raise EventRejected(
            "timestamp_in_future",
            _join(path, "timestamp"),
            f"{_join(path, 'timestamp')} is more than {int(max_future.total_seconds() // 3600)} h in the future"
            " after clock-skew correction",
        )

    return TrackedEvent(
        type=event_type,
        name=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        message_id=message_id,
        timestamp=timestamp,
        properties=properties,
        context=context,
        traits=traits,
        previous_id=previous_id,
        group_id=group_id,
    )
