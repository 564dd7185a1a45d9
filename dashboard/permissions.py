"""The roles (DESIGN §6): permission groups backed by Django's model permissions.

This table is the one place that says which group holds which permission. :func:`install_groups`
makes the groups match it exactly (idempotent: ``get_or_create`` and ``permissions.set``). It runs
after every ``manage.py migrate`` (a ``post_migrate`` receiver, ``DashboardConfig.ready``), so a
change to this table reaches an existing database at the next deploy, and a permission added to or
removed from one of these groups by hand in the admin is put back then. Migrations do not call it.
Other groups an operator creates are left alone.

- **viewer** reads every growth page and changes nothing.
- **growth** edits flows, segments, rules, templates and experiment definitions (archiving and
  deleting flows, segments and templates too), sends sandbox test emails and starts backtests; it
  cannot start, stop or ship an experiment.
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
        "onboarding.change_onboardingflow",  # also archiving and restoring
        "onboarding.delete_onboardingflow",  # refused while anything uses it (lifecycle)
        "onboarding.add_segment",
        "onboarding.change_segment",
        "onboarding.delete_segment",
        "triggers.add_rule",
        "triggers.change_rule",  # also pausing, resuming and archiving
        "triggers.add_messagetemplate",
        "triggers.change_messagetemplate",  # also sandbox test sends, archiving
        "triggers.delete_messagetemplate",
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


def install_groups(apps: Any, schema_editor: Any = None, using: str = "default") -> None:
    """Create the groups of :data:`GROUP_PERMISSIONS` and set exactly their permissions.

    ``apps`` is the global app registry or the project state that ``post_migrate`` passes. Every
    app's permissions are created first (``post_migrate`` reaches the apps one by one, and this
    one may come before the app whose permission a group needs). The test
    ``tests/dashboard/test_groups.py`` checks the groups match the table after a migrate.
    """
    from django.contrib.auth.management import create_permissions

    for config in apps.get_app_configs():
        models_module = getattr(config, "models_module", None)
        config.models_module = (
            True  # a project state's app stubs have none; create_permissions asks
        )
        try:
            create_permissions(config, apps=apps, verbosity=0, using=using)
        finally:
            config.models_module = models_module
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    existing = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in permission_model.objects.using(using).values_list(
            "pk", "content_type__app_label", "codename"
        )
    }
    for name, codes in GROUP_PERMISSIONS.items():
        group, _ = group_model.objects.using(using).get_or_create(name=name)
        group.permissions.set([existing[code] for code in codes if code in existing])


def install_groups_after_migrate(
    sender: Any, using: str = "default", apps: Any = None, **kwargs: Any
) -> None:
    """The ``post_migrate`` receiver (``DashboardConfig.ready``)."""
    if apps is None:  # flush sends post_migrate without a project state
        from django.apps import apps
    try:
        apps.get_model("auth", "Group")
    except LookupError:  # auth migrated back to zero
        return
    install_groups(apps, using=using)
