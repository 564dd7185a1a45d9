from django.db import migrations

from triggers.schedules import install_schedules


def forwards(apps, schema_editor):
    install_schedules(apps)


class Migration(migrations.Migration):
    dependencies = [("triggers", "0010_backtest_runs"), ("django_celery_beat", "0019_alter_periodictasks_options")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
