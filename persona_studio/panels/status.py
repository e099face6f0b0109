"""Where errors show: a one-line status bar at the bottom of the window, and a modal error dialog
(the same line, an OK button) for failures the user has to notice: an unusable photo, a bad bundle
or frames file, a failed export, a crashed training run.

Any thread may ``post`` an error to the dialog (it only enqueues); the dialog window itself is shown
by the UI thread (``show_pending``, once per UI frame), so no worker ever waits for the user.
"""
from __future__ import annotations

import queue
import sys

import dearpygui.dearpygui as dpg

ERROR_COLOR = (255, 110, 100)
INFO_COLOR = (200, 200, 200)
WARNING_COLOR = (255, 200, 90)
DIALOG_TITLE = "Error"
DIALOG_WIDTH = 460  # pixels
DIALOG_WRAP = DIALOG_WIDTH - 30  # pixels, text wrap width inside the dialog


class ErrorDialog:
    """A modal window showing the newest error; ``post`` from any thread, ``show_pending`` in the UI thread.

    Errors that arrive while it is open replace its message (each one also stays in the status bar), and
    the dialog says how many came, so a burst of failures needs one OK, not one per failure.
    """

    def __init__(self) -> None:
        self._pending: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.window = None
        self._text = self._count = self.ok_button = None
        self.message: str | None = None  # what the dialog shows now (None before the first error)
        self._shown_count = 0  # errors shown since it was last opened

    def build(self) -> None:
        """Create the (hidden) window; UI thread, after the viewport exists."""
        with dpg.window(label=DIALOG_TITLE, modal=True, show=False, no_resize=True, autosize=True,
                        width=DIALOG_WIDTH, on_close=lambda: self.close()) as self.window:
            self._text = dpg.add_text("", wrap=DIALOG_WRAP, color=ERROR_COLOR)
            self._count = dpg.add_text("", color=(150, 150, 150), show=False)
            self.ok_button = dpg.add_button(label="OK", width=80, callback=lambda: self.close())

    def post(self, message: str) -> None:
        """Show ``message`` in the dialog on the next UI frame (safe from any thread; never blocks)."""
        self._pending.put(str(message))

    def show_pending(self) -> None:
        """Open the dialog with the newest posted message, if any (UI thread, once per UI frame)."""
        latest, count = None, 0
        while not self._pending.empty():
            latest, count = self._pending.get_nowait(), count + 1
        if latest is None or self.window is None:
            return
        self._shown_count = (self._shown_count if self.visible else 0) + count
        self.message = latest
        dpg.set_value(self._text, latest)
        dpg.set_value(self._count, f"({self._shown_count} errors; the status bar keeps the last)")
        dpg.configure_item(self._count, show=self._shown_count > 1)
        width, height = dpg.get_viewport_client_width(), dpg.get_viewport_client_height()
        dpg.configure_item(self.window, show=True, pos=(max(0, (width - DIALOG_WIDTH) // 2), max(0, height // 3)))

    @property
    def visible(self) -> bool:
        return bool(self.window is not None and dpg.is_item_shown(self.window))

    def close(self) -> None:
        """The OK button (or the window's close box)."""
        if self.window is not None:
            dpg.configure_item(self.window, show=False)
        self._shown_count = 0


class StatusBar:
    """One line at the bottom of the window; errors show here in red (and in ``dialog``, when given)
    instead of crashing the app. UI thread only."""

    def __init__(self, parent: int | str, dialog: ErrorDialog | None = None):
        self._text = dpg.add_text("Ready", parent=parent, color=INFO_COLOR)
        self.dialog = dialog
        self.last_error: str | None = None

    @property
    def message(self) -> str:
        """The line shown now."""
        return dpg.get_value(self._text)

    def info(self, message: str) -> None:
        dpg.configure_item(self._text, color=INFO_COLOR)
        dpg.set_value(self._text, message)

    def warn(self, message: str) -> None:
        """Show ``message`` as a warning (amber; also on stderr, as the command line prints prep's)."""
        dpg.configure_item(self._text, color=WARNING_COLOR)
        dpg.set_value(self._text, f"Warning: {message}")
        print(f"warning: {message}", file=sys.stderr)

    def error(self, message: str, dialog: bool = True) -> None:
        """Show ``message`` as an error; ``dialog``: also in the error dialog (False for notes that a
        script asked for, such as a timeout of a headless run)."""
        self.last_error = message
        dpg.configure_item(self._text, color=ERROR_COLOR)
        dpg.set_value(self._text, f"Error: {message}")
        print(f"error: {message}", file=sys.stderr)
        if dialog and self.dialog is not None:
            self.dialog.post(message)
