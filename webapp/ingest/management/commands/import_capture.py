"""python manage.py import_capture SLUG DIR: build a panorama from a capture folder."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from processing.io.errors import InputError
from webapp.ingest import services


class Command(BaseCommand):
    help = (
        "Import the frames under DIR (as the camera wrote them) into panorama SLUG: one sub-panorama per "
        "top-level folder, one stack per burst. Originals are never modified; re-running is safe."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="panorama slug (created if missing)")
        parser.add_argument("dir", help="capture folder")
        parser.add_argument("--subpanorama", help="put every frame into this one sub-panorama")
        parser.add_argument("--dry-run", action="store_true", help="only print the plan; write nothing")
        parser.add_argument("--json", action="store_true", help="print the plan/result as JSON on the last line")
        parser.add_argument("--angles", help="CSV with columns stack, yaw, pitch (optional subpanorama)")
        parser.add_argument("--columns", type=int, help="grid columns (serpentine rows); default one row")
        parser.add_argument("--gap", type=float, help="seconds between frames that start a new burst (default 1)")
        parser.add_argument("--title", help="title of a new panorama")
        parser.add_argument("--no-checksums", action="store_true", help="skip SHA-256 of the originals")
        parser.add_argument(
            "--stop-after", type=int, metavar="N", help="stop after N bursts (a partial import; run again to resume)"
        )

    def handle(self, *args: Any, **o: Any) -> None:
        from tqdm import tqdm

        try:
            params = services.make_params(columns=o["columns"], gap=o["gap"])
        except ValueError as e:
            raise CommandError(str(e)) from e
        bars: dict[str, Any] = {}
        quiet = int(o.get("verbosity", 1)) < 1

        def progress(stage: str, done: int, total: int) -> None:
            if quiet or stage not in ("scan", "import"):
                return
            bar = bars.get(stage)
            if bar is None:
                for b in bars.values():
                    b.close()
                unit = "file" if stage == "scan" else "frame"
                bar = bars[stage] = tqdm(total=total or None, desc=stage, unit=unit, file=self.stderr._out)
            bar.update(done - bar.n)

        try:
            result = services.import_capture(
                o["slug"],
                o["dir"],
                subpanorama=o["subpanorama"],
                dry_run=o["dry_run"],
                angles_csv=o["angles"],
                params=params,
                progress=progress,
                stop_after=o["stop_after"],
                checksums=not o["no_checksums"],
                title=o["title"],
            )
        except services.ImportInterrupted as e:
            raise CommandError(f"{e}; run the same command again to resume") from e
        except (services.ImportRootError, InputError, FileNotFoundError) as e:
            raise CommandError(str(e)) from e
        finally:
            for b in bars.values():
                b.close()
        if not o["json"]:
            self._summary(result)
        else:
            self.stdout.write(json.dumps(result, default=str))

    def _summary(self, r: dict[str, Any]) -> None:
        w = self.stdout.write
        w(
            f"{'plan for' if r['dry_run'] else 'imported into'} {r['slug']}: {r['stacks_found']} stacks, "
            f"{r['frames_placed']} frames from {r['files_scanned']} files"
        )
        for sp in r["subpanoramas"]:
            w(f"  {sp['name']}: {sp['stacks']} stacks, {sp['frames']} frames")
        if r.get("candidate_groups"):
            w(f"  repeated areas: {len(r['candidate_groups'])} candidate groups")
        for reason, n in sorted(r["not_placed_counts"].items()):
            w(f"  not placed ({reason}): {n}")
        if not r["dry_run"]:
            c = r["created"]
            w(f"  created {c['stacks']} stacks, {c['frames']} frames; {r['unchanged_frames']} frames already there")
