from django.db import migrations

from dashboard.permissions import install_groups


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0002_groups"),
        ("onboarding", "0002_flows"),
        ("triggers", "0007_manual_messages"),
    ]

    operations = [migrations.RunPython(install_groups, migrations.RunPython.noop)]
