"""gunicorn settings of the production web tier (compose.yaml, Dockerfile and the
slow-client test use this file; gunicorn also reads it from the working folder).

Threaded workers (gthread): a connection that has sent nothing waits in the
poller without a thread, and a slow client holds one thread of WORKERS x
THREADS, not a whole process, so a handful of slow sockets no longer takes
the site down (docs/security.md has the measurement). `timeout` restarts a
worker whose request thread hangs; `keepalive` closes idle connections.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
worker_connections = 1000
timeout = 60
graceful_timeout = 30
keepalive = 5
# Small request heads: long header floods are refused before Django sees them.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# Recycle workers now and then (a leak never grows without bound).
max_requests = 5000
max_requests_jitter = 500
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
