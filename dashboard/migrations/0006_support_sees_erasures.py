from django.db import migrations

from dashboard.permissions import install_groups


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0005_kpi_schedule"),
        ("onboarding", "0005_erasure"),
    ]

    operations = [migrations.RunPython(install_groups, migrations.RunPython.noop)]
