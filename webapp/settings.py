"""Django settings, all from the environment (see README: Configuration).

Embedded default: SQLite in the project folder and an embedded Redis server.
Production: DATABASE_URL, REDIS_URL, SECRET_KEY, ALLOWED_HOSTS, DEBUG=0.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
_VAR = BASE_DIR / "var"
if os.environ.get("PYTEST_VERSION"):
    # A test session (pytest-django imports these settings before conftest.py
    # can set TERAPAN_VAR_DIR): its own embedded Redis and test database, as
    # conftest.py expects, never the checkout's (a running demo's) server.
    _VAR = _VAR / f"test-{os.getpid()}"
VAR_DIR = Path(env_str("TERAPAN_VAR_DIR", str(_VAR)))

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "insecure-dev-only-key-terapan-not-for-production-use-0123456789"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_rq",
    "axes",
    "webapp.panoramas",
]
# Apps built by other parts of the project register here when present.
for _app in ("webapp.viewer", "webapp.review", "webapp.ingest", "webapp.accounts", "webapp.sharing"):
    if (BASE_DIR / _app.replace(".", "/") / "apps.py").exists():
        INSTALLED_APPS.append(_app)

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "webapp.security.SecurityHeadersMiddleware",
    # Last, as django-axes asks: it turns its lockout signal into a response.
    "axes.middleware.AxesMiddleware",
]

# Login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for
# one username from one address, that pair is locked out for the cool-off
# time, right password or not (the admin login and every authenticate(request=...)).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Behind a reverse proxy, the number of proxies whose X-Forwarded-For to trust.
AXES_IPWARE_PROXY_COUNT = env_int("TERAPAN_PROXY_COUNT", 0, minimum=0) or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if AXES_IPWARE_PROXY_COUNT else ["REMOTE_ADDR"]
)

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))}
except Exception as e:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {e}") from e
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers and the web server write concurrently: wait instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    # A file (not in-memory) test database, so that worker subprocesses share
    # it; one per test process so parallel runs never collide.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if not REDIS_URL:
    from .embedded_redis import ensure_server

    REDIS_URL = ensure_server(VAR_DIR)
EMBEDDED_REDIS = not env_str("REDIS_URL")

RQ_QUEUES = {
    "gpu": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600},
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600},
}
RQ_SHOW_ADMIN_LINK = True
# Enqueue at once: job rows are committed before their RQ jobs are enqueued,
# and the chain needs each job's id for the next one's dependency.
RQ = {"COMMIT_MODE": "auto", "WORKER_CLASS": "webapp.panoramas.worker.TerapanWorker"}
# Address-space cap of one job's work horse (MB; 0 = none). TensorFlow and CUDA
# reserve large virtual ranges: GPU workers want 0 or a generous figure.
TERAPAN_JOB_MAX_MEMORY_MB = env_int("TERAPAN_JOB_MAX_MEMORY_MB", 16384, minimum=0)
# Job timeouts (seconds); RQ's default of 180 s is far too short for a stack.
TERAPAN_JOB_TIMEOUTS = {
    "stack": env_int("TERAPAN_STACK_TIMEOUT", 3600, minimum=10),
    "composite": env_int("TERAPAN_COMPOSITE_TIMEOUT", 6 * 3600, minimum=10),
    "pyramid": env_int("TERAPAN_PYRAMID_TIMEOUT", 6 * 3600, minimum=10),
}

# Failed jobs are retried with backoff (seconds between attempts).
TERAPAN_JOB_RETRIES = env_int("TERAPAN_JOB_RETRIES", 2, minimum=0)
try:
    TERAPAN_RETRY_INTERVALS = [int(x) for x in env_list("TERAPAN_RETRY_INTERVALS", ["5", "30"])]
except ValueError as e:
    raise ImproperlyConfigured("TERAPAN_RETRY_INTERVALS must be integers separated by commas") from e

MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media"))).resolve()
MEDIA_URL = "/media/"
# Folders an import may read from (resolved; symlinks out of them are refused).
TERAPAN_IMPORT_ROOTS = [
    Path(p).resolve()
    for p in env_list("TERAPAN_IMPORT_ROOTS", [str(MEDIA_ROOT / "imports"), str(BASE_DIR.parent / "shared" / "data")])
]
TERAPAN_INGEST_CACHE = Path(env_str("TERAPAN_INGEST_CACHE", str(VAR_DIR / "ingest-cache.sqlite3")))
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
if DEBUG:
    STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns about a missing folder

# Site sign-in for every member (webapp/accounts); the admin keeps its own for staff.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
# E-mail (password resets, invitations): the console by default, SMTP when EMAIL_HOST is set.
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Terapan <terapan@localhost>")
TERAPAN_INVITE_DAYS = env_int("TERAPAN_INVITE_DAYS", 14, minimum=1)
# Exports and IIIF images: the largest output one request may ask for.
TERAPAN_EXPORT_MAX_PIXELS = env_int("TERAPAN_EXPORT_MAX_PIXELS", 16_000_000, minimum=1)
TERAPAN_EXPORT_MAX_SIDE = env_int("TERAPAN_EXPORT_MAX_SIDE", 16384, minimum=1)
TERAPAN_EXPORT_CONCURRENCY = env_int("TERAPAN_EXPORT_CONCURRENCY", 2, minimum=1)  # per web process
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Upload/import limits (bytes) and the per-frame pixel limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, minimum=1024)
TERAPAN_MAX_PIXELS = env_int("TERAPAN_MAX_PIXELS", 250_000_000, minimum=1)
os.environ.setdefault("TERAPAN_MAX_PIXELS", str(TERAPAN_MAX_PIXELS))
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(TERAPAN_MAX_PIXELS))  # read once, at cv2 import

# Security headers (always on) and production hardening (DEBUG off).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the review UI reads it to send X-CSRFToken
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
}
