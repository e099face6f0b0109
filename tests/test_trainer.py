"""Trainer: learning works (loss down, PSNR up), live weight changes apply, resume is exact."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.avatar.build import build_avatar
from core.body import BodyModel
from core.config import load_preset
from core.errors import UserError
from core.frames.generated import generate_frames
from core.synthetic import synthetic_subject
from core.reconstruct import photo_colors
from core.threads import single_torch_thread, torch_threads
from core.frames.imported import IMPORTED_SOURCE
from core.trainer import Trainer, registration_window
from core.training_frames import photo_frame

SIZE = 80


@pytest.fixture(scope="module")
def setup():
    body = BodyModel.load()
    config = load_preset("preview", ["render.backend=cpu", "avatar.num_gaussians=14000", "avatar.skinning_grid=32",
                                     "frames.num_generated=6", f"frames.resolution={SIZE}",
                                     "frames.motions=['wave', 'dance']", "train.iterations=200"])
    pose = np.zeros(63, np.float32)
    pose[15 * 3 + 2], pose[16 * 3 + 2] = -1.1, 1.1  # arms down
    subject = synthetic_subject(body, SIZE, {"body_pose": pose})
    textured = build_avatar(body, np.zeros(body.num_betas), config.avatar)
    with torch.no_grad():  # generated frames show the photo-textured body, as in reconstruct
        textured.colors.copy_(torch.as_tensor(photo_colors(textured, body, subject)))
    frames = generate_frames(textured, body, subject.smplx, config.frames)
    return body, config, subject, frames


def make_trainer(setup, source: str | None = None, **overrides):
    """A trainer on the setup's photo and frames; ``source``: say the frames came from there (e.g. a video
    model's imported frames, which the photo is registered to)."""
    body, config, subject, frames = setup
    frames = frames if source is None else dataclasses.replace(frames, source=source)
    # Colours start grey here (reconstruct starts from the photo's colours), so a higher colour
    # learning rate lets a short test see the photo being learned.
    config = load_preset("preview", [f"{k}={v}" for k, v in {
        "render.backend": "cpu", "avatar.num_gaussians": 14000, "avatar.skinning_grid": 32,
        "train.iterations": 200, "optim.lr_colors": 0.05, **overrides}.items()])
    avatar = build_avatar(body, np.zeros(body.num_betas), config.avatar)
    frame = photo_frame(subject, config.sampling.boundary_image_weight, config.sampling.seam_threshold,
                        config.sampling.seam_dilate)
    return Trainer(avatar, body, frame, frames, config, np.zeros(body.num_betas))


@pytest.mark.slow
def test_training_lowers_loss_and_raises_photo_psnr(setup):
    trainer = make_trainer(setup)
    photo_steps = []
    for _ in range(60):
        m = trainer.step()
        if m["frame"] == 0:
            photo_steps.append((m["loss"], m["psnr"]))
    first, last = photo_steps[:3], photo_steps[-3:]
    assert np.mean([p for _, p in last]) > np.mean([p for _, p in first]) + 3.0  # dB
    assert np.mean([l for l, _ in last]) < 0.7 * np.mean([l for l, _ in first])
    assert 0.35 < trainer.sampler.photo_fraction < 0.65  # balanced: about half the draws are the photo


REFINE_PHOTO = {"optim.lr_photo_pose": 1e-2}
# registration window at steps 2..4: the resume below saves in the middle of it
REGISTER_PHOTO = {"sampling.register_photo_at": 0.01, "sampling.register_steps": 3}


@pytest.mark.parametrize("threads", [1, 2])  # reconstruct trains on training_threads(): 1, or every core
@pytest.mark.parametrize("photo, source", [(REFINE_PHOTO, None), (REGISTER_PHOTO, IMPORTED_SOURCE)],
                         ids=["refined", "registered"])
def test_resume_gives_the_same_parameters(setup, tmp_path, photo, source, threads):
    with torch_threads(threads):  # a fixed thread count: torch splits its reductions the same way each time
        straight = make_trainer(setup, source, **photo)
        for _ in range(6):
            straight.step()
        first = make_trainer(setup, source, **photo)
        for _ in range(3):
            first.step()
        first.save(tmp_path / "ckpt.pt")
        resumed = make_trainer(setup, source, **photo)
        resumed.load(tmp_path / "ckpt.pt")
        for _ in range(3):
            resumed.step()
    for k, v in straight.avatar.state_dict().items():
        assert torch.equal(v, resumed.avatar.state_dict()[k]), k
    assert straight.sampler.counts.tolist() == resumed.sampler.counts.tolist()
    for k, v in straight.photo_deltas.items():  # the photo's pose correction resumes too
        assert torch.equal(v, resumed.photo_deltas[k]) and v.abs().max() > 0, k
    assert torch.equal(straight.photo_shift, resumed.photo_shift)
    assert (straight.photo_shift.abs().max() > 0) == (photo is REGISTER_PHOTO)


