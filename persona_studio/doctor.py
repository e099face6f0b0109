"""`persona-studio doctor`: what this machine can do, and how to fix what is missing."""
from __future__ import annotations

import importlib
import os
import platform
import sys
from dataclasses import dataclass
from typing import Callable

from core.errors import INSTALL


@dataclass
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    required: bool = True
    fix: str = ""


def check_torch() -> Check:
    import torch

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    from core.threads import training_threads

    threads = training_threads()
    why = "OpenMP workers sleep when idle" if threads > 1 else "set OMP_WAIT_POLICY=PASSIVE to train on every core"
    return Check("torch", True, f"{torch.__version__}, device {device}, trains on {threads} thread"
                 f"{'s' if threads > 1 else ''} ({why})")


def check_cuda_gsplat() -> Check:
    import torch

    try:
        gsplat = importlib.import_module("gsplat")
        version = gsplat.__version__
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return Check("gsplat (CUDA rasterizer)", False, f"not importable ({type(err).__name__})", required=False,
                     fix="pip install gsplat==1.5.3 on a machine with an NVIDIA GPU")
    if not torch.cuda.is_available():
        return Check("gsplat (CUDA rasterizer)", False,
                     f"gsplat {version} installed, no CUDA device: training runs on the CPU rasterizer", required=False)
    return Check("gsplat (CUDA rasterizer)", True,
                 f"gsplat {version} on {torch.cuda.get_device_name(0)}: training and renders of it run on the GPU "
                 "(train.device = auto)", required=False)


def check_rasterizer() -> Check:
    from core.render import backend_info

    info = backend_info()
    return Check("rasterizer", True, info["summary"])


def check_body_model() -> Check:
    from core.body import BodyModel

    model = BodyModel.load()
    return Check(
        "body model", True,
        f"{model.source} ({model.path.name}): {model.num_vertices} vertices, {model.num_joints} joints, "
        f"{model.num_betas} betas, {model.num_expression} expressions"
    )


def check_mediapipe() -> Check:
    import mediapipe

    root = os.path.dirname(mediapipe.__file__)
    needed = ["modules/pose_landmark/pose_landmark_full.tflite", "modules/face_landmark/face_landmark_with_attention.tflite",
              "modules/hand_landmark/hand_landmark_full.tflite", "modules/selfie_segmentation/selfie_segmentation.tflite"]
    missing = [n for n in needed if not os.path.exists(os.path.join(root, n))]
    if missing:
        return Check("mediapipe", False, f"{mediapipe.__version__}, missing bundled models: {', '.join(missing)}",
                     fix=INSTALL["mediapipe"].replace("install", "install --force-reinstall", 1))
    return Check("mediapipe", True, f"{mediapipe.__version__}, Holistic (model_complexity=1) models bundled")


# Runs in a child process: a broken X server or driver may abort the process (Xlib's default error
# handler exits), and the doctor must still print its report.
_GL_PROBE = """
import sys, moderngl
kwargs = {"backend": sys.argv[1]} if sys.argv[1] != "default" else {}
ctx = moderngl.create_standalone_context(**kwargs)
print(f"{ctx.info['GL_RENDERER']}, GL {ctx.version_code / 100:.1f}")
"""


def _gl_context(backend: str) -> str:
    """Renderer name of a standalone GL context made with ``backend`` (egl / default)."""
    import subprocess

    result = subprocess.run([sys.executable, "-c", _GL_PROBE, backend], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout or f"exit status {result.returncode}").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {result.returncode}")
    return result.stdout.strip()


def _viewport_backend(renderer: str) -> str:
    """What the viewport's "auto" backend draws with, given the first GL context's renderer name (gsplat's
    CUDA extension, which the GPU path needs, is not built here: it is reported by its own check)."""
    import torch

    from core.render.backends import gsplat_installed
    from persona_studio.viewport.gl_renderer import SOFTWARE_GL, auto_backend, describe_backend

    software = any(name in renderer.lower() for name in SOFTWARE_GL)
    gpu = torch.cuda.is_available() and gsplat_installed()
    backend = auto_backend(software, gpu)
    return describe_backend(backend, gpu) + (" (software GL)" if software else "")


