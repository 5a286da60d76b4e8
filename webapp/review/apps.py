from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "webapp.review"
    label = "review"
    verbose_name = "Collaborative review"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import changes

        changes.connect()