def test_live_weight_change_applies_at_next_step(setup):
    import copy

    trainer = make_trainer(setup)
    loss = copy.deepcopy(trainer.config.loss)
    loss.photo.mask = 7.0
    trainer.set_loss_weights(loss)
    assert trainer.config.loss.photo.mask == 1.0  # not yet: only at a step boundary
    loss.photo.mask = 9.0  # the trainer took a copy; later edits by the caller don't leak in
    trainer.step()
    assert trainer.config.loss.photo.mask == 7.0


def test_bad_checkpoint_is_a_user_error(setup, tmp_path):
    trainer = make_trainer(setup)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        trainer.load(bad)


def test_training_backgrounds_are_reproducible_and_composite_the_targets():
    from core.trainer import over_background, training_background

    assert torch.equal(training_background("random", 0, 7), training_background("random", 0, 7))
    assert not torch.equal(training_background("random", 0, 7), training_background("random", 0, 8))
    assert not torch.equal(training_background("random", 0, 7), training_background("random", 1, 7))
    assert torch.equal(training_background("white", 0, 3), torch.ones(3))
    assert torch.equal(training_background("black", 0, 3), torch.zeros(3))
    colour, mask = torch.full((1, 2, 2, 3), 0.4), torch.tensor([1.0, 0.5, 0.0, 1.0]).reshape(1, 2, 2, 1)
    out = over_background(colour * mask, mask, torch.tensor([1.0, 0.0, 0.5]))
    np.testing.assert_allclose(out[0, 0, 1].numpy(), [0.2 + 0.5, 0.2, 0.2 + 0.25])
    np.testing.assert_allclose(out[0, 1, 0].numpy(), [1.0, 0.0, 0.5])


@pytest.mark.slow
def test_random_backgrounds_keep_edges_from_learning_black(setup):
    # On a fixed black backdrop, semi-transparent edge Gaussians lower their colour to match the dark
    # target there; shown over white they leave dark rims. Random backdrops make them keep the colour.
    body, _, subject, _ = setup
    white = torch.ones(3)
    scores = {}
    for mode in ("black", "random"):
        trainer = make_trainer((body, None, subject, None), **{"train.background": mode})
        with single_torch_thread():
            for _ in range(60):
                trainer.step()
        from core.avatar.build import body_params
        from core.avatar.render import pose_avatar, render_posed

        frame = trainer.frame(0)
        with torch.no_grad():
            posed = pose_avatar(trainer.avatar, body, body_params(subject.smplx), refined=True)
            out = render_posed(posed, frame.viewmat, frame.K, SIZE, SIZE, trainer.config.render, white)
        target = frame.rgb + (1.0 - frame.mask)  # the photo over white
        scores[mode] = float(-10 * torch.log10(((out.rgb[None] - target) ** 2).mean()))
    assert scores["random"] > scores["black"] + 1.0, scores


def test_photo_steps_leave_the_back_colours_alone(setup):
    """Gaussians facing away from the photo's camera keep their colours through photo steps (they
    show only through gaps in the front, and painting them there made the back noisy), while the
    front learns the photo."""
    trainer = make_trainer(setup, **{"frames.num_generated": 0})
    trainer.frames, trainer.num_generated = None, 0
    trainer.sampler = type(trainer.sampler)(0, 0.5, balanced=True, seed=0)
    with torch.no_grad():  # the avatar is fresh: its learned offsets are still zero
        out = trainer.body(**trainer.photo.params)
        posed = trainer.avatar.pose(out.shaped[0], out.joint_transforms[0], None)
        center = -(trainer.photo.viewmat[:3, :3].T @ trainer.photo.viewmat[:3, 3])
        score = (torch.nn.functional.normalize(center - posed.means, dim=-1) * posed.normals).sum(-1)
    before = trainer.avatar.colors.detach().clone()
    for _ in range(4):
        assert trainer.step()["frame"] == 0
    after = trainer.avatar.colors.detach()
    back, front = ~trainer.photo_facing, trainer.photo_facing
    assert torch.equal(trainer.photo_facing, score > 0)
    assert back.sum() > 1000 and torch.equal(after[back], before[back])
    assert (after[front] - before[front]).abs().amax(-1).gt(1e-3).float().mean() > 0.5


