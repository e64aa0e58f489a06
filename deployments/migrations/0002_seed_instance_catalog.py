from django.db import migrations


def seed(apps, schema_editor):
    from deployments.catalog import seed_instance_catalog

    seed_instance_catalog(apps.get_model("deployments", "InstanceType"))


class Migration(migrations.Migration):
    dependencies = [("deployments", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
