from django.db import migrations

from dashboard.permissions import install_groups


class Migration(migrations.Migration):
    """The roles: viewer, growth, experiment owner and support (dashboard/permissions.py)."""

    dependencies = [
        ("dashboard", "0006_support_sees_erasures"),
        ("triggers", "0013_experiment_run_permission"),
    ]

    operations = [migrations.RunPython(install_groups, migrations.RunPython.noop)]
