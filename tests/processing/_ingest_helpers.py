"""A small synthetic capture tree with known bursts, shared by the ingest tests.

Layout (times in seconds after T0; frames 0.05 s apart inside a burst):

    A/100CAM/IMG_0001..0006.jpg  burst a1 at 0 (scene 0), with a 1.0 s buffer stall
                                 after the 3rd frame: ambiguous gap, same scene
    A/100CAM/IMG_0007..0010.jpg  burst a2 at 4 (scene 1): clear gap
    A/100CAM/IMG_0011..0014.jpg  burst a3 at 5.35 (scene 2): ambiguous 1.2 s gap, new scene
    A/101CAM/IMG_0015..0018.jpg  burst a4 at 600 (scene 0 again): the repeated area
    A/100CAM/IMG_9000.jpg        corrupt (random bytes)
    A/notes.txt                  not an image
    B/P0001..0003.png            burst b1, no EXIF: file mtimes at 1000 (scene 3)
    B/P0004..0006.tif            burst b2, no EXIF: mtimes at 1010 (scene 4)
    B/tiny.png                   16 x 16: too small
"""

from __future__ import annotations

import calendar
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

T0 = calendar.timegm((2024, 3, 1, 10, 0, 0, 0, 0, 0))
W, H = 96, 64


@dataclass
class Capture:
    root: Path
    # expected stacks: (subpanorama, stack name, number of frames)
    stacks: list[tuple[str, str, int]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # rel path -> reason prefix
    repeat: tuple[str, str] = ("", "")  # two stack names of one candidate group (sub-panorama A)
    frames: int = 0


def _world(seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((12, 60, 3))
    big = np.asarray(
        Image.fromarray((small * 255).astype(np.uint8)).resize((60 * 16, 12 * 16), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    return big


def _view(world: np.ndarray, scene: int, dx: int, dy: int, rng: np.random.Generator) -> np.ndarray:
    x0 = 20 + scene * 150 + dx
    y0 = 40 + dy
    crop = world[y0 : y0 + H, x0 : x0 + W]
    noisy = crop + rng.normal(0, 3.0, crop.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _exif(t: float, iso: int = 200) -> Image.Exif:
    ex = Image.Exif()
    whole = int(t)
    st = __import__("time").gmtime(whole)
    stamp = f"{st.tm_year:04d}:{st.tm_mon:02d}:{st.tm_mday:02d} {st.tm_hour:02d}:{st.tm_min:02d}:{st.tm_sec:02d}"
    ex[0x0132] = stamp
    ex[0x010F] = "Terapan"
    ex[0x0110] = "SynthCam"
    ifd = ex.get_ifd(0x8769)
    ifd[0x9003] = stamp
    ifd[0x9291] = f"{round((t - whole) * 1000):03d}"
    ifd[0x829A] = 1 / 500
    ifd[0x829D] = 8.0
    ifd[0x8827] = iso
    ifd[0x920A] = 600.0
    ifd[0xA405] = 900
    return ex


def make_capture(root: Path) -> Capture:
    root = Path(root)
    world = _world()
    rng = np.random.default_rng(1)
    cap = Capture(root=root)
    n = 0

    def jpeg_burst(folder: str, start: float, scene: int, count: int, stall_after: int | None = None) -> str:
        nonlocal n
        t = start
        first = ""
        for i in range(count):
            n += 1
            rel = f"A/{folder}/IMG_{n:04d}.jpg"
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            img = _view(world, scene, int(rng.integers(-1, 2)), int(rng.integers(-1, 2)), rng)
            Image.fromarray(img).save(p, "JPEG", quality=90, exif=_exif(t))
            first = first or f"{folder}/IMG_{n:04d}"
            t += 1.0 if stall_after is not None and i == stall_after - 1 else 0.05
        cap.stacks.append(("A", first, count))
        cap.frames += count
        return first

    a1 = jpeg_burst("100CAM", T0 + 0.0, 0, 6, stall_after=3)
    jpeg_burst("100CAM", T0 + 4.0, 1, 4)
    jpeg_burst("100CAM", T0 + 5.35, 2, 4)  # 4.0 + 3 x 0.05 = 4.15: a 1.2 s gap
    a4 = jpeg_burst("101CAM", T0 + 600.0, 0, 4)
    cap.repeat = (a1, a4)

    (root / "A/100CAM/IMG_9000.jpg").write_bytes(np.random.default_rng(3).bytes(2000))
    cap.skipped["A/100CAM/IMG_9000.jpg"] = "corrupt"
    (root / "A/notes.txt").write_text("shot on a windy day\n")
    cap.skipped["A/notes.txt"] = "not an image"

    bdir = root / "B"
    bdir.mkdir(parents=True)
    for k, (ext, scene, start) in enumerate([("png", 3, 1000.0), ("tif", 4, 1010.0)]):
        for i in range(3):
            idx = k * 3 + i + 1
            p = bdir / f"P{idx:04d}.{ext}"
            img = _view(world, scene, int(rng.integers(-1, 2)), int(rng.integers(-1, 2)), rng)
            Image.fromarray(img).save(p)
            t = T0 + start + 0.05 * i
            os.utime(p, ns=(int(t * 1e9), int(t * 1e9)))
        cap.stacks.append(("B", f"P{k * 3 + 1:04d}", 3))
        cap.frames += 3
    Image.new("RGB", (16, 16), (9, 9, 9)).save(bdir / "tiny.png")
    cap.skipped["B/tiny.png"] = "too small"
    return cap
