"""The reused C encoder writes exactly what ``json.dumps`` writes, and fails the same way."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onboarding.tracking import jsontext

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats()
    | st.text(st.characters(exclude_categories=()), max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


def _outcome(encode, value):
    try:
        return "text", encode(value)
    except (ValueError, TypeError, RecursionError) as error:
        return "error", type(error)


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_same_text_and_errors_as_json_dumps(value):
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    assert _outcome(jsontext.strict, value) == _outcome(
        lambda v: json.dumps(v, allow_nan=False, **compact), value
    )
    assert _outcome(jsontext.lenient, value) == _outcome(
        lambda v: json.dumps(v, default=str, **compact), value
    )


def test_values_json_cannot_hold():
    moment = datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(TypeError):
        jsontext.strict({"at": moment})
    assert jsontext.lenient({"at": moment}) == '{"at":"2026-01-02 00:00:00+00:00"}'
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        jsontext.strict(deep)
