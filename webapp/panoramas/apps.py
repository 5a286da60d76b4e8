from django.apps import AppConfig


class PanoramasConfig(AppConfig):
    name = "webapp.panoramas"
    label = "panoramas"
    verbose_name = "Panoramas"
    default_auto_field = "django.db.models.BigAutoField"
