"""Triplane + pose MLP: masking, zero start, disabled Gaussians, gradients reach the triplane."""
from __future__ import annotations

import math

import numpy as np
import torch

from core.avatar.pose_offsets import PoseOffsets, Triplane, axis_angle_to_6d, body_joint_mask, joints_near


def test_6d_of_known_rotations():
    r6 = axis_angle_to_6d(torch.zeros(2, 3))
    assert torch.allclose(r6, torch.tensor([[1.0, 0, 0, 0, 1, 0]] * 2))
    # 90° about z maps x -> y and y -> -x: first two columns (0,1,0) and (-1,0,0).
    r6 = axis_angle_to_6d(torch.tensor([0.0, 0.0, math.pi / 2]))
    assert torch.allclose(r6, torch.tensor([0.0, 1, 0, -1, 0, 0]), atol=1e-6)


def test_joints_near_on_a_chain():
    parents = np.array([-1, 0, 1, 2])  # a chain 0-1-2-3
    near = joints_near(parents, hops=1)
    assert near[1].tolist() == [True, True, True, False]
    assert joints_near(parents, hops=2)[0].tolist() == [True, True, True, False]


def test_body_joint_mask_drops_the_root_and_far_joints():
    parents = np.array([-1] + [0] * 21 + [1, 2])  # a star: every body joint hangs off the root
    mask = body_joint_mask(np.array([3, 0]), parents)
    assert mask.shape == (2, 21)
    assert mask[0].sum() == 1 and mask[0, 2]  # only joint 3 itself (column 2), not the root
    assert mask[1].all()  # the root's neighbours are every body joint


def test_triplane_reads_the_right_planes():
    tri = Triplane(channels=1, resolution=4, extent=2.0)
    with torch.no_grad():
        tri.planes.zero_()
        tri.planes[0] = 1.0  # xy plane only
    out = tri(torch.tensor([[0.3, -0.2, 0.9]]))
    assert out.shape == (1, 3) and out.tolist() == [[1.0, 0.0, 0.0]]


def test_triplane_sampling_matrix_equals_grid_sample_values_and_gradients():
    tri = Triplane(channels=3, resolution=6, extent=2.0, center=(0.1, -0.2, 0.0))
    g = torch.Generator().manual_seed(5)
    points = (torch.rand(200, 3, generator=g) - 0.5) * 2.6  # some outside the cube: border padding
    points[:3] = torch.tensor([[1.1, -0.2, 0.0], [-0.9, 0.8, -1.0], [0.1, -0.2, 1.0]])  # on faces and edges
    sampling = tri.sampling_matrix(points)
    ours = tri.features_at(sampling)
    reference = tri(points)
    assert torch.allclose(ours, reference, atol=1e-6)
    weights = torch.randn(reference.shape, generator=g)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), tri.planes)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), tri.planes)
    assert torch.allclose(grad_ours, grad_ref, atol=1e-5)


def test_fused_group_norm_relu_equals_group_norm_then_relu():
    from core.avatar.pose_offsets import PointGroupNorm

    g = torch.Generator().manual_seed(6)
    x = (torch.randn(300, 64, generator=g) * 3 + 1).requires_grad_()
    ours, ref = PointGroupNorm(8, 64), torch.nn.GroupNorm(8, 64)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(-1.0, 2.0, 64))
            m.bias.copy_(torch.linspace(0.5, -0.5, 64))
    out, expected = ours.forward_relu(x), torch.relu(ref(x))
    assert torch.allclose(out, expected, atol=1e-5) and (expected == 0).any() and (expected > 0).any()
    upstream = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad((out * upstream).sum(), [x, ours.weight, ours.bias])
    grads_ref = torch.autograd.grad((expected * upstream).sum(), [x, ref.weight, ref.bias])
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-4 * b.abs().max()), (a - b).abs().max()


def test_training_path_equals_the_plain_network():
    """PoseOffsets' autograd path (sparse triplane sampling, pose part per distinct joint mask, fused
    norms) gives the plain network's offsets and gradients: triplane at the template, masked pose
    concatenated, layer by layer through the modules."""
    model, joint_mask, enabled, g = random_pose_offsets(7, 300)
    pose = 0.4 * torch.randn(63, generator=g)
    ours = model(pose)

    def plain():
        from core.avatar.pose_offsets import NUM_BODY_JOINTS, masked_pose

        idx = torch.nonzero(enabled, as_tuple=True)[0]
        mlp = model.mlp
        x = torch.cat([model.triplane(model.template[idx]),
                       masked_pose(axis_angle_to_6d(pose.reshape(NUM_BODY_JOINTS, 3)), joint_mask[idx], torch.float32)], 1)
        for module in mlp.hidden:
            x = module(x)
        return torch.zeros(len(enabled), 3).index_copy(0, idx, mlp.out(x) * mlp.offset_scale)

    expected = plain()
    import copy  # a model holding its cached sparse sampling must stay copyable (quality benchmark)

    assert torch.equal(copy.deepcopy(model)(pose), ours)
    scale = expected.abs().max()
    assert scale > 1e-4 and (ours - expected).abs().max() < 1e-5 * scale
    upstream = torch.randn(ours.shape, generator=g)
    params = list(model.parameters())
    grads = torch.autograd.grad((ours * upstream).sum(), params)
    grads_ref = torch.autograd.grad((expected * upstream).sum(), params)
    for p, a, b in zip(params, grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-4 * b.abs().max() + 1e-12), (p.shape, (a - b).abs().max())


