from django.apps import AppConfig


class ViewerConfig(AppConfig):
    name = "webapp.viewer"
    label = "viewer"
    verbose_name = "Viewer and tile serving"
