"""manage.py reconcile_jobs: repair Job rows that RQ no longer backs (see reconcile.py)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from webapp.panoramas.reconcile import reconcile


class Command(BaseCommand):
    help = "Queue again the jobs RQ lost (Redis crash, dead worker) and fail those RQ failed"

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        self.stdout.write(json.dumps(reconcile().as_dict()))
