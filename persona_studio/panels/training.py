"""Training panel: start / pause / resume / stop, the preset, progress with it/s and ETA, and live
loss and PSNR plots (photo steps and generated-frame steps as separate lines)."""
from __future__ import annotations

import time

import dearpygui.dearpygui as dpg
import numpy as np

from core.config import preset_names
from persona_studio.progress import format_duration

PLOT_INTERVAL = 0.5  # seconds between plot updates (the plots need not follow every UI frame)
PLOT_HEIGHT = 150  # pixels
KINDS = ("photo", "generated")


def progress_text(status) -> str:
    """e.g. "step 120/600  3.2 it/s  ETA 2:30" from a ``SessionStatus``."""
    text = f"step {status.step}/{status.total}"
    if status.steps_per_second > 0:
        text += f"  {status.steps_per_second:.2f} it/s"
    if status.eta_seconds is not None and status.step < status.total:
        text += f"  ETA {format_duration(status.eta_seconds)}"
    return text


class LossHistory:
    """Training history split by frame kind, as plot-ready lists: ``steps[kind]``, ``loss[kind]``, ``psnr[kind]``."""

    def __init__(self) -> None:
        self.count = 0  # history entries consumed
        self.steps = {kind: [] for kind in KINDS}
        self.loss = {kind: [] for kind in KINDS}
        self.psnr = {kind: [] for kind in KINDS}

    def extend(self, entries) -> None:
        """Add (step, frame, loss, psnr) entries; frame 0 is the photo."""
        for step, frame, loss, psnr in entries:
            kind = "photo" if frame == 0 else "generated"
            self.steps[kind].append(float(step))
            self.loss[kind].append(float(loss))
            self.psnr[kind].append(float(psnr))
        self.count += len(entries)


class TrainingPanel:
    """Controls and read-outs of the current reconstruction's training."""

    title = "Training"

    def __init__(self, studio):
        self.studio = studio
        self._preset = self._bar = self._metrics = self._pause = None
        self._series: dict[tuple[str, str], int] = {}
        self._axes: dict[str, tuple[int, int]] = {}
        self._history = LossHistory()
        self._history_session = None
        self._last_plot = 0.0

    def build(self, parent: int | str) -> None:
        guard = self.studio.guard
        with dpg.collapsing_header(label=self.title, parent=parent, default_open=True):
            names = preset_names()
            current = self.studio.config.name if self.studio.config.name in names else (names[0] if names else "")
            self._preset = dpg.add_combo(names, label="Preset", default_value=current, width=150,
                                         callback=guard(lambda s, name: self.studio.set_preset(name)))
            with dpg.group(horizontal=True):
                dpg.add_button(label="Start", callback=guard(lambda: self.studio.restart_reconstruction()))
                self._pause = dpg.add_button(label="Pause", callback=guard(lambda: self.toggle_pause()))
                dpg.add_button(label="Stop", callback=guard(lambda: self.studio.stop_training()))
                dpg.add_button(label="Inspector", callback=guard(lambda: self.studio.inspector.show()))
            self._bar = dpg.add_progress_bar(default_value=0.0, width=-1, overlay="no training yet")
            self._metrics = dpg.add_text("", wrap=300)
            for name, label in (("loss", "loss"), ("psnr", "PSNR (dB)")):
                with dpg.plot(label=label, height=PLOT_HEIGHT, width=-1, no_menus=True, no_box_select=True):
                    dpg.add_plot_legend()
                    x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="step")
                    y_axis = dpg.add_plot_axis(dpg.mvYAxis, scale=dpg.mvPlotScale_Log10 if name == "loss"
                                               else dpg.mvPlotScale_Linear)
                    self._axes[name] = (x_axis, y_axis)
                    for kind in KINDS:
                        self._series[(name, kind)] = dpg.add_line_series([], [], label=kind, parent=y_axis)

    def toggle_pause(self) -> None:
        session = self.studio.session
        if session is None:
            return
        if session.status().state == "paused":
            session.resume()
        else:
            session.pause()

    def refresh(self) -> None:
        session = self.studio.session
        if session is None:
            return
        status = session.status()
        dpg.set_value(self._bar, status.fractions["train"])
        dpg.configure_item(self._bar, overlay=progress_text(status) if status.stage == "train" or status.step
                           else f"waiting for {status.stage or 'the run'}")
        dpg.configure_item(self._pause, label="Resume" if status.state == "paused" else "Pause")
        metrics = status.metrics
        lines = [f"state: {status.state}"]
        if metrics:
            lines.append(f"loss {metrics['loss']:.4f}   PSNR {metrics['psnr']:.2f} dB   frame {int(metrics['frame'])}")
        if status.photo_psnr is not None:
            lines.append(f"saved avatar: input-view PSNR {status.photo_psnr:.2f} dB")
        dpg.set_value(self._metrics, "\n".join(lines))
        now = time.monotonic()
        if now - self._last_plot >= PLOT_INTERVAL:
            self._last_plot = now
            self._update_plots(session)

    def _update_plots(self, session) -> None:
        if session is not self._history_session:
            self._history, self._history_session = LossHistory(), session
        new = session.history(self._history.count)
        if not new:
            return
        self._history.extend(new)
        for (name, kind), series in self._series.items():
            values = self._history.loss[kind] if name == "loss" else self._history.psnr[kind]
            # A log axis cannot show zero or negative losses.
            values = list(np.maximum(values, 1e-8)) if name == "loss" else values
            dpg.set_value(series, [self._history.steps[kind], values])
        for x_axis, y_axis in self._axes.values():
            dpg.fit_axis_data(x_axis)
            dpg.fit_axis_data(y_axis)
