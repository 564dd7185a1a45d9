"""Reading a tracking request: size limits, gzip, JSON, the envelope and each event in it."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .errors import EnvelopeError, EventRejected
from .ingest import Rejection
from .parsing import TrackedEvent, parse_event, parse_timestamp

# Deeper documents would hit Python's recursion limit when they are re-encoded for storage, at a
# depth that depends on the server's stack; a fixed cap makes the answer a deterministic 400.
MAX_JSON_DEPTH = 64


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_body(raw: bytes, *, content_encoding: str, max_bytes: int) -> Any:
    """Decompress (gzip, capped) and parse the JSON body; raise EnvelopeError when impossible."""
    encoding = content_encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        decompressor = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, auto-detected
        try:
            body = decompressor.decompress(raw, max_bytes + 1)
        except zlib.error:
            raise EnvelopeError(
                400, "invalid_encoding", "body", "the body is not valid gzip data"
            ) from None
        if len(body) > max_bytes or decompressor.unconsumed_tail:
            raise EnvelopeError(
                413,
                "payload_too_large",
                "body",
                f"the body is larger than {max_bytes} bytes after decompression",
            )
        if not decompressor.eof:
            raise EnvelopeError(400, "invalid_encoding", "body", "the gzip data is truncated")
    elif encoding in ("", "identity"):
        body = raw
    else:
        raise EnvelopeError(
            415,
            "unsupported_encoding",
            "Content-Encoding",
            f"unsupported Content-Encoding {encoding!r}",
        )
    if not body.strip():
        raise EnvelopeError(400, "invalid_json", "body", "the body is empty; send a JSON object")
    try:
        # JSON on the wire is UTF-8 (RFC 8259); json.loads(bytes) would also guess UTF-16/32.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EnvelopeError(400, "invalid_json", "body", "the body is not UTF-8 text") from None
    try:
        document = json.loads(text, parse_float=_finite_float, parse_constant=_no_constants)
    except (ValueError, RecursionError) as error:
        raise EnvelopeError(
            400, "invalid_json", "body", f"the body is not valid JSON: {error}"
        ) from None
    if _nesting_depth(document) > MAX_JSON_DEPTH:
        raise EnvelopeError(
            400,
            "invalid_json",
            "body",
            f"the body is nested more than {MAX_JSON_DEPTH} levels deep",
        )
    return document


def _nesting_depth(document: Any) -> int:
    """Depth of nested arrays and objects, level by level without recursion; stops past the cap.

    Only containers are visited (most values are scalars), and ``json.loads`` makes exactly
    ``dict`` and ``list``, so an exact type test is enough.
    """
    level = [document] if type(document) is dict or type(document) is list else []
    depth = 0
    while level and depth <= MAX_JSON_DEPTH:
        depth += 1
        below = []
        for value in level:
            for child in value.values() if type(value) is dict else value:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
    return depth


def body_write_key(document: Any) -> str:
    if isinstance(document, dict):
        key = document.get("writeKey")
        if isinstance(key, str):
            return key
    return ""


@dataclass
class Envelope:
    events: list[TrackedEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def _payload_text(payload: Any) -> str:
    try:
        return json.dumps(payload, ensure_ascii=True, default=str)
    except (ValueError, RecursionError):
        # repr() recurses just like json.dumps, so it cannot be the fallback for deep values.
        return json.dumps({"unserializable": type(payload).__name__})


def read_envelope(
    document: Any,
    *,
    event_type: str | None,
    received_at: datetime,
    max_event_bytes: int,
    max_future: timedelta,
) -> Envelope:
    """Split a request into valid events and rejections. ``event_type`` None means a batch."""
    if not isinstance(document, dict):
        raise EnvelopeError(400, "invalid_type", "body", "the body must be a JSON object")
    limits = {
        "received_at": received_at,
        "max_event_bytes": max_event_bytes,
        "max_future": max_future,
    }
    envelope = Envelope()
    if event_type is not None:
        try:
            envelope.events.append(parse_event(document, "", event_type=event_type, **limits))
        except EventRejected as rejected:
            envelope.rejections.append(Rejection(None, rejected.problem, _payload_text(document)))
        return envelope

    items = document.get("batch")
    if items is None:
        raise EnvelopeError(400, "missing_field", "batch", "batch is required: a list of events")
    if not isinstance(items, list):
        raise EnvelopeError(400, "invalid_type", "batch", "batch must be a list of events")
    sent_raw = document.get("sentAt")
    try:
        batch_sent_at = parse_timestamp(sent_raw, "sentAt") if sent_raw is not None else None
    except EventRejected as rejected:
        problem = rejected.problem
        raise EnvelopeError(400, problem.code, problem.path, problem.message) from None
    context = document.get("context")
    for index, item in enumerate(items):
        path = f"batch[{index}]"
        if isinstance(item, dict) and isinstance(context, dict) and "context" not in item:
            item = {**item, "context": context}
        try:
            event = parse_event(item, path, event_type=None, batch_sent_at=batch_sent_at, **limits)
        except EventRejected as rejected:
            envelope.rejections.append(Rejection(index, rejected.problem, _payload_text(item)))
            continue
        event.index = index
        envelope.events.append(event)
    return envelope