def test_pose_offsets_zero_start_disabled_and_gradients():
    torch.manual_seed(0)  # the layers' initialisation
    g = torch.Generator().manual_seed(0)
    n = 50
    template = torch.rand(n, 3, generator=g) - 0.5
    joint_mask = torch.ones(n, 21, dtype=torch.bool)
    enabled = torch.ones(n, dtype=torch.bool)
    enabled[:10] = False
    model = PoseOffsets(template, joint_mask, enabled, channels=4, resolution=8, extent=2.0, width=16, layers=2,
                        offset_scale=0.01)
    pose_a = 0.5 * torch.randn(63, generator=g)
    pose_b = -pose_a
    assert torch.count_nonzero(model(pose_a)) == 0  # fresh model: no offsets
    # Learn opposite offsets for two poses: only a pose-dependent network can fit both.
    target = torch.full((n, 3), 0.005)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        loss = (model(pose_a) - target)[10:].pow(2).sum() + (model(pose_b) + target)[10:].pow(2).sum()
        loss.backward()
        opt.step()
    out_a, out_b = model(pose_a), model(pose_b)
    assert torch.count_nonzero(out_a[:10]) == 0 and torch.count_nonzero(out_b[:10]) == 0  # hands/face stay still
    assert (out_a[10:] - target[10:]).abs().mean() < 0.002
    assert (out_b[10:] + target[10:]).abs().mean() < 0.002
    assert model.triplane.planes.grad is not None and model.triplane.planes.grad.abs().sum() > 0


def random_pose_offsets(seed: int, n: int) -> tuple[PoseOffsets, torch.Tensor, torch.Tensor, torch.Generator]:
    """A small PoseOffsets over ``n`` random points with random dominant joints and non-zero outputs:
    (model, joint_mask [n, J], enabled [n], the generator for further draws)."""
    g = torch.Generator().manual_seed(seed)
    template = torch.rand(n, 3, generator=g) - 0.5
    dominant = torch.randint(0, 22, (n,), generator=g).numpy()
    parents = np.array([-1] + [max(0, j - 2) for j in range(1, 55)])
    joint_mask = torch.as_tensor(body_joint_mask(dominant, parents))
    enabled = torch.rand(n, generator=g) > 0.2
    # Width 64 in 8 groups as in the preview preset (2-channel groups can have near-zero variance
    # after a ReLU, which amplifies float32 rounding differences).
    model = PoseOffsets(template, joint_mask, enabled, channels=4, resolution=8, extent=2.0, width=64, layers=3,
                        offset_scale=0.01)
    torch.nn.init.normal_(model.mlp.out.weight, std=0.5)  # non-zero offsets to compare
    return model, joint_mask, enabled, g


def test_inference_path_matches_autograd_and_follows_weight_updates():
    torch.manual_seed(1)
    model, joint_mask, enabled, g = random_pose_offsets(1, 300)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(3):
        pose = 0.4 * torch.randn(63, generator=g)
        with_grad = model(pose)
        with torch.no_grad():
            cached = model(pose)
            again = model(-pose)  # a second pose through the same cache
        assert with_grad.abs().max() > 1e-4
        scale = with_grad.abs().max()
        assert (cached - with_grad.detach()).abs().max() < 1e-5 * scale  # float32 sums in another order
        assert (again - model(-pose).detach()).abs().max() < 1e-5 * scale
        # A weight update (in place, as Adam/SGD/load_state_dict do) must reach the inference path.
        opt.zero_grad()
        with_grad.pow(2).sum().backward()
        opt.step()


def test_point_group_norm_equals_group_norm():
    from core.avatar.pose_offsets import PointGroupNorm

    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 16, generator=g) * 3 + 1
    ours, ref = PointGroupNorm(4, 16), torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.arange(16.0))
            m.bias.copy_(-torch.arange(16.0) / 2)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_pose_offsets_reevaluate_only_gaussians_near_a_moved_joint():
    """What makes a slider change fast: the pose MLP's inference path keeps the last offsets."""
    model, joint_mask, enabled, g = random_pose_offsets(2, 400)
    pose = 0.4 * torch.randn(63, generator=g)
    calls = []
    model.mlp.out.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    with torch.no_grad():
        model(pose)
        for joint in (3, 17):  # body joints 4 and 18, one slider each, as the studio's pose panel moves them
            pose = pose.clone()
            pose[joint * 3:joint * 3 + 3] += torch.tensor([0.3, -0.2, 0.1])
            incremental = model(pose)
            near = joint_mask[:, joint] & enabled  # Gaussians whose MLP input holds that joint
            assert calls[-1] == int(near.sum()) < int(enabled.sum())
            with torch.enable_grad():
                full = model(pose).detach()  # the training path, evaluated from scratch
            assert (incremental - full).abs().max() < 1e-5 * full.abs().max()
        calls.clear()
        assert torch.equal(model(pose), incremental) and calls == []  # the same pose again: nothing to evaluate
        model.mlp.out.bias.add_(0.01)  # an in-place weight change re-evaluates everything
        assert calls == [] and model(pose) is not None and calls == [int(enabled.sum())]
