"""`persona-studio` command line: one subcommand per job; `studio` (the app) is the default.

User errors print one line (``error: <file>: <problem>``) and exit with status 2; nothing else
prints a traceback unless it is a bug.
"""
from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

# Before torch loads: idle OpenMP workers must sleep, not spin, or they take the cores from the
# rasterizer's numba threads (measured 3x slower training steps on 2 cores). A user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from core.allocator import keep_freed_memory  # noqa: E402
from core.errors import UserError  # noqa: E402
from persona_studio.commands import export_commands  # noqa: E402

# Subcommands that later work will fill, with the issue that brings each. They answer clearly
# instead of crashing.
NOT_YET = {
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
    studio.add_argument("--view", default="front", choices=["front", "side", "back", "top"], help="initial view")
    studio.add_argument("--avatar", help="open an avatar bundle folder or .persona file")
    studio.add_argument("--output", default="persona-output", help="folder for the reconstruction started from --photo or a drop")
    studio.add_argument("--train-steps", type=int, default=0, help="headless: wait until N training steps ran")
    studio.add_argument("--person", type=export_commands.positive_int, metavar="K",
                        help="with several people in the photo: reconstruct the K-th largest "
                             "(the Project tab's Person)")
    studio.add_argument("--imported-frames", dest="imported", action="append", default=[], metavar="FRAMES.npz",
                        help="frames from `frames import` that runs train on besides the generated ones (repeatable)")
    _add_preset_args(studio)

    recon = sub.add_parser("reconstruct", help="photo -> avatar bundle (several photos: one bundle each)")
    recon.add_argument("photo", nargs="+", help="the photo; with several, -o is a folder and each photo's bundle "
                                               "goes into a subfolder named after it")
    recon.add_argument("-o", "--output", required=True)
    recon.add_argument("--resume", action="store_true")
    recon.add_argument("--frames", dest="imported", action="append", default=[], metavar="FRAMES.npz",
                       help="imported frames (from `frames import`) to train on as well (repeatable); "
                            "--set frames.num_generated=0 trains on them instead of generated frames")
    _add_photo_args(recon)
    _add_preset_args(recon)

    prep = sub.add_parser("prep", help="photo -> Subject folder (mask, keypoints, SMPL-X fit, albedo, geometry)")
    prep.add_argument("photo")
    prep.add_argument("-o", "--output", required=True)
    prep.add_argument("--debug", action="store_true")
    _add_photo_args(prep)
    _add_preset_args(prep)

    frames = sub.add_parser("frames", help="training frames: write a driving pose video, import a generated video")
    frames.add_argument("action", choices=["driving-video", "import"])
    frames.add_argument("source", help="avatar bundle / reconstruct output folder, .persona file or Subject folder")
    frames.add_argument("video", nargs="?", help="import: the generated video")
    frames.add_argument("--motion", help="built-in motion name, AMASS-style .npz clip or .bvh file")
    frames.add_argument("-o", "--output", help="driving-video: output .mp4 / .gif / PNG folder; "
                                               "import: frames .npz (default: beside the Subject folder)")
    frames.add_argument("--resolution", type=int,
                        help="driving-video: video size (default 512); import: frame size (default: the preset's)")
    frames.add_argument("--every", type=int, default=1, help="import: use every N-th video frame")
    frames.add_argument("--max-frames", type=int, help="import: at most this many frames")
    _add_preset_args(frames)

    export_commands.add_parsers(sub)

    config = sub.add_parser("config", help="print the effective configuration as TOML")
    _add_preset_args(config)
    config.add_argument("-o", "--output", help="save it as a preset file instead of printing")

    sub.add_parser("doctor", help="report what this machine can do")
    return parser


def _add_photo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--person", type=export_commands.positive_int, metavar="K",
                        help="with several people in the photo: use the K-th largest (1 = largest; default: the one "
                             "the pose detector picks, with a warning naming how many there are)")
    parser.add_argument("--mask", metavar="IMAGE",
                        help="your own person mask for the photo (e.g. from SAM: white on the person, or a cut-out "
                             "PNG's alpha), used instead of prep's segmentation; the photo's aspect ratio, any size "
                             "(default: PHOTO_NAME.mask.png beside the photo, if there is one)")
    parser.add_argument("--albedo", metavar="IMAGE",
                        help="your own albedo (shading-free colours) of the photo, e.g. from an intrinsic-image "
                             "model, used instead of prep's Retinex estimate; the photo's aspect ratio, any size "
                             "(default: PHOTO_NAME.albedo.png beside the photo, if there is one)")


def _supplied(photo: str, args: argparse.Namespace):
    """The user's maps for ``photo`` (flags, else files beside it), said on stderr when there are any."""
    from core.prep.supplied import SuppliedMaps

    supplied = SuppliedMaps.for_photo(photo, args.mask, args.albedo)
    if supplied.described():
        print(f"using your {supplied.described()} instead of prep's own", file=sys.stderr)
    return supplied


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


