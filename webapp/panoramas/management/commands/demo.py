"""python manage.py demo: build a demo panorama through the real job chain, serve it.

Synthetic handheld bursts of a procedural 360-degree landscape (mountains,
forest, a town with lit windows, a lake: detail down to single pixels) are
made by processing.synth.scene_capture; this command only records them in the
database, starts real RQ workers, enqueues the real farm chain (stack jobs ->
layout job -> block jobs -> reduce jobs -> published pyramid) and waits with a
progress bar. --gigapixels sets the panorama's size (0.2 by default: about
200 MP, a few minutes on 2 cores; 1+ for those who want to see a gigapixel).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import threading
import time
import webbrowser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from webapp.panoramas.farm import enqueue_farm_render
from webapp.panoramas.models import (
    Frame,
    Job,
    Membership,
    Panorama,
    Stack,
    Status,
    SubPanorama,
)
from webapp.panoramas.workers import start_workers, stop_workers

SLUG = "demo"


#: relative cost of the chain's jobs (the demo's: a stack job takes about four block jobs' time)
STACK_UNITS, LAYOUT_UNITS, FARM_JOB_UNITS = 4.0, 2.0, 1.0


def chain_progress(rows: list[Job]) -> tuple[float, str]:
    """Percent done of a farm chain (its stack, layout and root rows), weighting the jobs by
    their cost: the farm's block and reduce jobs count one by one (the root row's progress is
    their share done), not as one row among the stacks."""

    def frac(r: Job) -> float:
        return 1.0 if r.status == Status.DONE else max(0.0, min(1.0, r.progress / 100.0))

    stacks = [r for r in rows if r.kind == Job.Kind.STACK]
    layouts = [r for r in rows if r.kind == Job.Kind.LAYOUT]
    roots = [r for r in rows if r.kind == Job.Kind.PYRAMID]
    farm_jobs = int(roots[0].params.get("total") or 0) if roots else 0
    farm_jobs = farm_jobs or 4 * len(stacks) + 2  # before the layout has planned the farm
    total = STACK_UNITS * len(stacks) + LAYOUT_UNITS * len(layouts) + FARM_JOB_UNITS * farm_jobs
    done = STACK_UNITS * sum(frac(r) for r in stacks) + LAYOUT_UNITS * sum(frac(r) for r in layouts)
    done += FARM_JOB_UNITS * farm_jobs * (frac(roots[0]) if roots else 0.0)
    note = roots[0].message if roots and roots[0].message.startswith("farm:") else ""
    return 100.0 * done / max(total, 1e-9), note


class Command(BaseCommand):
    help = "Build a demo panorama through the real pipeline and serve it at http://127.0.0.1:8000/"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-serve", action="store_true", help="build, print a JSON line and exit")
        parser.add_argument("--gigapixels", type=float, default=0.2, help="size of the panorama (ground truth)")
        parser.add_argument("--stacks", type=int, default=0, help="stacks round the cylinder (default: by size)")
        parser.add_argument("--frames", type=int, default=4, help="frames per burst")
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--rebuild",
            action="store_true",
            help="rebuild even if a demo is already published",
        )
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--timeout", type=int, default=1800, help="seconds to wait for the chain")

    def handle(self, *args: Any, **opts: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        user, password = self._demo_user()
        pano = Panorama.objects.filter(slug=SLUG).first()
        workers = start_workers(opts["workers"])
        try:
            if pano is None or pano.published_pyramid is None or opts["rebuild"]:
                pano = self._build(user, opts)
            url = f"http://127.0.0.1:{opts['port']}/"
            result = {
                "url": url,
                "user": user.username,
                "password": password,
                "panorama": SLUG,
            }
            if opts["no_serve"]:
                self.stdout.write(json.dumps(result))
                return
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo panorama ready: {url}p/{SLUG}/  (admin: {url}admin/ "
                    f"user {user.username} password {password})"
                )
            )
            if os.environ.get("DISPLAY") or sys.platform == "darwin":
                # A desktop session: open the viewer once the server is up.
                threading.Timer(2.0, webbrowser.open, args=[f"{url}p/{SLUG}/"]).start()
            call_command("runserver", f"127.0.0.1:{opts['port']}", use_reloader=False)
        finally:
            stop_workers(workers)

    def _demo_user(self) -> tuple[Any, str]:
        User = get_user_model()
        password = secrets.token_urlsafe(9)
        user, _ = User.objects.get_or_create(username="demo", defaults={"email": "demo@example.com"})
        user.is_staff = True
        user.is_superuser = True
        user.set_password(password)
        user.save()
        return user, password

    def _build(self, user: Any, opts: dict[str, Any]) -> Panorama:
        import shutil

        from processing.synth.scene_capture import SceneCaptureParams, build_scene_capture

        gp = opts["gigapixels"]
        # about 16 MP of ground truth per stack (4 MP frames at x2), at least 12 round the circle
        stacks = opts["stacks"] or max(12, round(gp * 1e9 * 1.3 / 16e6))
        if not 0.01 <= gp <= 100 or stacks < 4 or opts["frames"] < 2:
            raise CommandError("need 0.01 <= --gigapixels <= 100, --stacks >= 4 and --frames >= 2")
        Panorama.objects.filter(slug=SLUG).delete()
        root = Path(settings.MEDIA_ROOT) / "captures" / SLUG
        shutil.rmtree(root, ignore_errors=True)
        params = SceneCaptureParams(
            gigapixels=gp,
            aspect=max(12.0, 20.0 * math.sqrt(gp / 0.2)),
            n_stacks=stacks,
            n_frames=opts["frames"],
            seed=opts["seed"],
            workers=max(1, opts["workers"]),
        )
        t0 = time.monotonic()
        with tqdm(
            total=100,
            desc="synthetic capture",
            unit="%",
            bar_format="{l_bar}{bar}| {n:.0f}%",
        ) as bar:

            def progress(f: float, msg: str = "") -> None:
                bar.n = 100 * f
                bar.set_postfix_str(msg[:40])
                bar.refresh()

            manifest = build_scene_capture(root, params, progress=progress)
        with transaction.atomic():
            pano = Panorama.objects.create(
                slug=SLUG,
                title=f"Demo: {manifest['source']}",
                description=(
                    "Synthetic handheld bursts of a procedural 360-degree landscape, stacked, stitched and "
                    "tiled by block and reduce jobs on RQ workers."
                ),
                projection="cylindrical",
                wrap=True,
                scale=manifest.get("scale", 2.0),
                is_public=True,
                owner=user,
                # 4-frame bursts: keep 3; the farm renders blocks of 8 x 8 tiles
                recipe_defaults={"stack": {"sharpness": {"drop_worst": 1}}, "farm": {"block_tiles": 8}},
            )
            Membership.objects.create(user=user, panorama=pano, role=Membership.Role.OWNER)
            sub = SubPanorama.objects.create(panorama=pano, name="main")
            for i, st in enumerate(manifest["stacks"]):
                stack = Stack.objects.create(
                    subpanorama=sub,
                    name=st["name"],
                    row=0,
                    col=i,
                    yaw=st["yaw"],
                    pitch=st.get("pitch", 0.0),
                    focal_px=st["focal_px"],
                )
                Frame.objects.bulk_create(
                    Frame(
                        stack=stack,
                        original_path=str(Path(p).resolve()),
                        width=st["width"],
                        height=st["height"],
                    )
                    for p in st["frames"]
                )
        plan = enqueue_farm_render(pano)
        self._wait(plan.all_jobs(), opts["timeout"])
        pano.refresh_from_db()
        if pano.published_pyramid is None:
            raise CommandError("the chain finished without publishing a pyramid; see the Job rows in the admin")
        self.stderr.write(f"demo built in {time.monotonic() - t0:.0f} s")
        return pano

    def _wait(self, jobs: list[Job], timeout: int) -> None:
        ids = [j.pk for j in jobs]
        deadline = time.monotonic() + timeout
        with tqdm(
            total=100.0,
            desc="render chain",
            unit="%",
            bar_format="{l_bar}{bar}| {n:.0f}% {postfix}",
        ) as bar:
            while True:
                rows = list(Job.objects.filter(pk__in=ids))
                bar.n, note = chain_progress(rows)
                running = [r for r in rows if r.status == Status.RUNNING]
                bar.set_postfix_str((running[0].message if running else note)[:50])
                bar.refresh()
                final = [r for r in rows if r.kind == Job.Kind.PYRAMID]
                if final and final[0].status == Status.DONE:
                    return
                bad = [r for r in rows if r.kind != Job.Kind.STACK and r.status == Status.FAILED]
                if bad:
                    raise CommandError(f"{bad[0].kind} job failed: {bad[0].error}")
                if time.monotonic() > deadline:
                    raise CommandError("timed out waiting for the render chain")
                time.sleep(1.0)
