"""``onramp_collect(bigint)``: an array aggregate that parallel workers can combine (PostgreSQL).

The funnel's medians collect the few gaps around each median in the same parallel pass that
counts the steps (``dashboard/funnels/pg.py``, issue 16). PostgreSQL 15's ``array_agg`` has no
combine function, so a query using it cannot aggregate in parallel; this one combines partial
arrays with ``array_cat``. Nothing on SQLite, where funnels are aggregated in Python.
"""

from django.db import migrations

CREATE = (
    "CREATE AGGREGATE onramp_collect(bigint) (SFUNC = array_append, STYPE = bigint[],"
    " COMBINEFUNC = array_cat, PARALLEL = SAFE)"
)
DROP = "DROP AGGREGATE IF EXISTS onramp_collect(bigint)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0008_operations_permission")]

    operations = [migrations.RunPython(create, drop)]
