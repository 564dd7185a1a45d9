"""GDPR: a person's export holds everything about them; an erasure leaves nothing but hashes.

Events re-sent for an erased person's ids are refused per event (code ``erased``), with a
FailedEvent row that keeps no payload; other people's events still go through.
"""

from __future__ import annotations

import json
from datetime import timedelta

from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.urls import reverse

from onboarding.models import (
    ErasedIdentity,
    Erasure,
    Event,
    FailedEvent,
    FlowProgress,
    Identity,
    Person,
)
from onboarding.services.gdpr import person_erase, person_export
from triggers.models import (
    Assignment,
    AuditLog,
    BacktestRun,
    DecisionLog,
    Enrollment,
    Message,
    ReviewItem,
)

from .conftest import T0, track

PER_PERSON_TABLES = [Event, Identity, FlowProgress, Enrollment, Message, ReviewItem, Assignment]


def _count_for(person_pk: int) -> dict[str, int]:
    counts = {
        model.__name__: model.objects.filter(person_id=person_pk).count()
        for model in PER_PERSON_TABLES
        if model is not ReviewItem
    }
    counts["ReviewItem"] = ReviewItem.objects.filter(message__person_id=person_pk).count()
    counts["DecisionLog"] = DecisionLog.objects.filter(person_id=person_pk).count()
    return counts


def test_export_holds_profile_identities_events_progress_and_triggers_rows(rich_person):
    export = person_export(rich_person)
    assert export["profile"]["external_id"] == "dana"
    assert export["profile"]["email"] == "dana@example.com"
    assert {(i["kind"], i["value"]) for i in export["identities"]} == {
        ("user", "dana"),
        ("anonymous", "anon-dana"),
    }
    assert [e["type"] for e in export["events"]] == ["page", "identify", "track"]
    assert export["events"][0]["source"] == "web"
    assert [p["flow"] for p in export["flow_progress"]] == ["activation"]
    assert len(export["enrollments"]) == 1
    assert export["messages"][0]["body"] == "Hi Dana"
    assert export["review_items"][0]["detail"] == "bounced"
    assert export["experiment_assignments"] == [
        {"experiment__rule__slug": "idle", "variant__name": "a"}
    ]
    assert export["decisions"][0]["outcome"] == "sent"


def test_admin_exports_a_json_download(rich_person, admin_client):
    response = admin_client.post(
        reverse("admin:onboarding_person_changelist"),
        {"action": "export_people", "_selected_action": [rich_person.pk]},
    )
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="person-{rich_person.pk}.json"'
    document = json.loads(response.content)
    assert document["profile"]["external_id"] == "dana"
    assert len(document["messages"]) == 1


def test_erase_deletes_everything_and_keeps_only_hashes(rich_person, bob):
    pk = rich_person.pk
    assert all(_count_for(pk).values())  # every table has a row to erase
    erasure = person_erase(rich_person, actor=bob)

    assert not Person.objects.filter(pk=pk).exists()
    assert _count_for(pk) == {name: 0 for name in _count_for(pk)}
    assert erasure.erased_by == bob and erasure.person_pk == pk
    assert erasure.deleted["onboarding.Event"] == 3
    assert erasure.deleted["triggers.Message"] == 1
    hashes = set(ErasedIdentity.objects.values_list("id_hash", flat=True))
    assert len(hashes) == 2
    # The tombstone and its audit trail hold no id, email or name.
    stored = json.dumps(
        [list(Erasure.objects.values()), list(ErasedIdentity.objects.values())], default=str
    )
    for secret in ("dana", "anon-dana", "example.com", "Dana"):
        assert secret not in stored
    audit = AuditLog.objects.get(action="person.erase")
    assert audit.actor == bob and audit.object_id == str(pk)
    assert "dana" not in json.dumps(audit.changes)


