"""python manage.py rerender SLUG [--stack ID ...] [--region X,Y,W,H] [--param stage.key=value ...] [--wait] [--json]"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from rq import Worker

from webapp.panoramas.models import Job, Panorama, Status
from webapp.panoramas.rerender import (
    RerenderError,
    describe,
    execute,
    parse_param_overrides,
    parse_region,
    plan_rerender,
)
from webapp.panoramas.workers import start_workers, stop_workers


class Command(BaseCommand):
    help = "Re-render stacks (or the stacks under a region) and republish only the tiles they touch."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slug")
        parser.add_argument("--stack", type=int, action="append", dest="stacks", help="stack id (repeatable)")
        parser.add_argument("--region", help="X,Y,W,H in panorama pixels")
        parser.add_argument("--param", action="append", default=[], help="stage.key=value (repeatable)")
        parser.add_argument("--full", action="store_true", help="rebuild the whole panorama")
        parser.add_argument("--wait", action="store_true", help="wait for the chain to finish")
        parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
        parser.add_argument(
            "--workers", type=int, default=None, help="start N workers for --wait (default: 2 if none is running)"
        )
        parser.add_argument("--timeout", type=int, default=3600)

    def handle(self, *args: Any, **o: Any) -> None:
        pano = Panorama.objects.filter(slug=o["slug"]).first()
        if pano is None:
            raise CommandError(f"no panorama {o['slug']!r}")
        region = None
        if o["region"]:
            try:
                region = parse_region(o["region"])
            except RerenderError as e:
                raise CommandError(f"--region: {e}") from e
        try:
            plan = plan_rerender(
                pano,
                stack_ids=o["stacks"],
                region=region,
                overrides=parse_param_overrides(o["param"]),
                full=o["full"],
            )
        except RerenderError as e:
            raise CommandError(str(e)) from e
        if not o["json"]:
            self.stdout.write(f"plan: {json.dumps(describe(plan))}")
        t0 = time.monotonic()
        chain = execute(plan)
        summary: dict[str, Any] = {"queued": [j.pk for j in chain.all_jobs()]}
        if o["wait"]:
            import django_rq

            n = o["workers"]
            if n is None:
                n = 0 if Worker.all(connection=django_rq.get_connection("gpu")) else 2
            workers = start_workers(n) if n else []
            try:
                summary = self._wait(chain, o["timeout"])
            finally:
                stop_workers(workers)
        pano.refresh_from_db()
        pyr = pano.published_pyramid
        out = {
            "version": pyr.version if pyr else None,
            "stacks_rerendered": len(chain.stack_jobs),
            "tiles_rewritten": summary.get("tiles_rewritten"),
            "tiles_total": summary.get("tiles_total"),
            "seconds": round(time.monotonic() - t0, 2),
        }
        self.stdout.write(json.dumps(out) if o["json"] else f"done: {out}")

    def _wait(self, chain: Any, timeout: int) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = chain.pyramid_job
        ids = [j.pk for j in chain.all_jobs()]
        while time.monotonic() < deadline:
            job = Job.objects.get(pk=last.pk)
            if job.status == Status.DONE:
                return job.result
            dead = Job.objects.filter(pk__in=ids, status=Status.FAILED).exclude(kind="stack")
            if dead.exists():
                d = dead.first()
                raise CommandError(f"{d.kind} job #{d.pk} failed: {d.error}")
            time.sleep(0.5)
        raise CommandError("timed out waiting for the re-render")
