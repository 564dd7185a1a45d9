from django.db import migrations

from triggers.schedules import install_schedules


def forwards(apps, schema_editor):
    install_schedules(apps)


class Migration(migrations.Migration):
    dependencies = [("triggers", "0005_delivery")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
