# This migration installed the beat schedules by calling triggers.schedules, which meant a change
# there never reached a database that had already run it. They are now installed after every
# migrate by a post_migrate receiver (TriggersConfig.ready). Kept as a no-op, with its number and
# dependencies, so databases that applied it stay consistent.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("triggers", "0005_delivery")]

    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
