"""Segments list and editor: condition rows, compiler errors next to conditions, live preview."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse

from onboarding.models import Segment
from onboarding.services.flows import StepInput, flow_save
from onboarding.services.segments import segment_save
from tests.dashboard.conftest import NOW, event, send

LIST = reverse("dashboard:segments")
NEW = reverse("dashboard:segment_new")
EDIT = reverse("dashboard:segment_edit", args=["from-ads"])
PREVIEW = reverse("dashboard:segment_preview")
ROW = reverse("dashboard:segment_condition_row")


@pytest.fixture
def growth(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def from_ads(db):
    return segment_save(
        slug="from-ads",
        name="From ads",
        definition={
            "match": "all",
            "conditions": [{"trait": "source", "op": "eq", "value": "ads"}],
        },
    ).object


@pytest.fixture
def people(api, clock):
    send(
        api,
        *[
            {
                "type": "identify",
                "userId": f"u{i}",
                "traits": {"source": "ads" if i < 3 else "seo", "plan": "pro" if i % 2 else "free"},
                "timestamp": (NOW - timedelta(hours=5)).isoformat(),
            }
            for i in range(8)
        ],
    )


def data(*rows: dict, action: str = "save", **fields) -> dict:
    values = {"name": "Pro users", "slug": "pro", "match": "all", "mode": "rows", "action": action}
    values.update(fields)
    values["conditions-TOTAL_FORMS"] = str(len(rows))
    for index, row in enumerate(rows):
        for key, value in row.items():
            values[f"conditions-{index}-{key}"] = value
    return values


@pytest.mark.parametrize("url", [LIST, NEW, EDIT])
def test_access(client, charlie, from_ads, url):
    assert client.get(url).status_code == 302
    client.force_login(charlie)
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", [PREVIEW, ROW])
def test_partial_endpoints_check_permission(client, charlie, url):
    assert client.post(url, data()).status_code == 302
    client.force_login(charlie)
    assert client.post(url, data(), HTTP_HX_REQUEST="true").status_code == 403


@pytest.mark.parametrize("url", [LIST, NEW, EDIT])
def test_growth_sees_the_page(growth, from_ads, url):
    assert growth.get(url).status_code == 200


def test_list_shows_members_and_conditions(growth, people, from_ads):
    html = growth.get(LIST).content.decode()
    assert "From ads" in html and "source eq ads" in html
    assert re.search(r'class="num">3</td>', html)


def test_edit_shows_rows(growth, from_ads):
    html = growth.get(EDIT).content.decode()
    assert 'name="conditions-0-trait"' in html and 'value="source"' in html
    assert 'id="segment-preview"' in html


def test_nested_definitions_open_in_advanced_mode(growth, db):
    segment_save(
        slug="nested",
        name="Nested",
        definition={"match": "any", "conditions": [{"not": {"trait": "plan", "op": "is_set"}}]},
    )
    html = growth.get(reverse("dashboard:segment_edit", args=["nested"])).content.decode()
    assert 'name="mode" value="advanced"' in html
    assert "not:" in html


def test_save_new_segment(growth, people):
    response = growth.post(
        NEW,
        data(
            {"kind": "trait", "trait": "plan", "op": "eq", "value": "pro"},
            {
                "kind": "event",
                "event": "Signed Up",
                "where": "device=ios",
                "count_op": "gte",
                "count_value": "2",
                "within": "30d",
            },
            {"kind": "trait", "trait": ""},  # blank: skipped
            match="any",
        ),
    )
    assert response.status_code == 302
    segment = Segment.objects.get(slug="pro")
    assert segment.definition == {
        "match": "any",
        "conditions": [
            {"trait": "plan", "op": "eq", "value": "pro"},
            {
                "event": "Signed Up",
                "where": {"device": "ios"},
                "count": {"op": "gte", "value": 2},
                "within": "30d",
            },
        ],
    }


def test_compiler_errors_next_to_the_condition(growth, db):
    flow_save(
        slug="activation", name="Activation", window_seconds=86400, steps=[StepInput("A", "A")]
    )
    response = growth.post(
        NEW,
        data(
            {"kind": "trait", "trait": "plan", "op": "eq", "value": "pro"},
            {"kind": "trait", "trait": "age", "op": "gt", "value": "old"},
            {"kind": "flow", "flow": "activation", "state": "completed", "step": "1"},
            {"kind": "event", "event": "Signed Up", "within": "forever"},
        ),
    )
    assert response.status_code == 200
    html = response.content.decode()
    rows = html.split('class="row-card')[1:]
    assert "must be a number or an ISO 8601 date" in rows[1].split('name="conditions-1-value"')[1]
    assert "applies only to entered and stalled" in rows[2]
    assert "must be a duration" in rows[3]
    assert "has-error" not in rows[0].split(">")[0]
    assert not Segment.objects.exists()


def test_name_slug_and_duplicate_errors(growth, from_ads):
    html = growth.post(NEW, data(name="", slug="from-ads")).content.decode()
    assert "This field is required." in html
    assert "A segment with this slug already exists." in html


def test_edit_keeps_the_slug(growth, from_ads):
    response = growth.post(
        EDIT,
        data(
            {"kind": "trait", "trait": "source", "op": "in", "value": "ads, seo"},
            name="Paid",
            slug="x",
        ),
    )
    assert response.status_code == 302
    from_ads.refresh_from_db()
    assert from_ads.name == "Paid"
    assert from_ads.definition["conditions"] == [
        {"trait": "source", "op": "in", "value": ["ads", "seo"]}
    ]


def test_advanced_definition(growth, people):
    yaml_text = "match: all\nconditions:\n  - any:\n    - {trait: plan, op: eq, value: pro}\n    - {trait: source, op: eq, value: ads}\n"
    response = growth.post(NEW, data(mode="advanced", advanced=yaml_text))
    assert response.status_code == 302
    assert Segment.objects.get(slug="pro").definition["conditions"][0]["any"][1]["value"] == "ads"
    html = growth.post(
        NEW, data(mode="advanced", advanced="conditions: [{trait: plan, op: nope}]")
    ).content.decode()
    assert "conditions[0].op: unknown operator" in html


def test_switch_to_yaml_and_back(growth, db):
    html = growth.post(
        NEW, data({"kind": "trait", "trait": "plan", "op": "is_set"}, action="advanced")
    ).content.decode()
    assert "op: is_set" in html and 'name="mode" value="advanced"' in html
    html = growth.post(
        NEW,
        data(
            mode="advanced",
            action="rows",
            advanced="match: any\nconditions: [{trait: plan, op: is_set}]",
        ),
    ).content.decode()
    assert 'name="mode" value="rows"' in html and 'value="plan"' in html


def test_preview_count_and_sample(growth, people):
    response = growth.post(
        PREVIEW,
        data({"kind": "trait", "trait": "source", "op": "eq", "value": "ads"}),
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="segment-preview",
    )
    html = response.content.decode()
    assert "<html" not in html and html.strip().startswith(
        '<aside class="card preview-card" id="segment-preview"'
    )
    assert re.search(r'data-testid="preview-count">3<', html)
    assert "u0" in html and "u5" not in html


def test_preview_shows_problems(growth, people):
    html = growth.post(
        PREVIEW, data({"kind": "trait", "trait": "age", "op": "gt", "value": "old"})
    ).content.decode()
    assert "Condition 1 · value: must be a number or an ISO 8601 date" in html


def test_type_change_swaps_the_row(growth, db):
    response = growth.post(ROW, {"row": "2", "conditions-2-kind": "flow"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html
    assert 'id="condition-2"' in html and 'name="conditions-2-state"' in html
    assert 'name="conditions-2-trait"' not in html


def test_refresh_without_javascript_rerenders_the_rows(growth, db):
    html = growth.post(
        NEW, data({"kind": "event", "trait": "x"}, action="refresh")
    ).content.decode()
    assert html.startswith("<!doctype html>")
    assert 'name="conditions-0-event"' in html


def test_add_and_remove_condition_partial(growth, db):
    response = growth.post(
        NEW,
        data({"kind": "trait", "trait": "plan", "op": "eq", "value": "pro"}, action="add"),
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="segment-conditions",
    )
    html = response.content.decode()
    assert "<html" not in html and 'name="conditions-TOTAL_FORMS" value="2"' in html
    html = growth.post(
        NEW,
        data(
            {"kind": "trait", "trait": "plan"}, {"kind": "trait", "trait": "age"}, action="remove:0"
        ),
    ).content.decode()
    assert 'value="age"' in html and 'value="plan"' not in html


def _datalist(html: str, list_id: str) -> list[str]:
    match = re.search(rf'<datalist id="{list_id}">(.*?)</datalist>', html, re.S)
    assert match is not None, f"no datalist {list_id}"
    return re.findall(r'<option value="([^"]*)">', match.group(1))


def test_behaviour_conditions_suggest_event_names_as_the_rule_editor_does(growth, api, clock):
    """Issue 15 item 9: the same suggestions (recent event names, most frequent first), from
    the same partial, on an event field of the segment editor as on the rule editor's."""
    send(
        api,
        event("u1", "Exported Report", 3),
        event("u2", "Exported Report", 2),
        event("u3", "Opened Billing", 1),
    )
    html = growth.post(NEW, data({"kind": "event", "event": ""}, action="refresh")).content.decode()
    field = re.search(r'<input[^>]*name="conditions-0-event"[^>]*>', html).group(0)
    assert 'list="event-names"' in field and 'autocomplete="off"' in field
    suggested = _datalist(html, "event-names")
    assert suggested[:2] == ["Exported Report", "Opened Billing"]

    rule_page = growth.get(reverse("triggers:rule_new") + "?kind=event").content.decode()
    assert _datalist(rule_page, "event-names") == suggested


def test_a_swapped_condition_row_points_at_the_page_s_suggestions(growth, db):
    html = growth.post(
        ROW, data({"kind": "event"}, row="0"), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'list="event-names"' in html
    assert "<datalist" not in html  # one list per page, outside the swapped rows
