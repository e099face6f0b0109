#!/usr/bin/env bash
# Installs everything persona-studio needs on a Debian/Ubuntu machine (run as root or with sudo):
# system GL/X packages, the real test photos (opencv-doc), the CPU build of torch, and the project.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Xvfb + Mesa (llvmpipe GL/EGL) for the viewport and GUI tests; opencv-doc ships the real test photos.
$SUDO apt-get install -y -qq --no-install-recommends xvfb xauth libegl1 libgl1 libgl1-mesa-dri libglx-mesa0 \
    libgles2 libxrandr2 libxinerama1 libxcursor1 libxi6 libxxf86vm1 x11-utils xdotool opencv-doc >/dev/null
# torch first, pinned to the CPU build: an unpinned install would pull a multi-GB CUDA build.
TORCH_WHEEL=/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
if python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
    echo "torch $(python -c 'import torch; print(torch.__version__)') already installed"
elif [ -f "$TORCH_WHEEL" ]; then
    python -m pip install -q "$TORCH_WHEEL"
else
    python -m pip install -q "torch==2.13.0"  # elsewhere: use your platform's CPU or CUDA wheel
fi
python -m pip install -q -e ".[dev]"
