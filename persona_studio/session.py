"""A reconstruction run inside the studio: photo prep -> avatar with photo colours -> photo-only warm-up ->
generated frames -> training -> avatar bundle, in one worker thread.

The UI controls it (pause / resume / stop, live loss weights, inspection requests) and watches it
(``status()``, ``snapshots``, ``inspections``, ``avatar``) without ever waiting for it: controls only
set flags the worker reads at step boundaries, and results go through latest-wins slots.

The stages call the same public engine functions as ``core.reconstruct.reconstruct`` and write the same
folder layout (``work/subject``, ``work/frames.npz``, ``work/checkpoint.pt``, the bundle and
``preview.png``), so ``persona-studio reconstruct --resume`` can continue a run started here.
"""
from __future__ import annotations

import copy
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.avatar.avatar import Avatar
from core.body import BodyModel
from core.config import Config, LossConfig
from core.errors import UserError
from core.frames.frameset import FrameSet
from core.reconstruct import finish_run, initial_avatar, photo_training_frame, subject_shape, training_frameset
from core.subject import Subject
from core.threads import torch_threads, training_threads
from core.trainer import Trainer, TrainingSnapshot, config_device
from persona_studio.inspection import Inspection, frame_label, frame_thumbnails, inspect_frame
from persona_studio.latest import Latest

STAGES = ("prep", "avatar", "warmup", "frames", "train", "save")
STAGE_TITLES = {"prep": "Photo prep", "avatar": "Avatar", "warmup": "Warm-up on the photo",
                "frames": "Generated frames", "train": "Training", "save": "Save bundle"}
ACTIVE_STATES = ("starting", "running", "paused", "stopping")
# Where each of prepare_subject's sub-stages sits inside the prep bar (start, end): the sub-stages
# report their own 0..1 progress; unknown ones keep the bar where it is.
PREP_SPANS = {"load photo": (0.0, 0.02), "perceive": (0.02, 0.3), "fit camera": (0.3, 0.37),
              "fit limbs": (0.37, 0.43), "fit body": (0.43, 0.7), "fit hands": (0.7, 0.88), "albedo": (0.88, 0.92), "geometry": (0.92, 0.97),
              "save": (0.97, 1.0), "done": (1.0, 1.0)}
RATE_WINDOW = 20  # steps over which it/s is measured
PAUSE_POLL = 0.2  # seconds a paused or finished worker waits between looks at its requests


def prep_fraction(substage: str, fraction: float, previous: float) -> float:
    """Overall prep progress in [0, 1] from a sub-stage's own progress; never moves backwards."""
    if substage.startswith("cached"):
        return 1.0
    if substage not in PREP_SPANS:
        return previous
    start, end = PREP_SPANS[substage]
    return max(previous, start + (end - start) * float(np.clip(fraction, 0.0, 1.0)))


@dataclass(frozen=True)
class SessionStatus:
    """What the UI shows about a run (an immutable copy; ``ReconstructionSession.status()`` makes a new one).

    Attributes:
        state: "starting" | "running" | "paused" | "stopping" | "finished" | "stopped" | "failed".
        stage: the stage now running (one of STAGES), or None before the first / after the last.
        fractions: progress of every stage in [0, 1].
        detail: one line about what happens now (e.g. "prep: fit body").
        step, total: training steps done and planned.
        steps_per_second: training speed over the last ``RATE_WINDOW`` steps (0 when unknown).
        eta_seconds: time left for training at that speed (None when unknown).
        metrics: the last step's metrics (``Trainer.step()``).
        error: the one-line error that ended the run, if any.
        bundle: the avatar bundle folder once written.
        photo_psnr: input-view PSNR (dB) of the saved avatar.
        warnings: photo prep's one-line warnings (several people, a cut-off person, a small photo...).
    """

    state: str = "starting"
    stage: str | None = None
    fractions: dict[str, float] = field(default_factory=lambda: {stage: 0.0 for stage in STAGES})
    detail: str = "starting"
    step: int = 0
    total: int = 0
    steps_per_second: float = 0.0
    eta_seconds: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    bundle: Path | None = None
    photo_psnr: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        """The worker is still preparing or training (it may be paused)."""
        return self.state in ACTIVE_STATES


@dataclass(frozen=True)
class SessionAvatar:
    """The session's avatar for display: a private copy (never the trainer's own, which changes every
    step), its body model, and the fitted subject's SMPL-X parameters (``betas [B]``, ``expression [E]``,
    the photo's pose) as float32 arrays. ``frame_camera``: aim the viewport at it (a new avatar) or
    keep the view (the same avatar after its warm-up)."""

    avatar: Avatar
    body: BodyModel
    subject_params: dict[str, np.ndarray]
    label: str
    frame_camera: bool = True


