"""python manage.py plan SLUG --workers N [--gpus M]: what a farm render of SLUG costs here."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.panoramas.farm_plan import farm_plan
from webapp.panoramas.models import Panorama


class Command(BaseCommand):
    help = "Jobs, bytes, memory per job and wall time of a farm render, from the rates measured here"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slug")
        parser.add_argument("--workers", type=int, default=1, help="CPU workers")
        parser.add_argument("--gpus", type=int, default=0, help="GPU workers (stack jobs)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **opts: Any) -> None:
        pano = Panorama.objects.filter(slug=opts["slug"]).first()
        if pano is None:
            raise CommandError(f"no panorama {opts['slug']!r}")
        try:
            p = farm_plan(pano, opts["workers"], opts["gpus"])
        except ValueError as e:
            raise CommandError(str(e)) from e
        if opts["json"]:
            self.stdout.write(json.dumps(p))
            return
        gpus = f" + {p['gpus']} GPU(s)" if p["gpus"] else ""
        lines = [
            f"{pano.slug}: {p['width']} x {p['height']} px ({p['gigapixels']} GP, size from {p['size_from']})",
            f"jobs: {p.get('stack_jobs', 0)} stack, 1 layout, {p['block_jobs']} block ({p['block_px']} px), "
            f"{p['reduce_jobs']} reduce in {p['stages']} stages; {p['tiles']} tiles",
            f"bytes: pyramid about {p.get('pyramid_bytes', 0) / 1e6:,.0f} MB; edge bands {p['band_bytes_per_job'] / 1e6:.0f} MB "
            "per job in flight",
            f"memory per job: block {p.get('block_peak_mb', '?')} MB, reduce {p.get('reduce_peak_mb', '?')} MB (peak RSS)",
            f"wall time on {p['workers']} worker(s){gpus}: "
            f"{p['wall_s']:,.0f} s = {p['wall_h']} h (stacks {p.get('stack_wall_s') or 'unmeasured'} s, layout {p.get('layout_s', 0)} s, "
            f"blocks and reduces {p['farm_wall_s']} s, critical path {p['critical_path_s']} s)",
            f"rates from {p['rates_file']}",
        ]
        self.stdout.write("\n".join(lines))
