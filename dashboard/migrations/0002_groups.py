# This migration installed the permission groups by calling dashboard.permissions. They are now
# installed after every migrate by a post_migrate receiver (DashboardConfig.ready), so a change to
# GROUP_PERMISSIONS reaches existing databases. Kept as a no-op, with its number and dependencies,
# so databases that applied it stay consistent.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("dashboard", "0001_initial"),
        ("onboarding", "0001_initial"),
    ]

    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
