"""What the studio needs from the desktop beyond Dear PyGui's API: is there a display to open a window
on, file drops from the file manager, DPG callbacks with the arguments they take, and window screenshots."""
from __future__ import annotations

import ctypes
import inspect
import os
import sys
from pathlib import Path
from typing import Callable

import dearpygui.dearpygui as dpg
import numpy as np

from core.errors import UserError
from core.io.images import save_png


def check_display() -> None:
    """Raise a UserError where a window cannot open (Linux without a reachable X or Wayland display),
    instead of letting GLFW abort the process."""
    if not sys.platform.startswith("linux"):
        return
    hint = "on a headless machine start a virtual one: `Xvfb :99 &` then `DISPLAY=:99 persona-studio ...`"
    x_display = os.environ.get("DISPLAY")
    if not x_display and not os.environ.get("WAYLAND_DISPLAY"):
        raise UserError(f"no display to open the studio window on ($DISPLAY is not set); {hint}")
    if x_display:
        try:
            xlib = ctypes.CDLL("libX11.so.6")
        except OSError:
            return  # no Xlib to ask; GLFW will try
        xlib.XOpenDisplay.restype = ctypes.c_void_p
        connection = xlib.XOpenDisplay(x_display.encode())
        if not connection:
            raise UserError(f"cannot connect to the X display {x_display!r}; {hint}")
        xlib.XCloseDisplay(ctypes.c_void_p(connection))


def _glfw_setter(name: str, callback_type):
    """``(set, window)``: GLFW's ``name`` callback setter (typed for ``callback_type``, returning the previous
    callback) and DPG's window, or None where the GLFW symbols or the window are unavailable. Must run in the UI
    thread after ``show_viewport`` (DPG's GLFW window is then the current context)."""
    import dearpygui._dearpygui as dpg_native

    try:
        lib = ctypes.CDLL(dpg_native.__file__)
        get_window, setter = lib.glfwGetCurrentContext, getattr(lib, name)
    except (OSError, AttributeError):
        return None
    get_window.restype = ctypes.c_void_p
    window = get_window()
    if not window:
        return None
    setter.restype = ctypes.c_void_p
    setter.argtypes = [ctypes.c_void_p, callback_type]
    return setter, ctypes.c_void_p(window)


def install_file_drop(on_drop: Callable[[list[str]], None]):
    """Route OS file drops on DPG's window to ``on_drop(paths)`` (GLFW's drop callback; DPG has no API).

    Must run in the UI thread after ``show_viewport``. Returns the ctypes callback, which the caller must keep
    alive, or None where it is unavailable.
    """
    drop_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p))
    found = _glfw_setter("glfwSetDropCallback", drop_type)
    if found is None:
        return None
    set_drop, window = found
    callback = drop_type(lambda _window, count, paths: on_drop([os.fsdecode(paths[i]) for i in range(count)]))
    set_drop(window, callback)
    return callback


# GLFW's key codes and modifier bits (glfw3.h) for the shortcuts Studio.on_shortcut knows.
GLFW_PRESS = 1
GLFW_MOD_SHIFT, GLFW_MOD_CONTROL = 0x1, 0x2
GLFW_KEYS = {"space": 32, "f": 70, "y": 89, "z": 90, "home": 268}


def install_key_listener(on_key: Callable[[int, int], None]):
    """Call ``on_key(key, mods)`` (GLFW key code and modifier bits) for every key press on DPG's window, after
    Dear ImGui's own key callback (which it chains to). The modifiers are those of the press itself: DPG's key
    handlers run a frame later and can only ask which keys are down then, which loses quick chords (Ctrl+Z
    typed fast, or on a busy machine). Same conditions and return value as ``install_file_drop``."""
    key_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int)
    found = _glfw_setter("glfwSetKeyCallback", key_type)
    if found is None:
        return None
    set_key, window = found
    previous = []

    def on_event(glfw_window, key, scancode, action, mods):
        if previous:
            previous[0](glfw_window, key, scancode, action, mods)
        if action == GLFW_PRESS:
            on_key(key, mods)

    callback = key_type(on_event)
    before = set_key(window, callback)
    if before:
        previous.append(key_type(before))
    return callback


def call_with_needed_args(fn: Callable, args: tuple):
    """Call ``fn`` with as many of DPG's (sender, app_data, user_data) as it accepts."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return fn(*args)
    return fn(*args[:len(params)])


def save_window_png(path: str | Path, on_saved: Callable[[Path], None]) -> None:
    """Save the whole window as an RGB PNG at ``path`` after the next drawn frame, then call
    ``on_saved(path)`` (from DPG's frame-buffer callback)."""
    target = Path(path)

    def save(sender, buffer):
        image = np.frombuffer(buffer, dtype=np.float32).reshape(buffer.get_height(), buffer.get_width(), 4)
        save_png(target, image[..., :3])
        on_saved(target)

    dpg.output_frame_buffer(callback=save)
