"""The permission groups match dashboard.permissions, as installed after every ``migrate``."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from dashboard.permissions import GROUP_PERMISSIONS, install_groups


def codes(group: str) -> set[str]:
    permissions = Group.objects.get(name=group).permissions.select_related("content_type")
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


@pytest.mark.parametrize("group", ["viewer", "growth", "experiment owner", "support"])
def test_groups_exist_with_their_permissions(db, group):
    assert codes(group) == set(GROUP_PERMISSIONS[group])


def test_installing_the_groups_again_changes_nothing(db):
    from django.apps import apps

    before = {group: codes(group) for group in GROUP_PERMISSIONS}
    Group.objects.get(name="viewer").permissions.clear()  # drifted: put back
    install_groups(apps)
    install_groups(apps)
    assert {group: codes(group) for group in GROUP_PERMISSIONS} == before
    assert Group.objects.count() == len(GROUP_PERMISSIONS)


def test_migrate_puts_back_a_permission_removed_by_hand(db):
    """An existing database: the operator took a permission away in the admin; the next deploy's
    ``migrate`` (no migration to apply, only post_migrate) makes the group match the code again."""
    growth = Group.objects.get(name="growth")
    growth.permissions.remove(Permission.objects.get(codename="change_rule"))
    growth.permissions.add(Permission.objects.get(codename="delete_person"))  # and added one
    assert "triggers.change_rule" not in codes("growth")
    call_command("migrate", verbosity=0, interactive=False)
    assert codes("growth") == set(GROUP_PERMISSIONS["growth"])


def test_a_permission_added_to_the_table_reaches_an_existing_group_at_migrate(db, monkeypatch):
    monkeypatch.setitem(
        GROUP_PERMISSIONS, "viewer", [*GROUP_PERMISSIONS["viewer"], "triggers.view_reviewitem"]
    )
    call_command("migrate", verbosity=0, interactive=False)
    assert "triggers.view_reviewitem" in codes("viewer")
    assert codes("viewer") == set(GROUP_PERMISSIONS["viewer"])


def test_groups_of_the_operator_s_own_and_memberships_are_left_alone(alice):
    own = Group.objects.create(name="auditors")
    own.permissions.add(Permission.objects.get(codename="view_message"))
    alice.groups.add(own)
    call_command("migrate", verbosity=0, interactive=False)
    assert codes("auditors") == {"triggers.view_message"}
    assert set(alice.groups.values_list("name", flat=True)) == {"growth", "auditors"}


def test_the_roles_split_reading_editing_and_running_experiments(db):
    viewer, growth, owner = codes("viewer"), codes("growth"), codes("experiment owner")
    assert all(code.split(".")[1].startswith("view_") for code in viewer)
    assert viewer < growth and viewer < owner
    assert "triggers.run_experiment" in owner and "triggers.run_experiment" not in growth
    assert not {c for c in owner if not c.split(".")[1].startswith("view_")} - {
        "triggers.run_experiment"
    }


def test_growth_uses_the_dashboard_and_support_does_not(db):
    assert "dashboard.view_dashboard" in codes("growth")
    assert "dashboard.view_dashboard" not in codes("support")


def test_nobody_but_superusers_edits_events_or_keys(db):
    for group in GROUP_PERMISSIONS:
        granted = codes(group)
        assert not {c for c in granted if c.endswith(("_event", "_failedevent", "_source"))} - {
            "onboarding.view_event",
            "onboarding.view_failedevent",
            "onboarding.view_source",
        }


def test_personas(alice, bob, charlie):
    assert alice.has_perm("dashboard.view_dashboard")
    assert not bob.has_perm("dashboard.view_dashboard")
    assert bob.has_perm("onboarding.change_person") and not alice.has_perm(
        "onboarding.change_person"
    )
    assert not charlie.get_all_permissions()
