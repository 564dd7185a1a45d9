"""Compact JSON text for the documents ingestion stores, from one encoder per process.

``json.dumps`` (and ``JSONEncoder.encode``) builds a new C encoder object on every call, about
1.2 µs; ingestion encodes three documents per event (measuring the event, then its properties and
context for storage), so that setup was a tenth of the encoding. The C encoder (CPython's
``json.encoder.c_make_encoder``, what ``encode`` uses internally) is built once here and reused:
same text, same errors (``ValueError`` for NaN and infinities when not allowed, ``RecursionError``
for too deep values, ``TypeError`` for values JSON cannot hold unless ``default`` converts them).
Without the C encoder (another interpreter, or an incompatible signature) the public encoder is
used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from typing import Any


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _compact(*, allow_nan: bool, default: Callable[[Any], Any] | None) -> Callable[[Any], str]:
    public = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan, default=default
    ).encode
    make = getattr(_encoder, "c_make_encoder", None)
    if make is None:
        return public
    try:
        # markers None: no circular-reference check (JSON parsed from a body cannot be circular;
        # a cycle would end in RecursionError like a too deep value).
        chunks = make(
            None,
            default or _refuse,
            _encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            allow_nan,
        )
        probe = {"a": [1, 2.5, None, True, "é\n"], "b": {}}
        if "".join(chunks(probe, 0)) != public(probe):
            return public
    except TypeError:
        return public

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


# For measuring and validating an event: refuses NaN and infinities (jsonb cannot hold them).
strict = _compact(allow_nan=False, default=None)
# For storing: anything else that is not JSON is stored as its text.
lenient = _compact(allow_nan=True, default=str)
