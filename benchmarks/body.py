"""Body model layer speed, each row against a baseline measured in the same run.

    python benchmarks/body.py            # batch 1 and 16
    python benchmarks/body.py --quick    # batch 1 only, fewer repeats

Rows (median wall time over the repeats, CPU, float32):
  load                  BodyModel() of the embedded file   vs  smplx.create on the same file
  forward B             our forward (adds joint transforms, landmarks)  vs  smplx.SMPLX.forward
  forward+backward B    the same with a backward pass to every input
  weight volume         build_weight_volume 64^3 + sample at every vertex of 2x subdivision
                        vs  nearest_vertex_weights (KD-tree) at the same points
  subdivide x2          our midpoint subdivision with transfer matrix  vs  trimesh.remesh.subdivide x2
"""
from __future__ import annotations

import argparse
import statistics

import smplx
import torch
import trimesh

from timing import call_times
from core.body import (
    EMBEDDED_MODEL_PATH, BodyModel, build_weight_volume, nearest_vertex_weights, subdivide,
)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    return statistics.median(call_times(fn, repeats))


def forward_inputs(batch: int, generator: torch.Generator, grad: bool) -> dict[str, torch.Tensor]:
    widths = {"betas": 10, "expression": 52, "global_orient": 3, "body_pose": 63, "left_hand_pose": 45,
              "right_hand_pose": 45, "jaw_pose": 3, "leye_pose": 3, "reye_pose": 3, "transl": 3}
    return {k: (0.2 * torch.randn(batch, w, generator=generator)).requires_grad_(grad) for k, w in widths.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 5 if args.quick else 20
    batches = (1,) if args.quick else (1, 16)
    rows: list[tuple[str, float, str, float]] = []

    rows.append(("load", timed(BodyModel, 3), "smplx.create", timed(
        lambda: smplx.create(str(EMBEDDED_MODEL_PATH), use_pca=False, flat_hand_mean=True, num_betas=10,
                             num_expression_coeffs=52), 3)))
    ours = BodyModel()
    theirs = smplx.create(str(EMBEDDED_MODEL_PATH), use_pca=False, flat_hand_mean=True, num_betas=10,
                          num_expression_coeffs=52)
    generator = torch.Generator().manual_seed(0)
    for batch in batches:
        inputs = forward_inputs(batch, generator, grad=False)
        with torch.no_grad():
            rows.append((f"forward B={batch}", timed(lambda: ours(**inputs), repeats),
                         "smplx forward", timed(lambda: theirs(**inputs), repeats)))
        inputs = forward_inputs(batch, generator, grad=True)
        rows.append((f"forward+backward B={batch}", timed(lambda: ours(**inputs).vertices.sum().backward(), repeats),
                     "smplx", timed(lambda: theirs(**inputs).vertices.sum().backward(), repeats)))

    vertices, faces = ours.v_template.numpy(), ours.faces.numpy()
    weights = ours.lbs_weights.numpy()
    dense_vertices, dense_faces, _ = subdivide(vertices, faces, 2)

    def volume_weights():
        build_weight_volume(vertices, weights).sample(dense_vertices)

    rows.append((f"weight volume 64^3 + sample {len(dense_vertices)}", timed(volume_weights, 2 if args.quick else 3),
                 "nearest vertex", timed(lambda: nearest_vertex_weights(dense_vertices, vertices, weights), 3)))
    rows.append(("subdivide x2 (+ transfer matrix)", timed(lambda: subdivide(vertices, faces, 2), 3),
                 "trimesh x2", timed(lambda: trimesh.remesh.subdivide(*trimesh.remesh.subdivide(vertices, faces)), 3)))

    print(f"body model: {ours.num_vertices} vertices, {len(faces)} faces; 2x subdivided: {len(dense_vertices)} vertices; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'case':44s} {'ours':>10s}   {'baseline':22s} {'time':>10s}")
    for name, ours_s, baseline, base_s in rows:
        print(f"{name:44s} {1000 * ours_s:8.1f}ms   {baseline:22s} {1000 * base_s:8.1f}ms")


if __name__ == "__main__":
    main()
