"""Training and fine-tuning of the EDSR model (CPU-friendly).

LR/HR patch pairs are pre-extracted once into a NumPy cache (uint8) so that
the training loop only flips/rotates and feeds batches. Loss L1, Adam with a
step decay, periodic checkpoints (weights + optimizer state + history) so a
run can resume, and validation PSNR on Set5 (Y channel, border = scale).
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
    command: str = ""


def _lr_schedule(cfg: TrainConfig) -> Any:
    import keras

    if cfg.decay_every > 0:
        bounds = list(range(cfg.decay_every, cfg.steps, cfg.decay_every))
    else:
        bounds = [int(cfg.steps * 0.5), int(cfg.steps * 0.75)]
    values = [cfg.lr * 0.5**i for i in range(len(bounds) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)


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


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train (or fine-tune) and write OUT/edsr_x{scale}.weights.h5 + sidecar."""
    from .edsr import architecture, build_edsr, configure_threads, file_sha256, write_sidecar

    configure_threads(cfg.threads)
    import keras

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = list_images(cfg.data)
    cache = out / f"patches_x{cfg.scale}_p{cfg.patch}_n{cfg.n_patches}_{cfg.degradation}_s{cfg.seed}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            lr_all, hr_all = z["lr"], z["hr"]
    else:
        t0 = time.time()
        lr_all, hr_all = extract_patches(
            paths, cfg.scale, cfg.patch, cfg.n_patches, cfg.degradation, cfg.seed, cfg.finetune_blur
        )
        np.savez(cache, lr=lr_all, hr=hr_all)
        print(f"patch cache: {len(lr_all)} pairs in {time.time() - t0:.1f}s -> {cache}", file=sys.stderr)

    keras.utils.set_random_seed(cfg.seed)
    model = build_edsr(cfg.scale, cfg.blocks, cfg.filters, cfg.res_scale, cfg.skip)
    arch = architecture(model, cfg.scale, cfg.blocks, cfg.filters, cfg.res_scale, cfg.skip)
    base = cfg.finetune_from or cfg.init_from
    copied: list[str] = []
    if base:
        copied = copy_matching_weights(model, Path(base))
        print(f"initialised {len(copied)} layers from {base}", file=sys.stderr)
    opt = keras.optimizers.Adam(_lr_schedule(cfg), beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    model.compile(optimizer=opt, loss="mean_absolute_error")
    state: dict[str, Any] = {"step": 0, "history": [], "val": []}
    if resume:
        st = _load_ckpt(model, opt, out)
        if st:
            state = st
            print(f"resumed at step {state['step']}", file=sys.stderr)
    val_paths = list_images(cfg.val) if cfg.val else []
    rng = np.random.default_rng(cfg.seed + state["step"])
    n = len(lr_all)
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, file=sys.stderr, mininterval=5)
    run_loss, t_start = [], time.time()
    while state["step"] < cfg.steps:
        idx = rng.integers(0, n, cfg.batch)
        lo, hi = augment(lr_all[idx], hr_all[idx], rng)
        loss = model.train_on_batch(lo.astype(np.float32) / 255.0, hi.astype(np.float32) / 255.0)
        loss = float(np.asarray(loss).reshape(-1)[0])
        run_loss.append(loss)
        state["step"] += 1
        bar.update(1)
        step = state["step"]
        if step % 25 == 0:
            state["history"].append([step, float(np.mean(run_loss)), round(time.time() - t_start, 1)])
            bar.set_postfix(l1=f"{np.mean(run_loss):.4f}")
            run_loss = []
        if val_paths and (step % cfg.val_every == 0 or step == cfg.steps):
            v = evaluate(model, cfg.scale, val_paths)
            state["val"].append([step, v["psnr"], v["psnr_bicubic"]])
            print(f"\nstep {step}: val PSNR-Y {v['psnr']:.3f} dB (bicubic {v['psnr_bicubic']:.3f})", file=sys.stderr)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            _save_ckpt(model, opt, out, state)
    bar.close()

    final = out / f"edsr_x{cfg.scale}.weights.h5"
    export_weights(model, final, arch)
    recipe = asdict(cfg) | {
        "loss": "L1",
        "optimizer": "Adam(0.9, 0.999, 1e-8), step decay x0.5",
        "n_train_images": len(paths),
        "steps_done": state["step"],
        "history": state["history"],
        "val_psnr_y": state["val"],
        "initialised_layers": len(copied),
    }
    if base:
        recipe["base_weights"] = {"path": str(base), "sha256": file_sha256(Path(base))}
    write_sidecar(final, arch, recipe)
    return final
