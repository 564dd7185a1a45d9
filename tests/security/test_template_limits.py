"""Template limits (issue 13 item 1, DESIGN §4.5, docs/security.md "Template limits").

A range, a loop, an output and a render all have a ceiling; a render over one aborts with reason
``limits``, in the preview, the sandbox's test sends, backtests and the worker (the worker's side is
in tests/triggers/test_template_limits_delivery.py). Before the limits, ``(1..n) | join`` and
friends materialised 10⁸ items: these tests run such templates in a child process capped at 1 GB
(or in this process under a lowered ``RLIMIT_AS``), so on code without the limits they fail with a
MemoryError instead of taking the machine.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from liquid import Environment

from onboarding.models import Person
from tests.limits import GIB, memory_ceiling, render_in_child
from triggers import rendering
from triggers.models import MessageTemplate
from triggers.rendering import TemplateProblem, render, validate_source
from triggers.services.templates import template_save

MB = 1024 * 1024
BIG = 100_000_000

# The templates of the issue: a trait-driven range (the worker's case), a literal one (the
# preview's), and the other filters that materialise a range.
ISSUE_TEMPLATES = [
    pytest.param("{{ (1..count) | join: ',' }}", {"count": BIG}, id="join-trait"),
    pytest.param("{{ (1..100000000) | join: ',' | size }}", {}, id="join-size-literal"),
    pytest.param("{{ (1..100000000) | reverse | size }}", {}, id="reverse"),
    pytest.param("{{ (1..100000000) | uniq | size }}", {}, id="uniq"),
]


@pytest.mark.parametrize(("source", "context"), ISSUE_TEMPLATES)
def test_the_issue_templates_are_refused_at_once_in_a_capped_process(source, context):
    result = render_in_child(source, context, memory=GIB, timeout=60)
    assert (result.outcome, result.reason) == ("refused", "limits"), result
    assert result.message == "a range has at most 10 000 items; this one has 100 000 000"
    assert result.seconds < 0.5
    assert result.peak_bytes < 200 * MB


# Each runs in a capped child with a timeout: without the limits some of these exhaust memory and
# others spin in C (``'x' in range(10**8)`` scans it; squaring a number forty times never ends),
# where no signal can interrupt them.
RANGE_SHAPES = [
    "{% for i in (1..count) %}{{ i }}{% endfor %}",
    "{% for i in (1..count) limit: 3 %}{{ i }}{% endfor %}",
    "{% tablerow i in (1..count) %}{{ i }}{% endtablerow %}",
    "{% if (1..count) contains 'x' %}yes{% endif %}",  # a linear scan of a lazy range
    "{% case 'x' %}{% when (1..count) %}yes{% endcase %}",
    "{% assign r = (1..count) %}{{ r | last }}",
    "{% liquid\nfor i in (1..count)\necho i\nendfor %}",
    "{{ (1..count) | sort | first }}",
    "{{ (1..count) | map: 'x' | size }}",
    "{{ (1..count) | concat: (1..3) | size }}",
    "{{ 'a' | append: 'b' }}{{ (1..count) | compact | size }}",
]


@pytest.mark.parametrize("source", RANGE_SHAPES)
def test_a_range_over_the_limit_is_refused_wherever_it_appears(source):
    result = render_in_child(source, {"count": BIG}, memory=GIB, timeout=30)
    assert (result.outcome, result.reason) == ("refused", "limits"), result
    assert result.message == "a range has at most 10 000 items; this one has 100 000 000"
    assert result.seconds < 0.5


@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
def test_the_limits_hold_in_html_mode_too(html):
    with memory_ceiling(), pytest.raises(TemplateProblem) as refused:
        render("", "{{ (1..count) | join: '<br>' }}", {"count": BIG}, html=html)
    assert refused.value.reason == "limits" and refused.value.field == "body"


def test_ranges_up_to_the_limit_still_work():
    body = render(
        "Hi", "{{ (1..10000) | join: ',' | size }} {% for i in (1..3) %}{{ i }}{% endfor %}", {}
    ).body
    assert body == f"{len(','.join(str(i) for i in range(1, 10001)))} 123"
    assert render("", "{{ (1..n) | reverse | first }}", {"n": 10_000}).body == "10000"


LARGE = "x" * 90_000
AMPLIFIERS = [
    # a separator repeated between 10 000 items: 900 MB
    pytest.param("{{ (1..10000) | join: big | size }}", "join would make a value", id="join"),
    # every character replaced by the whole string: 8 GB
    pytest.param("{{ big | replace: 'x', big | size }}", "replace would make a value", id="replace"),
    pytest.param("{{ big | replace: '', big | size }}", "replace would make a value", id="replace-empty"),
    # squaring a number forty times: 2^(2^40)
    pytest.param(
        "{% assign x = 2 %}{% for i in (1..40) %}{% assign x = x | times: x %}{% endfor %}{{ x }}",
        "a number has at most 1000 digits",
        id="times",
    ),
    pytest.param("{{ big | split: '' | size }}", "a list has at most 10 000 items", id="split"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "named"), AMPLIFIERS)
def test_filters_that_multiply_their_input_are_stopped_before_the_memory_goes(source, named):
    result = render_in_child(source, {"big": LARGE}, memory=GIB, timeout=30)
    assert (result.outcome, result.reason) == ("refused", "limits"), result
    assert named in result.message
    assert result.seconds < 0.5


def test_the_output_and_loop_limits_abort_with_reason_limits():
    with pytest.raises(TemplateProblem) as loops:
        render("", "{% for i in (1..200) %}{% for j in (1..200) %}{% endfor %}{% endfor %}", {})
    assert loops.value.reason == "limits" and "loop iteration limit" in loops.value.message
    with pytest.raises(TemplateProblem) as output:
        render("", "{% for i in (1..10000) %}{{ big | slice: 0, 20 }}{% endfor %}", {"big": LARGE})
    assert output.value.reason == "limits" and "output stream limit" in output.value.message


def test_a_missing_variable_is_still_reason_render():
    with pytest.raises(TemplateProblem) as missing:
        render("", "Hi {{ company }}", {})
    assert missing.value.reason == "render"


def test_the_render_time_is_capped(monkeypatch):
    """10 000 upper-casings of 90 KB: under a second of CPU, so it renders with the default limit,
    and is aborted with a 50 ms one (the limit is CPU time, so a busy machine does not count)."""
    source = "{% for i in (1..10000) %}{{ big | upcase | size }}{% endfor %}"
    assert render("", "{{ big | upcase | size }}", {"big": LARGE}).body == "90000"
    limits = getattr(rendering, "LIMITS", None)
    short = dataclasses.replace(limits, seconds=0.05) if limits else None
    monkeypatch.setattr(rendering, "LIMITS", short, raising=False)
    started = time.thread_time()
    with pytest.raises(TemplateProblem) as slow:
        render("", source, {"big": LARGE})
    assert time.thread_time() - started < 0.5
    assert slow.value.reason == "limits"
    assert slow.value.message == "the render took more than 0.05 s of CPU time (the limit)"


@pytest.mark.parametrize(
    "items",
    [
        [3, 1, 3, 2, 1],
        ["a", "b", "a", 1, 1.0, True],
        [{"k": 1}, {"k": 1}, {"k": 2}, [1], [1]],
        [],
    ],
)
@pytest.mark.parametrize("key", [None, "k"])
def test_uniq_answers_like_python_liquids_own(items, key):
    """Our linear ``uniq`` (python-liquid's compares every pair: 1.5 s for 10 000 items) keeps the
    same items in the same order."""
    if key and any(not isinstance(item, dict) for item in items):
        items = [{"k": item} for item in items]
    source = "{{ items | uniq: key | size }},{{ items | uniq: key | map: 'k' | join: '|' }}"
    if key is None:
        source = "{{ items | uniq | size }}"
    context = {"items": items, "key": key}
    expected = Environment().from_string(source).render(**context)
    assert render("", source, context).body == expected


# --- refused at save when the size is literal ---------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ (1..100000000) | join: ',' | size }}",
        "{% for i in (1..10001) %}{{ i }}{% endfor %}",
        "{{ ('1'..'99999') | reverse }}",
        "{% if true %}{% for i in (0..100000000000) %}x{% endfor %}{% endif %}",
    ],
)
def test_a_literal_range_over_the_limit_is_refused_at_save(source):
    with pytest.raises(TemplateProblem) as refused:
        validate_source("body", source)
    assert refused.value.reason == "limits"
    assert refused.value.message.startswith("a range has at most 10 000 items; this one has ")


@pytest.mark.parametrize(
    "source", ["{{ (1..10000) | join }}", "{% for i in (1..count) %}{{ i }}{% endfor %}"]
)
def test_ranges_within_the_limit_or_from_a_variable_are_accepted_at_save(source):
    validate_source("body", source)


@pytest.mark.django_db
def test_template_save_names_the_limit_next_to_the_field():
    with pytest.raises(ValidationError) as refused:
        template_save(
            slug="huge", channel="email", subject="{{ (1..20000) | size }}", body="Hi", actor=None
        )
    assert refused.value.message_dict == {
        "subject": ["a range has at most 10 000 items; this one has 20 000 ((1..20000))"]
    }
    assert not MessageTemplate.objects.exists()


# --- the pages: editor, preview, sandbox ------------------------------------------------------


@pytest.fixture
def growth(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def counter(db) -> Person:
    now = timezone.now()
    return Person.objects.create(
        external_id="counter",
        email="counter@example.com",
        traits={"count": BIG},
        first_seen=now - timedelta(days=1),
        last_seen=now,
    )


def test_the_editor_shows_the_limit_next_to_the_body(growth):
    data = {
        "slug": "huge",
        "channel": "in_app",
        "subject": "",
        "body": "{{ (1..100000000) }}",
        "action": "save",
    }
    html = growth.post("/rules/templates/new/", data).content.decode()
    body_field = html.split('id="field-body"', 1)[1].split('id="field-', 1)[0]
    assert 'class="field-error"' in body_field
    assert "range has at most 10 000 items; this one has 100 000 000" in body_field
    assert not MessageTemplate.objects.exists()


@pytest.mark.parametrize(
    "body", ["{{ (1..100000000) | join: ',' | size }}", "{{ (1..count) | join: ',' }}"]
)
def test_the_preview_answers_at_once_with_the_limit(growth, counter, body):
    preview = {"channel": "in_app", "body": "Hi", "person": "counter"}
    assert growth.post(reverse("triggers:template_preview"), preview).status_code == 200  # warm
    with memory_ceiling():
        started = time.perf_counter()
        response = growth.post(
            reverse("triggers:template_preview"),
            {"channel": "in_app", "body": body, "person": "counter"},
        )
    assert time.perf_counter() - started < 5  # wall time, on a shared machine
    assert response.status_code == 200
    html = response.content.decode()
    assert "The template cannot be rendered." in html
    assert "a range has at most 10 000 items; this one has 100 000 000" in html


def test_a_sandbox_test_send_is_refused_with_the_limit(growth, db):
    """A template stored before the limits existed (so never validated against them)."""
    template = MessageTemplate.objects.create(
        slug="old", channel="email", subject="Hi", body="{{ (1..100000000) | reverse | size }}"
    )
    with memory_ceiling():
        response = growth.post(
            reverse("triggers:sandbox"),
            {"action": "test_send", "template": template.pk, "to_email": "me@example.com"},
        )
    assert response.status_code == 200
    assert "a range has at most 10 000 items; this one has 100 000 000" in response.content.decode()
    assert mail.outbox == []


@pytest.mark.django_db
def test_a_backtest_counts_the_template_as_aborted():
    from triggers.simulation.backtest import _Renderer

    MessageTemplate.objects.create(
        slug="old", channel="in_app", subject="", body="{{ (1..count) | join: ',' }}"
    )
    renderer = _Renderer(["old"])
    with memory_ceiling():
        problem = renderer.problem("old", {"count": BIG}, False)
    assert problem == "body: a range has at most 10 000 items; this one has 100 000 000"
