from django.db import migrations

from triggers.schedules import install_schedules


def forwards(apps, schema_editor):
    install_schedules(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0004_kpi_rollups"),
        ("triggers", "0008_experiments"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
