#!/usr/bin/env bash
# The CUDA checks in one go, for an NVIDIA machine with torch (CUDA build), nvcc and gsplat 1.5.3 installed:
# builds gsplat's extension (once; timed), runs the rasterizer tests (the gsplat-vs-CPU comparison
# included), the CUDA training tests and the viewport tests (gsplat drawing the viewport), benchmarks/raster.py with gsplat beside our CPU backend, and
# benchmarks/training.py (training steps on the CPU and on CUDA) and the renderer rows of benchmarks/viewport.py
# (OpenGL on the GPU's own driver where EGL is there, the CPU compositor, gsplat). Logs and JSON go to OUTDIR
# (seven files).
#
#     bash benchmarks/gpu_check.sh OUTDIR            # everything
#     SKIP_RASTER=1 SKIP_VIEWPORT=1 bash benchmarks/gpu_check.sh OUTDIR
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, numba, gsplat; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'numba', numba.__version__, 'gsplat', gsplat.__version__)"
  nvcc --version | tail -1
  echo "CPUs $(nproc), TORCH_CUDA_ARCH_LIST $TORCH_CUDA_ARCH_LIST"
} 2>&1 | tee "$out/machine.txt"
echo "== building gsplat's CUDA extension (first use only)"
python3 - <<'PY' 2>&1 | tail -40 | tee "$out/gsplat_build.log"
import time
start = time.time()
from gsplat.cuda._backend import _C
print("gsplat extension:", "ready" if _C is not None else "NOT BUILT", f"in {time.time() - start:.0f} s")
PY
echo "== rasterizer and CUDA training tests"
python3 -m pytest -q -ra -p no:cacheprovider tests/test_render.py tests/test_cuda_training.py \
  tests/test_viewport.py 2>&1 | tail -30 \
  | tee "$out/tests.log"
echo "== training steps, CPU and CUDA"
python3 benchmarks/training.py --json "$out/training_preview.json" 2>&1 | tee "$out/training.txt"
python3 benchmarks/training.py --preset standard --steps 10 --json "$out/training_standard.json" 2>&1 \
  | tee -a "$out/training.txt"
if [ -z "${SKIP_VIEWPORT:-}" ]; then
  echo "== viewport renderer rows (no studio window)"
  python3 benchmarks/viewport.py --no-studio --frames 10 2>&1 | tee "$out/viewport.txt"
fi
[ -n "${SKIP_RASTER:-}" ] && exit 0
echo "== raster benchmark, default grid, with gsplat"
python3 benchmarks/raster.py --gsplat --json "$out/raster_grid.json" 2>&1 | tee "$out/raster.txt"
echo "== raster benchmark, large scenes, gsplat and our CPU backend"
python3 benchmarks/raster.py --gsplat --no-baseline --repeats 10 --cases 200000,512 200000,1024 1000000,1024 \
  --json "$out/raster_large.json" 2>&1 | tee -a "$out/raster.txt"
