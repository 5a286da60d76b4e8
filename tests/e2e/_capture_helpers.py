"""A small synthetic 360-degree panorama recorded in the database, for tests
that run the real job chain."""

from __future__ import annotations

from pathlib import Path


def make_panorama(root: Path, slug: str, n_stacks: int = 10, frames: int = 3, view_height: int = 240, seed: int = 5):  # noqa: ANN201
    from processing.synth.demo_capture import DemoCaptureParams, build_capture
    from webapp.panoramas.models import Frame, Panorama, Stack, SubPanorama

    manifest = build_capture(
        root / "capture", DemoCaptureParams(n_stacks=n_stacks, n_frames=frames, view_height=view_height, seed=seed)
    )
    pano = Panorama.objects.create(slug=slug, title=slug, projection="cylindrical", wrap=True, is_public=True)
    sub = SubPanorama.objects.create(panorama=pano, name="main")
    for i, st in enumerate(manifest["stacks"]):
        s = Stack.objects.create(
            subpanorama=sub, name=st["name"], col=i, yaw=st["yaw"], pitch=0.0, focal_px=st["focal_px"]
        )
        Frame.objects.bulk_create(Frame(stack=s, original_path=f) for f in st["frames"])
    return pano
