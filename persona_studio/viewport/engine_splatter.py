"""The viewport drawn by the engine's rasterizer: gsplat on an NVIDIA GPU, the frame read back through a
pinned host buffer.

Where a CUDA GPU with gsplat is there but OpenGL is a software rasterizer (a remote or headless session,
a container without the NVIDIA GL libraries), the GPU draws the splats far faster than either the GL
quads or the CPU compositor: ``core.render.rasterize`` on CUDA tensors (gsplat), then one asynchronous
copy of the image into page-locked host memory, which the viewport's float32 RGBA texture reads. On a
CPU device the same code renders with the engine's numba rasterizer (slower than ``cpu_splatter``, which
is why ``auto`` never picks it there; tests use it to check this path against the compositor).

Same image as the other backends: classic or antialiased EWA splats, eps2d blur, alpha cut 1/255,
front-to-back compositing over the background.
"""
from __future__ import annotations

import numpy as np
import torch

from core.render import rasterize
from core.render.backends import available_backends, gsplat_extension_problem
from persona_studio.viewport.scene import SplatScene


def gpu_splatting_problem() -> str | None:
    """None when the viewport can draw with gsplat on CUDA, else why not (one line). The first call on a
    machine may build gsplat's CUDA extension (about a minute; cached afterwards)."""
    if "gsplat" not in available_backends():
        return "no CUDA GPU with gsplat installed"
    return gsplat_extension_problem()


class EngineSplatter:
    """Draws ``SplatScene``s with ``core.render.rasterize`` on ``device`` (one scene upload per scene).

    Not thread-safe: one caller (the viewport's render thread)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._tensors: dict[str, torch.Tensor] = {}
        self._host: torch.Tensor | None = None  # [H, W, 4] float32, page-locked on CUDA
        self._copied = torch.cuda.Event() if self.device.type == "cuda" else None

    def set_scene(self, scene: SplatScene | None) -> None:
        """Upload ``scene``'s splats to the device (isotropic scales become ``[N, 3]``, rotations identity)."""
        self._tensors = {}
        if scene is None or scene.count == 0:
            return
        n = scene.count
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        host = {"means": torch.from_numpy(scene.means), "scales": torch.from_numpy(scene.scales)[:, None].expand(n, 3),
                "opacities": torch.from_numpy(scene.opacities), "colors": torch.from_numpy(scene.colors), "quats": quats}
        self._tensors = {name: value.to(self.device).contiguous() for name, value in host.items()}

    def _host_buffer(self, height: int, width: int) -> torch.Tensor:
        """A reusable ``[H, W, 4]`` float32 host tensor, pinned when the device is a GPU (so the copy runs
        asynchronously and at full bus speed)."""
        if self._host is None or self._host.shape[:2] != (height, width):
            self._host = torch.empty((height, width, 4), dtype=torch.float32,
                                     pin_memory=self.device.type == "cuda")
        return self._host

    def draw(self, viewmat: np.ndarray, K: np.ndarray, eps2d: float, antialiased: bool, near_plane: float,
             far_plane: float, background: np.ndarray, opaque: bool, out: np.ndarray) -> None:
        """Render the scene over ``background [3]`` into ``out [H, W, 4]`` float32 (row 0 at the top; alpha
        = coverage, or 1 when ``opaque``). ``viewmat [4, 4]`` world-to-camera (OpenCV axes), ``K [3, 3]``
        pixels."""
        height, width = out.shape[:2]
        if not self._tensors:
            out[..., :3] = background
            out[..., 3] = 1.0 if opaque else 0.0
            return
        with torch.no_grad():
            rgb, alpha, _ = rasterize(
                **self._tensors,
                viewmats=torch.as_tensor(viewmat, dtype=torch.float32, device=self.device)[None],
                Ks=torch.as_tensor(K, dtype=torch.float32, device=self.device)[None],
                width=width, height=height, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
                backgrounds=torch.as_tensor(background, dtype=torch.float32, device=self.device)[None],
                rasterize_mode="antialiased" if antialiased else "classic")
            image = torch.cat([rgb[0].clamp(0.0, 1.0), torch.ones_like(alpha[0]) if opaque else alpha[0]], dim=-1)
            host = self._host_buffer(height, width)
            host.copy_(image, non_blocking=self._copied is not None)
            if self._copied is not None:
                self._copied.record()
                self._copied.synchronize()  # waits for this copy only, with the GIL released
        out[...] = host.numpy()

    def close(self) -> None:
        self._tensors, self._host = {}, None
