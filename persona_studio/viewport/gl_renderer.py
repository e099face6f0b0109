"""Offscreen splat renderer for the viewport: OpenGL (one quad per splat, Gaussian falloff, back-to-front
premultiplied blending) or, where OpenGL is itself a software rasterizer, the CPU compositor.

It owns a *standalone* moderngl context (EGL on Linux, so it needs no X server), draws into a float32
framebuffer and reads the pixels back into numpy. It never touches the context Dear PyGui draws with.
On a software GL (Mesa llvmpipe / softpipe, what machines without a GPU get) the ``auto`` backend draws
with ``cpu_splatter`` instead, 2-3x faster there (the context is still made, to ask which GL it is), or,
when a CUDA GPU with gsplat is there all the same (a headless or remote session), with the engine's
rasterizer on that GPU (``engine_splatter``).

Threading: an OpenGL context is current in one thread at a time, so every method of a ``SplatRenderer``
must be called from the thread that created it. The studio creates it inside ``RenderThread``;
tests and benchmarks create and use it in their own thread.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time

import moderngl
import numpy as np

from core.paths import SHADERS_DIR
from persona_studio.viewport.cpu_splatter import CpuCompositor
from persona_studio.viewport.engine_splatter import EngineSplatter, gpu_splatting_problem
from persona_studio.viewport.scene import SplatScene

# Per-splat vertex attributes, packed as float32: centre xyz, sigma, rgb, opacity; each splat's row is
# repeated for its 4 quad corners (the shader derives the corner from the vertex index).
_SPLAT_LAYOUT = ("3f 1f 3f 1f", "center", "sigma", "color", "opacity")
_CORNERS_PER_SPLAT = 4
_QUAD_TRIANGLES = np.array([0, 1, 2, 2, 1, 3], dtype=np.uint32)  # corners (-1,-1), (1,-1), (-1,1), (1,1)
BACKENDS = ("auto", "gl", "cpu", "engine")
BACKEND_ENV = "PERSONA_VIEWPORT_BACKEND"  # overrides the "auto" choice (gl / cpu / engine), e.g. to compare them
# GL_RENDERER names of Mesa's software rasterizers, where the CPU compositor is faster.
SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast")


def _gl_finish_without_gil():
    """``glFinish`` called through ctypes, which lets go of Python's GIL while it waits; None where no GL
    library can be loaded.

    moderngl keeps the GIL during its calls, so a frame read back straight after drawing would block
    every Python thread (posing, training) for as long as a software GL (llvmpipe) needs to rasterize
    it; waiting here first makes the read-back itself quick."""
    for name in ("libGL.so.1", "libOpenGL.so.0", ctypes.util.find_library("GL") or ""):
        if not name:
            continue
        try:
            finish = ctypes.CDLL(name).glFinish
        except (OSError, AttributeError):
            continue
        finish.restype = None
        finish.argtypes = []
        return finish
    return None


def create_gl_context() -> moderngl.Context:
    """A standalone (windowless) GL 3.3 context: EGL on Linux (works without X), the platform default elsewhere."""
    if sys.platform.startswith("linux"):
        try:
            return moderngl.create_standalone_context(backend="egl", require=330)
        except Exception:  # noqa: BLE001  (no EGL: fall back to GLX, which needs $DISPLAY)
            pass
    return moderngl.create_standalone_context(require=330)


def is_software_gl(ctx: moderngl.Context) -> bool:
    """True when ``ctx`` renders on the CPU (Mesa llvmpipe / softpipe / swrast)."""
    renderer = str(ctx.info.get("GL_RENDERER", "")).lower()
    return any(name in renderer for name in SOFTWARE_GL)


def auto_backend(software_gl: bool, gpu_splatting: bool) -> str:
    """The viewport backend "auto" means: the engine's rasterizer when gsplat can draw on a CUDA GPU
    (``gpu_splatting``; on an H200 it orbited a 50k avatar at 512^2 in 2.4 ms a frame against the NVIDIA
    driver's GL quads' 12.8, and draws what training renders), else GL quads on a hardware GL, else the CPU
    compositor."""
    if gpu_splatting:
        return "engine"
    return "cpu" if software_gl else "gl"


def describe_backend(backend: str, on_gpu: bool) -> str:
    """What a concrete viewport backend draws with, for people: "OpenGL", "CPU compositor", and for "engine"
    "gsplat (CUDA)" (``on_gpu``) or "engine (CPU)"."""
    if backend == "engine":
        return "gsplat (CUDA)" if on_gpu else "engine (CPU)"
    return {"gl": "OpenGL", "cpu": "CPU compositor"}[backend]


def load_shader_sources() -> tuple[str, str]:
    """Vertex and fragment shader sources from ``shaders/``."""
    return (SHADERS_DIR / "splat.vert").read_text(), (SHADERS_DIR / "splat.frag").read_text()


def quad_indices(order: np.ndarray) -> np.ndarray:
    """Triangle-list indices drawing splats in ``order [N]`` (2 triangles of 4 corners each). [6 N] uint32"""
    base = order.astype(np.uint32)[:, None] * _CORNERS_PER_SPLAT
    return (base + _QUAD_TRIANGLES).ravel()


def back_to_front_order(means: np.ndarray, viewmat: np.ndarray) -> np.ndarray:
    """Indices of ``means [N, 3]`` from farthest to nearest camera depth (z of ``viewmat [4, 4]``). [N]

    Depth along the view axis is ``means @ viewmat[2, :3] + const``, so the order depends only on the
    viewing direction: panning and zooming never need a re-sort.
    """
    depth = means @ np.asarray(viewmat[2, :3], dtype=np.float32)
    # numpy's default sort (SIMD quicksort for float32) is ~3x faster than its stable one (55k: 2.5 vs 7.4 ms);
    # only splats at exactly equal depths, which have no right order, may come out either way.
    return np.argsort(-depth)


class SplatRenderer:
    """Draws a ``SplatScene`` for a pinhole camera into a ``[H, W, 4]`` float32 RGBA image.

    Matches the engine's ``core.render.rasterize`` ("classic" or "antialiased" mode) for isotropic
    Gaussians: same EWA projection, eps2d blur, alpha cut-off 1/255, alpha clamp 0.999. The GL backend
    composites back to front by camera depth (the engine's front-to-back sum for the same order); the
    CPU backend front to back, also stopping a pixel at transmittance 1e-4 like the engine.
    """

    def __init__(self, width: int = 512, height: int = 512, background=(1.0, 1.0, 1.0), eps2d: float = 0.3,
                 antialiased: bool = False, near_plane: float = 0.01, far_plane: float = 1000.0,
                 context: moderngl.Context | None = None, sort: bool = True, backend: str = "auto"):
        """``context``: share an existing standalone context (tests); by default the "gl" and "auto" backends
        make their own ("auto" without one where none can be made: the CPU compositor or the GPU).
        ``backend``: "gl", "cpu" (``cpu_splatter``), "engine" (``core.render.rasterize``: gsplat on a CUDA GPU
        when it can, else the engine's CPU rasterizer), or "auto": on a software GL "engine" when gsplat
        can draw on a CUDA GPU, else "cpu"; on a hardware GL "gl". The environment variable
        ``PERSONA_VIEWPORT_BACKEND`` (gl / cpu / engine) overrides "auto"."""
        if backend == "auto":
            backend = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self._owns_context = False
        self.ctx: moderngl.Context | None = context
        if self.ctx is None and backend in ("auto", "gl"):
            try:
                self.ctx, self._owns_context = create_gl_context(), True
            except Exception:  # noqa: BLE001 - no offscreen GL at all: "auto" draws without it
                if backend == "gl":
                    raise
        if backend == "auto":
            software = self.ctx is None or is_software_gl(self.ctx)
            backend = auto_backend(software, gpu_splatting_problem() is None)
        self.backend = backend
        self._cpu: CpuCompositor | None = None
        self._engine: EngineSplatter | None = None
        self.program: moderngl.Program | None = None
        if backend in ("cpu", "engine"):
            if backend == "cpu":
                self._cpu = CpuCompositor()
            else:
                self._engine = EngineSplatter("cuda" if gpu_splatting_problem() is None else "cpu")
            if self._owns_context:  # only needed to ask which GL this is
                self.ctx.release()
                self.ctx, self._owns_context = None, False
        else:
            vertex, fragment = load_shader_sources()
            self.program = self.ctx.program(vertex_shader=vertex, fragment_shader=fragment)
        self._vertices: moderngl.Buffer | None = None
        self._indices: moderngl.Buffer | None = None
        self._vao: moderngl.VertexArray | None = None
        self._fbo: moderngl.Framebuffer | None = None
        self._color: moderngl.Renderbuffer | None = None
        self.width = self.height = 0
        self.resize(width, height)
        self.background = np.asarray(background, dtype=np.float32)[:3]
        self.eps2d = float(eps2d)
        self.antialiased = bool(antialiased)
        self.near_plane, self.far_plane = float(near_plane), float(far_plane)
        self.sort = sort  # False only for benchmarks (the unsorted baseline)
        self._finish = _gl_finish_without_gil() if sys.platform.startswith("linux") else None
        self.scene: SplatScene | None = None
        self._sorted_for: tuple | None = None
        self._front_to_back: np.ndarray | None = None  # the CPU backend's draw order
        self.renders = 0   # draws done (tests use it to check that nothing re-renders needlessly)
        self.sorts = 0
        self.last_render_seconds = 0.0
        self.last_sorted_at = 0.0  # time.perf_counter() when the last render had its draw order

    @property
    def description(self) -> str:
        """What draws the pixels, for the UI (``describe_backend``)."""
        return describe_backend(self.backend, self._engine is not None and self._engine.device.type == "cuda")

    # -- state ---------------------------------------------------------------------------------------
    def resize(self, width: int, height: int) -> None:
        """Image size in pixels (GL: a float32 RGBA framebuffer, so blending many splats does not band)."""
        width, height = max(1, int(width)), max(1, int(height))
        if (width, height) == (self.width, self.height):
            return
        self.width, self.height = width, height
        if self.program is None:  # no GL framebuffer to resize
            return
        if self._fbo is not None:
            self._fbo.release()
            self._color.release()
        self._color = self.ctx.renderbuffer((width, height), 4, dtype="f4")
        self._fbo = self.ctx.framebuffer(color_attachments=[self._color])

    def set_background(self, rgb) -> None:
        """Background colour, RGB in [0, 1]."""
        self.background = np.clip(np.asarray(rgb, dtype=np.float32)[:3], 0.0, 1.0)

    def set_scene(self, scene: SplatScene | None) -> None:
        """Upload a scene (None: draw nothing); its draw order is fixed at the next ``render``."""
        self.scene = scene
        self._sorted_for = None
        for obj in (self._vao, self._vertices, self._indices):
            if obj is not None:
                obj.release()
        self._vao = self._vertices = self._indices = None
        if self._engine is not None:
            self._engine.set_scene(scene)
        if scene is None or scene.count == 0 or self.program is None:
            return
        packed = np.concatenate(
            [scene.means, scene.scales[:, None], scene.colors, scene.opacities[:, None]], axis=1).astype(np.float32)
        self._vertices = self.ctx.buffer(np.repeat(packed, _CORNERS_PER_SPLAT, axis=0).tobytes())
        self._indices = self.ctx.buffer(reserve=scene.count * _QUAD_TRIANGLES.nbytes, dynamic=True)
        self._vao = self.ctx.vertex_array(self.program, [(self._vertices, *_SPLAT_LAYOUT)],
                                          index_buffer=self._indices, index_element_size=4)

    # -- drawing -------------------------------------------------------------------------------------
    def _update_order(self, viewmat: np.ndarray) -> None:
        """Sort the splats for this view direction, unless already in that order: GL gets back-to-front
        quad indices, the CPU backend a front-to-back splat order."""
        key = tuple(np.round(viewmat[2, :3], 9)) if self.sort else ("unsorted",)
        if key == self._sorted_for:
            self.last_sorted_at = time.perf_counter()
            return
        if self.sort:
            order = back_to_front_order(self.scene.means, viewmat)
            self.sorts += 1
        else:
            order = np.arange(self.scene.count)
        if self._cpu is not None:
            self._front_to_back = np.ascontiguousarray(order[::-1], dtype=np.int32)
        else:
            self._indices.write(quad_indices(order).tobytes())
        self._sorted_for = key
        self.last_sorted_at = time.perf_counter()

    def _set_uniforms(self, **values) -> None:
        # A GLSL compiler may drop a uniform it proves unused; setting it must not fail.
        for name, value in values.items():
            if name in self.program:
                self.program[name].value = value

    def render(self, viewmat: np.ndarray, K: np.ndarray, opaque: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """Render the scene.

        Args:
            viewmat: world-to-camera, OpenCV axes. [4, 4]
            K: pinhole intrinsics, pixels. [3, 3]
            opaque: alpha = 1 everywhere (for display); otherwise alpha = splat coverage 1 - transmittance.
            out: optional float32 ``[H, W, 4]`` array to read into.

        Returns:
            float32 ``[H, W, 4]``, row 0 at the top; RGB already composited over the background.
        """
        start = self.last_sorted_at = time.perf_counter()  # nothing to sort: the order is ready at once
        viewmat = np.asarray(viewmat, dtype=np.float64)
        K = np.asarray(K, dtype=np.float64)
        if out is None:
            out = np.empty((self.height, self.width, 4), np.float32)
        if self._engine is not None:  # it sorts for itself
            self._engine.draw(viewmat, K, self.eps2d, self.antialiased, self.near_plane, self.far_plane,
                              self.background, opaque, out)
        elif self._cpu is not None:
            self._render_cpu(viewmat, K, opaque, out)
        else:
            self._render_gl(viewmat, K, opaque, out)
        self.renders += 1
        self.last_render_seconds = time.perf_counter() - start
        return out

    def _render_cpu(self, viewmat: np.ndarray, K: np.ndarray, opaque: bool, out: np.ndarray) -> None:
        scene = self.scene
        if scene is None or scene.count == 0:
            out[..., :3] = self.background
            out[..., 3] = 1.0 if opaque else 0.0
            return
        self._update_order(viewmat)
        self._cpu.draw(scene.means, scene.scales, scene.opacities, scene.colors, self._front_to_back, viewmat, K,
                       self.eps2d, self.antialiased, self.near_plane, self.far_plane, self.background, opaque, out)

    def _render_gl(self, viewmat: np.ndarray, K: np.ndarray, opaque: bool, out: np.ndarray) -> None:
        self._fbo.use()
        self.ctx.viewport = (0, 0, self.width, self.height)
        self._fbo.color_mask = (True, True, True, True)
        # Alpha starts at 0 so it accumulates coverage; RGB starts at the background, which the "over"
        # blend attenuates by each splat's (1 - alpha) exactly like the final background composite.
        self._fbo.clear(*self.background.tolist(), 0.0)
        if self._vao is not None:
            self._update_order(viewmat)
            self.ctx.enable(moderngl.BLEND)
            self.ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
            self.ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
            self._set_uniforms(
                viewmat=tuple(viewmat.T.ravel()),  # GLSL matrices are column-major
                intrinsics=(K[0, 0], K[1, 1], K[0, 2], K[1, 2]),
                image_size=(float(self.width), float(self.height)),
                depth_range=(self.near_plane, self.far_plane),
                eps2d=self.eps2d,
                antialiased=self.antialiased)
            self._vao.render(moderngl.TRIANGLES, vertices=self.scene.count * len(_QUAD_TRIANGLES))
        if opaque:
            self._fbo.color_mask = (False, False, False, True)
            self._fbo.clear(0.0, 0.0, 0.0, 1.0)
            self._fbo.color_mask = (True, True, True, True)
        if self._finish is not None:
            self._finish()  # wait for the rasterizer with the GIL released (see _gl_finish_without_gil)
        self._fbo.read_into(out, components=4, dtype="f4")

    def release(self) -> None:
        """Free the GL objects, and the context if this renderer created it (call from the owning thread)."""
        for obj in (self._vao, self._vertices, self._indices, self._fbo, self._color, self.program):
            if obj is not None:
                obj.release()
        if self._cpu is not None:
            self._cpu.close()
        if self._engine is not None:
            self._engine.close()
        if self._owns_context:
            self.ctx.release()
