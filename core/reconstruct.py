"""Photo -> avatar bundle: prep, avatar initialisation, generated frames, training, bundle.

Output folder::

    my_avatar/
      manifest.json, avatar.safetensors   the avatar bundle (core.avatar.bundle)
      preview.png                         the avatar rendered in the photo's view next to the photo
      work/subject/                       the Subject (cached by photo hash)
      work/frames.npz                     generated frames (cached by subject + frame settings)
      (imported frames, ``--frames``, are read from the user's files and trained on as generated frames)
      work/checkpoint.pt                  training checkpoint (resume with --resume)
      work/metrics.json                   per-step history
"""
from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.avatar.avatar import Avatar
from core.avatar.build import NEAREST_IN_3D_PARTS, body_params, build_avatar, fill_unseen_colors, sample_image
from core.avatar.bundle import save_bundle
from core.avatar.render import AvatarRender, pose_avatar, render_posed
from core.body import BodyModel
from core.config import Config, RenderConfig
from core.errors import UserError
from core.frames.frameset import FrameSet
from core.frames.generated import GENERATOR_VERSION, generate_frames
from core.io.atomic import write_text_atomic
from core.io.images import save_png
from core.prep.supplied import SuppliedMaps
from core.render.mesh import require_opengl, visible_vertices
from core.subject import Subject
from core.threads import torch_threads, training_threads
from core.trainer import Trainer, config_device
from core.training_frames import photo_frame

# progress(stage, fraction, info) — info carries step metrics during training.
Progress = Callable[[str, float, dict], None]


@dataclass
class ReconstructResult:
    """Where the bundle went and how training ended."""

    folder: Path
    steps: int
    interrupted: bool
    metrics: dict[str, float]
    device: str = "cpu"  # where it trained ("cuda:0" on a GPU)


def photo_colors(avatar: Avatar, body: BodyModel, subject: Subject) -> np.ndarray:
    """Initial Gaussian colours ``[N, 3]``: photo colours where the fitted body is visible, the
    front's colours copied to the unseen back (the head's and neck's from their nearest seen surface)."""
    with torch.no_grad():
        posed = pose_avatar(avatar, body, body_params(subject.smplx), refined=False)
    means = posed.means.numpy()
    h, w = subject.size
    view = subject.viewmat
    seen = visible_vertices(means, avatar.faces.numpy(), view, subject.K, w, h)
    cam = means @ view[:3, :3].T + view[:3, 3]
    uv = (cam / np.maximum(cam[:, 2:3], 1e-6)) @ subject.K.T
    on_person = sample_image(subject.mask[..., None], uv[:, :2])[:, 0] > 0.5
    seen &= on_person
    colors = np.full((avatar.num_gaussians, 3), 0.5, np.float32)
    colors[seen] = sample_image(subject.image, uv[seen, :2])
    return fill_unseen_colors(colors, seen, avatar.template.numpy(),
                              np.isin(avatar.part_labels.numpy(), NEAREST_IN_3D_PARTS))


