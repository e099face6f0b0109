"""Which rasterizer backends exist, which one ``backend="auto"`` picks, and JIT warm-up for the CPU one."""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import time
import warnings
from pathlib import Path

import torch

from core.io.atomic import write_text_atomic
from core.render.jit_cache import numba_cache_dir

BACKENDS = ("auto", "cpu", "gsplat")
_WARM_MARKER_NAME = "persona-studio-render-kernels.json"
_KERNELS_SOURCE = Path(__file__).with_name("kernels.py")


@functools.lru_cache(maxsize=1)
def gsplat_installed() -> bool:
    """True when the gsplat package is importable (its CUDA extension is built on first use)."""
    return importlib.util.find_spec("gsplat") is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for tensors on ``device``: "auto" means gsplat for CUDA tensors when
    gsplat is installed, else the CPU backend."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_installed() else "cpu"
    if backend == "gsplat":
        if not gsplat_installed():
            raise ValueError("backend 'gsplat' needs the gsplat package: pip install 'persona-studio[cuda]'")
        if device.type != "cuda":
            raise ValueError(f"backend 'gsplat' needs CUDA tensors, got tensors on {device}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got tensors on {device}")
    return backend


def available_backends() -> list[str]:
    """Concrete backends usable on this machine ("cpu" always; "gsplat" with CUDA and gsplat installed)."""
    usable = ["cpu"]
    if torch.cuda.is_available() and gsplat_installed():
        usable.append("gsplat")
    return usable


@functools.lru_cache(maxsize=1)
def gsplat_extension_problem() -> str | None:
    """None when gsplat's CUDA extension loads, else why it does not (one line).

    gsplat 1.5.3 compiles its extension with the CUDA toolkit (nvcc) the first time it is imported on a
    machine (about a minute; cached afterwards). pip's torch wheels bring no nvcc: without one gsplat
    imports but has no kernels, and its first render fails."""
    try:
        from gsplat.cuda._backend import _C
    except Exception as err:  # noqa: BLE001 - a failed build raises whatever the compiler run raised
        return f"gsplat's CUDA extension did not build ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    if _C is None:
        return "gsplat found no CUDA toolkit (nvcc) to build its CUDA extension; install one, or train with train.device=cpu"
    return None


def training_device(device: str, backend: str) -> torch.device:
    """The torch device that training (and any renders of its tensors) should use.

    ``device`` is ``train.device`` ("auto" | "cpu" | "cuda"), ``backend`` is ``render.backend``.
    "auto" means CUDA when gsplat can rasterize there and the backend is not pinned to "cpu"; when
    gsplat's CUDA extension cannot be built it falls back to the CPU with a warning. Raises ValueError
    (a one-line reason) for a combination that cannot run here.
    """
    gpu_ready = "gsplat" in available_backends()
    if device == "auto":
        if backend == "auto" and gpu_ready and gsplat_extension_problem() is not None:
            warnings.warn(f"training on the CPU: {gsplat_extension_problem()}", RuntimeWarning, stacklevel=2)
            return torch.device("cpu")
        wants_gpu = backend == "gsplat" or (gpu_ready and backend != "cpu")
        return training_device("cuda" if wants_gpu else "cpu", backend)
    if device == "cuda":
        if backend == "cpu":
            raise ValueError("train.device 'cuda' needs render.backend 'auto' or 'gsplat' (the CPU rasterizer "
                             "renders CPU tensors only)")
        if not torch.cuda.is_available():
            raise ValueError("train.device 'cuda' needs an NVIDIA GPU, and torch sees none")
        if not gsplat_installed():
            raise ValueError("train.device 'cuda' needs gsplat to rasterize on the GPU: "
                             "pip install 'persona-studio[cuda]'")
        if gsplat_extension_problem() is not None:
            raise ValueError(f"train.device 'cuda': {gsplat_extension_problem()}")
        return torch.device("cuda", torch.cuda.current_device())
    if device == "cpu":
        if backend == "gsplat":
            raise ValueError("render.backend 'gsplat' needs train.device 'cuda' or 'auto'")
        return torch.device("cpu")
    raise ValueError(f"unknown training device {device!r}; choose auto, cpu or cuda")


