"""Offscreen triangle-mesh renderer for geometry targets (depth, normals, part colours, masks).

How it works (a "visibility buffer"): OpenGL (moderngl, standalone EGL context, Mesa llvmpipe on
CPU) rasterises only the index of the nearest face at every pixel centre. Everything else is
resolved in numpy from that face index: the exact ray/triangle intersection gives the
perspective-correct barycentrics and the camera-space depth, which then interpolate any number
of per-vertex attributes of any channel count. GL thus does the part it is fast at (coverage +
depth test); barycentrics and depth are exact float64 arithmetic, so outputs match analytic
values closely (attributes are interpolated in float32).

Camera convention (as the Gaussian rasterizer / gsplat / OpenCV): ``viewmat [4, 4]`` maps world
to camera with x right, y down, z forward; ``K [3, 3]`` is in pixels and pixel ``(col, row)``
covers ``[col, col + 1) x [row, row + 1)``, so its centre is at ``(col + 0.5, row + 0.5)``.
Outputs are row-major images, row 0 at the top. Camera-space normals therefore have a negative
z component on surfaces that face the camera.

Threading rule: a ``MeshRenderer`` is bound to the thread that first renders with it (its GL
context is created lazily there and stays current in that thread); calling it from any other
thread raises ``RuntimeError``. Create one renderer per thread (``visible_vertices`` keeps one
per thread for you); several renderers may share a thread, as each makes its own context current
while it draws. Do not create one on a thread that drives another OpenGL context (the GUI's):
creating a context makes it current on that thread.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import moderngl
import numpy as np

from core.errors import UserError

MESA_HINT = "install Mesa EGL: apt-get install libegl1 libgl1-mesa-dri"

# Output names the renderer always or optionally produces; attributes may not reuse them.
RESERVED_OUTPUTS = frozenset({"mask", "depth", "normal", "face_id", "textured", "shaded"})

# Face indices are written as float32 (index + 1, 0 = empty), exact below 2**24.
MAX_FACES = 2**24 - 1

_VERTEX_SHADER = """
#version 330
uniform mat4 projection;
in vec3 position_cam;
void main() {
    gl_Position = projection * vec4(position_cam, 1.0);
}
"""

# A float target cleared to 0 (integer targets cannot be cleared portably through glClear).
_FRAGMENT_SHADER = """
#version 330
out float face_plus_one;
void main() {
    face_plus_one = float(gl_PrimitiveID + 1);
}
"""

_LIGHT_KEYS = frozenset({"direction", "ambient", "diffuse"})


# --------------------------------------------------------------------------------------------
# input checks (ValueError with a message that names the argument)


def _check_image_size(width: int, height: int, ssaa: int) -> None:
    for name, value in (("width", width), ("height", height), ("ssaa", ssaa)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def _check_vertices(vertices) -> np.ndarray:
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise ValueError(f"vertices must have shape [V, 3] with V >= 1, got {vertices.shape}")
    if not np.isfinite(vertices).all():
        raise ValueError("vertices contain NaN or infinite values")
    return vertices


def _check_faces(faces, n_vertices: int) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape [F, 3], got {faces.shape}")
    if len(faces) and not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must hold integer vertex indices, got dtype {faces.dtype}")
    if len(faces) > MAX_FACES:
        raise ValueError(f"at most {MAX_FACES} faces are supported, got {len(faces)}")
    if len(faces) and (faces.min() < 0 or faces.max() >= n_vertices):
        raise ValueError(
            f"faces index vertices out of range: indices span [{faces.min()}, {faces.max()}] "
            f"but there are {n_vertices} vertices"
        )
    return faces.astype(np.int64, copy=False)


def _check_camera(viewmat, K) -> tuple[np.ndarray, np.ndarray]:
    viewmat = np.asarray(viewmat, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if viewmat.shape != (4, 4) or not np.isfinite(viewmat).all():
        raise ValueError(f"viewmat must be a finite [4, 4] matrix, got shape {viewmat.shape}")
    if not np.allclose(viewmat[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"viewmat's last row must be [0, 0, 0, 1], got {viewmat[3].tolist()}")
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ValueError(f"K must be a finite [3, 3] intrinsics matrix, got shape {K.shape}")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0 or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError("K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0 pixels")
    return viewmat, K


def _check_per_vertex(name: str, values, n_vertices: int, n_faces: int,
                      channels: int | None = None) -> np.ndarray:
    """Per-vertex ``[V, C]`` or per-face-corner ``[F, 3, C]`` values as float64."""
    values = np.asarray(values)
    if values.dtype == object or not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {values.dtype}")
    per_vertex = values.ndim == 2 and values.shape[0] == n_vertices
    per_corner = values.ndim == 3 and values.shape[:2] == (n_faces, 3)
    if not (per_vertex or per_corner) or values.shape[-1] < 1:
        raise ValueError(
            f"{name} must have shape [V, C] = [{n_vertices}, C] or [F, 3, C] = [{n_faces}, 3, C] "
            f"with C >= 1, got {values.shape}"
        )
    if channels is not None and values.shape[-1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got {values.shape[-1]}")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


def _check_texture(texture) -> np.ndarray:
    """``[h, w, C]`` texture as float32; integer textures are scaled by their dtype's maximum."""
    texture = np.asarray(texture)
    if texture.ndim != 3 or min(texture.shape) < 1:
        raise ValueError(f"texture must have shape [h, w, C], got {texture.shape}")
    if np.issubdtype(texture.dtype, np.integer):
        return texture.astype(np.float32) / np.float32(np.iinfo(texture.dtype).max)
    texture = texture.astype(np.float32)
    if not np.isfinite(texture).all():
        raise ValueError("texture contains NaN or infinite values")
    return texture


