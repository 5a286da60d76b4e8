"""Review API (included under /api/)."""

from django.urls import path

from . import views

app_name = "review"
urlpatterns = [
    path("p/<slug:slug>/annotations/", views.annotations, name="annotations"),
    path("p/<slug:slug>/stacks/", views.stacks, name="stacks"),
    path("annotations/<int:pk>/", views.annotation, name="annotation"),
    path("annotations/<int:pk>/comments/", views.comments, name="comments"),
    path("annotations/<int:pk>/status/", views.status, name="status"),
]
