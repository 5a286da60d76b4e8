"""Home, thumbnails, embed and export pages, and the IIIF Image API (included at the site root)."""

from django.urls import path

from . import views

app_name = "sharing"
urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("p/<slug:slug>/thumbnail/<int:pyramid_id>.jpg", views.thumbnail, name="thumbnail"),
    path("p/<slug:slug>/embed/", views.embed, name="embed"),
    path("p/<slug:slug>/export/", views.export_page, name="export"),
    path("p/<slug:slug>/export/image", views.export_image, name="export_image"),
    path("iiif/<slug:slug>", views.iiif_base, name="iiif_base"),
    path("iiif/<slug:slug>/info.json", views.iiif_info, name="iiif_info"),
    path(
        "iiif/<slug:slug>/<str:region>/<str:size>/<str:rotation>/<str:quality>.<str:fmt>",
        views.iiif_image,
        name="iiif_image",
    ),
]