def test_resent_events_of_an_erased_user_are_refused_and_others_still_work(
    rich_person, tracking, bob
):
    person_erase(rich_person, actor=bob)
    response = track(tracking, "dana", "Signed Up", 99, properties={"plan": "pro"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "erased"
    assert response.json()["error"]["path"] == "userId"
    failed = FailedEvent.objects.get(code="erased")
    assert failed.payload == "" and "dana" not in failed.message
    assert not Person.objects.filter(external_id="dana").exists()

    # The old anonymousId is refused too, even with a new userId.
    page = {"type": "page", "anonymousId": "anon-dana", "userId": "dana-2", "messageId": "p9"}
    assert tracking.post("/v1/page", page).json()["error"]["code"] == "erased"
    assert not Person.objects.filter(external_id="dana-2").exists()

    assert track(tracking, "erin", "Signed Up", 1).status_code == 200
    assert Person.objects.filter(external_id="erin").exists()


def test_a_batch_stores_the_others_and_lists_erased_events_by_index(rich_person, tracking, bob):
    person_erase(rich_person, actor=bob)
    batch = {
        "batch": [
            {"type": "track", "userId": "erin", "event": "Signed Up", "messageId": "e1"},
            {"type": "track", "userId": "dana", "event": "Signed Up", "messageId": "d1"},
            {"type": "track", "userId": 7, "event": "Signed Up", "messageId": "x1"},
            {"type": "alias", "userId": "frank", "previousId": "anon-dana", "messageId": "a1"},
        ]
    }
    response = tracking.post("/v1/batch", batch)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["code"], r["path"]) for r in body["rejected"]] == [
        (1, "erased", "batch[1].userId"),
        (3, "erased", "batch[3].previousId"),
    ]
    assert FailedEvent.objects.filter(code="erased", payload="").count() == 2
    assert set(Person.objects.values_list("external_id", flat=True)) == {"erin", "7"}


def test_admin_erasure_needs_typed_confirmation_and_is_audited(rich_person, admin_client, bob):
    url = reverse("admin:onboarding_person_changelist")
    data = {"action": "erase_people", "_selected_action": [rich_person.pk]}
    page = admin_client.post(url, data)
    assert page.status_code == 200 and b"Type ERASE to confirm" in page.content
    wrong = admin_client.post(url, {**data, "confirm": "yes", "confirmation": "erase"})
    assert wrong.status_code == 200 and Person.objects.filter(pk=rich_person.pk).exists()

    done = admin_client.post(url, {**data, "confirm": "yes", "confirmation": "ERASE"})
    assert done.status_code == 302
    assert not Person.objects.filter(pk=rich_person.pk).exists()
    assert Erasure.objects.get().erased_by == bob
    assert not LogEntry.objects.filter(object_repr__contains="dana").exists()


def test_people_without_change_permission_cannot_erase(rich_person, client, alice):
    User.objects.filter(pk=alice.pk).update(is_staff=True)  # growth: view_person, no change
    client.force_login(alice)
    response = client.post(
        reverse("admin:onboarding_person_changelist"),
        {
            "action": "erase_people",
            "_selected_action": [rich_person.pk],
            "confirm": "yes",
            "confirmation": "ERASE",
        },
    )
    assert response.status_code in (200, 302, 403)
    assert Person.objects.filter(pk=rich_person.pk).exists()


def test_saved_backtest_reports_lose_the_person_but_keep_their_counts(rich_person, bob):
    def entry(person_id: int, external_id: str) -> dict:
        return {"person_id": person_id, "external_id": external_id, "occurrence": "o", "at": "t"}

    rule = Enrollment.objects.get(person=rich_person).rule
    run = BacktestRun.objects.create(
        rule=rule,
        definition=rule.current_version.definition,
        since=T0 - timedelta(days=30),
        until=T0,
        status="done",
        result={"entered": 2, "entries": [entry(rich_person.pk, "dana"), entry(0, "erin")]},
    )
    export = person_export(rich_person)
    assert export["backtest_entries"] == [{"backtest": run.pk, **entry(rich_person.pk, "dana")}]

    erasure = person_erase(rich_person, actor=bob)
    run.refresh_from_db()
    assert run.result == {"entered": 2, "entries": [entry(0, "erin")]}
    assert "dana" not in json.dumps(run.result)
    assert erasure.deleted["triggers.BacktestRun entries"] == 1
