"""``persona-studio turntable | animate | export``: the CLI side of ``core.export``.

``persona_studio/cli.py`` registers ``add_parsers`` and ``COMMANDS``.
Each ``cmd_*`` returns the exit status and raises ``UserError`` for bad input (``main`` prints it).
AVATAR is a bundle folder or a ``.persona`` file. Video defaults come from the preset's
``[export]`` table; flags override them.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Callable

from core.errors import UserError


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def rgb(text: str) -> list[float]:
    """``"1,1,1"`` / ``"0.2,0.2,0.25"`` (0..1) or ``"255,255,255"`` (0..255) -> three floats in [0, 1]."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected r,g,b numbers, got {text!r}") from None
    if len(values) != 3 or min(values) < 0 or max(values) > 255:
        raise argparse.ArgumentTypeError(f"expected three numbers r,g,b in 0..1 or 0..255, got {text!r}")
    return [v / 255.0 for v in values] if max(values) > 1 else values


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("avatar", help="avatar bundle folder (from `reconstruct`) or .persona file")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--base", action="store_true", help="leave out the pose-dependent offsets (the 'base' render)")
    parser.add_argument("--preset", default="preview", help="preset for render settings and [export] defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset value, e.g. --set render.backend=cpu (repeatable)")


def _add_video_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resolution", type=positive_int, help="square frame size in pixels (preset: 512)")
    parser.add_argument("--fps", type=positive_float, help="frames per second")
    parser.add_argument("--elevation", type=float, help="camera elevation in degrees (preset: 0)")
    parser.add_argument("--distance", type=positive_float, help="camera distance in metres (preset: 3)")
    parser.add_argument("--background", type=rgb, metavar="R,G,B", help="background colour (preset: 1,1,1 white)")
    parser.add_argument("--transparent", action="store_true", default=None,
                        help="no background: RGBA frames with straight alpha, for .webm (VP9) or PNG frames")


def add_parsers(sub) -> None:
    """Add the ``turntable``, ``animate`` and ``export`` subcommands to ``sub`` (argparse subparsers)."""
    from core.export import FILE_EXPORTS, POSE_HELP

    outputs = "output by extension: .mp4 (H.264), .webm (VP9), .gif, a folder or frames/%04d.png"
    turntable = sub.add_parser("turntable", help="360-degree turntable video", description=outputs)
    _add_common(turntable)
    turntable.add_argument("--pose", help=f"pose to show: {POSE_HELP} (default apose)")
    turntable.add_argument("--animate", metavar="MOTION",
                           help="play a motion (built-in name, .npz or .bvh) while turning")
    turntable.add_argument("--frames", type=positive_int, help="frames in the full turn (preset: 120)")
    _add_video_options(turntable)

    animate = sub.add_parser("animate", help="animate with a motion clip", description=outputs)
    _add_common(animate)
    animate.add_argument("--motion", required=True,
                         help="built-in motion name, AMASS-style SMPL-X .npz clip or .bvh file")
    animate.add_argument("--camera", choices=("fixed", "follow"), default="fixed",
                         help="fixed shot, or follow the root joint")
    animate.add_argument("--side-by-side", action="store_true", help="show the shaded body mesh next to the avatar")
    _add_video_options(animate)

    kinds = "; ".join(f"{suffix}: {what}" for suffix, what in FILE_EXPORTS.items())
    export = sub.add_parser("export", help=".ply / .splat / .spz splats, mesh or single-file bundle",
                            description=f"by extension: {kinds}")
    _add_common(export)
    export.add_argument("--pose", default="apose", help=f"pose for .ply / .splat / .spz / .glb / .obj: {POSE_HELP}")
    export.add_argument("--motion", help="for .zip (one .ply per frame), .bvh and an animated rigged .glb: a built-in"
                                         " motion name, .npz clip or .bvh file")
    export.add_argument("--fps", type=positive_float, help="for --motion: resample the motion to this rate")
    export.add_argument("--frames-as", choices=("ply", "spz"),
                        help="for .zip: each frame as a standard .ply (default) or a compressed .spz (the zip ~5x smaller)")
    export.add_argument("--rig", action="store_true",
                        help="for .glb: the body rigged (55-joint skeleton, skin weights) in --pose; with --motion "
                             "it is rigged and animated anyway")


def _settings(args: argparse.Namespace):
    """The preset's export and render settings with the command's flags applied."""
    from core.config import load_preset

    config = load_preset(args.preset, args.overrides)
    flags = {"resolution": getattr(args, "resolution", None), "frames": getattr(args, "frames", None),
             "elevation": getattr(args, "elevation", None), "distance": getattr(args, "distance", None),
             "background": getattr(args, "background", None), "transparent": getattr(args, "transparent", None)}
    export = dataclasses.replace(config.export, **{k: v for k, v in flags.items() if v is not None})
    return export, config.render


def _progress_bar(label: str, total: int) -> tuple[Callable[[float], None], Callable[[], None]]:
    """A terminal bar over ``total`` units fed with fractions; returns ``(update, close)``."""
    from persona_studio.progress import ProgressBar

    bar = ProgressBar(total, label=label, unit="frames")
    return (lambda fraction: bar.update(round(fraction * total))), bar.close


def _report_video(result) -> None:
    print(f"wrote {result.path}: {result.frames} frames, {result.width}x{result.height} px at {result.fps:g} fps "
          f"(render {result.render_s:.1f} s, encode {result.encode_s:.1f} s)")


def cmd_turntable(args: argparse.Namespace) -> int:
    from core.export import load_avatar, render_turntable, resolve_motion

    if args.pose is not None and args.animate is not None:
        raise UserError("give --pose or --animate, not both")
    export, render = _settings(args)
    if args.fps is not None:
        export = dataclasses.replace(export, fps=args.fps)
    motion = resolve_motion(args.animate) if args.animate else None
    avatar, body, manifest = load_avatar(args.avatar)
    update, close = _progress_bar("turntable", export.frames)
    try:
        result = render_turntable(avatar, body, manifest, args.output, export, render, pose=args.pose or "apose",
                                  motion=motion, refined=not args.base, progress=update)
    finally:
        close()
    _report_video(result)
    return 0


def cmd_animate(args: argparse.Namespace) -> int:
    from core.export import load_avatar, render_animation, resolve_motion
    from core.export.poses import motion_at_fps

    export, render = _settings(args)
    motion = motion_at_fps(resolve_motion(args.motion), args.fps)
    avatar, body, manifest = load_avatar(args.avatar)
    update, close = _progress_bar("animate", motion.num_frames)
    try:
        result = render_animation(avatar, body, manifest, motion, args.output, export, render, camera=args.camera,
                                  side_by_side=args.side_by_side, refined=not args.base, progress=update)
    finally:
        close()
    _report_video(result)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from core.export import export_file, load_avatar, resolve_motion

    from core.export.poses import motion_at_fps

    motion = motion_at_fps(resolve_motion(args.motion), args.fps) if args.motion else None
    avatar, body, manifest = load_avatar(args.avatar)
    update, close = _progress_bar("export", motion.num_frames) if motion is not None else (None, lambda: None)
    try:
        what = export_file(args.output, avatar, body, manifest, pose=args.pose, motion=motion,
                           refined=not args.base, progress=update, rig=args.rig, frames_as=args.frames_as)
    finally:
        close()
    print(f"wrote {args.output}: {what}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "turntable": cmd_turntable,
    "animate": cmd_animate,
    "export": cmd_export,
}

