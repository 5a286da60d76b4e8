from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("panoramas", "0002_panorama_credits_embed_origins"),
    ]

    operations = [
        migrations.AddField(
            model_name="subpanorama",
            name="is_sky",
            field=models.BooleanField(
                default=False, help_text="a separately shot sky capture: merged into the ground panorama last"
            ),
        ),
    ]
