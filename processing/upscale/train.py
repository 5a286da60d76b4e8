"""Training and fine-tuning of the EDSR model (CPU-friendly).

LR/HR patch pairs come either from a pre-extracted NumPy cache (uint8) or,
for long runs, as fresh random crops of the whole degraded images every batch
(OnlinePatches); every batch gets random flips/rotations. Loss L1, Adam with
a warm-up and a step or cosine decay over the run's steps or time budget, a
warm start from any weights of the same architecture (init_from), periodic
checkpoints (weights + optimizer state + history) so a run can resume, and
validation PSNR on Set5 (Y channel, border = scale).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from ..io.errors import InputError

IMG_EXTS = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"}


# ---------------------------------------------------------------- metrics
def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 16-235 scale from RGB (uint8 or float [0, 1])."""
    x = img.astype(np.float64)
    if img.dtype != np.uint8:
        x = x * 255.0
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _shave(a: np.ndarray, border: int) -> np.ndarray:
    return a[border:-border, border:-border] if border > 0 else a


def psnr_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR on Y (BT.601), both uint8 RGB (the standard SR protocol)."""
    a, b = _shave(rgb_to_y(sr), border), _shave(rgb_to_y(hr), border)
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """SSIM on Y like MATLAB's ssim (Gaussian 11x11, sigma 1.5)."""
    from skimage.metrics import structural_similarity

    a, b = _shave(rgb_to_y(sr), border), _shave(rgb_to_y(hr), border)
    return float(
        structural_similarity(a, b, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    )


# ---------------------------------------------------------------- data
def read_rgb8(path: Path) -> np.ndarray:
    """8-bit RGB of a training/eval image (greyscale expanded to RGB)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I", "F") or (path.suffix.lower() in (".tif", ".tiff")):
                from ..io.imageio import load_image, to_uint8

                return to_uint8(load_image(path)[0])
            return np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"cannot read image: {e}") from e


def list_images(dirs: Sequence[str | Path]) -> list[Path]:
    out: list[Path] = []
    for d in dirs:
        d = Path(d)
        if d.is_file():
            out.append(d)
        elif d.is_dir():
            out += sorted(p for p in d.iterdir() if p.suffix.lower() in IMG_EXTS)
        else:
            raise InputError(d, "no such file or folder")
    if not out:
        raise InputError(", ".join(map(str, dirs)), "no training images found")
    return out


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """PIL BICUBIC downscale (the MATLAB-imresize-equivalent protocol)."""
    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))


def bicubic_up(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL BICUBIC upscale to (w, h) (the bicubic baseline)."""
    return np.asarray(Image.fromarray(lr).resize(size, Image.BICUBIC))


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def degrade_realistic(hr: np.ndarray, scale: int, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Optical blur, bicubic decimation, sensor noise and JPEG, each random."""
    import cv2

    x = hr
    sigma = rng.uniform(0.2, 1.2) * strength
    if sigma > 0.25:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    lr = bicubic_down(x, scale).astype(np.float32)
    noise = rng.uniform(0.0, 4.0) * strength
    if noise > 0.5:
        lr = lr + rng.normal(0.0, noise, lr.shape).astype(np.float32)
    lr = np.clip(lr + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5 * strength:
        lr = jpeg(lr, rng.integers(70, 96))
    return lr


def degrade(hr: np.ndarray, scale: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "bicubic":
        return bicubic_down(hr, scale)
    if kind == "realistic":
        return degrade_realistic(hr, scale, rng)
    if kind == "mixed":  # half clean bicubic, half realistic
        return bicubic_down(hr, scale) if rng.random() < 0.5 else degrade_realistic(hr, scale, rng)
    raise ValueError(f"unknown degradation {kind!r}")


def extract_patches(
    paths: Sequence[Path],
    scale: int,
    patch: int,
    n_patches: int,
    degradation: str = "bicubic",
    seed: int = 0,
    finetune_blur: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random aligned LR/HR patch pairs (uint8), LR made from the whole image.

    Patches are drawn in proportion to image area; nearly flat patches are
    mostly rejected (they teach nothing and waste the tiny CPU budget).
    """
    import cv2

    rng = np.random.default_rng(seed)
    imgs = [mod_crop(read_rgb8(p), scale) for p in paths]
    imgs = [im for im in imgs if min(im.shape[:2]) >= (patch + 1) * scale]
    if not imgs:
        raise InputError(str(paths[0]) if paths else None, f"no image is larger than {patch * scale} px")
    areas = np.array([im.shape[0] * im.shape[1] for im in imgs], dtype=np.float64)
    counts = rng.multinomial(n_patches, areas / areas.sum())
    hp = patch * scale
    lr_out = np.empty((n_patches, patch, patch, 3), np.uint8)
    hr_out = np.empty((n_patches, hp, hp, 3), np.uint8)
    k = 0
    for im, n in zip(imgs, counts, strict=True):
        if n == 0:
            continue
        src = im
        if finetune_blur > 0:  # the fused stack is sharper than what the model will see
            src = cv2.GaussianBlur(im, (0, 0), finetune_blur * scale / 2)
        lr = degrade(src, scale, degradation, rng)
        h, w = lr.shape[:2]
        got, tries = 0, 0
        while got < n:
            y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
            lp = lr[y : y + patch, x : x + patch]
            tries += 1
            if lp.std() < 4.0 and rng.random() < 0.8 and tries < 20 * n:
                continue
            lr_out[k] = lp
            hr_out[k] = im[y * scale : (y + patch) * scale, x * scale : (x + patch) * scale]
            k += 1
            got += 1
    order = rng.permutation(k)
    return lr_out[order], hr_out[order]


class OnlinePatches:
    """New random aligned LR/HR crops for every batch (no fixed patch pool).

    Each image is degraded once as a whole (no patch-edge effects), then
    every batch crops fresh pairs anywhere in it: long runs see far more
    distinct patches than a cache could hold. Nearly flat crops are mostly
    redrawn, as in extract_patches.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        scale: int,
        patch: int,
        degradation: str = "bicubic",
        seed: int = 0,
        finetune_blur: float = 0.0,
    ) -> None:
        import cv2

        rng = np.random.default_rng(seed)
        hrs = [mod_crop(read_rgb8(p), scale) for p in paths]
        hrs = [im for im in hrs if min(im.shape[:2]) >= (patch + 1) * scale]
        if not hrs:
            raise InputError(str(paths[0]) if paths else None, f"no image is larger than {patch * scale} px")
        srcs = [cv2.GaussianBlur(h, (0, 0), finetune_blur * scale / 2) if finetune_blur > 0 else h for h in hrs]
        self.hrs, self.lrs = hrs, [degrade(s, scale, degradation, rng) for s in srcs]
        areas = np.array([lr.shape[0] * lr.shape[1] for lr in self.lrs], np.float64)
        self.p = areas / areas.sum()
        self.scale, self.patch = scale, patch

    @classmethod
    def from_pairs(cls, dirs: Sequence[str | Path], scale: int, patch: int) -> OnlinePatches:
        """Ready-made LR/HR pairs (NAME_lr.* beside NAME_hr.*, HR exactly S x LR):
        a degradation that is not made here, e.g. the fusion's own output of a
        synthetic burst against its ground truth."""
        self = cls.__new__(cls)
        hrs, lrs = [], []
        for p in list_images(dirs):
            if not p.stem.endswith("_lr"):
                continue
            hp = [q for q in p.parent.glob(p.stem[:-3] + "_hr.*") if q.suffix.lower() in IMG_EXTS]
            if not hp:
                raise InputError(p, "no matching _hr image")
            lr, hr = read_rgb8(p), read_rgb8(hp[0])
            if hr.shape[0] != lr.shape[0] * scale or hr.shape[1] != lr.shape[1] * scale:
                raise InputError(hp[0], f"HR is not x{scale} the size of its LR")
            if min(lr.shape[:2]) > patch:
                hrs.append(hr)
                lrs.append(lr)
        if not lrs:
            raise InputError(str(dirs[0]) if dirs else None, f"no LR/HR pairs larger than {patch} px")
        self.hrs, self.lrs = hrs, lrs
        areas = np.array([lr.shape[0] * lr.shape[1] for lr in lrs], np.float64)
        self.p = areas / areas.sum()
        self.scale, self.patch = scale, patch
        return self

    def __len__(self) -> int:
        return len(self.hrs)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s, ps = self.scale, self.patch
        lo = np.empty((n, ps, ps, 3), np.uint8)
        hi = np.empty((n, ps * s, ps * s, 3), np.uint8)
        for i in range(n):
            for _ in range(10):
                k = int(rng.choice(len(self.lrs), p=self.p))
                lr = self.lrs[k]
                y, x = int(rng.integers(0, lr.shape[0] - ps + 1)), int(rng.integers(0, lr.shape[1] - ps + 1))
                if lr[y : y + ps, x : x + ps].std() >= 4.0 or rng.random() < 0.2:
                    break
            lo[i] = lr[y : y + ps, x : x + ps]
            hi[i] = self.hrs[k][y * s : (y + ps) * s, x * s : (x + ps) * s]
        return lo, hi


def augment(lr: np.ndarray, hr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample random flips and 90-degree rotations, identical on LR and HR."""
    lo, ho = np.empty_like(lr), np.empty_like(hr)
    for i in range(lr.shape[0]):
        t = int(rng.integers(0, 8))
        a, b = lr[i], hr[i]
        if t & 1:
            a, b = a[:, ::-1], b[:, ::-1]
        if t & 2:
            a, b = a[::-1], b[::-1]
        if t & 4:
            a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
        lo[i], ho[i] = a, b
    return lo, ho


# ---------------------------------------------------------------- model utils
def sr_image(model: Any, lr: np.ndarray) -> np.ndarray:
    """Whole-image inference on uint8 RGB, rounded back to uint8."""
    from .edsr import predict

    out = predict(model, (lr.astype(np.float32) / 255.0)[None])[0]
    return (np.clip(out, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def evaluate(model: Any, scale: int, paths: Sequence[Path], with_ssim: bool = False) -> dict[str, float]:
    ps, ss, pb, sb = [], [], [], []
    for p in paths:
        hr = mod_crop(read_rgb8(p), scale)
        lr = bicubic_down(hr, scale)
        sr = sr_image(model, lr)
        bi = bicubic_up(lr, (hr.shape[1], hr.shape[0]))
        ps.append(psnr_y(sr, hr, scale))
        pb.append(psnr_y(bi, hr, scale))
        if with_ssim:
            ss.append(ssim_y(sr, hr, scale))
            sb.append(ssim_y(bi, hr, scale))
    out = {"psnr": float(np.mean(ps)), "psnr_bicubic": float(np.mean(pb))}
    if with_ssim:
        out |= {"ssim": float(np.mean(ss)), "ssim_bicubic": float(np.mean(sb))}
    return out


def copy_matching_weights(model: Any, weights: Path, only_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Initialise layers of `model` from another EDSR's weights by layer name.

    Used to start x4 from x2's head and body (EDSR's known trick); layers whose
    shapes differ (the upsampler) are left as initialised.
    """
    from .edsr import build_from_arch, read_sidecar

    src = build_from_arch(read_sidecar(weights)["architecture"])
    src.load_weights(weights)
    copied = []
    src_layers = {lay.name: lay for lay in src.layers}
    for lay in model.layers:
        if only_prefixes and not lay.name.startswith(only_prefixes):
            continue
        s = src_layers.get(lay.name)
        if s is None or not lay.weights:
            continue
        ws = s.get_weights()
        if [w.shape for w in ws] == [w.shape for w in lay.get_weights()]:
            lay.set_weights(ws)
            copied.append(lay.name)
    return copied


def export_weights(model: Any, path: Path, arch: dict[str, Any]) -> Path:
    """Save weights only (a compiled model would also store Adam's moments, 3x the size)."""
    from .edsr import build_from_arch

    clean = build_from_arch(arch)
    clean.set_weights(model.get_weights())
    tmp = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
    clean.save_weights(tmp)
    os.replace(tmp, path)
    return path


def ship_weights(src: Path, dest: Path) -> Path:
    """Copy trained weights (optimizer state dropped) and their sidecar to dest."""
    import warnings

    from .edsr import build_from_arch, read_sidecar, write_sidecar

    meta = read_sidecar(src)
    a = meta["architecture"]
    m = build_from_arch(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "skipping optimizer variables"
        m.load_weights(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    export_weights(m, dest, a)
    write_sidecar(dest, a, meta["recipe"] | {"trained_as": str(src)})
    return dest


# ---------------------------------------------------------------- training
LOSSES = {"l1": "mean_absolute_error", "l2": "mean_squared_error"}


@dataclass
class TrainConfig:
    scale: int = 4
    data: list[str] = field(default_factory=list)
    out: str = "edsr_out"
    steps: int = 2000
    batch: int = 16
    patch: int = 24  # LR patch side
    blocks: int = 16
    filters: int = 48
    res_scale: float = 0.1
    skip: str = "bicubic"  # "none": the paper's EDSR; "bicubic": residual to bicubic (fast training)
    degradation: str = "bicubic"
    lr: float = 5e-4
    decay_every: int = 0  # 0: halve at 50 % and 75 % of the steps
    n_patches: int = 8000
    seed: int = 0
    val: list[str] = field(default_factory=list)
    val_every: int = 250
    ckpt_every: int = 100
    init_from: str | None = None
    finetune_from: str | None = None
    finetune_blur: float = 0.0
    threads: int = 2
    schedule: str = "step"  # "step": halvings (decay_every); "cosine": cosine to lr_min
    lr_min: float = 1e-6
    warmup: int = 0  # steps of linear warm-up (a warm start with a fresh Adam)
    time_budget: float = 0.0  # seconds of training (summed over resumes); 0: by steps only
    sampling: str = "cache"  # "cache": fixed pre-extracted pairs; "online": new random crops every batch
    loss: str = "l1"  # "l1", or "l2" (mean squared error: a last fine-tune for PSNR)
    pairs: list[str] = field(default_factory=list)  # folders of ready-made NAME_lr / NAME_hr pairs (online only)
    command: str = ""


def progress_of(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Fraction of the run done: by steps, or by training seconds when a time budget is set."""
    frac = step / max(cfg.steps, 1)
    if cfg.time_budget > 0:
        frac = max(frac, elapsed / cfg.time_budget)
    return min(1.0, max(0.0, frac))


def learning_rate(cfg: TrainConfig, step: int, elapsed: float = 0.0) -> float:
    """The rate for this step: warm-up, then step decay or cosine decay over the run's progress."""
    import math

    f = progress_of(cfg, step, elapsed)
    if cfg.schedule == "cosine":
        lr = cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * f))
    elif cfg.schedule == "step":
        if cfg.decay_every > 0 and cfg.time_budget <= 0:
            halvings = step // cfg.decay_every
        else:
            halvings = int(f >= 0.5) + int(f >= 0.75)
        lr = cfg.lr * 0.5**halvings
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    if cfg.warmup > 0:
        lr *= min(1.0, (step + 1) / cfg.warmup)
    return lr


def _save_ckpt(model: Any, opt: Any, out: Path, state: dict[str, Any]) -> None:
    ck = out / "checkpoint"
    ck.mkdir(parents=True, exist_ok=True)
    tmpw = ck / "last.tmp.weights.h5"
    model.save_weights(tmpw)
    np.savez(ck / "opt.tmp.npz", *[np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in opt.variables])
    (ck / "state.tmp.json").write_text(json.dumps(state))
    # Rename last: a run killed mid-save keeps the previous complete checkpoint.
    os.replace(tmpw, ck / "last.weights.h5")
    os.replace(ck / "opt.tmp.npz", ck / "opt.npz")
    os.replace(ck / "state.tmp.json", ck / "state.json")


def _load_ckpt(model: Any, opt: Any, out: Path) -> dict[str, Any] | None:
    ck = out / "checkpoint"
    if not (ck / "state.json").is_file():
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its optimizer copy is restored from opt.npz below
        model.load_weights(ck / "last.weights.h5")
    opt.build(model.trainable_variables)
    with np.load(ck / "opt.npz") as z:
        vals = [z[f"arr_{i}"] for i in range(len(z.files))]
    if len(vals) == len(opt.variables):
        for v, a in zip(opt.variables, vals, strict=True):
            v.assign(a)
    return json.loads((ck / "state.json").read_text())


def _cached_patches(cfg: TrainConfig, paths: list[Path], out: Path) -> tuple[np.ndarray, np.ndarray]:
    cache = out / f"patches_x{cfg.scale}_p{cfg.patch}_n{cfg.n_patches}_{cfg.degradation}_s{cfg.seed}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return z["lr"], z["hr"]
    t0 = time.time()
    lr_all, hr_all = extract_patches(
        paths, cfg.scale, cfg.patch, cfg.n_patches, cfg.degradation, cfg.seed, cfg.finetune_blur
    )
    np.savez(cache, lr=lr_all, hr=hr_all)
    print(f"patch cache: {len(lr_all)} pairs in {time.time() - t0:.1f}s -> {cache}", file=sys.stderr)
    return lr_all, hr_all


def _done(cfg: TrainConfig, state: dict[str, Any]) -> bool:
    if state["step"] >= cfg.steps:
        return True
    return cfg.time_budget > 0 and state.get("elapsed", 0.0) >= cfg.time_budget


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train (or fine-tune) and write OUT/edsr_x{scale}.weights.h5 + sidecar.

    The run ends at cfg.steps or, with a time budget, after that many
    seconds of training (summed over resumes), whichever comes first.
    """
    from .edsr import architecture, build_edsr, configure_threads, file_sha256, write_sidecar

    configure_threads(cfg.threads)
    import keras

    if cfg.sampling not in ("cache", "online"):
        raise ValueError(f"unknown sampling {cfg.sampling!r}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}")
    learning_rate(cfg, 0)  # rejects an unknown schedule before any work
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = list_images(cfg.data) if cfg.data or not cfg.pairs else []
    online: OnlinePatches | None = None
    if cfg.pairs:
        if cfg.sampling != "online" or cfg.data:
            raise ValueError("pairs: online sampling only, and no other data")
        online = OnlinePatches.from_pairs(cfg.pairs, cfg.scale, cfg.patch)
    elif cfg.sampling == "online":
        online = OnlinePatches(paths, cfg.scale, cfg.patch, cfg.degradation, cfg.seed, cfg.finetune_blur)
    else:
        lr_all, hr_all = _cached_patches(cfg, paths, out)

    keras.utils.set_random_seed(cfg.seed)
    model = build_edsr(cfg.scale, cfg.blocks, cfg.filters, cfg.res_scale, cfg.skip)
    arch = architecture(model, cfg.scale, cfg.blocks, cfg.filters, cfg.res_scale, cfg.skip)
    base = cfg.finetune_from or cfg.init_from
    copied: list[str] = []
    if base:
        copied = copy_matching_weights(model, Path(base))
        print(f"initialised {len(copied)} layers from {base}", file=sys.stderr)
    # The rate is set before every step (warm-up, decay by steps or by time).
    opt = keras.optimizers.Adam(learning_rate(cfg, 0), beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    model.compile(optimizer=opt, loss=LOSSES[cfg.loss])
    state: dict[str, Any] = {"step": 0, "elapsed": 0.0, "history": [], "val": []}
    if resume:
        st = _load_ckpt(model, opt, out)
        if st:
            state = {"elapsed": 0.0} | st
            print(f"resumed at step {state['step']}", file=sys.stderr)
    val_paths = list_images(cfg.val) if cfg.val else []
    rng = np.random.default_rng(cfg.seed + state["step"])
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, file=sys.stderr, mininterval=5)
    run_loss: list[float] = []
    t_last = time.time()
    while not _done(cfg, state):
        step = state["step"]
        lr_now = learning_rate(cfg, step, state["elapsed"])
        opt.learning_rate.assign(lr_now)
        if online is not None:
            lo, hi = online.sample(cfg.batch, rng)
        else:
            idx = rng.integers(0, len(lr_all), cfg.batch)
            lo, hi = lr_all[idx], hr_all[idx]
        lo, hi = augment(lo, hi, rng)
        loss = model.train_on_batch(lo.astype(np.float32) / 255.0, hi.astype(np.float32) / 255.0)
        run_loss.append(float(np.asarray(loss).reshape(-1)[0]))
        now = time.time()
        state["elapsed"] += now - t_last
        t_last = now
        state["step"] = step = step + 1
        bar.update(1)
        last = _done(cfg, state)
        if step % 25 == 0:
            state["history"].append([step, float(np.mean(run_loss)), round(state["elapsed"], 1), lr_now])
            bar.set_postfix({cfg.loss: f"{np.mean(run_loss):.4f}"})
            run_loss = []
        if val_paths and (step % cfg.val_every == 0 or last):
            v = evaluate(model, cfg.scale, val_paths)
            state["val"].append([step, v["psnr"], v["psnr_bicubic"]])
            bar.write(f"step {step}: val PSNR-Y {v['psnr']:.3f} dB (bicubic {v['psnr_bicubic']:.3f})", file=sys.stderr)
            t_last = time.time()  # validation is not training time
        if step % cfg.ckpt_every == 0 or last:
            _save_ckpt(model, opt, out, state)
            t_last = time.time()
    bar.close()

    final = out / f"edsr_x{cfg.scale}.weights.h5"
    export_weights(model, final, arch)
    sched = "cosine to lr_min" if cfg.schedule == "cosine" else "step decay x0.5"
    recipe = asdict(cfg) | {
        "loss": cfg.loss.upper(),
        "optimizer": f"Adam(0.9, 0.999, 1e-8), {sched}" + (f", {cfg.warmup} warm-up steps" if cfg.warmup else ""),
        "n_train_images": len(paths) if not cfg.pairs else len(online or []),
        "steps_done": state["step"],
        "train_seconds": round(state["elapsed"], 1),
        "history": state["history"],
        "val_psnr_y": state["val"],
        "initialised_layers": len(copied),
    }
    if base:
        recipe["base_weights"] = {"path": str(base), "sha256": file_sha256(Path(base))}
    write_sidecar(final, arch, recipe)
    return final