def _gathered_vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``[V, 3]`` by gathers and ``index_add`` (the plain reference)."""
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    face_n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals = normals.index_add(0, faces[:, i], face_n)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def test_shared_skinning_and_sparse_normals_equal_separate_posing(setup):
    """The trainer skins a frame once for its base and refined posing; Avatar.surface_normals (numba on the
    CPU, sparse products elsewhere) equals the plain gather/scatter normals: same positions, normals and
    gradients."""
    body, config, subject, _ = setup
    avatar = build_avatar(body, np.zeros(body.num_betas), config.avatar)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        avatar.offsets.copy_(0.005 * torch.randn(avatar.offsets.shape, generator=g))
        avatar.pose_offsets.mlp.out.weight.normal_(0.0, 0.5, generator=g)  # non-zero pose offsets
    params = {k: v.clone() for k, v in photo_frame(subject, 0.1, 0.02, 0.015).params.items()}
    params["body_pose"] = params["body_pose"] + 0.3 * torch.randn(params["body_pose"].shape, generator=g)
    out = body(**params)
    shaped = out.shaped[0]
    body_pose = params["body_pose"].reshape(-1)

    def posed_pair(shared: bool):
        transforms = out.joint_transforms[0].detach().clone().requires_grad_()
        skinning = avatar.skinning(shaped, transforms) if shared else None
        pair = [avatar.pose(shaped, transforms, pose, skinning=skinning) for pose in (None, body_pose)]
        weights = torch.linspace(-1.0, 1.0, 3 * avatar.num_gaussians).view(-1, 3)
        loss = sum(((p.means + p.normals) * weights).sum() for p in pair)
        grads = torch.autograd.grad(loss, [transforms, avatar.offsets])
        return pair, grads

    shared, shared_grads = posed_pair(True)
    separate, separate_grads = posed_pair(False)
    for a, b in zip(shared, separate):
        assert torch.equal(a.means, b.means) and torch.equal(a.normals, b.normals)
    assert (shared[1].means - shared[0].means).abs().max() > 1e-4  # the refined posing really moved
    for a, b in zip(shared_grads, separate_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max())

    import copy  # the avatar holds cached sparse operators: it must stay copyable (quality benchmark)

    points = (avatar.template + 0.01 * torch.randn(avatar.template.shape, generator=g)).requires_grad_()
    reference = _gathered_vertex_normals(points, avatar.faces)
    weights = torch.randn(reference.shape, generator=g)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), points)

    def sparse_normals(model):  # the path for CUDA tensors (sparse products), here on the CPU
        sums = model._sparse_normal_sums(points)
        return sums / sums.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    for normals in (lambda model: model.surface_normals(points), sparse_normals):  # numba on the CPU; sparse
        ours = normals(avatar)
        assert torch.allclose(ours, reference, atol=1e-5)
        assert torch.equal(normals(copy.deepcopy(avatar)), ours)
        (grad_ours,) = torch.autograd.grad((ours * weights).sum(), points)
        assert torch.allclose(grad_ours, grad_ref, atol=1e-4 * grad_ref.abs().max())


def test_train_frames_move_between_devices(setup):
    body, config, subject, frames = setup
    photo = photo_frame(subject, 0.1, config.sampling.seam_threshold, config.sampling.seam_dilate)
    assert photo.to("cpu") is photo  # already there: no copy
    moved = photo.to("meta")  # a device without data: every tensor must have gone
    tensors = [getattr(moved, f.name) for f in dataclasses.fields(moved)]
    tensors = [t for t in tensors if torch.is_tensor(t)] + list(moved.params.values())
    assert len(tensors) >= 10 and all(t.device.type == "meta" for t in tensors)
    assert photo.rgb.device.type == "cpu"  # the original stays


def test_trainer_on_the_cpu_uses_the_callers_body_and_cpu_snapshots(setup):
    trainer = make_trainer(setup)
    assert trainer.device == torch.device("cpu") and trainer.body is setup[0]
    trainer.step()
    state = trainer.snapshot().avatar_state
    assert all(t.device.type == "cpu" for t in state.values())
    assert state["offsets"].data_ptr() != trainer.avatar.offsets.data_ptr()  # a copy, not the live tensor


def test_a_training_device_that_cannot_run_is_a_user_error():
    from core.render import available_backends
    from core.trainer import config_device

    config = load_preset("preview", ["train.device=cuda", "render.backend=cpu"])
    with pytest.raises(UserError, match="train.device 'cuda' needs render.backend"):
        config_device(config)
    if "gsplat" not in available_backends():
        with pytest.raises(UserError, match="train.device 'cuda' needs"):
            config_device(load_preset("preview", ["train.device=cuda"]))
    assert config_device(load_preset("preview", ["train.device=cpu"])) == torch.device("cpu")


def test_generated_frames_know_whether_they_show_hands(setup):
    """The hand-mask term is decided on the CPU when the frame is built (``has_hands``), never by reading
    the device's hand region back during a step."""
    body, config, subject, frames = setup
    from core.training_frames import generated_frame, hand_region

    frame = generated_frame(frames, 0, np.zeros(body.num_betas), None)
    assert frame.has_hands == bool(hand_region(frames.frame(0)["part_seg"]).any())
    assert frame.has_hands  # the motions' frames show the hands
    empty = generated_frame(frames, 0, np.zeros(body.num_betas), None,
                            hands=np.zeros(frames.frame(0)["part_seg"].shape[:2], np.float32))
    assert not empty.has_hands
    assert frame.to("meta").has_hands  # survives a move


