"""benchmarks/quality.py --merge: runs of one protocol become one table; anything else is refused."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from core.io.images import load_png, save_png

QUALITY = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", QUALITY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(path: Path, seeds: list[int], psnr: dict[str, float], config: dict | None = None) -> Path:
    """A quality JSON (and its contact sheet) with one novel-pose score per method and person."""
    results = [{"seed": s, "scores": {m: [{"group": "motion", "label": "m", "psnr": v + s, "ssim": 0.9, "iou": 0.9}]
                                      for m, v in psnr.items()}} for s in seeds]
    path.write_text(json.dumps({"header": f"Quality on {len(seeds)} synthetic people (seeds x) — preset p.",
                                "config": config or {"train": {"iterations": 150}}, "fit": "prep", "align": "fit",
                                "frames": "oracle-drift", "results": results}))
    sheet = np.zeros((22 + 10 * len(seeds), 30, 3), np.uint8)
    sheet[:22] = 255  # the column titles
    save_png(path.with_suffix(".png"), sheet)
    return path


def test_merge_makes_one_table_of_every_person(quality, tmp_path, capsys):
    a = _run(tmp_path / "quality_p_quick_x_first.json", [0, 1], {"mesh": 16.0, "full": 19.0})
    b = _run(tmp_path / "quality_p_quick_x_seeds4-5.json", [5, 4], {"mesh": 16.0, "full": 19.0})
    assert quality.write_merge([b, a], tmp_path / "out", "4people") == 0
    table = (tmp_path / "out" / "quality_p_quick_x_4people.md").read_text()
    assert "Quality on 4 synthetic people (seeds 0, 1, 4, 5)" in table
    rows = [line for line in table.splitlines() if line.startswith("| person")]
    assert [r.split("|")[1].strip() for r in rows[:4]] == ["person 0", "person 1", "person 4", "person 5"]
    # means over the four people: mesh 16 + 2.5, full 19 + 2.5
    assert "| **mean** | **18.50 / 0.900 / 0.900** | **21.50 / 0.900 / 0.900** |" in table
    merged = json.loads((tmp_path / "out" / "quality_p_quick_x_4people.json").read_text())
    assert [r["seed"] for r in merged["results"]] == [0, 1, 4, 5]
    sheet = load_png(tmp_path / "out" / "quality_p_quick_x_4people.png", 3)
    assert sheet.shape[0] == 22 + 10 * 4  # one title strip, every person's rows


@pytest.mark.parametrize("problem", ["config", "seed", "methods", "not json"])
def test_merge_refuses_runs_of_another_protocol(quality, tmp_path, capsys, problem):
    a = _run(tmp_path / "a.json", [0, 1], {"mesh": 16.0, "full": 19.0})
    b = {"config": lambda: _run(tmp_path / "b.json", [2], {"mesh": 16.0, "full": 19.0}, {"train": {"iterations": 600}}),
         "seed": lambda: _run(tmp_path / "b.json", [1], {"mesh": 16.0, "full": 19.0}),
         "methods": lambda: _run(tmp_path / "b.json", [2], {"mesh": 16.0, "full": 19.0, "no_balanced": 18.0}),
         "not json": lambda: (tmp_path / "b.json").write_text("{oops") and tmp_path / "b.json"}[problem]()
    assert quality.write_merge([a, b], tmp_path / "out", "") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
