"""How far the photo's pose is from the truth before and after registration (``sampling.register_photo_at``).

    python benchmarks/photo_registration.py 100 101     # synthetic people by seed

For each person: its photo goes through our real prep, the shared start of ``benchmarks/quality.py --quick``
(warm-up, oracle-drift frames with dressed-person geometry), then the product's Trainer runs up to the end of
the registration window. Printed: the mean and worst angle (degrees) between the 21 body bones' directions in
the photo's camera and the ground truth's in its own camera (free of the scale and distance one image cannot
tell apart), for prep's fit and for the registered pose, and the registered shift (cm, world axes).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from quality import QUICK_SETS, frame_source, make_subject  # (puts the repository on sys.path)

BODY_BONES = list(range(1, 22))  # each body joint's bone from its parent


def bone_directions(body, params: dict[str, torch.Tensor], viewmat: np.ndarray) -> torch.Tensor:
    """Unit directions ``[21, 3]`` of the body bones in the camera of ``viewmat [4, 4]``."""
    joints = body(**params).joints[0, :22] @ torch.as_tensor(viewmat[:3, :3], dtype=torch.float32).T
    bones = joints[BODY_BONES] - joints[body.parents[:22][BODY_BONES]]
    return bones / bones.norm(dim=-1, keepdim=True)


def angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Degrees between unit vectors ``[K, 3]``."""
    return torch.rad2deg(torch.acos((a * b).sum(-1).clamp(-1.0, 1.0)))


def main() -> int:
    from core.body import BodyModel
    from core.config import load_preset
    from core.quality.methods import shared_start
    from core.render.mesh import MeshRenderer
    from core.synthetic_people import make_person, photo_camera
    from core.threads import single_torch_thread
    from core.trainer import Trainer
    from core.training_frames import body_params

    config = load_preset("preview", QUICK_SETS)
    body = BodyModel.load(config.body.model or None)
    renderer = MeshRenderer()
    with tempfile.TemporaryDirectory(prefix="persona-registration-") as tmp:
        for seed in (int(arg) for arg in sys.argv[1:]):
            person = make_person(seed, body.num_betas)
            subject = make_subject(body, person, config, "prep", Path(tmp), renderer)
            start = shared_start(body, subject, config, lambda *a: None,
                                 frame_source(body, person, subject, config, "oracle-drift", renderer, "person"))
            truth_view, _ = photo_camera(body, person, config.prep.crop_size)
            truth = bone_directions(body, body_params({"betas": person.betas, **person.photo_pose}), truth_view)
            trainer = Trainer(start.warmed, body, start.photo, start.frames, config, start.betas, start.expression)

            def error() -> torch.Tensor:
                with torch.no_grad():
                    return angles(bone_directions(body, trainer.refined_photo().params,
                                                  np.asarray(start.photo.viewmat)), truth)

            fit = error()
            with single_torch_thread():
                while trainer.step_index < trainer.register_window[1]:
                    trainer.step()
            registered = error()
            shift = np.round(trainer.photo_shift.detach().numpy()[0] * 100, 1)
            print(f"person {seed}: body bone directions, mean / worst degrees: fit {fit.mean():.2f} / "
                  f"{fit.max():.1f}, registered {registered.mean():.2f} / {registered.max():.1f}; shift {shift} cm",
                  flush=True)
    renderer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
