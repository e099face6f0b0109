"""Same-process A/B of the CPU rasterizer against another git revision's, calls alternating.

    python benchmarks/raster_ab.py --base HEAD~3                     # 20k @256^2 and 50k @512^2
    python benchmarks/raster_ab.py --base 362bfbd --cases 20000,256 --calls 60 --mode RGB+ED

The machines here change speed by up to 2x within an hour, so two runs of benchmarks/raster.py minutes
apart cannot compare two builds. This loads the base revision's ``core/render/cpu.py`` and
``core/render/kernels.py`` (from ``git show``, into a temporary folder, compiled without numba's cache) beside
the working tree's, renders the same scene (benchmarks/raster.py's body scene) with both, alternating call by
call (and which goes first), and prints fwd / bwd / fwd+bwd medians, the best call, the median of the paired
ratios (this build / base), and the largest differences of the images and of the gradients w.r.t. the means.
Both builds go through the working tree's ``rasterize`` checks-free entry point (``cpu.rasterize_cpu``).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the command line: spinning torch threads starve numba's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from core.allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()

import numpy as np  # noqa: E402
import torch  # noqa: E402

DIFFERENTIABLE = ("means", "quats", "scales", "opacities", "colors")


def load_base(revision: str, folder: Path):
    """The base revision's CPU backend as a module (with its own kernels module)."""
    repo = Path(__file__).resolve().parents[1]

    def source(path: str) -> str:
        return subprocess.run(["git", "show", f"{revision}:{path}"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout

    kernels = source("core/render/kernels.py").replace("_JIT = dict(cache=True", "_JIT = dict(cache=False")
    (folder / "base_kernels.py").write_text(kernels)
    cpu = source("core/render/cpu.py").replace("from core.render import kernels\n", "import base_kernels as kernels\n")
    (folder / "base_cpu.py").write_text(cpu)
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("base_cpu", folder / "base_cpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_cpu"] = module
    spec.loader.exec_module(module)
    return module


def fwd_bwd(backend, scene: dict, size: int, mode: str) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """One render and its backward: (fwd s, bwd s, image, d loss / d means)."""
    for name in DIFFERENTIABLE:
        scene[name].grad = None
    start = time.perf_counter()
    image = backend.rasterize_cpu(scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"],
                                  scene["viewmats"], scene["Ks"], size, size, 0.01, 1e10, 0.3, None, mode, "classic")[0]
    forward = time.perf_counter()
    image.sum().backward()
    return forward - start, time.perf_counter() - forward, image.detach().clone(), scene["means"].grad.clone()


def compare(base, n: int, size: int, calls: int, mode: str) -> str:
    """Alternate the two builds on one scene; returns the printed report."""
    import core.render.cpu as ours
    from raster import body_scene

    scene = body_scene(n, size)
    if mode != "RGB":
        scene["colors"] = torch.rand(n, 9, generator=torch.Generator().manual_seed(1))
    for name in DIFFERENTIABLE:
        scene[name].requires_grad_(True)
    times = {"base": [], "this": []}
    last = {}
    for i in range(calls + 4):  # the first 4 rounds warm up (JIT, allocator)
        order = (("base", base), ("this", ours)) if i % 2 else (("this", ours), ("base", base))
        for name, backend in order:
            fwd, bwd, image, grad = fwd_bwd(backend, scene, size, mode)
            last[name] = (image, grad)
            if i >= 4:
                times[name].append((fwd, bwd))
    lines = [f"{n // 1000}k @{size}^2 {mode}, {calls} calls each, {os.cpu_count()} CPUs"]
    for name in ("base", "this"):
        ms = 1000 * np.array(times[name])
        lines.append(f"  {name}: fwd {np.median(ms[:, 0]):7.2f}  bwd {np.median(ms[:, 1]):7.2f}  "
                     f"fwd+bwd {np.median(ms.sum(1)):7.2f}  best {ms.sum(1).min():7.2f} ms")
    ratio = np.array(times["this"]).sum(1) / np.array(times["base"]).sum(1)
    image_diff = float((last["this"][0] - last["base"][0]).abs().max())
    grad_diff = float((last["this"][1] - last["base"][1]).abs().max())
    lines.append(f"  median paired ratio this/base {np.median(ratio):.3f}; max |image diff| {image_diff:.3g}, "
                 f"max |d/dmeans diff| {grad_diff:.3g}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD~1, a hash)")
    parser.add_argument("--cases", nargs="+", default=["20000,256", "50000,512"], metavar="N,SIZE")
    parser.add_argument("--calls", type=int, default=40, help="timed calls per build and case")
    parser.add_argument("--mode", default="RGB", choices=["RGB", "RGB+ED"], help="RGB+ED: 9 colour channels "
                        "and the expected depth, like a training render")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        base = load_base(args.base, Path(folder))
        for case in args.cases:
            n, size = (int(v) for v in case.split(","))
            print(compare(base, n, size, args.calls, args.mode), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
