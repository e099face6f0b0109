"""Plain-file I/O: atomic writes keep old results on failure, safe npz, Subject folder round trip."""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import UserError
from core.io.atomic import atomic_dir, atomic_path, write_text_atomic
from core.io.npz import load_npz, save_npz
from core.subject import Subject


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "y").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["x"]
    with atomic_dir(target) as tmp:
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_npz_refuses_pickles_and_garbage(tmp_path):
    pickled = tmp_path / "p.npz"
    np.savez(pickled, obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match="pickled"):
        load_npz(pickled)
    junk = tmp_path / "j.npz"
    junk.write_bytes(b"hello")
    with pytest.raises(UserError, match="not a valid .npz") as err:
        load_npz(junk)
    assert str(junk) in str(err.value)
    good = tmp_path / "g.npz"
    save_npz(good, {"a": np.arange(3)})
    with pytest.raises(UserError, match="missing keys b"):
        load_npz(good, required=("a", "b"))


def test_subject_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 24, 16
    subject = Subject(
        image=rng.random((h, w, 3)).astype(np.float32), mask=(rng.random((h, w)) > 0.5).astype(np.float32),
        albedo=rng.random((h, w, 3)).astype(np.float32), K=np.eye(3, dtype=np.float32),
        smplx={"betas": rng.random(10).astype(np.float32), "body_pose": rng.random(63).astype(np.float32)},
        keypoint_names=["nose", "left_wrist"], keypoints=rng.random((2, 3)).astype(np.float32),
        geometry={"depth": rng.random((h, w)).astype(np.float32)}, info={"warnings": ["small"]},
    )
    subject.save(tmp_path / "s")
    back = Subject.load(tmp_path / "s")
    assert np.abs(back.image - subject.image).max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
    assert np.array_equal(back.mask, subject.mask)
    assert np.array_equal(back.smplx["body_pose"], subject.smplx["body_pose"])
    assert back.keypoint_names == ["nose", "left_wrist"] and back.info["warnings"] == ["small"]
    with pytest.raises(UserError, match="not a Subject folder"):
        Subject.load(tmp_path)


def test_quiet_native_logs_hold_back_routine_lines_only(tmp_path):
    """Inside the block, lines written to descriptor 2 (as C++ libraries write them) are held back; afterwards all
    but absl's info / warning lines and TensorFlow Lite's start-up line are written to stderr, in order."""
    import subprocess
    import sys

    from core.paths import REPO_ROOT

    code = "\n".join([
        "import os, sys",
        "from core.io.native_log import quiet_native_logs",
        "with quiet_native_logs():",
        "    os.write(2, b'W0000 00:00:1795798260.119847   29046 inference_feedback_manager.cc:114] Feedback\\n')",
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')",
        "    os.write(2, b'E0000 00:00:1795798260.2   29046 graph.cc:12] a real error\\n')",
        "    with quiet_native_logs():",
        "        os.write(2, b'I1127 10:11:12.5 77 calculator.cc:9] started\\n')",
        "        print('our own message', file=sys.stderr)",
        "    os.write(2, b'still held\\n')",
        "print('after', file=sys.stderr)",
    ])
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stderr.splitlines() == ["E0000 00:00:1795798260.2   29046 graph.cc:12] a real error",
                                        "our own message", "still held", "after"]
