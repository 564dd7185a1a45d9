"""An exact inverted index of the people's string and boolean traits (PostgreSQL; issue 16).

A segment's trait equality (``plan = pro``) found its members through the GIN index on the traits
(``person_traits_path``), then read every member's row for its id: 15,000 pages of the people's
table for 200,000 members at scale 1, most of a segment funnel's time outside the progress scan.
``onboarding_persontrait`` holds one narrow row per (trait, value, person) and its primary key is
that triple, so the members of ``plan = pro`` are one index-only range scan (about 1,000 pages).

Triggers keep it equal to ``onboarding_person.traits`` on every write path (ingestion's batched
inserts and updates, merges, erasure, the admin): after an insert and after a delete, once per
statement over its rows; after an update that changes a person's traits, the pairs that changed.
The columns compare bytewise (``COLLATE "C"``). Only top-level keys of an object whose value is
a JSON string or boolean are indexed, keys up to 256 bytes and values (as JSON text) up to 1024
bytes: the compiler asks it only about such pairs (``onboarding.segments.index``).

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
# After an update that changed the traits, per row: only the pairs that changed.
UPDATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM onboarding_persontrait x USING (
        {PAIRS.format(traits="OLD.traits")} EXCEPT {PAIRS.format(traits="NEW.traits")}
    ) gone WHERE x.key = gone.key AND x.value = gone.value AND x.person_id = OLD.id;
    INSERT INTO onboarding_persontrait (key, value, person_id)
    SELECT p.key, p.value, NEW.id FROM (
        {PAIRS.format(traits="NEW.traits")} EXCEPT {PAIRS.format(traits="OLD.traits")}
    ) p;
    RETURN NULL;
END $$
"""
# After an insert or a delete, once per statement over all its rows (ingestion inserts a batch's
# new people in one statement): one INSERT or DELETE instead of one per person.
INSERT_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO onboarding_persontrait (key, value, person_id)
    SELECT p.key, p.value, n.id FROM new_people n,
    LATERAL ({PAIRS.format(traits="n.traits")}) p;
    RETURN NULL;
END $$
"""
DELETE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM onboarding_persontrait x USING (
        SELECT o.id, p.key, p.value FROM old_people o,
        LATERAL ({PAIRS.format(traits="o.traits")}) p
    ) gone WHERE x.key = gone.key AND x.value = gone.value AND x.person_id = gone.id;
    RETURN NULL;
END $$
"""
TRIGGERS = {
    f"{FUNCTION}_insert": (
        INSERT_FUNCTION,
        "AFTER INSERT ON onboarding_person REFERENCING NEW TABLE AS new_people FOR EACH STATEMENT",
    ),
    # Ingestion's batched UPDATE sets the traits column on every row it touches: the WHEN clause
    # leaves the rows whose traits did not change alone. (A person's id never changes.)
    f"{FUNCTION}_update": (
        UPDATE_FUNCTION,
        "AFTER UPDATE OF traits ON onboarding_person FOR EACH ROW"
        " WHEN (OLD.traits IS DISTINCT FROM NEW.traits)",
    ),
    f"{FUNCTION}_delete": (
        DELETE_FUNCTION,
        "AFTER DELETE ON onboarding_person REFERENCING OLD TABLE AS old_people FOR EACH STATEMENT",
    ),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    execute = schema_editor.execute
    for column in ("key", "value"):
        execute(f'ALTER TABLE onboarding_persontrait ALTER COLUMN {column} TYPE text COLLATE "C"')
    for name, (function, when) in TRIGGERS.items():
        execute(function)
        execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {name}()")
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
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {name}()")


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
