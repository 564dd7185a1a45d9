"""The funnel's grouped pass runs in parallel workers (PostgreSQL; issue 16, dashboard/funnels/pg.py).

- ``onramp_collect`` gets a state size estimate (``SSPACE``): without it the planner assumes
  8 kB per array state and, multiplied by its guess of tens of thousands of groups (it cannot tell
  how few (day, step) pairs there are), expects the hashed aggregate to spill, and sorts every
  row in each worker instead (0.61 against 0.35 s at scale 1). The states are a few hundred
  gaps around a median, in a few hundred groups.
- ``onramp_person_trait(person, name)``: a person's trait as breakdown text, declared parallel
  safe. A breakdown falls back to the person's trait where the entry event has no such property;
  as a correlated subquery in the query that lookup is parallel-restricted, so the breakdown's
  value, and everything grouped by it, was computed in the leader alone.

Nothing on SQLite, where funnels are aggregated in Python.
"""

from django.db import migrations

COLLECT = (
    "CREATE AGGREGATE onramp_collect(bigint) (SFUNC = array_append, STYPE = bigint[],"
    " COMBINEFUNC = array_cat, PARALLEL = SAFE{sspace})"
)
DROP_COLLECT = "DROP AGGREGATE IF EXISTS onramp_collect(bigint)"
TRAIT = (
    "CREATE OR REPLACE FUNCTION onramp_person_trait(person bigint, name text) RETURNS text"
    " LANGUAGE sql STABLE PARALLEL SAFE"
    " AS 'SELECT traits ->> name FROM onboarding_person WHERE id = person'"
)
DROP_TRAIT = "DROP FUNCTION IF EXISTS onramp_person_trait(bigint, text)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_COLLECT)
        schema_editor.execute(COLLECT.format(sspace=", SSPACE = 64"))
        schema_editor.execute(TRAIT)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRAIT)
        schema_editor.execute(DROP_COLLECT)
        schema_editor.execute(COLLECT.format(sspace=""))


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0009_onramp_collect_aggregate"),
        ("onboarding", "0011_person_traits_path_index"),
    ]

    operations = [migrations.RunPython(create, drop)]
