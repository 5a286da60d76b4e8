from django.apps import AppConfig


class IngestConfig(AppConfig):
    name = "webapp.ingest"
    label = "ingest"
    verbose_name = "Capture ingest"
    default_auto_field = "django.db.models.BigAutoField"
