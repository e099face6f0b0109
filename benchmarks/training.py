"""Training-step speed per device: the CPU (our rasterizer, one torch thread as reconstruct trains) and
CUDA (gsplat), the same avatar and frames, measured in the same run.

    python benchmarks/training.py                        # preview preset
    python benchmarks/training.py --preset standard --steps 40 --json out.json

The avatar is the preset's (embedded body, ~avatar.num_gaussians Gaussians, its triplane and MLP); the
frames are rendered from a striped copy of it along the built-in motions at train.render_size, the first
one standing in for the photo (``core.synthetic.self_rendered_set``: no OpenGL and no prep, so this runs
on a bare GPU machine). Every device trains a fresh copy from the same start with the same draws.

Torch threads as ``reconstruct`` trains (``core.threads.training_threads``): this script, like the command
line, sets OMP_WAIT_POLICY=PASSIVE before torch loads (unless it is set already), so the CPU trains on every
core; the baseline row trains the same run on one thread.

Times are wall ms per step after warm-up steps: the median over photo steps and over generated steps
(a CUDA step ends with reading its loss, which waits for the GPU), and it/s over all timed steps.
Memory: on the CPU the growth of the resident set from before the trainer is built to the end (peak,
VmHWM; a later row reuses memory an earlier one freed and kept); on CUDA torch's peak allocation.
faults/step: minor page faults per timed step (the process's, whatever thread took them). Like the command
line, the script has glibc's malloc keep freed memory for reuse (``core.allocator``); ``--malloc-default``
leaves glibc's own settings, for comparison.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: before torch loads OpenMP

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from core.allocator import keep_freed_memory  # noqa: E402
from core.body import BodyModel  # noqa: E402
from core.config import load_preset  # noqa: E402
from core.render import available_backends  # noqa: E402
from core.synthetic import self_rendered_set  # noqa: E402
from core.threads import torch_threads, training_threads  # noqa: E402
from core.trainer import Trainer  # noqa: E402
from timing import memory_kib, reset_peak_rss  # noqa: E402


def time_device(device: str, body: BodyModel, config, data, steps: int, warmup: int) -> dict:
    """Train a fresh copy of ``data.avatar`` on ``device`` for ``warmup + steps`` steps; timings and memory."""
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    rss_before = memory_kib()["VmRSS"]
    trainer = Trainer(copy.deepcopy(data.avatar), body, data.photo, data.frames, config, data.betas, device=device)
    for _ in range(warmup):
        trainer.step()
    times = {"photo": [], "generated": []}
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    for _ in range(steps):
        start = time.perf_counter()
        metrics = trainer.step()
        times["photo" if metrics["frame"] == 0 else "generated"].append((time.perf_counter() - start) * 1e3)
    elapsed = time.perf_counter() - started
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / steps
    peak_mib = (torch.cuda.max_memory_allocated() / 2**20 if cuda
                else (memory_kib()["VmHWM"] - rss_before) / 1024.0)
    name = torch.cuda.get_device_name() if cuda else f"cpu, {torch.get_num_threads()} thread(s)"
    return {"device": name, "threads": torch.get_num_threads(), "gaussians": trainer.avatar.num_gaussians,
            "photo_ms": statistics.median(times["photo"]) if times["photo"] else float("nan"),
            "generated_ms": statistics.median(times["generated"]) if times["generated"] else float("nan"),
            "steps_per_second": steps / elapsed, "peak_mib": peak_mib, "faults_per_step": faults,
            "last_loss": metrics["loss"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="preview")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per device (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--frames", type=int, default=8, help="generated frames to train on (default 8)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="preset override")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's malloc settings alone (the command line keeps freed memory for reuse)")
    args = parser.parse_args(argv)
    kept = False if args.malloc_default else keep_freed_memory()
    config = load_preset(args.preset, [f"frames.num_generated={args.frames}", *args.set])
    config.frames.resolution = config.train.render_size  # the photo and the frames at the training size
    body = BodyModel.load()
    started = time.perf_counter()
    data = self_rendered_set(body, config)
    print(f"preset {config.name}: {data.avatar.num_gaussians} Gaussians, {config.train.render_size}^2 renders, "
          f"{args.frames} frames (scene built in {time.perf_counter() - started:.0f} s); torch {torch.__version__}; "
          f"malloc {'keeps freed memory' if kept else 'defaults'}")
    threads = training_threads()
    runs = [("cpu", 1)] + ([("cpu", threads)] if threads > 1 else [])
    runs += [("cuda", threads)] if "gsplat" in available_backends() else []
    results = []
    for device, count in runs:
        with torch_threads(count):
            results.append(time_device(device, body, config, data, args.steps, args.warmup))
    base = results[0]
    print("device                 | photo step ms | generated step ms | it/s  | peak MiB | faults/step | vs CPU, 1 thread")
    for r in results:
        speedup = r["steps_per_second"] / base["steps_per_second"]
        print(f"{r['device'][:22]:<22} | {r['photo_ms']:13.1f} | {r['generated_ms']:17.1f} | {r['steps_per_second']:5.1f} "
              f"| {r['peak_mib']:8.0f} | {r['faults_per_step']:11.0f} | {speedup:5.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
