"""An exact inverted index of the people's string and boolean traits (PostgreSQL; issue 16).

A segment's trait equality (``plan = pro``) found its members through the GIN index on the traits
(``person_traits_path``), then read every member's row for its id: 15,000 pages of the people's
table for 200,000 members at scale 1, most of a segment funnel's time outside the progress scan.
``onboarding_persontrait`` holds one narrow row per (trait, value, person) and its primary key is
that triple, so the members of ``plan = pro`` are one index-only range scan (about 1,000 pages).

Triggers keep it equal to ``onboarding_person.traits`` on every write path (ingestion's batched
inserts and updates, merges, erasure, the admin): after an insert, after an update that changes
the traits (only the pairs that changed are deleted and inserted), after a delete. The columns
compare bytewise (``COLLATE "C"``). Only top-level keys of an object whose value is a JSON string
or boolean are indexed, keys up to 256 bytes and values (as JSON text) up to 1024 bytes: the
compiler asks it only about such pairs (``onboarding.segments.index``).

Migration 0014 vacuums the filled table, so that its index-only scans need no visit of the
rows from the start. SQLite gets the empty table only: its segments read the traits.
"""

from django.db import migrations, models

FUNCTION = "onboarding_person_trait_index"
# The (key, value) pairs of a traits object that the index holds.
PAIRS = (
    "SELECT t.key, t.value::text AS value FROM jsonb_each("
    "CASE WHEN jsonb_typeof({traits}) = 'object' THEN {traits} ELSE '{{}}'::jsonb END) t"
    " WHERE jsonb_typeof(t.value) IN ('string', 'boolean')"
    " AND octet_length(t.key) <= 256 AND octet_length(t.value::text) <= 1024"
)
CREATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO onboarding_persontrait (key, value, person_id)
        SELECT p.key, p.value, NEW.id FROM ({PAIRS.format(traits="NEW.traits")}) p;
    ELSIF TG_OP = 'UPDATE' THEN
        DELETE FROM onboarding_persontrait x USING (
            {PAIRS.format(traits="OLD.traits")} EXCEPT {PAIRS.format(traits="NEW.traits")}
        ) gone WHERE x.key = gone.key AND x.value = gone.value AND x.person_id = OLD.id;
        INSERT INTO onboarding_persontrait (key, value, person_id)
        SELECT p.key, p.value, NEW.id FROM (
            {PAIRS.format(traits="NEW.traits")} EXCEPT {PAIRS.format(traits="OLD.traits")}
        ) p;
    ELSE
        DELETE FROM onboarding_persontrait x USING ({PAIRS.format(traits="OLD.traits")}) gone
        WHERE x.key = gone.key AND x.value = gone.value AND x.person_id = OLD.id;
    END IF;
    RETURN NULL;
END $$
"""
TRIGGERS = {
    f"{FUNCTION}_insert": "AFTER INSERT",
    # Ingestion's batched UPDATE sets the traits column on every row it touches: the WHEN clause
    # leaves the rows whose traits did not change alone.
    f"{FUNCTION}_update": "AFTER UPDATE OF traits",
    f"{FUNCTION}_delete": "AFTER DELETE",
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    execute = schema_editor.execute
    for column in ("key", "value"):
        execute(f'ALTER TABLE onboarding_persontrait ALTER COLUMN {column} TYPE text COLLATE "C"')
    execute(CREATE_FUNCTION)
    for name, when in TRIGGERS.items():
        condition = " WHEN (OLD.traits IS DISTINCT FROM NEW.traits)" if "UPDATE" in when else ""
        execute(
            f"CREATE TRIGGER {name} {when} ON onboarding_person FOR EACH ROW{condition}"
            f" EXECUTE FUNCTION {FUNCTION}()"
        )
    execute(
        "INSERT INTO onboarding_persontrait (key, value, person_id)"
        f" SELECT p.key, p.value, person.id FROM onboarding_person person,"
        f" LATERAL ({PAIRS.format(traits='person.traits')}) p"
    )
    # Filled in the people's order, the key's pages were split half full: rebuilt packed
    # (5,000 pages instead of 8,100 for 1 M people).
    execute("REINDEX INDEX onboarding_persontrait_pkey")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in TRIGGERS:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON onboarding_person")
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")


class Migration(migrations.Migration):
    dependencies = [("onboarding", "0012_event_references_checked_per_batch")]

    operations = [
        migrations.CreateModel(
            name="PersonTrait",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "key",
                        "value",
                        "person_id",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("key", models.TextField()),
                ("value", models.TextField()),
                ("person_id", models.BigIntegerField()),
            ],
            options={"db_table": "onboarding_persontrait"},
        ),
        migrations.RunPython(create, drop),
    ]
