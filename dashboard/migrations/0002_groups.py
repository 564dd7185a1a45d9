from django.db import migrations

from dashboard.permissions import install_groups


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("dashboard", "0001_initial"),
        ("onboarding", "0001_initial"),
    ]

    operations = [migrations.RunPython(install_groups, migrations.RunPython.noop)]
