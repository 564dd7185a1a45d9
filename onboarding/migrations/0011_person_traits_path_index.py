"""A GIN ``jsonb_path_ops`` index on the people's traits (PostgreSQL only).

A segment's trait equality compiles to containment, ``traits @> '{"plan": "pro"}'``
(``onboarding.segments.jsonsql.JSONEquals``); this index serves it, so a funnel or a count over a
segment reads the members' rows instead of testing every person's traits (1 M wide rows at the
funnel benchmark's scale). SQLite gets nothing: it has no such index.
"""

from django.db import migrations

NAME = "person_traits_path"


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {NAME} ON onboarding_person USING gin (traits jsonb_path_ops)"
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {NAME}")


class Migration(migrations.Migration):
    dependencies = [("onboarding", "0010_narrow_flow_progress")]

    operations = [migrations.RunPython(create, drop)]