class StepRate:
    """Training steps per second over the last ``window`` steps, and the time left at that speed."""

    def __init__(self, window: int = RATE_WINDOW):
        self._times: deque[float] = deque(maxlen=window + 1)

    def tick(self, now: float) -> None:
        self._times.append(now)

    def reset(self) -> None:
        """Forget the timing (after a pause: the pause is not training time)."""
        self._times.clear()

    def rate(self) -> float:
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    def eta(self, remaining: int) -> float | None:
        rate = self.rate()
        return remaining / rate if rate > 0 else None


def default_prepare(photo: Path, out_dir: Path, config: Config, model: BodyModel,
                    progress: Callable[[str, float], None], person: int | None = None,
                    supplied=None) -> Subject:
    """Photo prep with the engine's pipeline (imported late: it pulls in mediapipe): ``person`` picks one of
    several people, ``supplied`` the user's mask and albedo (``core.prep.supplied.SuppliedMaps``; None: those
    beside the photo)."""
    from core.prep.pipeline import prepare_subject

    return prepare_subject(photo, out_dir, config, model=model, progress=progress, person=person,
                           supplied=supplied)


class ReconstructionSession:
    """One photo's reconstruction, run by ``start()`` in a daemon thread that lives until ``close()``.

    Args:
        photo: the input photo.
        out_dir: the output folder (bundle, preview.png, work/).
        config: the preset (copied; later changes to the caller's object do not reach the run).
        prepare: ``prepare(photo, subject_dir, config, model, progress)`` -> Subject; tests may pass a
            synthetic one instead of the mediapipe pipeline.
        body: an already loaded body model (default: the one ``config.body.model`` names).
        previous: a run being stopped (e.g. of the same photo, into the same folder); this one starts
            once that one has saved its bundle.
        imported: frame sets from ``persona-studio frames import`` to train on besides the generated
            frames (at ``frames.resolution``; ``core.reconstruct.load_imported_frames`` reads them).
        person: with several people in the photo, the K-th largest (None: the pose detector's pick);
        supplied: the user's mask and albedo images (``core.prep.supplied.SuppliedMaps``; None: those beside
            the photo). Both are given to ``prepare`` as keywords.
    """

    def __init__(self, photo: str | Path, out_dir: str | Path, config: Config,
                 prepare: Callable[..., Subject] = default_prepare, body: BodyModel | None = None,
                 previous: "ReconstructionSession | None" = None, imported: list[FrameSet] = (),
                 person: int | None = None, supplied=None):
        self.photo = Path(photo)
        self.out_dir = Path(out_dir)
        self.config = copy.deepcopy(config)
        self._prepare = prepare
        self._body = body
        self._previous = previous
        self._imported = list(imported)
        self._person = person
        self._supplied = supplied
        self._cond = threading.Condition()
        self._status = SessionStatus(total=self.config.train.iterations)
        self._paused = False
        self._stop = threading.Event()
        self._closing = False
        self._inspect_request: int | None = None
        self._history: list[tuple[int, int, float, float]] = []  # (step, frame, loss, psnr)
        self._trainer: Trainer | None = None  # owned by the worker thread
        self._rate = StepRate()
        self.snapshots: Latest[TrainingSnapshot] = Latest()
        self.inspections: Latest[Inspection] = Latest()
        self.avatar: Latest[SessionAvatar] = Latest()
        self.thumbnails: np.ndarray | None = None  # [F, s, s, 3] once the frames exist
        self.frame_labels: list[str] = []
        self._thread = threading.Thread(target=self._run, name="reconstruction", daemon=True)

    # -- control (any thread) ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def pause(self) -> None:
        """Pause training at the next step boundary (earlier stages run to their end)."""
        with self._cond:
            self._paused = True
            if self._status.state == "running" and self._status.stage == "train":
                self._set(state="paused")

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            if self._status.state == "paused":
                self._set(state="running")
            self._cond.notify_all()

    def stop(self) -> None:
        """End the run after the current stage or step; a started training still saves its bundle."""
        self._stop.set()
        with self._cond:
            if self._status.active:
                self._set(state="stopping")
            self._cond.notify_all()

    def close(self, timeout: float = 120.0) -> None:
        """Stop, let the worker save what it has, and end its thread, waiting at most ``timeout`` seconds.

        Prep and frame generation cannot be interrupted, so closing during them waits for the stage
        to end: leaving the thread to die at exit while mediapipe's native threads run aborts the
        whole process ("terminate called without an active exception")."""
        self.stop()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def set_loss_weights(self, loss: LossConfig) -> None:
        """New loss weights for the run; the trainer applies them at its next step."""
        with self._cond:
            self.config.loss = copy.deepcopy(loss)
            trainer = self._trainer
        if trainer is not None:
            trainer.set_loss_weights(loss)

    def request_inspection(self, frame: int) -> None:
        """Ask for an ``Inspection`` of training frame ``frame``; it arrives in ``inspections``."""
        with self._cond:
            self._inspect_request = int(frame)
            self._cond.notify_all()

    # -- read-outs (any thread) -------------------------------------------------------------------
    def status(self) -> SessionStatus:
        with self._cond:
            return self._status

    def history(self, start: int = 0) -> list[tuple[int, int, float, float]]:
        """Training steps from index ``start`` on, as (step, frame, loss, psnr)."""
        with self._cond:
            return self._history[start:]

    @property
    def num_frames(self) -> int:
        """Training frames (the photo + generated), 0 before the frames exist."""
        return 0 if self.thumbnails is None else len(self.thumbnails)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # -- the worker ---------------------------------------------------------------------------------
    def _set(self, **changes) -> None:
        """Replace status fields (caller holds ``_cond``)."""
        self._status = replace(self._status, **changes)

    def _report(self, stage: str, fraction: float, detail: str) -> None:
        with self._cond:
            fractions = dict(self._status.fractions)
            fractions[stage] = float(np.clip(fraction, 0.0, 1.0))
            self._set(stage=stage, fractions=fractions, detail=detail)

    def _wait_for_previous(self) -> None:
        """Let a stopped run of the same folder finish saving before this one writes there."""
        if self._previous is None:
            return
        self._report("prep", 0.0, "waiting for the previous run to save")
        while self._previous.status().active and not self._stop.is_set():
            time.sleep(PAUSE_POLL)
        self._previous = None

    def _run(self) -> None:
        with torch_threads(training_threads()):  # as core.reconstruct trains
            self._run_stages()
        self._serve_until_closed()

    def _run_stages(self) -> None:
        try:
            self._wait_for_previous()
            with self._cond:
                self._set(state="running")
            trainer, subject, body = self._prepare_training()
            if trainer is not None:
                interrupted = self._train(trainer)
                self._save(trainer, subject, body, interrupted)
            with self._cond:
                self._set(state="stopped" if self._stop.is_set() else "finished", stage=None,
                          detail="stopped" if self._stop.is_set() else "done")
        except UserError as err:
            self._fail(str(err))
        except Exception as err:  # noqa: BLE001  (a bug: keep the app alive, show it, log the traceback)
            traceback.print_exc()
            self._fail(f"internal error: {type(err).__name__}: {err} (details in the terminal)")

    def _fail(self, message: str) -> None:
        with self._cond:
            self._set(state="failed", error=message, detail=message)

    def _prepare_training(self) -> tuple[Trainer | None, Subject | None, BodyModel | None]:
        """Prep, avatar, warm-up, generated frames and the trainer; (None, ...) when stopped on the way."""
        config, work = self.config, self.out_dir / "work"
        self._report("prep", 0.0, "prep: loading the body model")
        body = self._body or BodyModel.load(config.body.model or None)
        done = [0.0]

        def prep_progress(substage: str, fraction: float) -> None:
            done[0] = prep_fraction(substage, fraction, done[0])
            self._report("prep", done[0], f"prep: {substage}")

        subject = self._prepare(self.photo, work / "subject", config, body, prep_progress, person=self._person,
                                supplied=self._supplied)
        with self._cond:
            self._set(warnings=tuple(getattr(subject, "info", {}).get("warnings", ())))
        self._report("prep", 1.0, "prep: done")
        if self._stop.is_set():
            return None, subject, body
        self._report("avatar", 0.0, "building the avatar")
        avatar = initial_avatar(body, subject, config)
        subject_params = {k: np.asarray(v, np.float32).reshape(-1) for k, v in subject.smplx.items()}
        self.avatar.publish(SessionAvatar(copy.deepcopy(avatar), body, subject_params, f"{self.photo.stem} (initial)"))
        self._report("avatar", 1.0, "avatar built")
        if self._stop.is_set():
            return None, subject, body
        frame0 = photo_training_frame(subject, config)
        betas, expression = subject_shape(subject, body)

        def warmed(avatar):
            self.avatar.publish(SessionAvatar(copy.deepcopy(avatar), body, subject_params,
                                              f"{self.photo.stem} (warmed up)", frame_camera=False))

        def frames_progress(stage, fraction, info):
            self._report("warmup" if stage.startswith("warm-up") else "frames", fraction, stage)

        frames = training_frameset(avatar, body, subject, frame0, config, work, frames_progress, self._stop,
                                   imported=self._imported, on_warmed=warmed)
        self._report("warmup", 1.0, "warm-up done")
        if self._stop.is_set():
            return None, subject, body
        self._report("frames", 1.0, f"{0 if frames is None else len(frames)} training frames besides the photo")
        with self._cond:  # the weights may have been changed while the earlier stages ran
            config = copy.deepcopy(self.config)
        trainer = Trainer(avatar, body, frame0, frames, config, betas, expression, device=config_device(config))
        self.frame_labels = [frame_label(trainer, i) for i in range(trainer.num_generated + 1)]
        self.thumbnails = frame_thumbnails(trainer)
        with self._cond:
            self._trainer = trainer
            self._set(total=trainer.total)
        self.snapshots.publish(trainer.snapshot())
        if self._stop.is_set():
            return None, subject, body
        return trainer, subject, body

    def _train(self, trainer: Trainer) -> bool:
        """Step until done or stopped; True when stopped early."""
        checkpoint = self.out_dir / "work" / "checkpoint.pt"
        config = trainer.config
        self._report("train", 0.0, f"training on {trainer.device}")
        self._rate.reset()
        while not trainer.done:
            self._serve_inspection(trainer)
            if self._stop.is_set():
                return True
            with self._cond:
                if self._paused:
                    if self._status.state == "running":  # paused before training began
                        self._set(state="paused")
                    self._cond.wait(PAUSE_POLL)
                    self._rate.reset()
                    continue
            metrics = trainer.step()
            self._after_step(trainer, metrics)
            if trainer.registers_photo and trainer.step_index == trainer.register_window[1]:
                self._publish_registered(trainer)
            if trainer.step_index % max(1, config.train.snapshot_every) == 0 or trainer.done:
                self.snapshots.publish(trainer.snapshot())
            if trainer.step_index % max(1, config.train.checkpoint_every) == 0:
                trainer.save(checkpoint)
        return False

    def _publish_registered(self, trainer: Trainer) -> None:
        """Once the photo is registered, the displayed avatar's photo pose is the registered one (the view stays;
        the copy carries the trained state, so the viewport does not show the older avatar until a snapshot)."""
        shown = self.avatar.get()
        avatar = copy.deepcopy(shown.avatar)
        avatar.load_state_dict(trainer.snapshot().avatar_state)
        self.avatar.publish(SessionAvatar(avatar, shown.body, trainer.photo_params(shown.subject_params),
                                          f"{self.photo.stem} (photo registered)", frame_camera=False))

    def _after_step(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self._rate.tick(time.perf_counter())
        with self._cond:
            self._history.append((trainer.step_index, int(metrics["frame"]), float(metrics["loss"]),
                                  float(metrics["psnr"])))
            fractions = dict(self._status.fractions)
            fractions["train"] = trainer.step_index / max(1, trainer.total)
            self._set(step=trainer.step_index, fractions=fractions, metrics=dict(metrics),
                      steps_per_second=self._rate.rate(), eta_seconds=self._rate.eta(trainer.total - trainer.step_index),
                      detail=f"step {trainer.step_index}/{trainer.total}  loss {metrics['loss']:.4f}  "
                             f"PSNR {metrics['psnr']:.1f} dB")

    def _save(self, trainer: Trainer, subject: Subject, body: BodyModel, interrupted: bool) -> None:
        """Checkpoint, preview, bundle and metrics, as ``core.reconstruct`` writes them."""
        summary = finish_run(self.out_dir, trainer, body, subject, self.photo, interrupted,
                             {"imported_frames": sum(len(frames) for frames in self._imported),
                              "made_with": "persona-studio app"},
                             lambda stage, fraction, info: self._report("save", fraction, info["detail"]))
        self.snapshots.publish(trainer.snapshot())
        with self._cond:
            self._set(bundle=self.out_dir, photo_psnr=summary["photo_psnr"])
        self._report("save", 1.0, f"bundle written to {self.out_dir}")

    # -- inspection requests --------------------------------------------------------------------
    def _serve_inspection(self, trainer: Trainer | None) -> None:
        with self._cond:
            index, self._inspect_request = self._inspect_request, None
        if index is None or trainer is None:
            return
        index = int(np.clip(index, 0, trainer.num_generated))
        try:
            self.inspections.publish(inspect_frame(trainer, index))
        except Exception:  # noqa: BLE001  (an inspection bug must not end the run; the trace is for us)
            traceback.print_exc()

    def _serve_until_closed(self) -> None:
        """After the run: keep answering inspection requests until ``close()``."""
        torch.set_num_threads(1)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closing or self._inspect_request is not None, PAUSE_POLL)
                if self._closing:
                    return
            self._serve_inspection(self._trainer)