def test_step_metrics_are_the_loss_terms_read_back_once(setup):
    """A step's metrics hold the loss terms and regularisers as floats; ``loss`` is their sum plus the
    refined offsets' smoothness (not reported on its own)."""
    trainer = make_trainer(setup)
    for _ in range(4):
        metrics = trainer.step()
        assert all(isinstance(v, (int, float)) for v in metrics.values())
        terms = [v for k, v in metrics.items() if k.startswith(("base_", "refined_", "reg_"))]
        assert {"base_image", "base_mask", "refined_image", "reg_offsets"} <= set(metrics)
        assert all(v >= 0.0 for v in terms)
        assert sum(terms) <= metrics["loss"] <= sum(terms) * 1.5 + 1e-6
        assert np.isfinite(metrics["psnr"])


def test_the_scale_ceiling_is_a_term_only_when_weighted(setup):
    """loss.scale_ceiling_weight (off by default) adds its hinge to the step's regularisers; scales grown past
    the ceiling then make it positive."""
    assert "reg_scale_ceiling" not in make_trainer(setup).step()
    trainer = make_trainer(setup, **{"loss.scale_ceiling_weight": 10.0, "loss.scale_ceiling": 2.0})
    assert trainer.step()["reg_scale_ceiling"] == 0.0  # every scale is still near its start
    with torch.no_grad():
        trainer.avatar.log_scales[:100] += 2.0  # 7.4x
    assert trainer.step()["reg_scale_ceiling"] > 0.0


def test_hand_scales_are_held_to_their_bound_after_each_step(setup):
    """optim.hand_scale_max (4 by default, 0 = off) bounds the hands' Gaussians' scales at that multiple of their start after
    every step, and leaves every other Gaussian's scale as the optimiser made it."""
    from core.body import HAND_PARTS

    trainer = make_trainer(setup, **{"optim.hand_scale_max": 3.0})
    avatar = trainer.avatar
    hands = torch.as_tensor(np.isin(avatar.part_labels.numpy(), HAND_PARTS))
    assert 0 < int(hands.sum()) < len(hands)
    with torch.no_grad():
        avatar.log_scales += 2.0  # every Gaussian at 7.4x its start
    trainer.step()
    ratio = (avatar.log_scales.exp() / avatar.init_scales).detach()
    assert torch.allclose(ratio[hands], torch.tensor(3.0), rtol=1e-5)
    assert (ratio[~hands] > 6.0).all()  # one Adam step at lr 0.01 moves a log-scale by about 0.01
    assert make_trainer(setup, **{"optim.hand_scale_max": 0.0}).log_scale_max is None  # 0: no bound (paper)


