"""`persona-studio` command line: one subcommand per job; `studio` (the app) is the default.

User errors print one line (``error: <file>: <problem>``) and exit with status 2; nothing else
prints a traceback unless it is a bug.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from core.errors import UserError

# Subcommands that later work will fill, with the issue that brings each. They answer clearly
# instead of crashing.
NOT_YET = {
    "studio": "the studio app (issue 6)",
    "reconstruct": "reconstruction from a photo (issue 4)",
    "prep": "photo preprocessing into a Subject folder (issue 3)",
    "frames": "generated-frame import and driving videos (issue 4)",
    "turntable": "turntable videos (issue 5)",
    "animate": "animation videos (issue 5)",
    "export": ".ply / mesh / bundle export (issue 5)",
}


def _add_preset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="preview", help="preset name (preview, standard, paper) or a .toml path")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a preset value, e.g. --set train.iterations=500 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="persona-studio",
        description="One full-body photo -> an animatable 3D Gaussian avatar (PERSONA).",
    )
    parser.add_argument(
        "--body-model", metavar="PATH",
        help="a SMPL-X-format .npz (e.g. your licensed SMPLX_NEUTRAL.npz); default: $PERSONA_SMPLX_MODEL, else the embedded CC0 model",
    )
    sub = parser.add_subparsers(dest="command")

    studio = sub.add_parser("studio", help="open the desktop studio (default)")
    studio.add_argument("--photo", help="start reconstructing this photo")
    studio.add_argument("--frames", type=int, default=0, help="headless: run N UI frames then exit")
    studio.add_argument("--screenshot", help="headless: save a screenshot PNG before exiting")
    _add_preset_args(studio)

    recon = sub.add_parser("reconstruct", help="photo -> avatar bundle")
    recon.add_argument("photo")
    recon.add_argument("-o", "--output", required=True)
    recon.add_argument("--resume", action="store_true")
    _add_preset_args(recon)

    prep = sub.add_parser("prep", help="photo -> Subject folder (mask, keypoints, SMPL-X fit, albedo, geometry)")
    prep.add_argument("photo")
    prep.add_argument("-o", "--output", required=True)
    prep.add_argument("--debug", action="store_true")
    _add_preset_args(prep)

    frames = sub.add_parser("frames", help="generated training frames: import a video, write a driving video")
    frames.add_argument("action", choices=["import", "driving-video"])
    frames.add_argument("args", nargs="*")

    for name, text in (("turntable", "360-degree turntable video"), ("animate", "animate with a motion clip"),
                       ("export", ".ply splats, mesh or bundle")):
        p = sub.add_parser(name, help=text)
        p.add_argument("avatar")
        p.add_argument("-o", "--output", required=True)
        p.add_argument("--motion")

    config = sub.add_parser("config", help="print the effective configuration as TOML")
    _add_preset_args(config)
    config.add_argument("-o", "--output", help="save it as a preset file instead of printing")

    sub.add_parser("doctor", help="report what this machine can do")
    return parser


def _cmd_doctor(args: argparse.Namespace) -> int:
    from persona_studio.doctor import run_doctor

    return run_doctor()


def _cmd_config(args: argparse.Namespace) -> int:
    from core.config import config_to_dict, dumps_toml, load_preset, save_preset

    config = load_preset(args.preset, args.overrides)
    if args.output:
        save_preset(config, args.output)
        print(f"saved preset to {args.output}")
    else:
        print(dumps_toml(config_to_dict(config)), end="")
    return 0


def _cmd_not_yet(args: argparse.Namespace) -> int:
    print(f"persona-studio {args.command}: not available yet — {NOT_YET[args.command]} is still being built.",
          file=sys.stderr)
    return 3


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "doctor": _cmd_doctor,
    "config": _cmd_config,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``persona-studio`` console script and ``python main.py``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["studio", *(argv if argv is not None else sys.argv[1:])])
    if args.body_model:
        os.environ["PERSONA_SMPLX_MODEL"] = args.body_model
    handler = COMMANDS.get(args.command, _cmd_not_yet)
    try:
        return handler(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