def _check_light(light: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(direction [3] unit, towards the light in world space, ambient, diffuse)``."""
    unknown = set(light) - _LIGHT_KEYS
    if unknown:
        raise ValueError(f"unknown light keys {sorted(unknown)}; expected {sorted(_LIGHT_KEYS)}")
    if "direction" not in light:
        raise ValueError("light needs a 'direction' (world-space vector towards the light)")
    direction = np.asarray(light["direction"], dtype=np.float64)
    length = np.linalg.norm(direction) if direction.shape == (3,) else 0.0
    if not np.isfinite(length) or length == 0.0:
        raise ValueError(f"light direction must be a non-zero 3-vector, got {light['direction']!r}")
    ambient = np.asarray(light.get("ambient", 0.0), dtype=np.float64)
    diffuse = np.asarray(light.get("diffuse", 1.0), dtype=np.float64)
    return direction / length, ambient, diffuse


# --------------------------------------------------------------------------------------------
# pure geometry


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of ``[N, 3]`` arrays (several times faster than ``np.cross`` here)."""
    return np.stack(
        [
            a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1],
            a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
            a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0],
        ],
        axis=1,
    )


def face_triple_products(vertices_cam: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-face ``(triple [F, 3, 3], det [F])`` with rows b x c, c x a, a x b and det = a . (b x c).

    For corners a, b, c relative to the camera centre these give, by Cramer's rule, the
    barycentrics of any ray hit (see ``ray_barycentrics``); their row sum is the face normal
    (b - a) x (c - a), whose length is twice the face area.
    """
    # Component arrays (x, y, z of each corner) avoid stacking and strided column access.
    a, b, c = ([np.take(axis, faces[:, corner]) for axis in vertices_cam.T] for corner in range(3))
    triple = np.empty((len(faces), 3, 3))
    for row, (p, q) in enumerate(((b, c), (c, a), (a, b))):
        triple[:, row, 0] = p[1] * q[2] - p[2] * q[1]
        triple[:, row, 1] = p[2] * q[0] - p[0] * q[2]
        triple[:, row, 2] = p[0] * q[1] - p[1] * q[0]
    det = a[0] * triple[:, 0, 0] + a[1] * triple[:, 0, 1] + a[2] * triple[:, 0, 2]
    return triple, det


def _accumulate_vertex_normals(face_normals: np.ndarray, faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """Sum ``[F, 3]`` area-weighted face normals onto their corners and normalise -> ``[V, 3]``."""
    index = faces.reshape(-1)  # face-major corner order: f0c0, f0c1, f0c2, f1c0, ...
    weights = np.repeat(face_normals, 3, axis=0)  # the same order
    summed = np.stack(
        [np.bincount(index, weights[:, axis], minlength=n_vertices) for axis in range(3)], axis=1
    ).astype(np.float64)  # bincount gives integers when there are no faces
    length = np.linalg.norm(summed, axis=1, keepdims=True)
    return np.divide(summed, length, out=np.zeros_like(summed), where=length > 0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth unit vertex normals ``[V, 3]``: area-weighted sum of the incident faces' normals.

    Faces wound counter-clockwise seen from outside (the SMPL-X convention) give outward
    normals. Vertices without (non-degenerate) faces get a zero normal.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    a, b, c = (vertices[faces[:, corner]] for corner in range(3))
    return _accumulate_vertex_normals(_cross(b - a, c - a), faces, len(vertices))


def projection_matrix(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """OpenGL clip-from-camera matrix ``[4, 4]`` for an OpenCV camera (x right, y down, z forward).

    Window x equals the pixel coordinate u and window y equals v (so GL's bottom-up read-back
    order is already top-down image order); depth maps ``near..far`` metres to NDC ``-1..1``.
    """
    fx, skew, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    return np.array(
        [
            [2 * fx / width, 2 * skew / width, 2 * cx / width - 1, 0],
            [0, 2 * fy / height, 2 * cy / height - 1, 0],
            [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, 1, 0],
        ],
        dtype=np.float64,
    )


def pixel_rays(K: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Camera-space rays ``[P, 3]`` through pixel centres, scaled so that z = 1."""
    fx, skew, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    y = (rows + 0.5 - cy) / fy
    x = (cols + 0.5 - cx - skew * y) / fx
    return np.stack([x, y, np.ones_like(x)], axis=1)


def ray_barycentrics(triple: np.ndarray, det: np.ndarray, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersect rays from the camera centre with their triangles.

    Args:
        triple: ``[P, 3, 3]`` the hit face's rows of ``face_triple_products``.
        det: ``[P]`` the hit face's a . (b x c).
        rays: ``[P, 3]`` ray directions with z = 1.
    Returns:
        ``(barycentrics [P, 3], depth [P])``: perspective-correct barycentrics of the hit point
        and its camera-space z in metres (NaN for triangles seen exactly edge-on).
    """
    # t * ray = wa * a + wb * b + wc * c; Cramer's rule gives w_k = t * (ray . triple_k) / det,
    # and the weights summing to 1 fixes t.
    unnormalised = np.einsum("pkj,pj->pk", triple, rays)
    total = unnormalised[:, 0] + unnormalised[:, 1] + unnormalised[:, 2]  # faster than .sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = det / total  # t, which is z because the rays have z = 1
        bary = unnormalised / total[:, None]
    # GL snaps vertices to sub-pixel positions, so a covered pixel centre can sit a hair outside
    # the exact triangle; clamp so attributes never extrapolate.
    bary = np.clip(np.nan_to_num(bary, nan=1.0 / 3.0), 0.0, None)
    bary /= (bary[:, 0] + bary[:, 1] + bary[:, 2])[:, None]
    return bary, depth


def sample_bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinearly sample ``texture [h, w, C]`` at ``uv [P, 2]`` with clamp-to-edge -> ``[P, C]``.

    UV convention as OBJ / OpenGL: (0, 0) is the bottom-left corner of the image, (1, 1) the
    top-right; texel centres sit at half-integers. (glTF's v points down: pass 1 - v.)
    """
    h, w = texture.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0.0, w - 1.0)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros(len(x), np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros(len(y), np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


# --------------------------------------------------------------------------------------------
# supersampled images -> output images


def _sample_offsets(ssaa: int) -> list[tuple[int, int]]:
    """The (row, col) offsets of the samples in an s x s block, nearest the pixel centre first."""
    offsets = [(row, col) for row in range(ssaa) for col in range(ssaa)]
    centre = (ssaa - 1) / 2
    return sorted(offsets, key=lambda rc: (rc[0] - centre) ** 2 + (rc[1] - centre) ** 2)


def _box_sum(image: np.ndarray, ssaa: int) -> np.ndarray:
    """``[H*s, W*s, ...]`` -> ``[H, W, ...]``: sum of each s x s block.

    Adding s*s strided views is much faster than reducing over reshaped block axes.
    """
    total = image[::ssaa, ::ssaa].astype(np.float32 if image.dtype == bool else image.dtype)
    for offset in range(1, ssaa * ssaa):
        row, col = divmod(offset, ssaa)
        total += image[row::ssaa, col::ssaa]
    return total


class _Samples:
    """The covered samples of a (supersampled) render, with helpers to build output images.

    Attributes: ``index [P]`` flat sample index, ``face [P]``, ``bary [P, 3]``, ``depth [P]``,
    ``covered [H*s, W*s]`` bool, ``coverage [H, W]`` fraction of covered samples.
    """

    def __init__(self, face_image: np.ndarray, ssaa: int):
        self.shape = face_image.shape  # (H*s, W*s)
        self.ssaa = ssaa
        self.index = np.flatnonzero(face_image.reshape(-1) >= 0)
        self.face = face_image.reshape(-1)[self.index]
        self.covered = face_image >= 0
        self.coverage = _box_sum(self.covered, ssaa) / np.float32(ssaa**2)
        self.bary = np.zeros((0, 3))
        self.depth = np.zeros(0)

    def full(self, values: np.ndarray) -> np.ndarray:
        """Scatter ``[P, ...]`` into a zero image ``[H*s, W*s, ...]``."""
        image = np.zeros((self.shape[0] * self.shape[1],) + values.shape[1:], dtype=values.dtype)
        image[self.index] = values
        return image.reshape(self.shape + values.shape[1:])

    def premultiplied(self, values: np.ndarray) -> np.ndarray:
        """Box-filtered ``[H, W, ...]``: mean over all samples, empty ones counting as 0."""
        image = self.full(values)
        return image if self.ssaa == 1 else _box_sum(image, self.ssaa) / np.float32(self.ssaa**2)

    def covered_mean(self, values: np.ndarray) -> np.ndarray:
        """``[H, W, ...]``: mean over the covered samples only, 0 where none is covered."""
        if self.ssaa == 1:
            return self.full(values)
        total = _box_sum(self.full(values), self.ssaa)
        count = (self.coverage * self.ssaa**2).reshape(self.coverage.shape + (1,) * (total.ndim - 2))
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0)

    def nearest(self, values: np.ndarray, empty=0) -> np.ndarray:
        """``[H, W, ...]``: the value of the covered sample nearest the pixel centre, else ``empty``."""
        image = self.full(values)
        if self.ssaa == 1:
            if empty != 0:
                image[~self.covered] = empty
            return image
        picked = np.full(self.coverage.shape + values.shape[1:], empty, dtype=values.dtype)
        filled = np.zeros(self.coverage.shape, dtype=bool)
        for row, col in _sample_offsets(self.ssaa):
            take = self.covered[row::self.ssaa, col::self.ssaa] & ~filled
            picked[take] = image[row::self.ssaa, col::self.ssaa][take]
            filled |= take
        return picked


def _gather_corners(arrays: list[np.ndarray], faces: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Values at the corners of the hit faces, ``[P, 3, sum C_i]`` float32.

    Args:
        arrays: per-vertex ``[V, C_i]`` or per-corner ``[F, 3, C_i]`` values, stacked so that a
            single gather + einsum interpolates every attribute at once.
        faces: ``[F, 3]``; face: ``[P]`` the face hit by each sample.
    """
    if all(values.ndim == 2 for values in arrays):
        return np.take(np.concatenate(arrays, axis=1, dtype=np.float32), np.take(faces, face, axis=0), axis=0)
    columns = [values[face] if values.ndim == 3 else values[faces[face]] for values in arrays]
    return np.concatenate(columns, axis=2, dtype=np.float32)


def _split_channels(values: np.ndarray, names: list[str], arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Split ``[..., sum C_i]`` back into ``{name: [..., C_i]}`` in the order of ``arrays``."""
    bounds = np.cumsum([0] + [array.shape[-1] for array in arrays])
    return {name: values[..., lo:hi] for name, lo, hi in zip(names, bounds[:-1], bounds[1:])}


def _background_colour(background, channels: int, name: str) -> np.ndarray:
    """The background as ``[1]`` or ``[C]`` float32, checked against an output's channel count."""
    colour = np.asarray(background, dtype=np.float32).reshape(-1)
    if colour.size not in (1, channels):
        raise ValueError(
            f"background has {colour.size} values but output {name!r} has {channels} "
            "channels; pass a scalar background or composite with the mask yourself"
        )
    return colour


def _interpolate(arrays: dict[str, np.ndarray], faces: np.ndarray, samples: "_Samples") -> dict[str, np.ndarray]:
    """Perspective-correct interpolation at the covered samples -> ``{name: [P, C]}`` float32."""
    if not arrays:
        return {}
    corners = _gather_corners(list(arrays.values()), faces, samples.face)
    values = np.einsum("pk,pkc->pc", samples.bary.astype(np.float32), corners)
    return _split_channels(values, list(arrays), list(arrays.values()))


def _nearest_corner(arrays: dict[str, np.ndarray], faces: np.ndarray, samples: "_Samples") -> dict[str, np.ndarray]:
    """Each sample takes the value at its face's corner with the largest barycentric -> ``[P, C]``."""
    if not arrays:
        return {}
    corners = _gather_corners(list(arrays.values()), faces, samples.face)
    values = corners[np.arange(len(corners)), np.argmax(samples.bary, axis=1)]
    return _split_channels(values, list(arrays), list(arrays.values()))


def lambert(albedo: np.ndarray, normals: np.ndarray, light_dir: np.ndarray, ambient, diffuse) -> np.ndarray:
    """``albedo * (ambient + diffuse * max(0, n . l))`` -> ``[P, C]`` float32.

    Args:
        albedo: ``[P, C]``; normals: ``[P, 3]`` unit; light_dir: ``[3]`` unit, towards the light,
        in the normals' space; ambient, diffuse: scalars or ``[C]``.
    """
    cosine = np.maximum(normals @ light_dir, 0.0)[:, None]
    return (albedo * (ambient + diffuse * cosine)).astype(np.float32)


def _geometry_images(samples: "_Samples", normals: np.ndarray) -> dict[str, np.ndarray]:
    """``depth [H, W]`` and unit ``normal [H, W, 3]``: means over covered samples, 0 where empty."""
    depth = samples.covered_mean(np.nan_to_num(samples.depth).astype(np.float32))
    normal = samples.covered_mean(normals.astype(np.float32))
    if samples.ssaa > 1:  # averaged unit vectors are shorter than 1
        length = np.linalg.norm(normal, axis=-1, keepdims=True)
        normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    return {"depth": depth, "normal": normal}


def _colour_images(samples: "_Samples", per_sample: dict[str, np.ndarray], background) -> dict[str, np.ndarray]:
    """Premultiplied ``[H, W, C]`` images (box filter over samples), composited over ``background``."""
    images = {}
    for name, values in per_sample.items():
        image = samples.premultiplied(values.astype(np.float32))
        if background is not None:
            colour = _background_colour(background, image.shape[-1], name)
            image = image + (1.0 - samples.coverage[..., None]) * colour
        images[name] = image
    return images


def _flat_images(samples: "_Samples", per_sample: dict[str, np.ndarray], background) -> dict[str, np.ndarray]:
    """Unblended ``[H, W, C]`` images from the covered sample nearest each pixel centre."""
    images = {}
    for name, values in per_sample.items():
        image = samples.nearest(values.astype(np.float32))
        if background is not None:
            colour = _background_colour(background, image.shape[-1], name).astype(np.float32)
            image = np.where(samples.coverage[..., None] > 0, image, colour)
        images[name] = image
    return images


# --------------------------------------------------------------------------------------------
# GL context


class OpenGLUnavailable(UserError, RuntimeError):
    """No OpenGL context can be made on this machine: a setup problem (one line, with the fix), not a bug."""


def _create_context() -> moderngl.Context:
    """A standalone GL 3.3 context: EGL first (headless Mesa), then the platform default."""
    errors = []
    for backend in ("egl", None):
        try:
            kwargs = {"backend": backend} if backend else {}
            return moderngl.create_standalone_context(require=330, **kwargs)
        except Exception as exc:  # any failure here means "try the next backend"
            errors.append(f"{backend or 'default'}: {' '.join(str(exc).split())}")
    raise OpenGLUnavailable(f"no OpenGL context could be created ({'; '.join(errors)}); {MESA_HINT}")


class MeshRenderer:
    """Renders triangle meshes offscreen into depth, normal, mask, face-id and attribute images.

    A renderer is bound to the thread that first renders with it (see the module docstring);
    framebuffers and vertex buffers are kept and reused between calls of the same size.
    """

    def __init__(self):
        self._ctx: moderngl.Context | None = None
        self._thread: int | None = None
        self._program = None
        self._fbo = None
        self._fbo_size: tuple[int, int] | None = None
        self._vbo = None
        self._ibo = None
        self._vao = None
        self._faces: np.ndarray | None = None
        self._n_vertices = 0

    # -- GL plumbing ---------------------------------------------------------------------------

    def _claim_thread(self) -> None:
        me = threading.get_ident()
        if self._thread is None:
            self._thread = me
        elif self._thread != me:
            raise RuntimeError(
                "this MeshRenderer belongs to another thread (its GL context is current there); "
                "create one MeshRenderer per thread"
            )

    def context(self) -> moderngl.Context:
        """This renderer's GL context, made on first use in the calling thread (which then owns the renderer);
        raises ``OpenGLUnavailable`` where no context can be made."""
        self._claim_thread()
        if self._ctx is None:
            self._ctx = _create_context()
            self._program = self._ctx.program(
                vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER
            )
        return self._ctx

    def _framebuffer(self, width: int, height: int):
        if self._fbo_size != (width, height):
            if self._fbo is not None:
                self._fbo.release()
            ctx = self.context()
            self._fbo = ctx.framebuffer(
                color_attachments=[ctx.texture((width, height), 1, dtype="f4")],
                depth_attachment=ctx.depth_renderbuffer((width, height)),
            )
            self._fbo_size = (width, height)
        return self._fbo

    def _upload_mesh(self, vertices_cam: np.ndarray, faces: np.ndarray) -> None:
        """Write camera-space vertices; rebuild the index buffer only when the faces change."""
        ctx = self.context()
        data = vertices_cam.astype(np.float32).tobytes()
        rebuild = self._vbo is None or self._vbo.size < len(data)
        if rebuild:
            if self._vbo is not None:
                self._vbo.release()
            self._vbo = ctx.buffer(reserve=len(data))
        self._vbo.write(data)
        if self._faces is None or not np.array_equal(self._faces, faces):
            if self._ibo is not None:
                self._ibo.release()
            self._ibo = ctx.buffer(faces.astype(np.int32).tobytes())
            self._faces = faces.copy()
            rebuild = True
        if rebuild or self._vao is None:
            if self._vao is not None:
                self._vao.release()
            self._vao = ctx.vertex_array(
                self._program, [(self._vbo, "3f", "position_cam")], index_buffer=self._ibo,
                index_element_size=4,
            )

    def _face_image(self, vertices_cam, faces, K, width, height, near, far) -> np.ndarray:
        """Nearest face index at every pixel centre, ``[height, width]`` int32, -1 where empty."""
        ctx = self.context()
        # moderngl talks to whichever context is current; a thread may hold several renderers.
        with ctx:
            fbo = self._framebuffer(width, height)
            fbo.use()
            fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            if len(faces):
                self._upload_mesh(vertices_cam, faces)
                projection = projection_matrix(K, width, height, near, far)
                self._program["projection"].write(projection.T.astype(np.float32).tobytes())
                ctx.enable_only(moderngl.DEPTH_TEST)
                ctx.depth_func = "<"
                self._vao.render(moderngl.TRIANGLES, vertices=3 * len(faces))
            raw = np.frombuffer(fbo.read(components=1, dtype="f4"), dtype=np.float32)
        return raw.reshape(height, width).astype(np.int32) - 1

    def _resolve(self, vertices_cam, faces, K, width, height, near, far, ssaa):
        """Rasterise and intersect: ``(_Samples with face/bary/depth, face normals [F, 3])``."""
        face_image = self._face_image(vertices_cam, faces, K, width, height, near, far)
        samples = _Samples(face_image, ssaa)
        triple, det = face_triple_products(vertices_cam, faces)
        rows, cols = np.divmod(samples.index, width)
        samples.bary, samples.depth = ray_barycentrics(
            np.take(triple, samples.face, axis=0), det[samples.face], pixel_rays(K, cols, rows)
        )
        return samples, triple[:, 0] + triple[:, 1] + triple[:, 2]

    def close(self) -> None:
        """Free the GL context and buffers (call from the owning thread); the renderer can be reused."""
        if self._ctx is not None:
            self._claim_thread()
            self._ctx.release()  # frees its buffers and framebuffers with it
        self.__init__()

    # -- public API ----------------------------------------------------------------------------

    def render(
        self,
        vertices,
        faces,
        viewmat,
        K,
        width: int,
        height: int,
        vertex_attrs: Mapping[str, np.ndarray] | None = None,
        near: float = 0.01,
        far: float = 100.0,
        texture=None,
        uvs=None,
        light: Mapping | None = None,
        background=None,
        flat_attrs: Iterable[str] = (),
        ssaa: int = 1,
    ) -> dict[str, np.ndarray]:
        """Render a triangle mesh from a pinhole camera.

        Args:
            vertices: ``[V, 3]`` world positions in metres.
            faces: ``[F, 3]`` vertex indices, counter-clockwise seen from outside.
            viewmat: ``[4, 4]`` world-to-camera (OpenCV: x right, y down, z forward).
            K: ``[3, 3]`` intrinsics in pixels; pixel centres at +0.5.
            width, height: output size in pixels.
            vertex_attrs: name -> ``[V, C]`` (or per face corner ``[F, 3, C]``) values, C >= 1,
                interpolated perspective-correctly into an ``[H, W, C]`` image each.
            near, far: clip distances in metres (clipping only; depths stay exact).
            texture: ``[h, w, C]`` image (uint8 scaled to 0..1, or float), sampled bilinearly at
                the interpolated ``uvs`` into ``"textured"``; OBJ convention, v up.
            uvs: ``[V, 2]`` or ``[F, 3, 2]`` texture coordinates; required with ``texture``.
            light: ``{"direction": [3] world-space vector towards the light, "ambient": 0.0,
                "diffuse": 1.0}`` (scalars or per channel): Lambert shading of the albedo, which
                is ``textured`` if a texture is given, else ``vertex_attrs["albedo"]``, into
                ``"shaded" = albedo * (ambient + diffuse * max(0, n . l))``.
            background: scalar or ``[C]`` colour composited into the colour outputs (attributes,
                ``textured``, ``shaded``) where the mesh does not cover the pixel.
            flat_attrs: names of ``vertex_attrs`` rendered without blending: every pixel takes
                the value of the hit face's corner nearest to it (for part labels).
            ssaa: supersampling factor; renders ``ssaa**2`` samples per pixel.
        Returns:
            dict of float32 images: ``mask [H, W]`` coverage (0/1, fractional with ssaa),
            ``depth [H, W]`` camera z in metres (0 where empty), ``normal [H, W, 3]`` unit
            camera-space smooth normals (0 where empty), one ``[H, W, C]`` per attribute, and
            ``face_id [H, W]`` int32 (-1 where empty). With ssaa > 1: depth and normals average
            the covered samples; smooth attributes, ``textured`` and ``shaded`` are
            premultiplied by coverage (composite with ``image + (1 - mask) * bg``, as for the
            Gaussian rasterizer); ``face_id`` and flat attributes come from the covered sample
            nearest the pixel centre.
        """
        _check_image_size(width, height, ssaa)
        vertices = _check_vertices(vertices)
        faces = _check_faces(faces, len(vertices))
        viewmat, K = _check_camera(viewmat, K)
        if not 0 < near < far:
            raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
        attrs = {
            name: _check_per_vertex(f"vertex_attrs[{name!r}]", values, len(vertices), len(faces))
            for name, values in (vertex_attrs or {}).items()
        }
        clashes = RESERVED_OUTPUTS & set(attrs)
        if clashes:
            raise ValueError(f"vertex_attrs may not use the output names {sorted(clashes)}")
        flat = set(flat_attrs)
        if flat - set(attrs):
            raise ValueError(f"flat_attrs {sorted(flat - set(attrs))} are not keys of vertex_attrs")
        if (texture is None) != (uvs is None):
            raise ValueError("texture and uvs must be given together")
        if texture is not None:
            texture = _check_texture(texture)
            uvs = _check_per_vertex("uvs", uvs, len(vertices), len(faces), channels=2)
        if light is not None:
            light_dir, ambient, diffuse = _check_light(light)
            if texture is None and "albedo" not in attrs:
                raise ValueError("light needs a texture or vertex_attrs['albedo'] to shade")
            if texture is not None and "albedo" in attrs:
                raise ValueError("light: give the albedo as a texture or vertex_attrs['albedo'], not both")
            channels = texture.shape[-1] if texture is not None else attrs["albedo"].shape[-1]
            for key, value in (("ambient", ambient), ("diffuse", diffuse)):
                if value.size not in (1, channels):
                    raise ValueError(f"light {key} needs 1 or {channels} values, got {value.size}")
            ambient, diffuse = ambient.reshape(-1), diffuse.reshape(-1)

        vertices_cam = vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
        scaled_K = K.copy()
        scaled_K[:2] *= ssaa  # pixel edges sit at integers, so they scale with the image
        samples, face_normals = self._resolve(
            vertices_cam, faces, scaled_K, width * ssaa, height * ssaa, near, far, ssaa
        )

        # Interpolate every smooth quantity with one gather: normals, attributes, uvs.
        smooth = {"normal": _accumulate_vertex_normals(face_normals, faces, len(vertices))}
        smooth.update((name, values) for name, values in attrs.items() if name not in flat)
        if texture is not None:
            smooth["uv"] = uvs
        per_sample = _interpolate(smooth, faces, samples)
        normals = per_sample.pop("normal")
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        if texture is not None:
            per_sample["textured"] = sample_bilinear(texture, per_sample.pop("uv"))
        if light is not None:
            albedo = per_sample["textured"] if texture is not None else per_sample["albedo"]
            per_sample["shaded"] = lambert(albedo, normals, viewmat[:3, :3] @ light_dir, ambient, diffuse)

        out = {"mask": samples.coverage, "face_id": samples.nearest(samples.face.astype(np.int32), empty=-1)}
        out.update(_geometry_images(samples, normals))
        out.update(_colour_images(samples, per_sample, background))
        flat_per_sample = _nearest_corner({name: attrs[name] for name in attrs if name in flat}, faces, samples)
        out.update(_flat_images(samples, flat_per_sample, background))
        return out

    def visible_vertices(
        self, vertices, faces, viewmat, K, width: int, height: int,
        tolerance: float = 0.01, near: float = 0.01, far: float = 100.0,
    ) -> np.ndarray:
        """Which vertices the camera sees, ``bool [V]``.

        A vertex is visible if it projects inside the image, lies between ``near`` and ``far``,
        its pixel shows the mesh, and that surface, intersected with the exact ray to the vertex,
        is not closer than the vertex by more than ``tolerance`` metres. Intersecting along the
        vertex's own ray (not the pixel centre's) keeps vertices on steep but unoccluded
        surfaces visible: when the pixel shows one of the vertex's faces the depths agree exactly.
        """
        _check_image_size(width, height, 1)
        vertices = _check_vertices(vertices)
        faces = _check_faces(faces, len(vertices))
        viewmat, K = _check_camera(viewmat, K)
        if not 0 < near < far:
            raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
        vertices_cam = vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
        self._claim_thread()
        face_image = self._face_image(vertices_cam, faces, K, width, height, near, far).reshape(-1)

        z = vertices_cam[:, 2]
        in_front = (z > near) & (z < far)
        rays = vertices_cam / np.where(in_front, z, 1.0)[:, None]  # z = 1 rays through each vertex
        projected = rays @ K.T
        col = np.floor(projected[:, 0]).astype(np.int64)
        row = np.floor(projected[:, 1]).astype(np.int64)
        inside = in_front & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        candidates = np.flatnonzero(inside)
        face = face_image[row[candidates] * width + col[candidates]]
        hit = face >= 0
        triple, det = face_triple_products(vertices_cam, faces)
        _, surface = ray_barycentrics(triple[face[hit]], det[face[hit]], rays[candidates[hit]])
        # A vertex whose pixel shows no surface sits on the silhouette; it stays invisible, as a
        # photo's colour there is mostly background.
        visible = np.zeros(len(vertices), dtype=bool)
        # An edge-on plane (NaN) or one met behind the camera (extrapolated) is no occluder.
        surface = np.where(np.nan_to_num(surface, nan=-1.0) > 0, surface, np.inf)
        visible[candidates[hit]] = ~(surface < z[candidates[hit]] - tolerance)
        return visible


_per_thread = threading.local()


def _thread_renderer() -> MeshRenderer:
    """The calling thread's own renderer, made on first use."""
    if not hasattr(_per_thread, "renderer"):
        _per_thread.renderer = MeshRenderer()
    return _per_thread.renderer


def require_opengl() -> None:
    """Make the calling thread's renderer's GL context now, so that a machine without OpenGL fails with
    ``OpenGLUnavailable`` before any long work rather than in the middle of it."""
    _thread_renderer().context()


def visible_vertices(vertices, faces, viewmat, K, width: int, height: int,
                     tolerance: float = 0.01) -> np.ndarray:
    """``MeshRenderer.visible_vertices`` with a renderer kept per calling thread -> ``bool [V]``."""
    return _thread_renderer().visible_vertices(
        vertices, faces, viewmat, K, width, height, tolerance=tolerance
    )
