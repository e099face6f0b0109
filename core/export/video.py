"""Streaming frame writers: H.264 ``.mp4`` and VP9 ``.webm`` (PyAV), ``.gif`` (Pillow) and PNG sequences.

Frames go to the encoder one at a time, so memory stays bounded whatever the frame count. Every
writer writes to a temporary file (or folder) beside the target and renames it into place only
when the last frame is in: a failed export leaves no half-written output.

Output kind by the path: ``*.mp4`` -> H.264 yuv420p (even width and height, BT.709 tagged),
``*.webm`` -> VP9 (even sizes, yuv420p, or yuva420p with an alpha channel),
``*.gif`` -> palette GIF (each frame its own 256-colour table, at most ``GIF_MAX_SIDE`` pixels),
``*%04d.png`` (any printf integer pattern) or a folder (existing, ending in ``/``, or without a
suffix) -> PNG files ``frame_0000.png``, ...

Transparent frames (RGBA, straight alpha) go to ``.webm`` (VP9 keeps the alpha as a second plane, which
browsers, ffmpeg and editors read; PyAV's default VP9 decoder drops it, the ``libvpx-vp9`` one keeps it) or to
RGBA PNGs. H.264 and GIF have no such channel.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from core.errors import UserError, require
from core.io.atomic import atomic_path

GIF_MAX_SIDE = 320  # pixels; larger GIFs are slow to write and huge, and mp4 exists for that
DEFAULT_PNG_PATTERN = "frame_%04d.png"
H264_OPTIONS = {"crf": "18", "preset": "medium"}  # visually lossless for renders on flat backgrounds
VP9_OPTIONS = {"crf": "20", "b:v": "0", "row-mt": "1"}  # constant quality (b:v 0), about H.264's crf 18
ALPHA_KINDS = ("webm", "png")  # output kinds that keep a transparent background


class FrameWriter(Protocol):
    """Takes ``[height, width, channels]`` uint8 frames, in order: RGB, or RGBA (straight alpha) when 4."""

    width: int
    height: int
    channels: int

    def write(self, frame: np.ndarray) -> None: ...


def output_kind(path: str | Path) -> str:
    """``"mp4"``, ``"webm"``, ``"gif"`` or ``"png"`` (a folder or a ``%d`` pattern) for an output path.

    Raises ``UserError`` for any other extension, naming the ones that work.
    """
    text = str(path)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".webm"):
        return suffix[1:]
    if suffix == ".gif":
        return "gif"
    if suffix == ".png":
        if "%" not in path.name:
            raise UserError("a PNG sequence needs a frame-number pattern such as frames/%04d.png, or a folder", path)
        return "png"
    if not suffix or text.endswith(("/", os.sep)) or path.is_dir():
        return "png"
    raise UserError(f"unknown video extension {suffix!r}; use .mp4, .webm, .gif, a %04d.png pattern or a folder",
                    path)


def frame_size(kind: str, width: int, height: int, panels: int = 1) -> tuple[int, int]:
    """The ``(panel_width, height)`` in pixels to render so that ``panels`` side by side suit ``kind``.

    H.264 and VP9 in yuv420p need even sizes (rounded up); GIFs are scaled down to at most ``GIF_MAX_SIDE``
    on their longer side (rendering small is faster than rendering big and downscaling).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if kind in ("mp4", "webm"):
        return width + (panels * width) % 2, height + height % 2
    if kind == "gif":
        scale = min(1.0, GIF_MAX_SIDE / max(panels * width, height))
        return max(1, int(panels * width * scale) // panels), max(1, int(height * scale))
    return width, height


def fps_fraction(fps: float) -> Fraction:
    """Frames per second as a fraction with a small denominator (29.97 -> 30000/1001)."""
    if not (math.isfinite(fps) and fps > 0):
        raise UserError(f"frames per second must be a positive number, got {fps}")
    return Fraction(fps).limit_denominator(1001)


class _Checked:
    """Shared frame check: the right size and channels (3 RGB, 4 RGBA), uint8."""

    width: int
    height: int
    channels: int = 3

    def _check(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape != (self.height, self.width, self.channels) or frame.dtype != np.uint8:
            raise ValueError(f"expected a [{self.height}, {self.width}, {self.channels}] uint8 frame, got "
                             f"{list(frame.shape)} {frame.dtype}")
        return np.ascontiguousarray(frame)


class _AvEncoder(_Checked):
    """A video stream through PyAV's bundled FFmpeg (no network, no system ffmpeg), one frame at a time, converted
    to YUV with BT.709 and tagged so (players guess otherwise, and differently by size)."""

    def _open(self, path: Path, container_format: str, codec: str, pix_fmt: str, fps: float, options: dict) -> None:
        av = require("av", f"{container_format} export")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"{codec} {pix_fmt} needs even sizes, got {self.width}x{self.height}")
        self._container = av.open(str(path), mode="w", format=container_format)
        self._stream = self._container.add_stream(codec, rate=fps_fraction(fps))
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, pix_fmt
        self._stream.options = dict(options)
        from av.video.reformatter import ColorRange, Colorspace

        context = self._stream.codec_context
        context.colorspace, context.color_range = Colorspace.ITU709, ColorRange.MPEG
        context.color_primaries, context.color_trc = 1, 1  # BT.709 primaries and transfer (ISO/IEC 23091-2)
        self._convert = {"format": pix_fmt, "dst_colorspace": Colorspace.ITU709, "dst_color_range": ColorRange.MPEG}

    def write(self, frame: np.ndarray) -> None:
        import av

        layout = "rgba" if self.channels == 4 else "rgb24"
        converted = av.VideoFrame.from_ndarray(self._check(frame), format=layout).reformat(**self._convert)
        self._container.mux(self._stream.encode(converted))

    def close(self, ok: bool) -> None:
        try:
            if ok:
                self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
        finally:
            self._container.close()


class Mp4Writer(_AvEncoder):
    """H.264 yuv420p."""

    def __init__(self, path: Path, width: int, height: int, fps: float):
        self.width, self.height = width, height
        self._open(path, "mp4", "libx264", "yuv420p", fps, H264_OPTIONS)


class WebmWriter(_AvEncoder):
    """VP9 in WebM: yuv420p, or yuva420p for RGBA frames (``channels`` 4)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, channels: int = 3):
        self.width, self.height, self.channels = width, height, channels
        self._open(path, "webm", "libvpx-vp9", "yuva420p" if channels == 4 else "yuv420p", fps, VP9_OPTIONS)


class GifWriter(_Checked):
    """Animated GIF written frame by frame (Pillow encodes each frame; we write the container).

    Each frame gets its own 256-colour palette (fast octree quantisation): one palette for the
    whole clip is unknowable while streaming. Frame delays are whole centiseconds, chosen so that
    the running total tracks ``k / fps`` (30 fps alternates 3, 3, 4 cs), and the GIF loops forever.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float):
        self.width, self.height = width, height
        self._file = open(path, "wb")
        self._fps = float(fps_fraction(fps))
        self._count = 0

    def write(self, frame: np.ndarray) -> None:
        from PIL import GifImagePlugin, Image

        image = Image.fromarray(self._check(frame)).quantize(256, method=Image.Quantize.FASTOCTREE)
        if self._count == 0:
            header, _ = GifImagePlugin.getheader(image, None, {"loop": 0})
            self._file.write(b"".join(header))
        centiseconds = round(100 * (self._count + 1) / self._fps) - round(100 * self._count / self._fps)
        chunks = GifImagePlugin.getdata(image, duration=10 * max(2, centiseconds), include_color_table=True)
        self._file.write(b"".join(chunks))
        self._count += 1

    def close(self, ok: bool) -> None:
        try:
            if ok:
                if self._count == 0:
                    raise ValueError("a GIF needs at least one frame")
                self._file.write(b";")  # GIF trailer
        finally:
            self._file.close()


