"""The delivery checks' cache of parsed rule specs: by rule version id, parsed once per version,
and never wrong when an id comes back with another definition (SQLite after a rolled-back insert,
as the sandbox's rule copies are)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import transaction

from triggers.delivery import checks
from triggers.models import Rule

from .conftest import make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")


def _definition(event: str) -> dict:
    return {
        "trigger": {"kind": "event", "event": event},
        "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
    }


def _message(version_id: int, definition: dict) -> SimpleNamespace:
    return SimpleNamespace(rule_version=SimpleNamespace(pk=version_id, definition=definition))


@pytest.fixture
def parses(monkeypatch) -> list[dict]:
    monkeypatch.setattr(checks, "_SPECS", {})
    seen: list[dict] = []
    parse = checks.parse_rule
    monkeypatch.setattr(checks, "parse_rule", lambda d: seen.append(d) or parse(d))
    return seen


def test_a_version_is_parsed_once(parses):
    for _ in range(3):  # each message loads its own copy of the definition
        spec = checks.rule_spec(_message(7, _definition("Trial Ending")))
    assert spec is not None and spec.trigger.event == "Trial Ending"
    assert len(parses) == 1
    other = checks.rule_spec(_message(8, _definition("Trial Ending")))
    assert other == spec and len(parses) == 2


def test_an_id_given_out_again_names_its_new_definition(parses):
    first = _definition("Trial Ending")
    assert checks.rule_spec(_message(7, first)).trigger.event == "Trial Ending"
    first["trigger"]["event"] = "Changed In Place"  # the cache keeps its own copy
    assert checks.rule_spec(_message(7, _definition("Trial Ending"))).trigger.event == (
        "Trial Ending"
    )
    assert checks.rule_spec(_message(7, _definition("Report Shared"))).trigger.event == (
        "Report Shared"
    )
    assert len(parses) == 2


def test_a_rolled_back_rule_version_does_not_leak_into_the_next(parses):
    with transaction.atomic():
        rolled_back = make_rule("copy", _definition("Trial Ending")).current_version
        assert checks.rule_spec(_message(rolled_back.pk, rolled_back.definition)) is not None
        transaction.set_rollback(True)
    version = make_rule("kept", _definition("Report Shared")).current_version
    # On SQLite the id comes back (on PostgreSQL the sequence moved on): either way, the spec is
    # the kept definition's.
    assert Rule.objects.get().slug == "kept"
    spec = checks.rule_spec(_message(version.pk, version.definition))
    assert spec is not None and spec.trigger.event == "Report Shared"
