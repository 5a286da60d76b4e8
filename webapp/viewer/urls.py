"""Viewer pages and tile serving (included at the site root)."""

from django.urls import path, register_converter

from . import tiles, views


class TileFormat:
    regex = "jpg|png|webp"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(TileFormat, "tilefmt")

app_name = "viewer"
urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:slug>/", views.panorama, name="panorama"),
    path("p/<slug:slug>/compare/", views.compare, name="compare"),
    path("p/<slug:slug>/published/", views.published, name="published"),
    path("tiles/<int:pyramid_id>/v<int:version>/image.dzi", tiles.dzi, name="dzi"),
    path(
        "tiles/<int:pyramid_id>/v<int:version>/image_files/<int:level>/<int:col>_<int:row>.<tilefmt:fmt>",
        tiles.tile,
        name="tile",
    ),
]