class PngSequenceWriter(_Checked):
    """PNG files named by ``pattern % k`` inside ``folder`` (fast OpenCV encoder); RGB, or RGBA (``channels`` 4)."""

    def __init__(self, folder: Path, pattern: str, width: int, height: int, channels: int = 3):
        self.width, self.height, self.channels = width, height, channels
        self.folder, self.pattern = folder, pattern
        self.names: list[str] = []

    def write(self, frame: np.ndarray) -> None:
        import cv2

        bgr = self._check(frame)[..., [2, 1, 0, 3][:self.channels]]  # OpenCV's channel order
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise RuntimeError("OpenCV could not encode a PNG frame")
        name = self.pattern % len(self.names)
        (self.folder / name).write_bytes(data.tobytes())
        self.names.append(name)


def png_target(path: str | Path) -> tuple[Path, str]:
    """``(folder, pattern)`` of a PNG-sequence output: a folder, or ``folder/name%04d.png``."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        return path, DEFAULT_PNG_PATTERN
    pattern = path.name
    try:
        first, second = pattern % 0, pattern % 1
    except (TypeError, ValueError):
        raise UserError("the PNG pattern needs exactly one integer field such as %04d", path) from None
    if first == second or "/" in first or os.sep in first:
        raise UserError("the PNG pattern needs exactly one integer field such as %04d", path)
    return path.parent, pattern


@contextlib.contextmanager
def _png_sequence(path: str | Path, width: int, height: int, channels: int) -> Iterator[PngSequenceWriter]:
    """Frames go to a temporary folder beside the target and move in only when all are written.

    Files already in the target folder with other names are left alone (a folder target may be
    one the user keeps other things in).
    """
    folder, pattern = png_target(path)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".frames.", dir=folder))
    try:
        writer = PngSequenceWriter(staging, pattern, width, height, channels)
        yield writer
        for name in writer.names:
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def write_errors_as_user_errors(path: str | Path) -> Iterator[None]:
    """Turn file-system failures (no permission, disk full, a file where a folder should be) inside
    the block into a one-line ``UserError`` naming ``path``."""
    try:
        yield
    except OSError as err:
        raise UserError(f"cannot write the output ({err.strerror or err})", path) from None


@contextlib.contextmanager
def open_frame_writer(path: str | Path, width: int, height: int, fps: float,
                      alpha: bool = False) -> Iterator[FrameWriter]:
    """Open a streaming writer for ``path`` (kind from ``output_kind``); frames ``[height, width, 3]`` uint8, or
    with ``alpha`` ``[height, width, 4]`` RGBA (straight alpha; ``.webm`` and PNGs only, else a UserError).

    On leaving the block normally the output appears complete; on an exception no output is left
    behind (an earlier file at ``path`` stays as it was). File-system failures become a one-line
    ``UserError`` naming the path.
    """
    kind = output_kind(path)
    fps_fraction(fps)  # a clear error before anything is created
    if alpha and kind not in ALPHA_KINDS:
        raise UserError(f"a transparent background needs a .webm video or PNG frames (.{kind} has no alpha channel)",
                        path)
    channels = 4 if alpha else 3
    with write_errors_as_user_errors(path):
        if kind == "png":
            with _png_sequence(path, width, height, channels) as writer:
                yield writer
            return
        with atomic_path(path) as tmp:
            if kind == "webm":
                writer = WebmWriter(tmp, width, height, fps, channels)
            else:
                writer = (Mp4Writer if kind == "mp4" else GifWriter)(tmp, width, height, fps)
            ok = False
            try:
                yield writer
                ok = True
            finally:
                writer.close(ok)
