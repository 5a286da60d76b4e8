"""URL routes: admin, django-rq dashboard, sign-in, sharing, the viewer, the review API, ingest."""

from functools import wraps

import django_rq.urls
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.urls import URLPattern, include, path, reverse


def superusers_only(view):  # noqa: ANN001, ANN201
    """The RQ dashboard can delete, requeue and empty any queue: superusers only."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), login_url=reverse("admin:login"))
        if not (request.user.is_active and request.user.is_superuser):
            raise PermissionDenied("the RQ dashboard is for superusers")
        return view(request, *args, **kwargs)

    return wrapped


def _guarded(patterns: list) -> list:
    return [
        URLPattern(p.pattern, superusers_only(p.callback), p.default_args, p.name) if isinstance(p, URLPattern) else p
        for p in patterns
    ]


urlpatterns = [
    path("admin/rq/", include((_guarded(django_rq.urls.urlpatterns), django_rq.urls.app_name))),
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
