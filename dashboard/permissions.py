"""The roles (DESIGN §6): permission groups backed by Django's model permissions.

This table is the one place that says which group holds which permission. :func:`install_groups`
makes the groups match it (idempotent: ``get_or_create`` and ``permissions.set``); migrations call it
after adding permissions, and any other installer (a ``post_migrate`` receiver, a management
command) can call it the same way, with the app registry or a migration's ``apps``.

- **viewer** reads every growth page and changes nothing.
- **growth** edits flows, segments, rules, templates and experiment definitions, sends sandbox test
  emails and starts backtests; it cannot start, stop or ship an experiment.
- **experiment owner** starts, stops and ships experiments (``triggers.run_experiment``), and reads
  the growth pages. Someone who also defines experiments is in growth too.
- **support** works in the admin: people, messages, the review queue, GDPR export and erasure; on
  the dashboard it may open the people pages only.

Views check the permission of what they do (``dashboard.decorators``); the admin checks the model
permissions itself, and its actions name theirs (``@admin.action(permissions=[...])``). The matrix
of every URL × role is ``tests/security/test_permission_matrix.py``; docs/security.md shows it.
"""

from __future__ import annotations

from typing import Any

VIEWER = "viewer"
GROWTH = "growth"
EXPERIMENT_OWNER = "experiment owner"
SUPPORT = "support"

# Reading the growth pages: the dashboard itself and what its pages show.
_READ_GROWTH_PAGES = [
    "dashboard.view_dashboard",
    "onboarding.view_source",
    "onboarding.view_person",
    "onboarding.view_identity",
    "onboarding.view_event",
    "onboarding.view_failedevent",
    "onboarding.view_onboardingflow",
    "onboarding.view_segment",
    "triggers.view_rule",
    "triggers.view_messagetemplate",
    "triggers.view_experiment",
    "triggers.view_backtestrun",
    "triggers.view_message",
    "triggers.view_decisionlog",
    "triggers.view_auditlog",
    "triggers.view_workspacesettings",
]

GROUP_PERMISSIONS: dict[str, list[str]] = {
    VIEWER: _READ_GROWTH_PAGES,
    GROWTH: [
        *_READ_GROWTH_PAGES,
        "onboarding.add_onboardingflow",
        "onboarding.change_onboardingflow",
        "onboarding.add_segment",
        "onboarding.change_segment",
        "triggers.add_rule",
        "triggers.change_rule",  # also pausing, resuming and archiving
        "triggers.add_messagetemplate",
        "triggers.change_messagetemplate",  # also sandbox test sends
        "triggers.add_experiment",
        "triggers.change_experiment",  # the definition, not its status
        "triggers.add_backtestrun",
        "triggers.change_workspacesettings",  # the Settings page: caps, quiet hours, time zone
    ],
    EXPERIMENT_OWNER: [*_READ_GROWTH_PAGES, "triggers.run_experiment"],
    SUPPORT: [
        "onboarding.view_source",
        "onboarding.view_person",
        "onboarding.change_person",
        "onboarding.view_identity",
        "onboarding.view_event",
        "onboarding.view_failedevent",
        "onboarding.view_erasure",
        "triggers.view_reviewitem",
        "triggers.change_reviewitem",
        "triggers.view_message",
        "triggers.view_decisionlog",
        "triggers.view_auditlog",
        "triggers.view_rule",
        "triggers.view_messagetemplate",
    ],
}


def install_groups(apps: Any, schema_editor: Any = None) -> None:
    """Create the groups of :data:`GROUP_PERMISSIONS` and set exactly their permissions.

    Run from an early migration, a permission whose model a later migration adds does not exist
    yet and is skipped: that later migration (here ``0007_roles``) runs this again. The test
    ``tests/dashboard/test_groups.py`` checks the migrated groups match the table exactly.
    """
    from django.contrib.auth.management import create_permissions

    for config in apps.get_app_configs():
        models_module = getattr(config, "models_module", None)
        config.models_module = True  # a migration's app stubs have none; create_permissions asks
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = models_module
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    existing = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in permission_model.objects.values_list(
            "pk", "content_type__app_label", "codename"
        )
    }
    for name, codes in GROUP_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=name)
        group.permissions.set([existing[code] for code in codes if code in existing])