def test_outside_mask_finds_centres_over_the_backdrop(setup):
    """Centres projecting where the photo's mask is below 0.5, off the image or behind the camera."""
    from core.trainer import outside_mask

    body, config, subject, frames = setup
    photo = photo_frame(subject, 0.1, config.sampling.seam_threshold, config.sampling.seam_dilate)
    mask = photo.mask[0, ..., 0]
    rows, cols = torch.nonzero(mask > 0.9, as_tuple=True)
    empty_rows, empty_cols = torch.nonzero(mask < 0.1, as_tuple=True)
    K, view = photo.K.double(), photo.viewmat.double()

    def world_point(row, col, depth=3.0):  # the pixel centre's ray at ``depth`` metres, in the world
        ray = torch.linalg.solve(K, torch.tensor([col + 0.5, row + 0.5, 1.0], dtype=torch.float64)) * depth
        return (view[:3, :3].T @ (ray - view[:3, 3])).float()

    points = torch.stack([world_point(int(rows[0]), int(cols[0])), world_point(int(empty_rows[0]), int(empty_cols[0])),
                          world_point(int(rows[0]), int(cols[0]) + 10_000), world_point(int(rows[0]), int(cols[0]), -3.0)])
    assert outside_mask(points, photo).tolist() == [False, True, True, True]


def _photo_pose_trainer(setup, lr_photo_pose: float, error: float):
    """Photo-only training of the photo-textured avatar, frozen (every avatar learning rate 0), with the
    photo's fitted pose wrong by ``error`` rad on the left shoulder; returns (trainer, the true pose)."""
    body, _, subject, _ = setup
    frozen = {f"optim.{k}": 0.0 for k in ("lr_offsets", "lr_triplane", "lr_mlp", "lr_scales", "lr_colors",
                                          "lr_part_colors")}
    trainer = make_trainer(setup, **frozen, **{"frames.num_generated": 0, "optim.lr_photo_pose": lr_photo_pose})
    trainer.frames, trainer.num_generated = None, 0
    trainer.sampler = type(trainer.sampler)(0, 0.5, balanced=True, seed=0)
    with torch.no_grad():
        trainer.avatar.colors.copy_(torch.as_tensor(photo_colors(trainer.avatar, body, subject)))
    truth = trainer.photo.params["body_pose"].clone()
    wrong = truth.clone()
    wrong[0, 15 * 3 + 2] += error
    trainer.photo.params = {**trainer.photo.params, "body_pose": wrong}
    return trainer, truth


def test_training_refines_a_misfitted_photo_pose(setup):
    """With ``optim.lr_photo_pose`` the photo's pose is learned too: an avatar that is right pulls a wrongly
    fitted shoulder back to where the photo shows the arm, and the prior keeps the joints the error does not
    touch in place. Off (0), the photo keeps its fitted pose."""
    from core.body.skeleton import JOINT_NAMES

    body = setup[0]
    joints = [JOINT_NAMES.index(n) for n in ("left_wrist", "right_wrist", "head")]

    def joint_error(trainer, truth) -> np.ndarray:
        """Distances (cm) of the checked joints from where the photo shows them."""
        with torch.no_grad():
            right = body(**{**trainer.photo.params, "body_pose": truth}).joints[0, joints]
            now = body(**trainer.refined_photo().params).joints[0, joints]
        return 100 * (now - right).norm(dim=-1).numpy()

    with single_torch_thread():
        trainer, truth = _photo_pose_trainer(setup, 1e-2, 0.2)
        before = joint_error(trainer, truth)
        for _ in range(30):
            trainer.step()
        after = joint_error(trainer, truth)
        kept, _ = _photo_pose_trainer(setup, 0.0, 0.2)
        for _ in range(3):
            kept.step()
    assert before[0] > 8 and after[0] < 0.4 * before[0], (before, after)  # the wrong arm comes back
    assert after[1:].max() < 3.0, after  # the rest stays
    # the bundle gets the refined pose, the other parameters as fitted
    fitted = {"body_pose": trainer.photo.params["body_pose"][0].numpy(), "betas": np.zeros(3, np.float32)}
    params = trainer.photo_params(fitted)
    assert np.allclose(params["body_pose"], trainer.refined_photo().params["body_pose"][0].detach().numpy())
    assert params["betas"] is fitted["betas"]
    assert kept.refined_photo() is kept.photo
    assert np.array_equal(kept.photo_params(fitted)["body_pose"], fitted["body_pose"])