class StageProgress:
    """Shows each pipeline stage as its own progress bar on stderr."""

    def __init__(self):
        from persona_studio.progress import ProgressBar

        self._bar_type = ProgressBar
        self.stage = None
        self.bar = None

    def __call__(self, stage: str, fraction: float, info: dict | None = None) -> None:
        total = 1000
        if stage != self.stage:
            if self.bar is not None:
                self.bar.update(self.bar.total, force=True)
                self.bar.close()
            self.stage = stage
            unit = "it" if stage == "train" else "%"
            total = int(info["iterations"]) if stage == "train" and info and "iterations" in info else total
            self.bar = self._bar_type(total, label=f"{stage:<24}", unit=unit)
        if stage == "train" and info:
            done = int(info.get("step", 0))
            text = f"loss {info.get('loss', 0):.4f}  psnr {info.get('psnr', 0):.1f} dB  frame {int(info.get('frame', 0))}"
            self.bar.update(done, text)
        else:
            self.bar.update(int(fraction * self.bar.total))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cmd_prep(args: argparse.Namespace) -> int:
    from core.config import load_preset
    from core.prep.pipeline import prepare_subject

    config = load_preset(args.preset, args.overrides)
    show = StageProgress()
    subject = prepare_subject(args.photo, args.output, config, debug=args.debug, supplied=_supplied(args.photo, args),
                              person=args.person,
                              progress=lambda stage, f: show(stage, f))
    show.close()
    for warning in subject.info.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    fit = subject.info.get("fit", {})
    print(f"subject written to {args.output}" + (" (cached)" if subject.info.get("cached") else ""))
    if fit:
        print("fit: " + ", ".join(f"{k} {v:.3g}" for k, v in fit.items() if isinstance(v, (int, float))))
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    import signal
    import threading

    from core.config import load_preset

    photos = list(args.photo)
    if len(photos) > 1:
        per_photo = [flag for flag, given in (("--mask", args.mask), ("--albedo", args.albedo),
                                              ("--frames", args.imported), ("--person", args.person)) if given]
        if per_photo:
            raise UserError(f"{' and '.join(per_photo)} belong to one photo; with several photos, put "
                            f"PHOTO_NAME.mask.png / PHOTO_NAME.albedo.png beside each, or run them one at a time")
    config = load_preset(args.preset, args.overrides)
    stop = threading.Event()

    def on_interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr)
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        if len(photos) == 1:
            _reconstruct_one(photos[0], args.output, args, config, stop, args.resume)
            return 0
        return _reconstruct_batch(photos, args, config, stop)
    finally:
        signal.signal(signal.SIGINT, previous)


def batch_outputs(photos: list[str], folder: str | os.PathLike) -> list[Path]:
    """One bundle folder per photo inside ``folder``, named after the photo (``-2``, ``-3`` ... for repeats)."""
    taken: set[str] = set()
    outputs = []
    for photo in photos:
        stem = Path(photo).stem or "photo"
        name, count = stem, 1
        while name.lower() in taken:
            count += 1
            name = f"{stem}-{count}"
        taken.add(name.lower())
        outputs.append(Path(folder) / name)
    return outputs


def _reconstruct_batch(photos: list[str], args: argparse.Namespace, config, stop) -> int:
    """Each photo into its own bundle; a photo that fails is named and the others go on. 1 when any failed.
    With --resume, photos with a checkpoint resume and the others start."""
    failed = []
    done = 0
    for index, (photo, output) in enumerate(zip(photos, batch_outputs(photos, args.output))):
        if stop.is_set():
            break
        print(f"[{index + 1}/{len(photos)}] {photo} -> {output}", flush=True)
        try:
            resume = args.resume and (output / "work" / "checkpoint.pt").exists()
            interrupted = _reconstruct_one(photo, output, args, copy.deepcopy(config), stop, resume, hint=False)
            done += not interrupted
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            failed.append(Path(photo).name)
    left = len(photos) - done - len(failed)
    words = [f"{done} of {len(photos)} avatars made in {args.output}"]
    if failed:
        words.append(f"failed: {', '.join(failed)}")
    if left:
        words.append(f"{left} stopped or not started")
    print("; ".join(words))
    if left:
        print("resume with: " + shlex.join(["persona-studio", "reconstruct", *photos, "-o", str(args.output),
                                            "--resume", "--preset", args.preset]))
    return 1 if failed else 0


