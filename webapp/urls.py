"""URL routes: admin, django-rq dashboard, sign-in, sharing, the viewer, the review API, ingest."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
]
if "webapp.ingest" in settings.INSTALLED_APPS:
    urlpatterns.insert(0, path("admin/ingest/", include("webapp.ingest.urls")))
if "webapp.review" in settings.INSTALLED_APPS:
    urlpatterns.append(path("api/", include("webapp.review.urls")))
# Site sign-in and membership pages, then sharing (its home page answers "/").
if "webapp.accounts" in settings.INSTALLED_APPS:
    urlpatterns.append(path("", include("webapp.accounts.urls")))
if "webapp.sharing" in settings.INSTALLED_APPS:
    urlpatterns.append(path("", include("webapp.sharing.urls")))
if "webapp.viewer" in settings.INSTALLED_APPS:
    urlpatterns.append(path("", include("webapp.viewer.urls")))
else:
    from webapp.panoramas.views import home

    urlpatterns.append(path("", home, name="home"))
