"""Trigram indexes for finding people by part of an id, an email or a name (PostgreSQL only).

``icontains`` compiles to ``UPPER(col::text) LIKE UPPER('%term%')`` on PostgreSQL; a GIN index with
``gin_trgm_ops`` on exactly that expression serves it. ``pg_trgm`` is a trusted extension
(PostgreSQL 13+), so the database owner can create it. SQLite gets nothing: its ``LIKE`` scans.
"""

from django.db import migrations

INDEXES = {
    "person_external_id_trgm": ("onboarding_person", "upper((external_id)::text)"),
    "person_email_trgm": ("onboarding_person", "upper((email)::text)"),
    "person_name_trgm": ("onboarding_person", "upper(((traits ->> 'name'))::text)"),
    "person_first_name_trgm": ("onboarding_person", "upper(((traits ->> 'first_name'))::text)"),
    "person_last_name_trgm": ("onboarding_person", "upper(((traits ->> 'last_name'))::text)"),
    "identity_value_trgm": ("onboarding_identity", "upper((value)::text)"),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, (table, expression) in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin ({expression} gin_trgm_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("onboarding", "0006_event_partitions")]

    operations = [migrations.RunPython(create, drop)]