GL_CHECK = "OpenGL (prep, frames, viewport)"


def check_gl() -> Check:
    found, failed = [], []
    for label, backend in (("EGL", "egl"), ("GLX", "default")):
        if label == "GLX" and not os.environ.get("DISPLAY"):
            failed.append("GLX: no $DISPLAY")
            continue
        try:
            found.append(f"{label}: {_gl_context(backend)}")
        except Exception as err:  # noqa: BLE001 - report any driver failure
            failed.append(f"{label}: {str(err)[:80]}")
    detail = "; ".join(found + failed)
    if found:
        detail += f"; viewport drawn by: {_viewport_backend(found[0])}"
    # core.render.mesh draws the prep's and the frames' body maps with either one, so reconstruct needs it too
    return Check(GL_CHECK, bool(found), detail, fix="apt-get install libegl1 libgl1-mesa-dri (or run under a desktop / Xvfb)")


def check_ffmpeg() -> Check:
    import av
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    encoders = []
    for codec, words in (("libx264", "H.264 (.mp4)"), ("libvpx-vp9", "VP9 with alpha (.webm)")):
        try:
            av.codec.Codec(codec, "w")
            encoders.append(words)
        except Exception:  # noqa: BLE001
            encoders.append(f"no {codec} in PyAV")
    return Check("ffmpeg (video export)", True, f"PyAV {av.__version__}, encoders: {', '.join(encoders)}; "
                                                f"ffmpeg at {exe}")


def check_allocator() -> Check:
    from core.allocator import status

    kept, words = status()
    return Check("memory allocator", kept, words, required=False)


def check_numba() -> Check:
    import numba

    return Check("numba (CPU kernels)", True, f"{numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads")


CHECKS: list[tuple[str, Callable[[], Check], bool, str]] = [
    ("torch", check_torch, True, "pip install torch"),
    ("numba (CPU kernels)", check_numba, True, "pip install numba"),
    ("memory allocator", check_allocator, False, ""),
    ("rasterizer", check_rasterizer, True, "reinstall persona-studio (pip install -e .)"),
    ("gsplat (CUDA rasterizer)", check_cuda_gsplat, False, ""),
    ("body model", check_body_model, True, "pass --body-model PATH or unset PERSONA_SMPLX_MODEL to use the embedded model"),
    ("mediapipe", check_mediapipe, True, INSTALL["mediapipe"]),
    (GL_CHECK, check_gl, True, "apt-get install libegl1 libgl1-mesa-dri"),
    ("ffmpeg (video export)", check_ffmpeg, True, INSTALL["av"]),
]


def collect() -> list[Check]:
    """Run every check; a check that raises becomes a failed line with the fix named."""
    results = []
    for name, func, required, fix in CHECKS:
        try:
            result = func()
        except Exception as err:  # noqa: BLE001 - the doctor reports, it never crashes
            message = " ".join(str(err).split())[:160] or type(err).__name__
            result = Check(name, False, message, required=required, fix=fix)
        results.append(result)
    return results


def run_doctor() -> int:
    """Print the report; exit status 1 when something required is missing."""
    print(f"persona-studio doctor — Python {platform.python_version()} on {platform.system()} {platform.machine()}")
    results = collect()
    width = max(len(c.name) for c in results)
    for c in results:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "--  ")
        print(f"[{mark}] {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            print(f"       {'':<{width}}  fix: {c.fix}")
    missing = [c.name for c in results if c.required and not c.ok]
    if missing:
        print(f"missing required: {', '.join(missing)}", file=sys.stderr)
        return 1
    print("everything required is available")
    return 0
