"""python -m processing train-edsr: train EDSR, or fine-tune it on a panorama's own images."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..io.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    p.add_argument("--data", action="append", default=[], help="training image folder (repeatable)")
    p.add_argument(
        "--pairs",
        action="append",
        default=[],
        help="folder of ready-made NAME_lr / NAME_hr image pairs (repeatable; instead of --data)",
    )
    p.add_argument("--extra-photos", action="append", default=[], help="more HR photos or folders (repeatable)")
    p.add_argument("--out", required=True, help="output folder (weights, sidecar, checkpoints, patch cache)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=24, help="LR patch side")
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--filters", type=int, default=48)
    p.add_argument(
        "--skip", choices=("bicubic", "none"), default="bicubic", help="global bicubic skip (fast training) or none"
    )
    p.add_argument("--lr", type=float, default=5e-4, help="initial learning rate")
    p.add_argument("--decay-every", type=int, default=0, help="halve the rate every N steps (0: at 50%% and 75%%)")
    p.add_argument("--schedule", choices=("step", "cosine"), default="step", help="learning-rate decay")
    p.add_argument("--lr-min", type=float, default=1e-6, help="final rate of the cosine schedule")
    p.add_argument("--warmup", type=int, default=0, help="steps of linear warm-up")
    p.add_argument(
        "--time-budget", type=float, default=0.0, help="stop after this many minutes of training (0: by --steps)"
    )
    p.add_argument(
        "--sampling", choices=("cache", "online"), default="cache", help="fixed patch cache or new crops every batch"
    )
    p.add_argument("--patches", type=int, default=8000, help="LR/HR pairs in the patch cache")
    p.add_argument("--degradation", choices=("bicubic", "realistic", "mixed"), default="bicubic")
    p.add_argument("--loss", choices=("l1", "l2"), default="l1", help="training loss (l2: a last fine-tune for PSNR)")
    p.add_argument("--val", action="append", default=[], help="validation folder (default: Set5 beside --data)")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument(
        "--init-from", help="initialise matching layers from these weights (warm start; or x4 from x2's body)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--finetune", action="store_true", help="fine-tune a copy of --from on --images")
    p.add_argument("--from", dest="from_", help="base weights for --finetune")
    p.add_argument("--images", nargs="+", default=[], help="high-detail images (fused stacks) for --finetune")
    p.add_argument("--finetune-blur", type=float, default=0.5, help="extra blur (LR px sigma) when fine-tuning")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from ..upscale.train import TrainConfig, train

    data = list(args.data) + list(args.extra_photos)
    blocks, filters, res_scale, skip = args.blocks, args.filters, 0.1, args.skip
    finetune_from = None
    degradation = args.degradation
    if args.finetune:
        from ..upscale.edsr import default_weights, read_sidecar

        base = Path(args.from_) if args.from_ else default_weights(args.scale)
        if not base.is_file():
            raise InputError(base, "base weights for --finetune not found")
        arch = read_sidecar(base)["architecture"]
        if int(arch["scale"]) != args.scale:
            raise InputError(base, f"base weights are x{arch['scale']}, not x{args.scale}")
        blocks, filters, res_scale = int(arch["n_blocks"]), int(arch["n_filters"]), float(arch.get("res_scale", 0.1))
        skip = str(arch.get("skip", "none"))
        finetune_from = str(base)
        data = list(args.images) + data
        if degradation == "bicubic":
            degradation = "realistic"  # the stacks' own look: blur, noise, JPEG
    if not data and not args.pairs:
        raise InputError(None, "no training data: give --data or --pairs (or --images with --finetune)")
    for d in data + list(args.pairs):
        if not Path(d).exists():
            raise InputError(d, "no such file or folder")
    val = list(args.val)
    if not val and args.data:
        set5 = Path(args.data[0]).parent / "Set5"
        if set5.is_dir():
            val = [str(set5)]
    cfg = TrainConfig(
        scale=args.scale,
        data=[str(d) for d in data],
        out=args.out,
        steps=args.steps,
        batch=args.batch,
        patch=args.patch,
        blocks=blocks,
        filters=filters,
        res_scale=res_scale,
        skip=skip,
        degradation=degradation,
        lr=args.lr,
        decay_every=args.decay_every,
        schedule=args.schedule,
        lr_min=args.lr_min,
        warmup=args.warmup,
        time_budget=args.time_budget * 60.0,
        sampling=args.sampling,
        loss=args.loss,
        pairs=[str(d) for d in args.pairs],
        n_patches=args.patches,
        seed=args.seed,
        val=val,
        val_every=args.val_every,
        ckpt_every=args.ckpt_every,
        init_from=args.init_from,
        finetune_from=finetune_from,
        finetune_blur=args.finetune_blur if args.finetune else 0.0,
        threads=args.threads,
        command="python -m processing train-edsr " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
    )
    final = train(cfg, resume=args.resume, progress=not args.quiet)
    print(final)
    return 0
