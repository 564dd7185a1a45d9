"""The events table's references to people and sources, checked once per batch (PostgreSQL).

The two foreign keys of ``onboarding_event`` (``person_id``, ``source_id``) were checked once per
event at commit: about 5 ms of the database's CPU per 500-event batch, a tenth of ingestion's
cost, to look up the same few dozen people again and again. On PostgreSQL they are replaced by:

- on the insert side, the ingestion statement itself (``tracking/store.py``): it locks the
  batch's existing people and its source ``FOR KEY SHARE`` (what a foreign-key check locks), once
  per batch, and the batch is retried if one of them is gone;
- on the delete side, a deferred constraint trigger on each referenced table that refuses to
  delete a person or a source while events still point at it, checked at commit like the foreign
  key was (erasure and merges remove or move the events first, in the same transaction).

The model keeps its ``ForeignKey`` fields (``db_constraint=False``): the ORM still cascades a
person's deletion to their events and protects a source that has events. SQLite keeps the
constraints in the database (the state change alone does not rebuild its table).
"""

from django.db import migrations, models
import django.db.models.deletion

FUNCTIONS = {
    "onboarding_person": ("onboarding_person_keep_events", "person_id", "person"),
    "onboarding_source": ("onboarding_source_keep_events", "source_id", "source"),
}


def _references(cursor) -> list[tuple[str, str]]:
    """(constraint name, referenced table) of the events table's foreign keys."""
    cursor.execute(
        "SELECT conname, confrelid::regclass::text FROM pg_constraint "
        "WHERE conrelid = 'onboarding_event'::regclass AND contype = 'f' "
        "AND confrelid IN ('onboarding_person'::regclass, 'onboarding_source'::regclass)"
    )
    return cursor.fetchall()


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for name, _ in _references(cursor):
            cursor.execute(f'ALTER TABLE onboarding_event DROP CONSTRAINT "{name}"')
        for table, (function, column, label) in FUNCTIONS.items():
            cursor.execute(
                f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF EXISTS (SELECT 1 FROM onboarding_event WHERE {column} = OLD.id) THEN "
                "RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', "
                f"MESSAGE = format('{label} %s is still referenced by events', OLD.id); "
                "END IF; RETURN NULL; END $$"
            )
            cursor.execute(
                f"CREATE CONSTRAINT TRIGGER {function} AFTER DELETE ON {table} "
                f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {function}()"
            )


def backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table, (function, column, label) in FUNCTIONS.items():
            cursor.execute(f"DROP TRIGGER IF EXISTS {function} ON {table}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {function}()")
            cursor.execute(
                f"ALTER TABLE onboarding_event ADD CONSTRAINT onboarding_event_{column}_fk "
                f"FOREIGN KEY ({column}) REFERENCES {table} (id) DEFERRABLE INITIALLY DEFERRED"
            )


class Migration(migrations.Migration):
    dependencies = [("onboarding", "0011_person_traits_path_index")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="person",
                    field=models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="onboarding.person",
                    ),
                ),
                migrations.AlterField(
                    model_name="event",
                    name="source",
                    field=models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="onboarding.source",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(forward, backward)],
        )
    ]
