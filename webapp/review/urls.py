"""Review API (included under /api/)."""

from django.urls import path

from . import views

app_name = "review"
urlpatterns = [
    path("p/<slug:slug>/annotations/", views.annotations, name="annotations"),
    path("p/<slug:slug>/stacks/", views.stacks, name="stacks"),
    path("p/<slug:slug>/changes/", views.changes, name="changes"),
    path("comments/<int:pk>/", views.comment, name="comment"),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/read/", views.notifications_read, name="notifications_read"),
    path("annotations/<int:pk>/", views.annotation, name="annotation"),
    path("annotations/<int:pk>/comments/", views.comments, name="comments"),
    path("annotations/<int:pk>/status/", views.status, name="status"),
]
