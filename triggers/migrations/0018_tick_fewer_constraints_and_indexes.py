"""A tick writes fewer checked references and index entries per person due (docs/benchmarks.md,
"One transaction per tick"):

- the decision log's and the ledger's rule and rule version lose their database constraint (the
  enrollment carries both with its own; rules are archived, never deleted by the application;
  through the ORM, ``on_delete`` still applies: it is Django's);
- indexes that another one covers are dropped: the decision log's ``person_id`` (its
  ``(person, at)`` index leads with it) and ``rule_version_id`` (nothing looks decisions up by
  version); the enrollments' ``rule_id`` (the unique ``(rule, person, occurrence)`` leads with
  it) and ``rule_version_id``.

Django's ``AlterField`` would drop the constraint and re-add it to drop the index beside it, which
validates the whole table under lock; here the database only drops (by the names it finds). On
SQLite the constraints stay (a table would have to be rebuilt; they only check more), the indexes
go.
"""

import django.db.models.deletion
from django.db import migrations, models

# (table, column, drop its foreign-key constraint, drop its single-column index)
DROPS = [
    ("triggers_decisionlog", "person_id", False, True),
    ("triggers_decisionlog", "rule_id", True, False),
    ("triggers_decisionlog", "rule_version_id", True, True),
    ("triggers_message", "rule_id", True, False),
    ("triggers_message", "rule_version_id", True, False),
    ("triggers_enrollment", "rule_id", False, True),
    ("triggers_enrollment", "rule_version_id", False, True),
]
REFERENCES = {
    "person_id": "onboarding_person",
    "rule_id": "triggers_rule",
    "rule_version_id": "triggers_ruleversion",
}


def drop(apps, schema_editor):
    connection = schema_editor.connection
    quote = schema_editor.quote_name
    with connection.cursor() as cursor:
        for table, column, constraint, index in DROPS:
            found = connection.introspection.get_constraints(cursor, table)
            for name, info in found.items():
                if info["columns"] != [column]:
                    continue
                if constraint and info["foreign_key"] and connection.vendor == "postgresql":
                    schema_editor.execute(f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}")
                elif (
                    index
                    and info["index"]
                    and not info["unique"]
                    and not info["primary_key"]
                    and not info["foreign_key"]
                ):
                    schema_editor.execute(f"DROP INDEX {quote(name)}")


def restore(apps, schema_editor):
    quote = schema_editor.quote_name
    postgres = schema_editor.connection.vendor == "postgresql"
    for table, column, constraint, index in DROPS:
        if index:
            schema_editor.execute(
                f"CREATE INDEX {quote(f'{table}_{column}_restored')} ON {quote(table)} ({quote(column)})"
            )
        if constraint and postgres:
            schema_editor.execute(
                f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(f'{table}_{column}_fk_restored')} "
                f"FOREIGN KEY ({quote(column)}) REFERENCES {quote(REFERENCES[column])} (id) "
                "DEFERRABLE INITIALLY DEFERRED"
            )


class Migration(migrations.Migration):

    dependencies = [
        ('onboarding', '0011_person_traits_path_index'),
        ('triggers', '0017_message_indexes_partial_fewer'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop, restore)],
            state_operations=[
                migrations.AlterField(
                    model_name='decisionlog',
                    name='person',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='onboarding.person'),
                ),
                migrations.AlterField(
                    model_name='decisionlog',
                    name='rule',
                    field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='decisions', to='triggers.rule'),
                ),
                migrations.AlterField(
                    model_name='decisionlog',
                    name='rule_version',
                    field=models.ForeignKey(db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='triggers.ruleversion'),
                ),
                migrations.AlterField(
                    model_name='message',
                    name='rule',
                    field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='triggers.rule'),
                ),
                migrations.AlterField(
                    model_name='message',
                    name='rule_version',
                    field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='triggers.ruleversion'),
                ),
                migrations.AlterField(
                    model_name='enrollment',
                    name='rule',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='enrollments', to='triggers.rule'),
                ),
                migrations.AlterField(
                    model_name='enrollment',
                    name='rule_version',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='triggers.ruleversion'),
                ),
            ],
        ),
    ]
