"""Ingest admin pages; the project includes these at admin/ingest/."""

from django.urls import path

from . import views

app_name = "ingest"

urlpatterns = [
    path("", views.index, name="index"),
    path("job/<int:job_id>/", views.job_detail, name="job"),
    path("thumb/<int:stack_id>/<int:frame_id>.jpg", views.thumb, name="thumb"),
]
