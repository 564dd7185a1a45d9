"""The permission groups. ``growth`` uses the dashboard; ``support`` works in the admin.

A migration installs them; later migrations call :func:`install_groups` again after adding
permissions, so the groups always match this table.
"""

from __future__ import annotations

from typing import Any

GROUP_PERMISSIONS: dict[str, list[str]] = {
    "growth": [
        "dashboard.view_dashboard",
        "onboarding.view_source",
        "onboarding.view_person",
        "onboarding.view_identity",
        "onboarding.view_event",
        "onboarding.view_failedevent",
        "onboarding.view_onboardingflow",
        "onboarding.add_onboardingflow",
        "onboarding.change_onboardingflow",
        "onboarding.view_segment",
        "onboarding.add_segment",
        "onboarding.change_segment",
        "triggers.view_rule",
        "triggers.add_rule",
        "triggers.change_rule",
        "triggers.view_messagetemplate",
        "triggers.add_messagetemplate",
        "triggers.change_messagetemplate",
        "triggers.view_message",
        "triggers.view_decisionlog",
        "triggers.view_auditlog",
    ],
    "support": [
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
    from django.contrib.auth.management import create_permissions

    for config in apps.get_app_configs():
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for name, codes in GROUP_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=name)
        permissions = []
        for code in codes:
            app_label, codename = code.split(".")
            permissions.append(
                permission_model.objects.get(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(permissions)