def _kernel_fingerprint(dtype_names: list[str]) -> str:
    """Identifies one compiled set of kernels: our source, numba, Python, the CPU, the dtypes."""
    import numba
    from llvmlite import binding

    parts = [
        hashlib.sha256(_KERNELS_SOURCE.read_bytes()).hexdigest(),
        numba.__version__,
        platform.python_version(),
        binding.get_host_cpu_name(),
        ",".join(sorted(dtype_names)),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _warm_marker_path() -> Path:
    return numba_cache_dir() / _WARM_MARKER_NAME


def jit_cache_warm(dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> bool:
    """True when warmup() has filled numba's on-disk cache for these kernels, this machine and ``dtypes``.

    Reads only our JSON marker (numba's own index is a pickle, which we do not open).
    """
    try:
        marker = json.loads(_warm_marker_path().read_text())
    except (OSError, ValueError):
        return False
    wanted = [str(d).removeprefix("torch.") for d in dtypes]
    compiled = marker.get("dtypes", [])
    return all(name in compiled for name in wanted) and marker.get("fingerprint") == _kernel_fingerprint(compiled)


def _tiny_scene(dtype: torch.dtype) -> dict:
    """A few Gaussians in front of two small cameras: enough to run every kernel once."""
    gen = torch.Generator().manual_seed(0)
    n = 6
    means = torch.randn(n, 3, generator=gen, dtype=dtype) * 0.1
    means[:, 2] += 1.0
    viewmats = torch.eye(4, dtype=dtype).repeat(2, 1, 1)
    viewmats[1, 0, 3] = 0.05
    Ks = torch.tensor([[20.0, 0.0, 10.0], [0.0, 20.0, 9.0], [0.0, 0.0, 1.0]], dtype=dtype).repeat(2, 1, 1)
    return dict(
        means=means.requires_grad_(),
        quats=torch.randn(n, 4, generator=gen, dtype=dtype).requires_grad_(),
        scales=(torch.rand(n, 3, generator=gen, dtype=dtype) * 0.05 + 0.02).requires_grad_(),
        opacities=torch.rand(n, generator=gen, dtype=dtype).requires_grad_(),
        colors=torch.rand(n, 3, generator=gen, dtype=dtype).requires_grad_(),
        viewmats=viewmats, Ks=Ks, width=20, height=18,
    )


def warmup(dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> float:
    """Compile (or load from numba's disk cache) every CPU kernel for ``dtypes``; returns seconds taken.

    Safe to run in a background thread while other threads render: they wait for the compile.
    First run on a machine: 15-20 s of CPU per dtype (numba compiles every kernel); later processes load
    the kernels from the on-disk cache in about a second.
    """
    from core.render.rasterize import rasterize

    start = time.perf_counter()
    for dtype in dtypes:
        scene = _tiny_scene(dtype)
        render, alpha, _ = rasterize(**scene, render_mode="RGB+ED", rasterize_mode="antialiased", backend="cpu")
        (render.sum() + alpha.sum()).backward()
    names = sorted({str(d).removeprefix("torch.") for d in dtypes})
    try:
        previous = json.loads(_warm_marker_path().read_text())
        if previous.get("fingerprint") == _kernel_fingerprint(previous.get("dtypes", [])):
            names = sorted(set(names) | set(previous.get("dtypes", [])))
    except (OSError, ValueError):
        pass
    try:
        write_text_atomic(_warm_marker_path(), json.dumps({"fingerprint": _kernel_fingerprint(names), "dtypes": names}))
    except OSError:
        pass  # an unwritable cache only costs the next process a recompile
    return time.perf_counter() - start


def backend_info() -> dict:
    """What ``persona-studio doctor`` shows about rendering.

    Keys: available (list of usable backends), auto (what "auto" picks for CUDA tensors here; CPU
    tensors always use "cpu"), cuda (bool), gsplat_version (str or None), numba_version, render_threads,
    numba_cache_dir, jit_cache_warm (bool, float32 kernels), summary (one line for people).
    """
    import numba

    from core.threads import kernel_threads

    gsplat_version = None
    if gsplat_installed():
        try:
            gsplat_version = importlib.metadata.version("gsplat")
        except importlib.metadata.PackageNotFoundError:
            gsplat_version = "unknown"
    usable = available_backends()
    auto = "gsplat" if "gsplat" in usable else "cpu"
    warm = jit_cache_warm()
    threads = kernel_threads()
    summary = (f"auto -> {auto}; cpu: numba {numba.__version__}, {threads} thread{'s' if threads > 1 else ''}, "
               f"JIT cache {'warm' if warm else 'cold (first render compiles for ~30 s)'}")
    if "gsplat" not in usable:
        summary += "; gsplat: " + ("no CUDA device" if gsplat_version else "not installed")
    return {
        "available": usable,
        "auto": auto,
        "cuda": torch.cuda.is_available(),
        "gsplat_version": gsplat_version,
        "numba_version": numba.__version__,
        "render_threads": threads,
        "numba_cache_dir": str(numba_cache_dir()),
        "jit_cache_warm": warm,
        "summary": summary,
    }
