"""Differentiable 3D Gaussian rasterization: one ``rasterize()`` with gsplat's conventions, two backends.

``backend="cpu"``: our numba kernels (any machine). ``backend="gsplat"``: gsplat's CUDA kernels.
``backend="auto"`` (default) uses gsplat for CUDA tensors when it is installed, else the CPU backend.
Call ``warmup()`` once (e.g. in a background thread at start-up) so the first render does not pay
for numba's JIT; ``backend_info()`` reports what is available and whether the JIT cache is warm.
"""
from core.render.backends import available_backends, backend_info, jit_cache_warm, warmup
from core.render.rasterize import RASTERIZE_MODES, RENDER_MODES, rasterize

__all__ = [
    "rasterize",
    "warmup",
    "backend_info",
    "available_backends",
    "jit_cache_warm",
    "RENDER_MODES",
    "RASTERIZE_MODES",
]
