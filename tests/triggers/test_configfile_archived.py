"""``archived: true`` in the configuration file (DESIGN §3.4, issue 15 item 8): exported for
archived flows, segments and templates, imported as the archive state, refused where the
dashboard would refuse it (something live still uses the object)."""

from __future__ import annotations

import pytest
import yaml

from onboarding.configfile.document import export_config, import_config
from onboarding.configfile.errors import ProblemsError
from onboarding.models import OnboardingFlow, Segment
from triggers.models import AuditLog, MessageTemplate
from triggers.services import lifecycle

pytestmark = pytest.mark.django_db

FILE = """\
flows:
  - slug: activation
    name: Activation
    window: 7d
    steps:
      - {name: Signed up, event: Signed Up}
      - {name: Verified, event: Email Verified}
segments:
  - slug: mobile
    name: Mobile
    match: all
    conditions:
      - {trait: device, op: eq, value: ios}
templates:
  - slug: tip
    channel: email
    subject: Tip
    body: Hi
  - slug: old-tip
    channel: email
    subject: Old tip
    body: Hi
    archived: true
rules:
  - slug: stalled
    name: Stalled
    status: STATUS
    trigger: {kind: inactive_in_flow, flow: activation, step: 2, minutes: 5}
    segment: mobile
    follow_ups:
      - {channel: email, template: TEMPLATE, delay: 0s}
    exit_when: progressed
    reentry: {once_per: 7d}
    priority: 0
"""


def document(status: str = "active", template: str = "tip") -> str:
    return FILE.replace("STATUS", status).replace("TEMPLATE", template)


def test_archived_objects_are_exported_with_archived_true_and_round_trip():
    import_config(document())
    assert MessageTemplate.objects.get(slug="old-tip").archived_at is not None
    assert MessageTemplate.objects.get(slug="tip").archived_at is None
    exported = yaml.safe_load(export_config())
    templates = {item["slug"]: item for item in exported["templates"]}
    assert templates["old-tip"]["archived"] is True
    assert "archived" not in templates["tip"]
    assert all("archived" not in item for item in exported["flows"] + exported["segments"])

    text = export_config()
    result = import_config(text)
    assert not result.changed
    assert export_config() == text


def test_archived_flows_and_segments_are_exported_and_restored_by_a_file_without_the_flag():
    import_config(document(status="archived"))
    lifecycle.archive(obj=Segment.objects.get(slug="mobile"))
    lifecycle.archive(obj=OnboardingFlow.objects.get(slug="activation"))
    text = export_config()
    exported = yaml.safe_load(text)
    assert exported["flows"][0]["archived"] is True
    assert exported["segments"][0]["archived"] is True
    assert not import_config(text).changed

    # A file that does not say archived restores them (the file says how things are).
    result = import_config(document(status="archived"))
    assert {str(change) for change in result.changes} >= {
        "flow activation: updated",
        "segment mobile: updated",
    }
    assert OnboardingFlow.objects.get().archived_at is None
    assert Segment.objects.get().archived_at is None


def test_a_file_rule_that_can_run_cannot_name_an_archived_template():
    with pytest.raises(ProblemsError) as error:
        import_config(document(template="old-tip"))
    assert (
        "rules[0].follow_ups[0].template: template 'old-tip' is archived: restore it or choose"
        " another" in str(error.value)
    )
    assert not MessageTemplate.objects.exists()


def test_an_archived_rule_in_the_file_may_name_an_archived_template():
    import_config(document(status="archived", template="old-tip"))
    assert MessageTemplate.objects.get(slug="old-tip").archived_at is not None


def test_a_file_cannot_archive_what_a_live_rule_in_the_database_uses():
    import_config(document())
    archiving = document().replace(
        "    subject: Tip\n    body: Hi\n",
        "    subject: Tip\n    body: Hi\n    archived: true\n",
        1,
    )
    archiving = archiving[: archiving.index("rules:")]  # the rule is not in this file
    with pytest.raises(ProblemsError) as error:
        import_config(archiving)
    assert (
        "templates.tip.archived: template 'tip' is still used by rule 'Stalled' (follow-up 1"
        " (active)): change that first" in str(error.value)
    )
    assert MessageTemplate.objects.get(slug="tip").archived_at is None


def test_importing_archived_true_archives_an_unused_template_with_an_audit_entry():
    import_config(document())
    text = document().replace(
        "    subject: Old tip\n    body: Hi\n    archived: true\n",
        "    subject: Old tip\n    body: Hi\n",
    )
    import_config(text)
    old = MessageTemplate.objects.get(slug="old-tip")
    assert old.archived_at is None
    assert AuditLog.objects.filter(action="unarchive", object_id=str(old.pk)).exists()
    import_config(document())
    old.refresh_from_db()
    assert old.archived_at is not None
    assert AuditLog.objects.filter(
        action="archive", object_id=str(old.pk), actor_label="import"
    ).exists()