def frames_key(subject: Subject, config: Config) -> str:
    """Cache key of the generated frames: the subject's fit, the frame settings, the generator version
    and renderer, and everything the photo warm-up before them depends on (avatar, photo loss weights
    and regularisers, optimiser, seam sampling, training size, seed, background). Generated-frame loss
    weights are left out: changing them (e.g. with the studio's sliders) re-trains but need not
    re-generate."""
    loss = {k: v for k, v in asdict(config.loss).items() if k != "generated"}
    warm_up_settings = {"avatar": asdict(config.avatar), "loss": loss,
                        "optim": asdict(config.optim), "sampling": asdict(config.sampling),
                        "render_size": config.train.render_size, "seed": config.train.seed,
                        "background": config.train.background}
    digest = hashlib.sha256(json.dumps(
        {"photo": subject.info.get("photo_hash", ""), "smplx": {k: np.asarray(v).round(6).tolist()
                                                               for k, v in sorted(subject.smplx.items())},
         "frames": asdict(config.frames), "generator": GENERATOR_VERSION, "render": asdict(config.render),
         "warm_up": warm_up_settings}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_frames(path: Path, key: str) -> bool:
    """Whether ``path`` holds generated frames made with cache ``key``."""
    key_path = path.with_suffix(".key")
    return path.exists() and key_path.exists() and key_path.read_text().strip() == key


def warm_up(avatar: Avatar, body: BodyModel, frame0, config: Config, betas: np.ndarray,
            expression: np.ndarray | None, report: Progress, stop: threading.Event | None) -> None:
    """Photo-only training (no pose offsets) so the generated frames show the clothed person.

    Our offline frames re-render the avatar itself; rendered from the bare fitted body they would
    pull the silhouette back from clothes and hair towards the naked body (the paper's video model
    shows the clothed person). Warming up on the photo first makes the offsets carry the clothing.
    """
    steps = config.frames.warmup_iterations
    if steps <= 0:
        return
    warm_config = copy.deepcopy(config)
    warm_config.train.iterations = steps
    warm_config.ablation.pose_offsets = False
    warm_config.optim.lr_photo_pose = 0.0  # the photo alone cannot tell its pose error from its colours
    trainer = Trainer(avatar, body, frame0, None, warm_config, betas, expression, device=config_device(config))
    try:
        with torch_threads(training_threads()):
            while not trainer.done and not (stop is not None and stop.is_set()):
                metrics = trainer.step()
                report("warm-up on the photo", trainer.step_index / steps, metrics)
    finally:
        avatar.cpu()  # frames are generated on the CPU


def load_or_generate_frames(path: Path, key: str, avatar: Avatar, body: BodyModel, subject: Subject,
                            config: Config, progress: Progress) -> FrameSet | None:
    """The generated frames (None when ``frames.num_generated`` is 0)."""
    if config.frames.num_generated <= 0:
        return None
    if cached_frames(path, key):
        progress("generated frames (cached)", 1.0, {})
        return FrameSet.load(path)
    frames = generate_frames(avatar, body, subject.smplx, config.frames, config.render,
                             progress=lambda f: progress("generated frames", f, {}))
    frames.save(path)
    write_text_atomic(path.with_suffix(".key"), key)
    return frames


def photo_view(avatar: Avatar, body: BodyModel, subject: Subject, render: RenderConfig,
               smplx: dict[str, np.ndarray] | None = None, refined: bool = True) -> AvatarRender:
    """The avatar posed by ``smplx`` (default: the photo's fit) and drawn from the photo's camera at its size, over
    black (``[H, W, C]`` images)."""
    h, w = subject.size
    with torch.no_grad():
        posed = pose_avatar(avatar, body, body_params(subject.smplx if smplx is None else smplx), refined=refined)
        return render_posed(posed, torch.as_tensor(subject.viewmat), torch.as_tensor(subject.K), w, h, render,
                            torch.zeros(3))


def save_preview(path: Path, avatar: Avatar, body: BodyModel, subject: Subject, config: Config,
                 smplx: dict[str, np.ndarray] | None = None) -> float:
    """Write photo | avatar side by side in the photo's view, the avatar posed by ``smplx`` (default: the
    photo's fit); returns the masked PSNR (dB) against what the photo steps trained on (the person's own
    colour at the mask's soft edge, ``core.prep.matting``)."""
    from core.losses import psnr
    from core.prep.matting import premultiplied_foreground

    out = photo_view(avatar, body, subject, config.render, smplx, refined=config.ablation.pose_offsets)
    mask = subject.mask[..., None]
    target = premultiplied_foreground(subject.image, subject.mask)
    value = psnr(out.rgb[None], torch.as_tensor(target)[None], torch.as_tensor(mask)[None])
    save_png(path, np.concatenate([target, out.rgb.numpy()], axis=1))
    return value


def load_imported_frames(paths: list[str | Path], size: int) -> list[FrameSet]:
    """Imported FrameSets (``persona-studio frames import``) at ``size``² pixels, the generated frames' size."""
    from core.frames.imported import resize_frames

    return [resize_frames(FrameSet.load(path), size) for path in paths]


def photo_training_frame(subject: Subject, config: Config):
    """Frame 0 of training: the photo at ``train.render_size`` with its seam boundary."""
    return photo_frame(subject, config.sampling.boundary_image_weight, config.sampling.seam_threshold,
                       config.sampling.seam_dilate, size=config.train.render_size)


def subject_shape(subject: Subject, body: BodyModel) -> tuple[np.ndarray, np.ndarray | None]:
    """The fitted ``betas [B]`` (zeros when the fit has none) and ``expression [E]`` or None."""
    betas = np.asarray(subject.smplx.get("betas", np.zeros(body.num_betas)), np.float32)
    return betas, subject.smplx.get("expression")


def initial_avatar(body: BodyModel, subject: Subject, config: Config) -> Avatar:
    """A fresh avatar of the subject's shape coloured from the photo (unseen Gaussians filled)."""
    avatar = build_avatar(body, subject_shape(subject, body)[0], config.avatar, seed=config.train.seed)
    with torch.no_grad():
        avatar.colors.copy_(torch.as_tensor(photo_colors(avatar, body, subject)))
    return avatar


def training_frameset(avatar: Avatar, body: BodyModel, subject: Subject, frame0, config: Config, work: Path,
                      report: Progress, stop: threading.Event | None = None, resume: bool = False,
                      imported: list[FrameSet] = (), on_warmed: Callable[[Avatar], None] | None = None,
                      ) -> FrameSet | None:
    """Every training frame but the photo: generated (cached in ``work``) and ``imported`` ones.

    New generated frames first need the photo warm-up (``warm_up``), which changes ``avatar``;
    ``on_warmed(avatar)`` is called after it. A resumed run skips it (its checkpoint holds the
    trained avatar). None when there are no frames (photo-only training), and when ``stop`` was set
    during the warm-up: frames of a half-warmed avatar must not be cached.
    """
    betas, expression = subject_shape(subject, body)
    frames_path, key = work / "frames.npz", frames_key(subject, config)
    if not resume and config.frames.num_generated > 0 and not cached_frames(frames_path, key):
        warm_up(avatar, body, frame0, config, betas, expression, report, stop)
        if stop is not None and stop.is_set():
            return None
        if on_warmed is not None:
            on_warmed(avatar)
    generated = load_or_generate_frames(frames_path, key, avatar, body, subject, config, report)
    sets = ([generated] if generated is not None else []) + list(imported)
    return FrameSet.concat(sets) if sets else None


def finish_run(out_dir: Path, trainer: Trainer, body: BodyModel, subject: Subject, photo: str | Path,
               interrupted: bool, extra: dict, report: Progress) -> dict:
    """Checkpoint, ``preview.png``, the bundle and ``work/metrics.json``; returns the bundle's summary.

    ``extra`` adds to the summary (e.g. training time, imported frame count, which tool made it).
    """
    work = out_dir / "work"
    report("save", 0.0, {"detail": "saving the checkpoint"})
    trainer.save(work / "checkpoint.pt")
    report("save", 0.3, {"detail": "rendering preview.png"})
    avatar = trainer.avatar if trainer.device.type == "cpu" else copy.deepcopy(trainer.avatar).cpu()
    smplx = trainer.photo_params(subject.smplx)  # the photo's pose as training refined it
    psnr_value = save_preview(out_dir / "preview.png", avatar, body, subject, trainer.config, smplx)
    summary = {"steps": trainer.step_index, "iterations": trainer.total, "interrupted": interrupted,
               "photo_psnr": psnr_value, "preset": trainer.config.name, "photo": str(Path(photo)),
               "draw_counts": trainer.sampler.counts.tolist(), "fit": subject.info.get("fit", {}),
               "warnings": subject.info.get("warnings", []), **extra}
    report("save", 0.6, {"detail": "writing the bundle"})
    save_bundle(out_dir, avatar, body, smplx, summary)
    write_text_atomic(work / "metrics.json", json.dumps(trainer.history))
    return summary


def _train(trainer: Trainer, checkpoint: Path, every: int, report: Progress, stop: threading.Event | None) -> None:
    """Step until done or ``stop`` is set, checkpointing every ``every`` steps."""
    while not trainer.done and not (stop is not None and stop.is_set()):
        metrics = trainer.step()
        report("train", trainer.step_index / trainer.total, {**metrics, "iterations": trainer.total})
        if trainer.step_index % every == 0:
            trainer.save(checkpoint)


def reconstruct(photo: str | Path, out_dir: str | Path, config: Config, resume: bool = False,
                progress: Progress | None = None, stop: threading.Event | None = None,
                imported: list[str | Path] = (), supplied: SuppliedMaps | None = None,
                person: int | None = None) -> ReconstructResult:
    """Run the whole pipeline. ``stop`` (or Ctrl-C) ends training early: a checkpoint and a bundle
    of the avatar so far are still written. ``imported``: FrameSet files trained on in addition to
    the generated frames (``frames.num_generated = 0``: instead of them). ``supplied``: the user's own mask
    and albedo images for the photo (``core.prep.supplied``; None: those beside the photo, if any). ``person``:
    the K-th largest person-like region of the photo (None: the one the pose detector picks)."""
    from core.prep.pipeline import prepare_subject

    report = progress or (lambda stage, fraction, info: None)
    out_dir = Path(out_dir)
    work = out_dir / "work"
    checkpoint = work / "checkpoint.pt"
    device = config_device(config)  # a setting that cannot run here fails before any work
    require_opengl()  # so does a machine without OpenGL (prep, the frames and the colours render meshes)
    if resume and not checkpoint.exists():
        raise UserError("nothing to resume (no work/checkpoint.pt); run without --resume", out_dir)
    imported_sets = load_imported_frames(list(imported), config.frames.resolution)  # bad files fail first
    body = BodyModel.load(config.body.model or None)
    subject = prepare_subject(photo, work / "subject", config, model=body, supplied=supplied, person=person,
                              progress=lambda stage, f: report(f"prep: {stage}", f, {}))
    betas, expression = subject_shape(subject, body)
    report("avatar", 0.0, {})
    avatar = initial_avatar(body, subject, config)
    frame0 = photo_training_frame(subject, config)
    frames = training_frameset(avatar, body, subject, frame0, config, work, report, stop, resume, imported_sets)
    trainer = Trainer(avatar, body, frame0, frames, config, betas, expression, device=device)
    if resume:
        trainer.load(checkpoint)
    interrupted = False
    started = time.perf_counter()
    try:
        with torch_threads(training_threads()):
            _train(trainer, checkpoint, config.train.checkpoint_every, report, stop)
        interrupted = not trainer.done
    except KeyboardInterrupt:
        interrupted = True
    n_imported = sum(len(s) for s in imported_sets)
    extra = {"train_seconds": time.perf_counter() - started, "imported_frames": n_imported,
             "generated_frames": (len(frames) if frames is not None else 0) - n_imported,
             "device": str(device)}
    summary = finish_run(out_dir, trainer, body, subject, photo, interrupted, extra, report)
    psnr_value = summary["photo_psnr"]
    report("done", 1.0, summary)
    return ReconstructResult(folder=out_dir, steps=trainer.step_index, interrupted=interrupted, device=str(device),
                             metrics={"photo_psnr": psnr_value, "generated_frames": extra["generated_frames"],
                                      "imported_frames": n_imported})
