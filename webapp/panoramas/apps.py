from django.apps import AppConfig


class PanoramasConfig(AppConfig):
    name = "webapp.panoramas"
    label = "panoramas"
    verbose_name = "Panoramas"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .region_status import mark_rerendered
        from .signals import pyramid_published

        pyramid_published.connect(mark_rerendered, dispatch_uid="terapan-mark-rerendered")
