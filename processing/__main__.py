"""python -m processing COMMAND ...: the CLI contract of DESIGN.md.

Each command lives in processing/commands/<name>.py with add_arguments(parser)
and run(args) -> int; modules are imported only when their command runs so
that `stack` never pays for TensorFlow's import unless it needs the model.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .io.errors import InputError, ProcessingError, one_line

COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("stack", "fuse a burst of frames into one super-resolved image"),
    "upscale": ("upscale", "upscale an image with the EDSR model"),
    "stitch": ("stitch", "stitch images into a panorama"),
    "pyramid": ("pyramid", "write a Deep Zoom pyramid"),
    "synth": ("synth", "make synthetic bursts and panoramas with ground truth"),
    "farm": ("farm", "render and tile a panorama as block and reduce jobs"),
    "bench": ("bench", "benchmarks that print JSON"),
    "train-edsr": ("train_edsr", "train or fine-tune the EDSR model"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace | None]:
    parser = argparse.ArgumentParser(prog="python -m processing", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    # Only the chosen command's module is imported to build its arguments.
    if argv and argv[0] in COMMANDS:
        mod = importlib.import_module(f"processing.commands.{COMMANDS[argv[0]][0]}")
        sp = argparse.ArgumentParser(prog=f"python -m processing {argv[0]}", description=COMMANDS[argv[0]][1])
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
        return sp, sp.parse_args(argv[1:])
    return parser, None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .io.safety import harden

    harden()  # before any command module can import a decoder
    parser, args = build_parser(argv)
    if args is None:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    try:
        return int(args._run(args) or 0)
    except (InputError, ProcessingError) as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {one_line(where + str(e.strerror or e))}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