def _reconstruct_one(photo: str, output: str | os.PathLike, args: argparse.Namespace, config, stop, resume: bool,
                     hint: bool = True) -> bool:
    """``reconstruct`` of one photo into the bundle folder ``output``, with its progress and closing lines (``hint``:
    how to resume, when stopped early); True when it was stopped early."""
    from core.reconstruct import reconstruct

    show = StageProgress()  # the train stage's info carries its step count ("iterations": with registration)
    try:
        result = reconstruct(photo, output, config, resume=resume, progress=show, stop=stop,
                             imported=args.imported, supplied=_supplied(photo, args), person=args.person)
    finally:
        show.close()
    state = "stopped early" if result.interrupted else "done"
    print(f"{state}: {result.steps} steps on {result.device} over the photo and {_frames_words(result.metrics)}; "
          f"avatar bundle in {result.folder} (input-view PSNR {result.metrics['photo_psnr']:.2f} dB, preview.png)")
    made, asked = result.metrics["generated_frames"], config.frames.num_generated
    if 0 < made < asked:
        print(f"note: {made} generated frames of the {asked} asked for: the motions (frames.motions) hold no more "
              f"distinct poses")
    if result.interrupted and hint:
        print("resume with: " + shlex.join(["persona-studio", "reconstruct", photo, "-o", str(output), "--resume",
                                            "--preset", args.preset]))
    return result.interrupted


def _frames_words(metrics: dict) -> str:
    """'48 generated frames', '12 imported frames', '48 generated and 12 imported frames' or 'no other frames'."""
    counts = [f"{metrics[key]} {key.split('_')[0]}" for key in ("generated_frames", "imported_frames") if metrics[key]]
    return f"{' and '.join(counts)} frames" if counts else "no other frames"


def _import_frames(args: argparse.Namespace) -> int:
    """`frames import SUBJECT VIDEO --motion M`: a generated video -> imported training frames (.npz)."""
    from pathlib import Path

    from core.body import BodyModel
    from core.config import load_preset
    from core.export.poses import resolve_motion
    from core.frames.imported import ImportSettings, default_output, import_video, subject_folder
    from core.subject import Subject

    if not args.video or not args.motion:
        raise UserError("frames import needs SUBJECT VIDEO --motion NAME|clip.npz|clip.bvh (the motion of the driving video)")
    if args.output and Path(args.output).suffix.lower() != ".npz":
        raise UserError("imported frames are written as .npz; give -o FRAMES.npz", args.output)
    config = load_preset(args.preset, args.overrides)
    subject_dir = subject_folder(args.source)
    subject = Subject.load(subject_dir)
    motion = resolve_motion(args.motion)
    settings = ImportSettings(resolution=args.resolution or config.frames.resolution, every=args.every,
                              max_frames=args.max_frames)
    output = Path(args.output) if args.output else default_output(subject_dir, args.video)
    show = StageProgress()
    try:
        result = import_video(args.video, motion, BodyModel.load(config.body.model or None), subject.smplx, settings,
                              progress=lambda f: show("import frames", f))
    finally:
        show.close()
    if result.frames is None:
        raise UserError(f"no usable frames: {result.summary()}; is it a video made from this subject's "
                        f"driving video of {motion.name}?", args.video)
    result.frames.save(output)
    print(f"{result.summary()}; wrote {output}")
    print(f"train with: persona-studio reconstruct PHOTO -o OUTPUT --frames {output}")
    return 0


def _cmd_frames(args: argparse.Namespace) -> int:
    if args.action == "import":
        return _import_frames(args)
    from core.body import BodyModel
    from core.export.poses import resolve_motion
    from core.frames.driving import subject_betas, write_driving_video

    if not args.motion or not args.output:
        raise UserError("frames driving-video needs --motion NAME|clip.npz|clip.bvh and -o OUTPUT")
    betas = subject_betas(args.source)
    motion = resolve_motion(args.motion)
    show = StageProgress()
    count = write_driving_video(args.output, BodyModel.load(), motion, betas, args.resolution or 512,
                                progress=lambda f: show("driving video", f))
    show.close()
    print(f"wrote {args.output}: {count} frames at {motion.fps:g} fps")
    return 0


def _cmd_studio(args: argparse.Namespace) -> int:
    from persona_studio.app import run_studio

    return run_studio(photo=args.photo, frames=args.frames, screenshot=args.screenshot, preset=args.preset,
                      overrides=args.overrides, view=args.view, train_steps=args.train_steps,
                      output_dir=args.output, avatar=args.avatar, imported_frames=args.imported,
                      person=args.person or 0)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    **export_commands.COMMANDS,
    "frames": _cmd_frames,
    "studio": _cmd_studio,
    "prep": _cmd_prep,
    "reconstruct": _cmd_reconstruct,
    "doctor": _cmd_doctor,
    "config": _cmd_config,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``persona-studio`` console script and ``python main.py``."""
    keep_freed_memory()  # training and rendering reuse their freed memory (core.allocator)
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
