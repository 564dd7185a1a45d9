"""Vacuum the trait index that migration 0013 filled (PostgreSQL).

An index-only scan skips a row's visit only on pages the visibility map marks all-visible, which
the first vacuum does; until autovacuum came by, a segment's members would be read row by row.
``VACUUM`` cannot run inside a transaction, hence a migration of its own, not atomic.
"""

from django.db import migrations


def vacuum(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("VACUUM (ANALYZE) onboarding_persontrait")


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("onboarding", "0013_person_trait_index")]

    operations = [migrations.RunPython(vacuum, migrations.RunPython.noop)]