def test_registration_fits_the_photo_pose_to_the_avatar_from_the_generated_frames(setup):
    """``sampling.register_photo_at``: generated frames only at first, then a window of steps that moves only
    the photo's pose and shift (the avatar held still) until the photo lines up with the avatar; a wrongly
    fitted shoulder comes back. Afterwards the photo is drawn again, in the registered pose."""
    from core.body.skeleton import JOINT_NAMES
    from core.camera import project_points

    body, _, subject, _ = setup
    joints = [JOINT_NAMES.index(n) for n in ("left_wrist", "right_wrist", "head")]
    with single_torch_thread():
        trainer = make_trainer(setup, IMPORTED_SOURCE,
                               **{"sampling.register_photo_at": 0.02, "sampling.register_steps": 30})
        with torch.no_grad():  # an avatar that is right: the generated frames show the same textured body
            trainer.avatar.colors.copy_(torch.as_tensor(photo_colors(trainer.avatar, body, subject)))
        truth = trainer.photo.params["body_pose"].clone()
        wrong = truth.clone()
        wrong[0, 15 * 3 + 2] += 0.2
        trainer.photo.params = {**trainer.photo.params, "body_pose": wrong}

        def joint_error() -> np.ndarray:
            """Pixels between where the checked joints land in the photo and where the photo shows them: one
            image pins a body down across its view, not along it (registered, the body moved ~10 cm in depth)."""
            with torch.no_grad():
                right = body(**{**trainer.photo.params, "body_pose": truth}).joints[0, joints]
                now = body(**trainer.refined_photo().params).joints[0, joints]
            view, K = trainer.photo.viewmat, trainer.photo.K
            return (project_points(now, view, K)[0] - project_points(right, view, K)[0]).norm(dim=-1).numpy()

        assert trainer.register_window == (4, 34) and trainer.total == 200 + 30
        before = joint_error()
        frames = [trainer.step()["frame"] for _ in range(4)]
        held = {k: v.clone() for k, v in trainer.avatar.state_dict().items()}
        frames += [trainer.step()["frame"] for _ in range(30)]
        moved = [k for k, v in trainer.avatar.state_dict().items() if not torch.equal(v, held[k])]
        after = joint_error()
        registered = {k: v.detach().clone() for k, v in trainer.photo_deltas.items()}
        shift = trainer.photo_shift.detach().clone()
        frames += [trainer.step()["frame"] for _ in range(8)]
    assert 0 not in frames[:4] and frames[4:34] == [0] * 30 and 0 in frames[34:]
    assert moved == []  # the avatar held still while registering
    assert before[0] > 3 and after[0] < 0.4 * before[0], (before, after)  # the wrong arm comes back
    assert after[1:].max() < 1.5, after  # the rest stays
    for k, v in trainer.photo_deltas.items():  # kept once registered (optim.lr_photo_pose is 0)
        assert torch.equal(v.detach(), registered[k]), k
    assert torch.equal(trainer.photo_shift.detach(), shift)
    fitted = {k: trainer.photo.params[k][0].numpy() for k in ("body_pose", "transl")}
    for k in fitted:  # the bundle gets the registered pose and shift
        assert np.allclose(trainer.photo_params(fitted)[k], trainer.refined_photo().params[k][0].detach().numpy()), k


def test_the_photo_is_registered_only_to_frames_that_do_not_come_from_its_own_fit(setup):
    """Our offline frames re-render the avatar warmed up on the photo in its fitted pose: registering the photo to
    them has nothing to find. Imported (video-model) frames, mixed sets and others get the window."""
    _, _, _, frames = setup
    config = load_preset("preview", ["train.iterations=100"])
    assert registration_window(config, frames) == (0, 0) and frames.source == "generated"
    for source in (IMPORTED_SOURCE, "mixed", "oracle"):
        assert registration_window(config, dataclasses.replace(frames, source=source)) == (30, 90), source
    assert registration_window(config, None) == (0, 0)
    off = load_preset("preview", ["train.iterations=100", "sampling.register_photo_at=0"])
    assert registration_window(off, dataclasses.replace(frames, source=IMPORTED_SOURCE)) == (0, 0)


def test_training_threads_follow_the_openmp_wait_policy(monkeypatch):
    """Every usable core only where idle OpenMP workers sleep (the CLI sets the policy before torch loads)."""
    import os

    from core.threads import training_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert training_threads() == cores
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert training_threads() == 1
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert training_threads() == 1
