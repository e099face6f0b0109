"""End to end on a real photo: reconstruct -> bundle, Ctrl-C style stop + resume, CLI one-liners."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from core.avatar.bundle import load_bundle
from core.config import load_preset
from core.paths import REPO_ROOT
from core.reconstruct import reconstruct
from core.subject import Subject
from core.trainer import config_device

PHOTO = Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
TINY = ["render.backend=cpu", "train.iterations=8", "train.checkpoint_every=4", "train.render_size=96",
        "frames.num_generated=4", "frames.resolution=96", "frames.warmup_iterations=3",
        "frames.motions=['wave', 'turn_around']", "prep.crop_size=256", "avatar.skinning_grid=32",
        "avatar.num_gaussians=14000"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PHOTO.exists(), reason="needs Debian's opencv-doc (installed by tools/install.sh)")]


def test_reconstruct_stop_and_resume(tmp_path):
    config = load_preset("preview", TINY + ["optim.lr_photo_pose=1e-2"])
    stop = threading.Event()
    stages = []

    def progress(stage, fraction, info):
        stages.append(stage)
        if stage == "train" and info.get("step") == 5:
            stop.set()  # what Ctrl-C does in the CLI

    out = tmp_path / "avatar"
    first = reconstruct(PHOTO, out, config, progress=progress, stop=stop)
    assert first.interrupted and first.steps == 5
    assert {"warm-up on the photo", "generated frames", "train"} <= set(stages)
    avatar, body, manifest = load_bundle(out)
    assert manifest["summary"]["steps"] == 5 and (out / "preview.png").exists()
    assert manifest["summary"]["device"] == first.device == str(config_device(config))  # cpu, or cuda:0 on a GPU
    resumed = reconstruct(PHOTO, out, config, resume=True)
    assert not resumed.interrupted and resumed.steps == 8
    avatar2, _, manifest2 = load_bundle(out)
    assert manifest2["summary"]["steps"] == 8
    assert not torch.equal(avatar.colors, avatar2.colors)  # training went on
    history = json.loads((out / "work" / "metrics.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 9))
    assert np.isfinite([h["loss"] for h in history]).all()
    # the bundle carries the photo's pose as training refined it: prep's fit plus the learned correction (our
    # offline frames re-render the photo's own fit: nothing to register the photo to, so its shift stays 0)
    fitted = Subject.load(out / "work" / "subject").smplx
    checkpoint = torch.load(out / "work" / "checkpoint.pt", weights_only=True)
    correction = {**checkpoint["photo_deltas"], "transl": checkpoint["photo_shift"]}
    for name in ("global_orient", "body_pose", "transl"):
        expected = np.asarray(fitted[name], np.float32).reshape(-1) + correction[name].numpy().reshape(-1)
        assert np.allclose(manifest2["subject"][name], expected, atol=1e-6), name
    assert correction["body_pose"].abs().max() > 0 and correction["transl"].abs().max() == 0
    assert np.allclose(manifest2["subject"]["betas"], np.asarray(fitted["betas"]).reshape(-1))


def test_cli_reconstruct_and_bad_photo(tmp_path):
    sets = [arg for item in TINY for arg in ("--set", item)]
    cmd = [sys.executable, str(REPO_ROOT / "main.py"), "reconstruct"]
    # two motions of 15 distinct poses each: 30 of the 40 frames asked for can be made, and the run says so
    fewer = ["--set", "frames.motions=['walk_in_place', 'dance']", "--set", "frames.num_generated=40"]
    ok = subprocess.run([*cmd, str(PHOTO), "-o", str(tmp_path / "a"), *sets, *fewer], capture_output=True,
                        text=True, timeout=900)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "avatar bundle in" in ok.stdout and (tmp_path / "a" / "manifest.json").exists()
    assert "8 steps on " in ok.stdout  # says where it trained
    assert "over the photo and 30 generated frames;" in ok.stdout
    assert "note: 30 generated frames of the 40 asked for" in ok.stdout
    assert load_bundle(tmp_path / "a")[2]["summary"]["generated_frames"] == 30
    bad = tmp_path / "not_a_photo.jpg"
    bad.write_text("hello")
    fail = subprocess.run([*cmd, str(bad), "-o", str(tmp_path / "b"), *sets], capture_output=True, text=True,
                          timeout=300)
    assert fail.returncode == 2 and "Traceback" not in fail.stderr
    assert fail.stderr.strip().splitlines()[-1].startswith("error:") and str(bad) in fail.stderr
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_cli_reconstructs_several_photos_each_into_its_own_bundle(tmp_path):
    """Several photos: one bundle each in a subfolder named after it; a photo that fails is named in one line and the
    others go on; the run ends with a summary and exit status 1 when any failed."""
    sets = [arg for item in TINY for arg in ("--set", item)]
    bad = tmp_path / "not_a_photo.jpg"
    bad.write_text("hello")
    batch = tmp_path / "batch"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "reconstruct", str(bad), str(PHOTO), "-o",
                           str(batch), *sets], capture_output=True, text=True, timeout=900)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert f"[2/2] {PHOTO} -> {batch / 'messi5'}" in done.stdout
    assert (batch / "messi5" / "manifest.json").exists() and not (batch / "not_a_photo" / "manifest.json").exists()
    assert done.stdout.strip().splitlines()[-1] == f"1 of 2 avatars made in {batch}; failed: not_a_photo.jpg"
