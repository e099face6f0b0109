"""Training on CUDA (gsplat renders) against training on the CPU (our rasterizer): same draws, same
losses, nearly the same avatar; checkpoints cross devices. Skipped only where there is no GPU; the
CPU path of the same trainer runs in test_trainer.py."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from core.body import BodyModel
from core.config import load_preset
from core.render import available_backends
from core.synthetic import self_rendered_set
from core.threads import single_torch_thread
from core.trainer import Trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]


@pytest.fixture(scope="module")
def scene():
    if "gsplat" not in available_backends():
        pytest.fail("a CUDA machine needs gsplat for training on the GPU: pip install 'persona-studio[cuda]'")
    body = BodyModel.load()
    config = load_preset("preview", ["avatar.num_gaussians=12000", "avatar.skinning_grid=32", "frames.num_generated=4",
                                     "frames.resolution=96", "render.backend=auto", "train.iterations=50",
                                     "optim.lr_colors=0.05", "sampling.register_photo_at=0"])  # photo steps from the start
    return body, config, self_rendered_set(body, config)


def _trainer(scene, device: str, config=None, photo=None, frames=None) -> Trainer:
    body, scene_config, data = scene
    return Trainer(copy.deepcopy(data.avatar), body, photo or data.photo, frames or data.frames,
                   config or scene_config, data.betas, device=device)


@pytest.mark.parametrize("frame", [0, 2])  # the photo and a generated frame
def test_a_cuda_step_has_the_cpu_steps_loss_and_gradients(scene, frame):
    body = scene[0]
    cpu, gpu = _trainer(scene, "cpu"), _trainer(scene, "cuda")
    assert gpu.avatar.template.is_cuda and gpu.body is not body and not body.v_template.is_cuda
    for trainer in (cpu, gpu):
        trainer.sampler.draw = lambda photo=True: frame
    with single_torch_thread():
        want, got = cpu.step(), gpu.step()
    assert got["loss"] == pytest.approx(want["loss"], rel=2e-3)
    # After one step .grad holds that step's gradients, taken at the same starting parameters.
    gpu_params = dict(gpu.avatar.named_parameters()) | {f"delta.{k}": v for k, v in gpu.frame_deltas.items()}
    cpu_params = dict(cpu.avatar.named_parameters()) | {f"delta.{k}": v for k, v in cpu.frame_deltas.items()}
    checked = 0
    for name, value in cpu_params.items():
        if value.grad is None or value.grad.abs().max() == 0:
            assert gpu_params[name].grad is None or gpu_params[name].grad.abs().max() < 1e-12, name
            continue
        error = (gpu_params[name].grad.cpu() - value.grad).norm() / value.grad.norm()
        print(f"frame {frame} {name}: gradient relative error {float(error):.1e}")
        assert error < 2e-2, (name, float(error))
        checked += 1
    assert checked >= 5


def test_cuda_training_follows_cpu_training(scene):
    cpu, gpu = _trainer(scene, "cpu"), _trainer(scene, "cuda")
    with single_torch_thread():
        for step in range(6):
            want, got = cpu.step(), gpu.step()
            assert got["frame"] == want["frame"]
            # the renders agree to ~1e-6 per pixel; Adam, which steps near-zero gradients by their sign,
            # then lets the two runs drift a little
            assert got["loss"] == pytest.approx(want["loss"], rel=2e-2), step
    assert {m["frame"] == 0 for m in cpu.history} == {True, False}  # photo and generated steps both ran
    rates = {id(p): group["lr"] for group in cpu.optimizer.param_groups for p in group["params"]}
    gpu_params = dict(gpu.avatar.named_parameters())
    for name, value in cpu.avatar.named_parameters():  # Adam moves a parameter at most ~lr per step
        assert (gpu_params[name].detach().cpu() - value.detach()).abs().max() <= 2 * 6 * rates[id(value)] * 1.1, name
    assert all(not t.is_cuda for t in gpu.snapshot().avatar_state.values())
    assert gpu.frame(1).rgb.is_cuda


def test_a_cuda_checkpoint_resumes_on_the_cpu(scene, tmp_path):
    gpu = _trainer(scene, "cuda")
    for _ in range(3):
        gpu.step()
    gpu.save(tmp_path / "checkpoint.pt")
    cpu = _trainer(scene, "cpu")
    cpu.load(tmp_path / "checkpoint.pt")
    assert cpu.step_index == 3
    for name, value in gpu.avatar.state_dict().items():
        assert torch.equal(cpu.avatar.state_dict()[name], value.cpu()), name
    cpu.step()  # the optimiser state came across too


def test_cuda_registration_follows_the_cpu(scene):
    """The photo's registration window on CUDA: the same draws as on the CPU, only the photo's pose and shift move
    (the avatar holds still), and they move as on the CPU. The photo's left shoulder is fitted 0.2 rad off."""
    body, config, data = scene
    config = dataclasses.replace(config, sampling=dataclasses.replace(
        config.sampling, register_photo_at=0.04, register_steps=4))  # 50 steps: window [2, 6)
    frames = dataclasses.replace(data.frames, source="oracle")  # frames that are not the photo's own fit
    wrong = data.photo.params["body_pose"].clone()
    wrong[0, 15 * 3 + 2] += 0.2
    photo = copy.copy(data.photo)
    photo.params = {**data.photo.params, "body_pose": wrong}
    cpu, gpu = (_trainer(scene, d, config, photo, frames) for d in ("cpu", "cuda"))
    assert gpu.register_window == cpu.register_window == (2, 6)
    with single_torch_thread():
        for step in range(2):
            assert gpu.step()["frame"] == cpu.step()["frame"] != 0
        held = {k: v.detach().clone() for k, v in gpu.avatar.state_dict().items()}
        for step in range(4):
            want, got = cpu.step(), gpu.step()
            assert got["frame"] == want["frame"] == 0
            assert got["loss"] == pytest.approx(want["loss"], rel=2e-2), step
    for name, value in gpu.avatar.state_dict().items():
        assert torch.equal(value, held[name]), name
    bound = 2 * 4 * config.optim.lr_register * 1.1  # Adam moves a parameter at most ~lr per step
    moved = 0.0
    for name, value in cpu.photo_deltas.items():
        got = gpu.photo_deltas[name].detach()
        assert got.is_cuda and (got.cpu() - value.detach()).abs().max() <= bound, name
        moved = max(moved, float(value.detach().abs().max()))
    assert moved > 0.5 * config.optim.lr_register  # the window did move the photo
    assert (gpu.photo_shift.detach().cpu() - cpu.photo_shift.detach()).abs().max() <= bound
